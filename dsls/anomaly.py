"""Anomaly scores of a trained latent model, each "higher = more anomalous", and what is fitted on normal images.

    recon           ‖x − G(E(x))‖²: the autoencoder's reconstruction error
    recon_complexity ‖x − G(E(x))‖² / L(x), L(x) the bytes of x's PNG encoding: reconstruction error per unit of input
                    complexity (Serrà et al. 2020's correction; simple images, e.g. a held-out 1, no longer look
                    normal for being easy to reconstruct). Images only. The task's default score
    nll             −log q_σmin(E(x)) by the probability-flow ODE (model.log_prob): the exact latent NLL, the slow one
    logit_sigma<σ>  −logit D(E(x), σ) at σ_min, the ladder's middle level and σ_max (e.g. logit_sigma0.03)
    consistency     ‖E(G(E(x))) − E(x)‖: how far a code moves when decoded and encoded again
    typicality      −log p(ℓ(x)), ℓ(x) the vector of D's logits at every level of the ladder and p a Gaussian mixture
                    fitted on normal images' vectors (multi-σ typicality: too typical is flagged as well as too rare)
    combined        Fisher's method over the parts (default recon and typicality): each part standardised as on normal
                    images (recon on the log scale) and read as a one-sided Gaussian tail, −Σ_k log P(Z ≥ z_k)

fit_anomaly(model, normal_x) fits typicality's mixture and the combination's standardisation on normal images only
(never an anomaly) and returns an AnomalyFit of plain numbers (anomaly.json); compute_scores scores images in batches
with a progress bar and times each score. Which parts the combination takes, and why, is measured in
docs/anomaly-detection.md. `model` is duck-typed: encode, decode, logit(z, σ), log_prob(x=...), a `ladder`,
`latent_shape` and `device` (a dsls.model.LatentModel). A prior without a logit (a score network: model.logit raises
TaskError) has no logit or typicality score; the combination then takes the parts it can compute. Layer 3: nothing
here imports dsls.model or above; LatentModel.anomaly_score and the anomaly task (dsls.tasks.anomaly) call this.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from scipy.special import log_ndtr, logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from dsls.errors import ConfigError, TaskError
from dsls.progress import progress

KINDS = ("recon", "recon_complexity", "nll", "logit", "consistency", "typicality", "combined")
DEFAULT_KINDS = tuple(k for k in KINDS if k != "nll")  # the task's: all but the slow ODE NLL
DEFAULT_SCORE = "recon_complexity"  # the headline score, fixed before any scoring (measured: docs/anomaly-detection.md)
PARTS = ("recon", "recon_complexity", "consistency", "logit", "typicality")  # a combination's (logit: at σ_min)
COMBINED_PARTS = ("recon", "typicality")  # the default combination (measured on digits: docs/anomaly-detection.md)
LOG_PARTS = ("recon", "recon_complexity", "consistency")  # positive, skewed: standardised on the log scale
NEEDS_LOGIT = ("logit", "typicality")
PNG_LEVEL = 9  # zlib level of the PNG encoding that measures input complexity
BATCH = 500  # images per batch of every score
MIXTURE_COMPONENTS = 3  # typicality's Gaussian mixture (fewer when there are few normal images)
ROWS_PER_DIM = 4  # a mixture component needs at least this many normal rows per dimension of the logit vector
REG_COVAR = 1e-3  # added to the diagonal of the mixture's covariances (of standardised logits)
FOLDS = 2  # the combination sees normal images' typicality from mixtures fitted without them


def sigma_label(sigma: float) -> str:
    """σ as score names spell it: two significant digits, no exponent, no trailing zeros (0.03, 0.45, 13)."""
    return np.format_float_positional(float(f"{float(sigma):.2g}"), trim="-")


def logit_name(sigma: float) -> str:
    return f"logit_sigma{sigma_label(sigma)}"


def logit_sigmas(ladder) -> list[float]:
    """The σ's of the logit scores: σ_min, the ladder's middle level and σ_max (fewer for a shorter ladder)."""
    sig = ladder.sigmas.tolist()
    picked = [sig[-1], sig[len(sig) // 2], sig[0]]
    return [s for i, s in enumerate(picked) if s not in picked[:i]]


def has_logit(model) -> bool:
    """Whether the model's prior gives logit D(z, σ): a score-network prior raises TaskError."""
    try:
        model.logit(torch.zeros(1, *model.latent_shape, device=model.device), model.ladder.sigma_min)
    except TaskError:
        return False
    return True


