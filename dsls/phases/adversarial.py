"""Phase 2: train the noise-conditional latent discriminator D(z, σ) (manual optimization).

posthoc: E and G are frozen; D alone learns the density ratio q_σ/p_σ, on codes encoded once (cache_codes).
joint (AAE): E, G also step, on reconstruction + adv_weight · BCE(D(E(x) + σε, σ), 0), so q moves toward p. The last
refit_steps then train D alone on the frozen final autoencoder's cached codes: a D that chased moving codes
describes stale ones, and the search needs the ratio of the codes it decodes.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn.functional as F

from dsls.data.loaders import unpack
from dsls.errors import ConfigError, PhaseCheckpointError
from dsls.losses import dsm, ratio_bce
from dsls.nets import NoiseConditionalDiscriminator
from dsls.noise import LATENT_LADDER
from dsls.phases.base import LatentPhase, init_args
from dsls.phases.schedules import cosine
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


class AdversarialModule(LatentPhase):
    phase = "adversarial"

    def __init__(
        self,
        autoencoder_ckpt: Optional[str] = None,
        mode: str = "posthoc",
        sigma_max: Optional[float] = None,
        sigma_min: float = LATENT_LADDER.sigma_min,
        num_levels: int = LATENT_LADDER.num_levels,
        sigma_sampling: str = LATENT_LADDER.sigma_sampling,
        d_hidden: int = 256,
        d_depth: int = 3,
        d_embed_dim: int = 64,
        spectral_norm: bool = False,
        input_scaling: bool = True,
        lr_d: float = 2e-3,
        lr_ae: float = 1e-4,
        adv_weight: float = 0.1,
        score_matching_weight: float = 1.0,
        refit_steps: Optional[int] = None,
        refit_from: str = "joint",
        refit_decoder: bool = True,
        d_steps_per_ae_step: int = 1,
        fool_min_sigma: float = 0.3,
        cache_codes: bool = True,
        autoencoder: Optional[dict] = None,
    ):
        """sigma_max=None sets σ_max to the largest pairwise distance between codes at the start of fit.
        The defaults are the toy study's best recipe (docs/results/recipe.md): σ low-biased, DSM weight 1.

        score_matching_weight > 0 adds a denoising-score-matching term on s(z, σ) built from D's logit
        (a regulariser that keeps ∇z logit D informative where BCE saturates); 0 is pure BCE.
        Joint mode only (docs/results/joint-mode.md has the measurements):
        - refit_steps: the last steps of training, in which the encoder is frozen (None: half of max_steps; 0: none);
        - refit_from: D refits from where joint training left it ('joint') or from a fresh init ('scratch');
        - refit_decoder: G refits to the frozen codes too (the game costs it precision: ring8's hq 0.99 -> 0.32);
        - d_steps_per_ae_step: D steps per E, G step (two time scales, beside lr_d and lr_ae);
        - fool_min_sigma: no fool term below this σ. E then matches p where noise blurs q into a smooth density, and
          leaves the structure near σ_min, which a deterministic encoder cannot spread, to D (grid25: hq 0.985
          against 0.922 with the fool term at every σ).
        cache_codes: train D on codes encoded once (posthoc and the refit) instead of encoding every batch.
        `autoencoder` is filled from autoencoder_ckpt and saved, so a phase-2 checkpoint stands alone.
        """
        super().__init__()
        if mode not in ("posthoc", "joint"):
            raise ConfigError(f"--model.mode must be 'posthoc' or 'joint', got {mode!r}")
        if mode == "posthoc" and refit_steps:
            raise ConfigError(f"--model.refit_steps={refit_steps} refits D after joint training; post-hoc D trains "
                              "on frozen codes from the start: drop it, or add --model.mode=joint")
        if refit_steps is not None and refit_steps < 0:
            raise ConfigError(f"--model.refit_steps={refit_steps} must be >= 0 (0: no refit)")
        if refit_from not in ("joint", "scratch"):
            raise ConfigError(f"--model.refit_from must be 'joint' or 'scratch', got {refit_from!r}")
        if d_steps_per_ae_step < 1:
            raise ConfigError(f"--model.d_steps_per_ae_step={d_steps_per_ae_step} must be >= 1")
        self.mode = mode  # read by autoencoder_frozen inside _init_latent
        self.refitting = False  # joint mode's last refit_steps (entered by training_step, also after a resume)
        self.codes: Optional[torch.Tensor] = None  # the refit's cached codes
        self.caches_codes = cache_codes  # posthoc and the refit: the frozen encoder runs once per example
        autoencoder = self._init_latent(autoencoder_ckpt, autoencoder, sigma_max)
        self.save_hyperparameters(init_args(locals()))
        self.automatic_optimization = False
        self.discriminator = NoiseConditionalDiscriminator(
            autoencoder["latent_dim"], d_hidden, d_depth, d_embed_dim, spectral_norm, input_scaling
        )

    @property
    def autoencoder_frozen(self) -> bool:
        return self.mode == "posthoc" or self.refitting

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self._trainer is not None and len(checkpoint.get("optimizer_states", [None])) != 1:
            raise PhaseCheckpointError("this phase-2 checkpoint comes from the joint mode before the D refit (two "
                                       "optimizers, two steps a batch) and cannot be resumed: start phase 2 again")

    def score_fn(self) -> Score:
        """s(z, σ) = ∇z [logit D(z, σ) + log p_σ(z)]."""
        return Score([LogRatio(self.discriminator), noised_prior])

    @property
    def latent_net(self) -> torch.nn.Module:
        return self.discriminator

    @property
    def joint_steps(self) -> int:
        """The steps in which E, G train with D; the refit follows (joint mode)."""
        if self.mode == "posthoc":
            return 0
        refit = self.hparams.refit_steps
        return self.total_steps - (self.total_steps // 2 if refit is None else min(refit, self.total_steps))

    def _d_loss(self, zq: torch.Tensor, stage: str) -> torch.Tensor:
        D = self.discriminator
        zq_t, sq, nq = self.noisy(zq)
        zp_t, sp, _ = self.noisy(torch.randn_like(zq))
        if self.hparams.score_matching_weight > 0:
            zq_t.requires_grad_(True)
        lq, lp = D(zq_t, sq), D(zp_t, sp)
        loss = ratio_bce(lq, lp)
        metrics = {f"{stage}/d_loss": loss, f"{stage}/d_acc_q": (lq > 0).float().mean(),
                   f"{stage}/d_acc_p": (lp < 0).float().mean()}
        if self.hparams.score_matching_weight > 0:
            (g,) = torch.autograd.grad(lq.sum(), zq_t, create_graph=True)
            s = g + prior_score(zq_t, sq)  # the latent score s(z̃, σ), with its prior term
            metrics[f"{stage}/dsm"] = dsm_term = dsm(s, sq, nq)
            loss = loss + self.hparams.score_matching_weight * dsm_term
        self._log(metrics, stage)
        return loss

    def _log(self, metrics: dict, stage: str) -> None:
        """Training metrics on the logger's steps (and the first and last) only: a self.log call costs about as much as
        a small D step."""
        if stage == "val":
            self.log_dict(metrics, prog_bar=True, on_epoch=True, sync_dist=True)  # the mean over every rank's batches
            return
        t, step = self.trainer, self.global_step + 1  # the step being taken
        every = t.log_every_n_steps
        if t.fast_dev_run or step == 1 or step >= self.total_steps or (every and step % every == 0):
            self.log_dict(metrics, prog_bar=True, on_step=True, on_epoch=False)

    def _start_refit(self) -> None:
        """Freeze E, G where joint training left them and cache their codes (again after a resume: the same weights
        give the same codes)."""
        self.refitting = True
        self.autoencoder.eval()  # its running code statistics stop moving too
        self.codes = self.encode_train_views() if self.caches_codes else None
        if self.hparams.refit_from == "scratch" and self.global_step == self.joint_steps:  # not again on a resume
            self._fresh_discriminator()
        self.print(f"step {self.global_step}: joint training done; refitting D on the frozen encoder's codes"
                   f"{' (and G to them)' if self.hparams.refit_decoder else ''} for {self.total_steps - self.joint_steps} "
                   "steps")

    def _refit_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(codes for D, G's reconstruction loss or None) of a refit step: D's rows from the cache (drawn per rank and
        step, so each rank gets its own and a resume the same), G's loss on this batch's frozen codes."""
        if self.codes is not None:
            g = torch.Generator().manual_seed(1_000_003 * self.global_rank + self.global_step)
            z = self.code_sample(self.codes[torch.randint(len(self.codes), (len(x),), generator=g)].to(self.device))
        if self.codes is None or self.hparams.refit_decoder:
            with torch.no_grad():
                zx = self.autoencoder.encode(x)
            z = zx if self.codes is None else z
        if not self.hparams.refit_decoder:
            return z, None
        recon = F.mse_loss(self.autoencoder.decode(zx), x)
        self._log({"train/recon": recon}, "train")
        return z, recon

    def _fresh_discriminator(self) -> None:
        """D's weights and Adam state as at the start of a post-hoc fit; its input scale read from the final codes. The
        new weights come from a fixed seed, off the global stream: the same on every DDP rank, and resumable."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.global_step)
            for m in self.discriminator.modules():
                if m is not self.discriminator and hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        opt = self.optimizers().optimizer
        for p in self.discriminator.parameters():
            opt.state.pop(p, None)
        if self.codes is not None:
            rows = torch.randperm(len(self.codes), generator=torch.Generator().manual_seed(0))[:2048]
            self.on_codes(self.codes[rows].to(self.device))

    def _joint_losses(self, x: torch.Tensor, ae_step: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes for D, E and G's loss): reconstruction + adv_weight · the fool term, which runs D with its parameters'
        requires_grad off, so D's gradient comes from its own BCE alone."""
        if not ae_step:
            with torch.no_grad():
                return self.autoencoder.encode(x), x.new_zeros(())
        z = self.autoencoder.encode(x)
        recon = F.mse_loss(self.autoencoder.decode(z), x)
        z_t, s, _ = self.noisy(z)
        with _frozen(self.discriminator):
            fool = F.softplus(self.discriminator(z_t, s))  # E wants its codes labelled prior (0)
        keep = (s >= self.hparams.fool_min_sigma).float()
        fool = (fool * keep).sum() / keep.sum().clamp(min=1)
        self._log({"train/recon": recon, "train/fool": fool}, "train")
        return z.detach(), recon + self.hparams.adv_weight * fool

    def training_step(self, batch, batch_idx):
        """One backward and one optimizer step per batch (D's and E, G's parameter groups), so global_step counts
        batches in both modes. Under DDP every parameter that requires grad gets exactly one gradient."""
        x = unpack(batch)
        opt, sched = self.optimizers(), self.lr_schedulers()
        ae_loss, ae_step = None, False
        if self.mode == "joint" and not self.refitting and self.global_step >= self.joint_steps:
            self._start_refit()
        frozen = []  # parameters that must not step this batch
        if self.mode == "posthoc" and self.batches_are_codes:
            z = self.code_sample(x)
        elif self.mode == "posthoc":
            with torch.no_grad():
                z = self.autoencoder.encode(x)
        elif self.refitting:
            z, ae_loss = self._refit_batch(x)
            frozen = list(self.autoencoder.encoder.parameters())
            frozen += [] if self.hparams.refit_decoder else list(self.autoencoder.decoder.parameters())
        else:
            ae_step = self.global_step % self.hparams.d_steps_per_ae_step == 0
            z, ae_loss = self._joint_losses(x, ae_step)
            frozen = [] if ae_step else list(self.autoencoder.parameters())
        loss = self._d_loss(z, "train") + (0.0 if ae_loss is None else ae_loss)
        if frozen and self.trainer.world_size > 1:
            # DDP waits for a gradient of every parameter it registered (E, G's too): give them zeros, dropped below
            loss = loss + sum(p.sum() for p in frozen) * 0.0
        opt.zero_grad()
        self.manual_backward(loss)
        for p in frozen:
            p.grad = None  # Adam skips a parameter without a gradient (its momentum would move it otherwise)
        opt.step()
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
                                   f"val_sigma/acc_p@{sigma:.3g}": (lp < 0).float().mean()}, on_epoch=True,
                                  sync_dist=True)

    def configure_optimizers(self):
        """One Adam, a parameter group each for D and (joint) E, G; the schedule is read lazily, as total_steps is
        known only at the start of fit. D decays to 0 by the end of joint training and again over the refit."""
        groups = [{"params": self.discriminator.parameters(), "lr": self.hparams.lr_d, "betas": (0.9, 0.99)}]
        d_lr = lambda step: cosine(step, 0, self.total_steps)  # noqa: E731
        lambdas = [d_lr]
        if self.mode == "joint":  # one cosine over the joint steps, another over the refit (G's too, if it refits)
            groups.append({"params": self.autoencoder.parameters(), "lr": self.hparams.lr_ae, "betas": (0.5, 0.99)})
            d_lr = lambda step: cosine(step, *((0, self.joint_steps) if step < self.joint_steps  # noqa: E731
                                               else (self.joint_steps, self.total_steps - self.joint_steps)))
            refits_g = self.hparams.refit_decoder
            lambdas = [d_lr, lambda step: d_lr(step) if refits_g or step < self.joint_steps else 0.0]
        opt = torch.optim.Adam(groups)
        return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, lambdas)]
