"""A trained DS-LS model as one plain torch.nn.Module, for Python: `dsls.load(path)` gives a LatentModel.

    model = dsls.load("runs/toy/<run>")   # a run folder, a phase-2/latent_score checkpoint or a search.ckpt; CPU
    x = model.sample(16)                  # annealed Langevin, seed 0: (16, *data_shape)

A LatentModel holds the autoencoder E, G, the σ ladder, a latent prior (dsls.priors: phase 2's D, or a score network)
and, for class guidance, optionally a latent classifier. The search phase and the tasks call the same functions as its
methods (sample_batch, LatentModel.dps, dsls.interpolation.ode_path, dsls.likelihood.ode_log_prob): a sample drawn here
is the one `dsls predict` writes with the same checkpoint, seed and settings, under the reproducibility contract.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from dsls.anomaly import BATCH as ANOMALY_BATCH
from dsls.anomaly import COMBINED_PARTS, DEFAULT_SCORE, AnomalyFit, anomaly_score, fit_anomaly
from dsls.errors import ConfigError, PhaseCheckpointError, TaskError
from dsls.guidance import MEASUREMENT_SCALE, ClassGuidance, Luma, Masking, Measurement
from dsls.interpolation import SIGMA_TOP, ode_path
from dsls.likelihood import ode_log_prob
from dsls.loading import latent_parts, load_phase_module, read_classifier, read_phase_2, resolve
from dsls.nets.autoencoder import same_weights
from dsls.noise import SigmaLadder
from dsls.priors import LatentClassifier, LatentPrior
from dsls.progress import progress
from dsls.samplers import Sampler, make_sampler, pad_rows, sample_indices
from dsls.samplers.ode import TOLERANCE
from dsls.score import Score

SAMPLE_BATCH = 2500  # samples per batch: the search's default batch_size too (an adaptive ODE solve is per batch)
GUIDANCE_SCALE = 3.0  # the class-guidance weight w when labels are given without one
DPS_BATCH = 250  # observations per batch of an inverse problem: DPS differentiates through G and the score


def labels_for(n: int, labels, num_classes: int) -> torch.Tensor:
    """The class each of n samples asks for: 'balanced' (sample i gets class i mod K), one class for all, or (from
    Python) a sequence or tensor of n classes. Anything else is a TaskError naming the valid classes."""
    k = int(num_classes)
    if isinstance(labels, str) and labels == "balanced":
        return torch.arange(n) % k
    if isinstance(labels, numbers.Integral) and not isinstance(labels, bool) and 0 <= labels < k:
        return torch.full((n,), int(labels))
    if not isinstance(labels, (str, bool, numbers.Number)):
        y = torch.as_tensor(labels)
        if y.dim() == 1 and len(y) == n and not y.is_floating_point() and ((y >= 0) & (y < k)).all():
            return y.long().cpu()
    raise TaskError(f"labels must be 'balanced' or a class in 0..{k - 1} (from Python also a list of {n}, one per "
                    f"sample), got {labels!r}")


def sample_batch(model, sampler: Sampler, indices: Sequence[int], seed: int, ladder: SigmaLadder, labels=None,
                 guidance_scale: float = GUIDANCE_SCALE, track: int = 0):
    """(SamplerOutput, decoded x) of the samples numbered `indices` of one search (dsls.samplers.sample_indices),
    under the model's score plus, with `labels` (one per index), its classifier's guidance term. The search phase and
    LatentModel.sample both draw through here. model: a LatentModel, or any dsls.score.SamplingModel unguided."""
    indices = [int(i) for i in indices]
    terms = None
    if labels is not None:
        label_of = dict(zip(indices, (int(y) for y in labels)))
        terms = lambda rows: [model.guidance_term([label_of[r] for r in rows], guidance_scale)]  # noqa: E731
    return sample_indices(model, sampler, model.score_fn(), ladder, seed, indices, track, terms)


def paste_back(x: torch.Tensor, observed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x with its observed pixels (mask ≠ 0) replaced by the observation, exactly: the standard last step of
    inpainting, as latent DPS fits the observation only approximately through the decoder."""
    return torch.where(mask.to(x.device) != 0, observed.to(x), x)


def same_autoencoder(a: nn.Module, b: nn.Module) -> bool:
    return same_weights(a.state_dict(), b.state_dict())