def unavailable(model, x) -> dict:
    """{kind: why} of the kinds this model and data cannot give: logit and typicality without a logit (a score-network
    prior), recon_complexity for data that are not images."""
    out = {}
    if not has_logit(model):
        out.update({k: "the model's prior has no logit" for k in NEEDS_LOGIT})
    if not is_image_batch(torch.as_tensor(x[:1])):
        out["recon_complexity"] = "the data are not images (input complexity compresses images)"
    return out


def _drop_unavailable(kinds: list, missing: dict, skip: bool, what: str) -> list:
    """kinds without those `missing` names: a TaskError naming why, or with skip a note per reason."""
    gone = [k for k in kinds if k in missing]
    if gone and not skip:
        raise TaskError(f"the {', '.join(gone)} score cannot be computed here: {missing[gone[0]]}; use "
                        f"{', '.join(k for k in KINDS if k not in missing)}")
    for reason in dict.fromkeys(missing[k] for k in gone):
        print(f"note: {reason}: {what} leave(s) out {', '.join(k for k in gone if missing[k] == reason)}", flush=True)
    return [k for k in kinds if k not in missing]


def check_kinds(kinds: Sequence[str]) -> list[str]:
    """The kinds as a list; an unknown one is a ConfigError naming the valid ones."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ConfigError(f"unknown anomaly score {', '.join(map(repr, bad)) or '(none given)'}; valid: "
                          f"{', '.join(KINDS)}")
    return kinds


def score_names(model, kinds: Sequence[str]) -> list[str]:
    """The score names `kinds` give on this model (logit: one logit_sigma<σ> per logit_sigmas), in order."""
    names = []
    for kind in check_kinds(kinds):
        names += [logit_name(s) for s in logit_sigmas(model.ladder)] if kind == "logit" else [kind]
    return names


# -- the scores of a batch ---------------------------------------------------------------------------------------------
def _images(model, x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32).to(model.device)


@torch.no_grad()
def recon_error(model, x) -> torch.Tensor:
    """‖x − G(E(x))‖² per image, summed over pixels."""
    x = _images(model, x)
    return (x - model.decode(model.encode(x))).flatten(1).pow(2).sum(1)


@torch.no_grad()
def consistency_error(model, x) -> torch.Tensor:
    """‖E(G(E(x))) − E(x)‖ per image."""
    z = model.encode(_images(model, x))
    return (model.encode(model.decode(z)) - z).flatten(1).norm(dim=1)


@torch.no_grad()
def logit_profile(model, x, sigmas: Sequence[float]) -> torch.Tensor:
    """logit D(E(x), σ) at each σ of `sigmas`, (B, len(sigmas))."""
    z = model.encode(_images(model, x))
    return torch.stack([model.logit(z, float(s)) for s in sigmas], 1)


def is_image_batch(x) -> bool:
    """Whether x is a batch of grey, RGB or RGBA images (B, C, H, W), which PNG can encode."""
    return x.dim() == 4 and x.shape[1] in (1, 3, 4)


def input_complexity(x) -> torch.Tensor:
    """L(x): the bytes of each image's lossless PNG encoding at 8 bits per channel (PIL, zlib level PNG_LEVEL), images
    in [-1, 1]; a compressor's measure of how complex an image is (Serrà et al. 2020)."""
    from io import BytesIO

    from PIL import Image

    x = torch.as_tensor(x, dtype=torch.float32)
    if not is_image_batch(x):
        raise TaskError(f"input complexity compresses images (B, 1|3|4, H, W); this data is shaped {list(x.shape[1:])}")
    u = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for img in u:
        buf = BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG", compress_level=PNG_LEVEL)
        sizes.append(buf.tell())
    return torch.tensor(sizes, dtype=torch.float64)


def recon_per_complexity(model, x) -> torch.Tensor:
    """‖x − G(E(x))‖² / L(x) per image."""
    return recon_error(model, x).double().cpu() / input_complexity(x)


