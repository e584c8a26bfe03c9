"""Phase 2: train the noise-conditional latent discriminator D(z, σ) (manual optimization).

posthoc: E and G are frozen; D alone learns the density ratio q_σ/p_σ.
joint (AAE): E, G also step, on reconstruction + adv_weight · BCE(D(E(x) + σε, σ), 0), so q moves toward p.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn.functional as F

from dsls.losses import dsm, ratio_bce
from dsls.nets import NoiseConditionalDiscriminator
from dsls.phases.base import LatentPhase, init_args, warmup_cosine
from dsls.phases.reconstruction import unpack
from dsls.score import LogRatio, Score, noised_prior, prior_score


@contextmanager
def _frozen(module: torch.nn.Module):
    """Run a module as a fixed function: gradients flow through it to its input, not into its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


class AdversarialModule(LatentPhase):
    phase = "adversarial"

    def __init__(
        self,
        autoencoder_ckpt: Optional[str] = None,
        mode: str = "posthoc",
        sigma_max: Optional[float] = None,
        sigma_min: float = LatentPhase.SIGMA_MIN,
        num_levels: int = LatentPhase.NUM_LEVELS,
        sigma_sampling: str = LatentPhase.SIGMA_SAMPLING,
        d_hidden: int = 256,
        d_depth: int = 3,
        d_embed_dim: int = 64,
        spectral_norm: bool = False,
        input_scaling: bool = True,
        lr_d: float = 2e-3,
        lr_ae: float = 1e-4,
        adv_weight: float = 0.1,
        score_matching_weight: float = 1.0,
        autoencoder: Optional[dict] = None,
    ):
        """sigma_max=None sets σ_max to the largest pairwise distance between codes at the start of fit.
        The defaults are the toy study's best recipe (README "Results"): σ low-biased, DSM weight 1.

        score_matching_weight > 0 adds a denoising-score-matching term on s(z, σ) built from D's logit
        (a regulariser that keeps ∇z logit D informative where BCE saturates); 0 is pure BCE.
        `autoencoder` is filled from autoencoder_ckpt and saved, so a phase-2 checkpoint stands alone.
        """
        super().__init__()
        if mode not in ("posthoc", "joint"):
            raise ValueError(f"--model.mode must be 'posthoc' or 'joint', got {mode!r}")
        self.mode = mode  # read by autoencoder_frozen inside _init_latent
        autoencoder = self._init_latent(autoencoder_ckpt, autoencoder, sigma_max)
        self.save_hyperparameters(init_args(locals()))
        self.automatic_optimization = False
        self.discriminator = NoiseConditionalDiscriminator(
            autoencoder["latent_dim"], d_hidden, d_depth, d_embed_dim, spectral_norm, input_scaling
        )

    @property
    def autoencoder_frozen(self) -> bool:
        return self.mode == "posthoc"

    def score_fn(self) -> Score:
        """s(z, σ) = ∇z [logit D(z, σ) + log p_σ(z)]."""
        return Score([LogRatio(self.discriminator), noised_prior])

    @property
    def latent_net(self) -> torch.nn.Module:
        return self.discriminator

    def _d_loss(self, zq: torch.Tensor, stage: str) -> torch.Tensor:
        D = self.discriminator
        zq_t, sq, nq = self.noisy(zq)
        zp_t, sp, _ = self.noisy(torch.randn_like(zq))
        if self.hparams.score_matching_weight > 0:
            zq_t.requires_grad_(True)
        lq, lp = D(zq_t, sq), D(zp_t, sp)
        loss = ratio_bce(lq, lp)
        self.log_dict({f"{stage}/d_loss": loss, f"{stage}/d_acc_q": (lq > 0).float().mean(),
                       f"{stage}/d_acc_p": (lp < 0).float().mean()}, prog_bar=True, on_epoch=True, on_step=stage == "train")
        if self.hparams.score_matching_weight > 0:
            (g,) = torch.autograd.grad(lq.sum(), zq_t, create_graph=True)
            s = g + prior_score(zq_t, sq)  # the latent score s(z̃, σ), with its prior term
            dsm_term = dsm(s, sq, nq)
            self.log(f"{stage}/dsm", dsm_term, on_epoch=True, on_step=stage == "train")
            loss = loss + self.hparams.score_matching_weight * dsm_term
        return loss

    def training_step(self, batch, batch_idx):
        """One backward per step, for DDP: every parameter that requires grad gets exactly one gradient.

        joint: the encoder's fool term runs D with its parameters' requires_grad off, so D's gradient comes from
        its own BCE alone and E, G's from recon + fool; then both optimizers step (simultaneous updates).
        posthoc: E, G require no grad at all, so DDP never registers them.
        """
        x = unpack(batch)
        opts = _as_list(self.optimizers())
        if self.hparams.mode == "joint":
            z = self.autoencoder.encode(x)
            recon = F.mse_loss(self.autoencoder.decode(z), x)
            z_t, s, _ = self.noisy(z)
            with _frozen(self.discriminator):
                fool = F.softplus(self.discriminator(z_t, s)).mean()  # E wants its codes labelled prior (0)
            loss = recon + self.hparams.adv_weight * fool + self._d_loss(z.detach(), "train")
            self.log_dict({"train/recon": recon, "train/fool": fool}, prog_bar=True)
        else:
            with torch.no_grad():
                z = self.autoencoder.encode(x)
            loss = self._d_loss(z, "train")
        for opt in opts:
            opt.zero_grad()
        self.manual_backward(loss)
        for opt in opts:
            opt.step()
        for sched in _as_list(self.lr_schedulers()):
            sched.step()

    def validation_step(self, batch, batch_idx):
        # `dsls validate` runs in inference mode (fit's validation only in no_grad), where the DSM term's autograd
        # is off: leave it, and clone the batch, which inference mode made a tensor autograd refuses to save.
        with torch.inference_mode(False):
            z = self.autoencoder.encode(unpack(batch).clone())
            with torch.enable_grad():  # the DSM term differentiates D
                self._d_loss(z, "val")
            with torch.no_grad():  # accuracy at each ladder level: where along the ladder D is weak
                for sigma in self.ladder.sigmas.tolist():
                    s = torch.full((len(z),), sigma, device=z.device)
                    lq = self.discriminator(z + sigma * torch.randn_like(z), s)
                    lp = self.discriminator(torch.randn_like(z) * math.sqrt(1 + sigma**2), s)
                    self.log_dict({f"val_sigma/acc_q@{sigma:.3g}": (lq > 0).float().mean(),
                                   f"val_sigma/acc_p@{sigma:.3g}": (lp < 0).float().mean()}, on_epoch=True)

    def configure_optimizers(self):
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_d, betas=(0.9, 0.99))
        opts = [opt_d]
        if self.hparams.mode == "joint":
            opts.append(torch.optim.Adam(self.autoencoder.parameters(), lr=self.hparams.lr_ae, betas=(0.5, 0.99)))
        # Cosine decay: D's small-σ detail is learned late, at low learning rates.
        scheds = [warmup_cosine(o, self) for o in opts]
        return opts, scheds