@dataclass
class Solution:
    """An inverse problem's results: x (decoded, not clamped), z (latents) and nfe (the most score evaluations of a
    batch)."""

    x: torch.Tensor
    z: torch.Tensor
    nfe: int


class LatentModel(nn.Module):
    """E, G, the σ ladder, a latent prior and an optional latent classifier; always in evaluation mode, frozen.
    `ladder` is a plain attribute: `model.ladder = model.ladder.with_overrides(num_levels=20)` changes it."""

    phase = "adversarial"  # what the search and the tasks check: a model with latents (dsls.score.SamplingModel)

    def __init__(self, autoencoder: nn.Module, prior: LatentPrior, ladder: SigmaLadder,
                 classifier: Optional[LatentClassifier] = None, dataset_name: Optional[str] = None,
                 datamodule_hparams: Optional[dict] = None):
        super().__init__()
        self.autoencoder, self.prior, self.classifier, self.ladder = autoencoder, prior, classifier, ladder
        self.dataset_name, self.datamodule_hparams = dataset_name, datamodule_hparams  # to find its real data
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "LatentModel":
        """Stays in evaluation mode: in training mode the encoder would move its running code statistics."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"data_shape={self.data_shape}, latent_shape={self.latent_shape}, ladder={self.ladder}"

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.autoencoder.data_shape)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.autoencoder.latent_dim,)

    @property
    def discriminator(self) -> Optional[nn.Module]:
        """The prior's D, or None for a prior without one (figures that draw D's logit field read it)."""
        return getattr(self.prior, "discriminator", None)

    # -- the pieces ---------------------------------------------------------------------------------------------------
    def encode(self, x) -> torch.Tensor:
        """E(x), the encoder's mean code (no code noise). Example: `z = model.encode(x)`."""
        return self.autoencoder.encode(torch.as_tensor(x, dtype=torch.float32).to(self.device), sample=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """G(z), in data space (images in about [-1, 1]). Example: `x = model.decode(z)`."""
        return self.autoencoder.decode(z.to(self.device))

    def score_fn(self) -> Score:
        """The score s(z, σ) = ∇z log q_σ(z) as the samplers take it: the prior's terms (dsls.score.Score).
        Example: `score = model.score_fn().plus(my_log_density)`."""
        log_terms, direct = self.prior.score_terms()
        return Score(log_terms, direct)

    def score(self, z: torch.Tensor, sigma, create_graph: bool = False) -> torch.Tensor:
        """s(z, σ), shaped like z; σ a float or a (B,) tensor. create_graph=True keeps the graph (z must require
        grad), so `model.score` can be passed to dsls.likelihood.ode_log_prob. Example: `s = model.score(z, 0.1)`."""
        return self.score_fn()(z.to(self.device), sigma, create_graph=create_graph)

    def logit(self, z: torch.Tensor, sigma) -> torch.Tensor:
        """logit D(z, σ) per row, ≈ log q_σ(z) − log p_σ(z); a prior without a logit raises a TaskError.
        Example: `l = model.logit(z, 0.1)`."""
        return self.prior.logit(z.to(self.device), sigma)

    # -- sampling -----------------------------------------------------------------------------------------------------
    def sample(self, n: int, sampler: str = "langevin", seed: int = 0, labels=None,
               guidance_scale: Optional[float] = None, batch_size: Optional[int] = None, return_latents: bool = False,
               **settings):
        """n samples in data space, (n, *data_shape): the samples `dsls predict` draws with the same checkpoint, seed
        and settings (sample i depends on (seed, i) alone). settings: the sampler's, checked as on the command line
        (a typo is a ConfigError listing the valid ones). labels ('balanced', a class, or n classes) guide with the
        attached classifier at guidance_scale (default 3.0). return_latents: (x, z).
        Example: `x = model.sample(64, "pc", seed=3, levels=18, snr=0.16)`."""
        chosen = make_sampler(sampler, settings)
        y, scale = self._guidance(n, labels, guidance_scale)
        xs, zs = [], []
        for idx in self._batches(n, batch_size, f"{sampler}: batches of samples"):
            res, x = sample_batch(self, chosen, idx, seed, self.ladder, None if y is None else y[idx], scale)
            xs.append(x.detach())
            zs.append(res.z.detach())
        x = torch.cat(xs)
        return (x, torch.cat(zs)) if return_latents else x

    def _batches(self, n: int, batch_size: Optional[int], desc: str):
        """The sample indices 0..n−1 in batches of batch_size (default SAMPLE_BATCH), with a progress bar."""
        size = SAMPLE_BATCH if batch_size is None else batch_size
        if n < 1 or size < 1:
            raise ConfigError(f"need n >= 1 and batch_size >= 1, got {n} and {size}")
        for start in progress(range(0, n, size), desc=desc, unit="batch"):
            yield list(range(start, min(start + size, n)))

    def _guidance(self, n: int, labels, guidance_scale: Optional[float]):
        if labels is None:
            if guidance_scale is not None:
                raise ConfigError("guidance_scale guides only with labels: add labels='balanced' (sample i gets "
                                  "class i mod K), labels=<class> or one class per sample")
            return None, GUIDANCE_SCALE
        if self.classifier is None:
            raise ConfigError("labels need a latent classifier: model = model.with_classifier("
                              "'<run>/latent_classifier/checkpoints/last.ckpt') (dsls.load of a run folder that has "
                              "one attaches it)")
        scale = GUIDANCE_SCALE if guidance_scale is None else float(guidance_scale)
        return labels_for(n, labels, self.classifier.num_classes), scale

    def guidance_term(self, labels, scale: float = GUIDANCE_SCALE) -> ClassGuidance:
        """w · log C(y_i | z_i, σ), one label per row of the batch it is used on (dsls.guidance.ClassGuidance).
        Example: `score = model.score_fn().plus(model.guidance_term([3] * len(z), 2.0))`."""
        if self.classifier is None:
            raise ConfigError("class guidance needs a latent classifier: model.with_classifier(<its checkpoint>)")
        return ClassGuidance(self.classifier, torch.as_tensor(labels, device=self.device), scale)

    def with_classifier(self, classifier, flag: str = "classifier") -> "LatentModel":
        """A new LatentModel (sharing this one's modules) that guides with a latent classifier: its checkpoint's path
        or a LatentClassifier. It must have been trained on this autoencoder's codes. flag: how errors name the path.
        Example: `guided = model.with_classifier("runs/digits/<run>/latent_classifier/checkpoints/last.ckpt")`."""
        clf = classifier
        if not isinstance(classifier, LatentClassifier):
            clf, autoencoder = read_classifier(classifier, flag)
            if not same_autoencoder(autoencoder, self.autoencoder):
                raise PhaseCheckpointError(f"{flag}={classifier} was trained on another autoencoder's codes: train it "
                                           "with --model.autoencoder_ckpt set to this model's phase-2 checkpoint")
        lo, hi = clf.sigma_range
        if self.ladder.sigma_max > hi * 1.001 or self.ladder.sigma_min < lo * 0.999:
            warnings.warn(f"the search's sigma range [{self.ladder.sigma_min:.4g}, {self.ladder.sigma_max:.4g}] goes "
                          f"beyond the classifier's [{lo:.4g}, {hi:.4g}]: train it from the phase-2 checkpoint "
                          "(--model.autoencoder_ckpt=<run>/adversarial/checkpoints/last.ckpt) to share D's ladder",
                          stacklevel=2)
        return LatentModel(self.autoencoder, self.prior, self.ladder, clf.to(self.device), self.dataset_name,
                           self.datamodule_hparams)

    # -- likelihood ---------------------------------------------------------------------------------------------------
    def log_prob(self, z: Optional[torch.Tensor] = None, *, x=None, rtol: float = TOLERANCE, atol: float = TOLERANCE,
                 exact_divergence: Optional[bool] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """log q_σmin(z) per row, the latent log-likelihood by the probability-flow ODE (dsls.likelihood.ode_log_prob,
        one solve for all rows). x=images: of their codes E(x) (the keyword decides, never the shape). A density of
        latents, not of data: the decoder is deterministic. generator: the Hutchinson probe's above 16 dimensions
        (default: seed 0). Example: `lp = model.log_prob(x=images)`."""
        if (z is None) == (x is None):
            raise ConfigError("log_prob takes latents, model.log_prob(z), or data, model.log_prob(x=images): one")
        z = self.encode(x) if x is not None else z.to(self.device)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        lp, _ = ode_log_prob(self.score_fn(), z, self.ladder, rtol=rtol, atol=atol,
                             exact_divergence=exact_divergence, generator=g)
        return lp.detach()

    # -- anomaly detection (dsls.anomaly) -----------------------------------------------------------------------------
    anomaly_fit: Optional[AnomalyFit] = None  # the last fit_anomaly's: the typicality and combined scores use it

    def fit_anomaly(self, normal_x, parts=COMBINED_PARTS, batch_size: int = ANOMALY_BATCH) -> AnomalyFit:
        """Fit the typicality and combined anomaly scores on normal images only (e.g. held-out images of the classes
        the model was trained on); returns the fit (plain data: fit.to_dict()) and keeps it as model.anomaly_fit for
        anomaly_score. parts: what the combination takes (dsls.anomaly.PARTS).
        Example: `fit = model.fit_anomaly(normal_x)`."""
        self.anomaly_fit = fit_anomaly(self, self._images(normal_x, "fit_anomaly"), parts, batch_size)
        return self.anomaly_fit

    def anomaly_score(self, x, kind: str = DEFAULT_SCORE, fit: Optional[AnomalyFit] = None, sigma=None,
                      batch_size: int = ANOMALY_BATCH, seed: int = 0) -> torch.Tensor:
        """One anomaly score per image, (B,) float64 on the CPU, higher = more anomalous (dsls.anomaly): "recon",
        "nll" (the ODE; seed: its probe), "logit" (at sigma, default σ_min), "consistency", "typicality" or
        "combined" (the default; these two use `fit`, default model.anomaly_fit).
        Example: `s = model.anomaly_score(x, "recon")`."""
        x = self._images(x, "anomaly_score")
        fit = fit if fit is not None else self.anomaly_fit
        return torch.from_numpy(anomaly_score(self, x, kind, fit, sigma, batch_size, seed))

    # -- inverse problems ---------------------------------------------------------------------------------------------
    def dps(self, operator: Callable[[list], nn.Module], x, sampler: str = "langevin", seed: int = 0,
            scale: float = MEASUREMENT_SCALE, batch_size: Optional[int] = None, ladder: Optional[SigmaLadder] = None,
            **settings) -> Solution:
        """Latent DPS: row i of x is observed through the operator A = operator(rows) of its batch's rows (padded
        rows included, e.g. `lambda rows: Masking(mask[rows])`) as y = A(x[rows]), and the search adds
        −w·‖A(G(ẑ₀)) − y‖ to the score (dsls.guidance.Measurement). Sample i starts from (seed, i), so a result
        depends on its row and seed alone, never on the batch. The inverse tasks (dsls.tasks.inverse) call this.
        Example: `sol = model.dps(lambda rows: Luma(), x)`; sol.x, sol.z, sol.nfe."""
        chosen, ladder = make_sampler(sampler, settings), ladder or self.ladder
        x = torch.as_tensor(x, dtype=torch.float32).to(self.device)
        score, xs, zs, nfe = self.score_fn(), [], [], 0
        for idx in self._batches(len(x), batch_size or DPS_BATCH, f"{sampler}: batches of observations"):
            rows = pad_rows(idx)  # the rows sample_indices runs: the observations of its padding rows too
            op = operator(rows)
            term = Measurement(score, self.decode, op, op(x[rows]), scale)
            res, out = sample_indices(self, chosen, score, ladder, seed, idx, terms=lambda _rows: [term])
            xs.append(out.detach())
            zs.append(res.z.detach())
            nfe = max(nfe, res.nfe)
        return Solution(torch.cat(xs), torch.cat(zs), nfe)

    def _images(self, x, task: str) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32).to(self.device)
        if x.dim() < 2 or tuple(x.shape[1:]) != self.data_shape:
            shape = ", ".join(map(str, self.data_shape))
            raise ConfigError(f"{task} takes a batch of the model's data, shaped (B, {shape}); got {tuple(x.shape)}")
        return x

    def inpaint(self, x, mask, sampler: str = "langevin", seed: int = 0, scale: float = MEASUREMENT_SCALE,
                paste: bool = True, batch_size: Optional[int] = None, **settings) -> torch.Tensor:
        """The images x completed where mask is 0 (mask: 1 = known pixel, shaped like x; the unknown pixels of x are
        ignored), by latent DPS (dps). paste=True (the default) returns them with the observed pixels replaced by
        x's, exactly; paste=False returns the decoded search result as it is, which fits the observed pixels only
        approximately. Example: `out = model.inpaint(x, mask)`."""
        x = self._images(x, "inpaint")
        try:
            mask = torch.as_tensor(mask, dtype=x.dtype).to(x.device).expand_as(x)
        except RuntimeError:
            raise ConfigError(f"the mask, shaped {tuple(torch.as_tensor(mask).shape)}, must be shaped like x, "
                              f"{tuple(x.shape)} (1 = known pixel, 0 = to fill in)") from None
        sol = self.dps(lambda rows: Masking(mask[rows]), x, sampler, seed, scale, batch_size, **settings)
        return paste_back(sol.x, x, mask) if paste else sol.x

    def colorize(self, x, sampler: str = "langevin", seed: int = 0, scale: float = MEASUREMENT_SCALE,
                 batch_size: Optional[int] = None, **settings) -> torch.Tensor:
        """Colour images whose BT.601 luma is x's: x is RGB (its luma is what is observed) or one grey channel.
        Nothing is pasted back: no pixel is observed, only a weighted sum of its channels, which the result fits
        approximately. RGB models only. Example: `out = model.colorize(x)`."""
        if len(self.data_shape) != 3 or self.data_shape[0] != 3:
            raise TaskError(f"colorization needs a model of colour images; this one's data is {list(self.data_shape)}")
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.dim() == 4 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # a grey image's luma is itself (the weights sum to 1)
        x = self._images(x, "colorize")
        return self.dps(lambda rows: Luma(), x, sampler, seed, scale, batch_size, **settings).x

    # -- interpolation ------------------------------------------------------------------------------------------------
    def interpolate(self, x0, x1, steps: int = 9, sigma_top=SIGMA_TOP, rtol: float = TOLERANCE,
                    atol: float = TOLERANCE) -> torch.Tensor:
        """The DS-LS path from x0 to x1 in `steps` frames, (steps, *data_shape): both codes carried up the
        probability-flow ODE to σ_top, interpolated there ('max': a slerp at σ_max), and every point carried back
        down (dsls.interpolation). x0, x1 may be batches, (B, *data_shape) → (B, steps, *data_shape).
        Example: `path = model.interpolate(x0, x1, steps=9)`."""
        a, b = (torch.as_tensor(v, dtype=torch.float32).to(self.device) for v in (x0, x1))
        single = tuple(a.shape) == self.data_shape
        a, b = (a[None], b[None]) if single else (a, b)
        if a.shape != b.shape or tuple(a.shape[1:]) != self.data_shape or steps < 2:
            raise ConfigError(f"interpolate takes two data points (or batches) of shape {self.data_shape} and "
                              f"steps >= 2; got {tuple(a.shape)}, {tuple(b.shape)} and steps={steps}")
        path, _ = ode_path(self.score_fn(), self.encode(a), self.encode(b), steps, self.ladder, sigma_top, rtol, atol)
        with torch.no_grad():
            frames = self.decode(path.flatten(0, 1)).view(len(a), steps, *self.data_shape)
        return frames[0] if single else frames


def sampling_model(ckpt: Optional[str], flag: str = "--model.ckpt", dg_scale: Optional[float] = None):
    """What a search samples from: a LatentModel of a phase-2 or latent_score checkpoint, or the pixel_ncsn baseline's
    module. dg_scale: the discriminator-guidance weight of a phase-2 checkpoint that has it (None: its default)."""
    module = load_phase_module(ckpt, flag)
    if module.phase == "pixel_ncsn":
        if dg_scale is not None:
            raise TaskError(f"--model.dg_scale={dg_scale} weighs discriminator guidance, which a pixel_ncsn checkpoint "
                            "does not have: drop --model.dg_scale")
        return module
    return LatentModel(**latent_parts(module, dg_scale=dg_scale))


def load(path, device=None) -> LatentModel:
    """The LatentModel of a run folder (the phase-2 checkpoint its DONE stamp names, with the run's latent classifier
    attached when it has one), a search.ckpt (its checkpoint, classifier, σ-ladder overrides and DG weight), a phase-2
    checkpoint or a latent_score checkpoint (its score network as the prior); on `device` (None: the CPU).
    Example: `model = dsls.load("runs/toy/<run>")`."""
    source = resolve(path)
    model = LatentModel(**read_phase_2(source))
    if source.classifier:
        model = model.with_classifier(source.classifier)
    return model.to(device or "cpu")