def neg_log_prob(model, x, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """−log q_σmin(E(x)) per image, by the probability-flow ODE (one solve per batch)."""
    return -model.log_prob(x=_images(model, x), generator=generator)


class Scorer:
    """Raw per-image quantities of a set of images, each computed once in batches (with a progress bar) and timed:
    raw(name, fn) → (float64 array, seconds per 1,000 images); fn(batch, batch number) gives one batch's values."""

    def __init__(self, x, batch_size: int = BATCH, what: str = "anomaly score"):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.batch_size, self.what = torch.as_tensor(x, dtype=torch.float32), int(batch_size), what
        self.cache: dict[str, tuple[np.ndarray, float]] = {}

    def raw(self, name: str, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> tuple[np.ndarray, float]:
        if name not in self.cache:
            t0, batches = time.perf_counter(), self.x.split(self.batch_size)
            parts = [fn(b, i).detach().double().cpu() for i, b in
                     enumerate(progress(batches, desc=f"{self.what} {name}", unit="batch"))]
            values = torch.cat(parts).numpy() if parts else np.zeros((0,))
            self.cache[name] = (values, (time.perf_counter() - t0) * 1000.0 / max(len(self.x), 1))
        return self.cache[name]


# -- fitted densities, as plain data ---------------------------------------------------------------------------------
def fit_mixture(v: np.ndarray, components: int = MIXTURE_COMPONENTS) -> dict:
    """A Gaussian mixture (sklearn, full covariances, seeded) of the standardised rows of v, as plain lists."""
    center, scale = v.mean(0), v.std(0) + 1e-8
    k = max(1, min(components, len(v) // (ROWS_PER_DIM * v.shape[1])))
    gm = GaussianMixture(k, covariance_type="full", reg_covar=REG_COVAR, random_state=0).fit((v - center) / scale)
    return {"center": center.tolist(), "scale": scale.tolist(), "weights": gm.weights_.tolist(),
            "means": gm.means_.tolist(), "covariances": gm.covariances_.tolist()}


def mixture_log_density(params: dict, v: np.ndarray) -> np.ndarray:
    """log p(v) per row under a fit_mixture (of the standardised rows: the same constant off for every row)."""
    u = (v - np.asarray(params["center"])) / np.asarray(params["scale"])
    comps = [np.log(w) + multivariate_normal(m, np.asarray(c)).logpdf(u).reshape(len(u))
             for w, m, c in zip(params["weights"], params["means"], params["covariances"])]
    return logsumexp(np.stack(comps), axis=0)


@dataclass
class AnomalyFit:
    """What fit_anomaly learned from normal images, as plain data (anomaly.json):
    typicality  the σ's of the logit vector and the Gaussian mixture of its standardised values (None: no logit);
    combined    its parts, and each part's center and scale on normal images (of the log for recon, recon_complexity and consistency);
    logit_sigma the σ of the combination's logit part (σ_min); n_normal: how many normal images it saw."""

    typicality: Optional[dict]
    combined: dict
    logit_sigma: float
    n_normal: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AnomalyFit":
        return cls(**{k: d[k] for k in ("typicality", "combined", "logit_sigma", "n_normal")})


def _logits(model, scorer: Scorer, sigmas: Sequence[float]) -> tuple[np.ndarray, float]:
    return scorer.raw("logits over the ladder", lambda b, _: logit_profile(model, b, sigmas))


def _part(model, scorer: Scorer, part: str, fit: Optional[AnomalyFit],
          logit_sigma: float) -> tuple[np.ndarray, float]:
    """A combination part's values (as its score gives them) and its seconds per 1,000 images."""
    if part == "recon":
        return scorer.raw("recon", lambda b, _: recon_error(model, b))
    if part == "recon_complexity":
        return scorer.raw("recon_complexity", lambda b, _: recon_per_complexity(model, b))
    if part == "consistency":
        return scorer.raw("consistency", lambda b, _: consistency_error(model, b))
    if part == "logit":
        return scorer.raw(logit_name(logit_sigma), lambda b, _: -logit_profile(model, b, [logit_sigma])[:, 0])
    logits, seconds = _logits(model, scorer, fit.typicality["sigmas"])  # typicality
    t0 = time.perf_counter()
    return -mixture_log_density(fit.typicality, logits), seconds + (time.perf_counter() - t0) * 1000 / len(logits)


def _standardise(part: str, v: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(v, 1e-30)) if part in LOG_PARTS else v


def fit_anomaly(model, normal_x, parts: Sequence[str] = COMBINED_PARTS, batch_size: int = BATCH) -> AnomalyFit:
    """Fit typicality's mixture and the combination of `parts` (from PARTS) on normal images only, e.g. the
    validation split without the anomaly classes. Deterministic: the same images give the same numbers, bit for bit.
    Parts this model or data cannot give (unavailable) are left out, with a note."""
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ConfigError(f"unknown combination part {', '.join(map(repr, bad)) or '(none given)'}; valid: "
                          f"{', '.join(PARTS)}")
    normal_x = torch.as_tensor(normal_x, dtype=torch.float32)
    if len(normal_x) < 4 * FOLDS:
        raise ConfigError(f"fit_anomaly needs at least {4 * FOLDS} normal images, got {len(normal_x)}: raise "
                          "--data.val_fraction, or add images of the normal classes")
    scorer, logit_sigma = Scorer(normal_x, batch_size, "anomaly fit:"), float(model.ladder.sigma_min)
    missing = unavailable(model, normal_x)
    parts, typicality = _drop_unavailable(list(parts), missing, True, "the combination") or ["recon"], None
    if "typicality" not in missing:
        sigmas = model.ladder.sigmas.tolist()
        logits, _ = _logits(model, scorer, sigmas)
        typicality = {"sigmas": sigmas, **fit_mixture(logits)}
    values = []
    for p in parts:
        v = _out_of_fold_typicality(logits) if p == "typicality" else _part(model, scorer, p, None, logit_sigma)[0]
        values.append(_standardise(p, v))
    values = np.stack(values, 1)
    combined = {"parts": parts, "center": values.mean(0).tolist(), "scale": (values.std(0) + 1e-12).tolist()}
    return AnomalyFit(typicality, combined, logit_sigma, int(len(normal_x)))


def _out_of_fold_typicality(logits: np.ndarray) -> np.ndarray:
    """Each normal row's typicality under a mixture fitted on the other folds (fold f: rows i ≡ f mod FOLDS): the
    combination must see typicality as unseen images get it, not as the rows the mixture was fitted on do."""
    out, fold = np.empty(len(logits)), np.arange(len(logits)) % FOLDS
    for f in range(FOLDS):
        out[fold == f] = -mixture_log_density(fit_mixture(logits[fold != f]), logits[fold == f])
    return out


def combine(fit: AnomalyFit, values: dict) -> np.ndarray:
    """Fisher's method: −Σ_k log P(Z ≥ z_k), z_k part k standardised as on normal images (a one-sided Gaussian tail:
    a part far above normal adds about z²/2, one at or below normal about nothing)."""
    c = fit.combined
    z = [(_standardise(p, values[p]) - m) / s for p, m, s in zip(c["parts"], c["center"], c["scale"])]
    return -np.sum([log_ndtr(-v) for v in z], axis=0)


# -- every score of a set of images ------------------------------------------------------------------------------------
def compute_scores(model, x, kinds: Sequence[str] = DEFAULT_KINDS, fit: Optional[AnomalyFit] = None,
                   batch_size: int = BATCH, seed: int = 0, skip_unavailable: bool = False) -> tuple[dict, dict]:
    """({score name: float64 array}, {score name: seconds per 1,000 images}) of images x. combined's seconds include
    its parts'. seed: the NLL's Hutchinson probe (above 16 latent dimensions), per batch. A kind this model or data
    cannot give (unavailable) is a TaskError, or left out with a note when skip_unavailable (the task)."""
    kinds = _drop_unavailable(check_kinds(kinds), unavailable(model, x), skip_unavailable, "the scores")
    needs_fit = [k for k in kinds if k in ("typicality", "combined")]
    if needs_fit and fit is None:
        raise ConfigError(f"the {', '.join(needs_fit)} score is fitted on normal images first: "
                          "fit = model.fit_anomaly(normal_x), then model.anomaly_score(x, kind, fit=fit)")
    scorer, scores, seconds = Scorer(x, batch_size), {}, {}
    nll_generator = lambda i: torch.Generator().manual_seed(seed * 1_000_003 + i)  # noqa: E731
    for kind in kinds:
        if kind == "nll":
            scores[kind], seconds[kind] = scorer.raw("nll", lambda b, i: neg_log_prob(model, b, nll_generator(i)))
        elif kind == "logit":
            for s in logit_sigmas(model.ladder):
                scores[logit_name(s)], seconds[logit_name(s)] = _part(model, scorer, "logit", fit, s)
        elif kind != "combined":  # recon, recon_complexity, consistency, typicality
            scores[kind], seconds[kind] = _part(model, scorer, kind, fit, model.ladder.sigma_min)
        else:
            values, total = {}, 0.0
            for p in fit.combined["parts"]:
                values[p], t = _part(model, scorer, p, fit, fit.logit_sigma)
                total += t
            t0 = time.perf_counter()
            scores[kind] = combine(fit, values)
            seconds[kind] = total + (time.perf_counter() - t0) * 1000.0 / max(len(scorer.x), 1)
    return scores, seconds


def anomaly_score(model, x, kind: str = DEFAULT_SCORE, fit: Optional[AnomalyFit] = None, sigma=None,
                  batch_size: int = BATCH, seed: int = 0) -> np.ndarray:
    """One score (a kind of KINDS) per image of x; the logit score at `sigma` (default σ_min), the others without."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"unknown anomaly score kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind != "logit":
        if sigma is not None:
            raise ConfigError(f"sigma={sigma} is the logit score's σ; the {kind} score takes none")
        return compute_scores(model, x, [kind], fit, batch_size, seed)[0][kind]
    _drop_unavailable([kind], unavailable(model, x), False, "the scores")
    s = float(model.ladder.sigma_min if sigma is None else sigma)
    return _part(model, Scorer(x, batch_size), "logit", fit, s)[0]
