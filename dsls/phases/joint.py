"""Phase 2's joint (AAE) mode: E and G train beside D, then D (and G) refit on the frozen encoder's codes.

The game: E, G step on reconstruction + adv_weight · BCE(D(E(x) + σε, σ), 0), so the codes' distribution q moves toward
the prior p while D learns the ratio q_σ/p_σ. The last refit_steps then freeze E where the game left it and train D
alone on its cached codes: a D that chased moving codes describes stale ones, and the search needs the ratio of the
codes it decodes. G refits to the frozen codes too (refit_decoder). docs/results/joint-mode.md has the measurements.

`--model.mode=joint` on dsls.phases.adversarial.AdversarialModule selects it: the module builds a JointGame and hands it
each training batch. The module keeps D's loss, the one optimizer and the checkpoint, so a joint run's checkpoint is
an AdversarialModule's like a post-hoc one; the game holds no weights, and its state (which part of the fit this is,
the refit's cached codes) follows from the step and the weights, so a resume rebuilds it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn.functional as F

from dsls.phases.base import LatentPhase
from dsls.phases.schedules import cosine


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


class JointGame:
    """The joint steps and the refit of one AdversarialModule (`module`), whose E, G, D, settings (hparams) and step
    count it uses. Every step is one backward and one optimizer step (module.step_optimizer), so global_step counts
    batches as in post-hoc mode; the parameters that must not move on a step are passed as `frozen`."""

    def __init__(self, module: LatentPhase):
        self.module = module
        self.refitting = False  # the last refit_steps: entered by training_step, also after a resume
        self.codes: Optional[torch.Tensor] = None  # the refit's cached codes (cache_codes)

    @property
    def joint_steps(self) -> int:
        """The steps in which E, G train with D; the refit takes the rest."""
        m = self.module
        refit = m.hparams.refit_steps
        return m.total_steps - (m.total_steps // 2 if refit is None else min(refit, m.total_steps))

    def param_groups(self) -> tuple[list[dict], list]:
        """(Adam's parameter groups, their LR factors): D's group (as post hoc) and E, G's, each on one cosine over the
        joint steps and another over the refit; G's factor is 0 in the refit unless G refits."""
        m = self.module
        groups = [m.discriminator_group(),
                  {"params": m.autoencoder.parameters(), "lr": m.hparams.lr_ae, "betas": (0.5, 0.99)}]

        def d_lr(step: int) -> float:
            joint = self.joint_steps  # read at each step: total_steps is known only at the start of fit
            return cosine(step, 0, joint) if step < joint else cosine(step, joint, m.total_steps - joint)

        def g_lr(step: int) -> float:
            return d_lr(step) if m.hparams.refit_decoder or step < self.joint_steps else 0.0

        return groups, [d_lr, g_lr]

    def training_step(self, x: torch.Tensor) -> None:
        if not self.refitting and self.module.global_step >= self.joint_steps:
            self._start_refit()
        if self.refitting:
            self._refit_step(x)
        else:
            self._game_step(x)

    # -- the game ----------------------------------------------------------------------------------------------------
    def _game_step(self, x: torch.Tensor) -> None:
        """D's BCE (+ DSM) and, every d_steps_per_ae_step-th step, E and G's loss: reconstruction + adv_weight · the
        fool term, which runs D with its parameters' requires_grad off: D's gradient comes from its own loss alone."""
        m = self.module
        if m.global_step % m.hparams.d_steps_per_ae_step != 0:  # a D-only step: E and G stay where they are
            with torch.no_grad():
                z = m.autoencoder.encode(x)
            m.step_optimizer(m.d_loss(z, "train"), frozen=list(m.autoencoder.parameters()))
            return
        z = m.autoencoder.encode(x)
        recon = F.mse_loss(m.autoencoder.decode(z), x)
        z_t, s, _ = m.noisy(z)
        with _frozen(m.discriminator):
            fool = F.softplus(m.discriminator(z_t, s))  # E wants its codes labelled prior (0)
        keep = (s >= m.hparams.fool_min_sigma).float()  # no fool term below fool_min_sigma (see AdversarialModule)
        fool = (fool * keep).sum() / keep.sum().clamp(min=1)
        m.log_train({"train/recon": recon, "train/fool": fool})
        ae_loss = recon + m.hparams.adv_weight * fool
        m.step_optimizer(m.d_loss(z.detach(), "train") + ae_loss)

    # -- the refit ---------------------------------------------------------------------------------------------------
    def _start_refit(self) -> None:
        """Freeze E, G where the game left them and cache their codes (again after a resume: the same weights give the
        same codes)."""
        m = self.module
        self.refitting = True
        m.autoencoder.eval()  # its running code statistics stop moving too
        self.codes = m.encode_train_views() if m.caches_codes else None
        if m.hparams.refit_from == "scratch" and m.global_step == self.joint_steps:  # not again on a resume
            self._fresh_discriminator()
        m.print(f"step {m.global_step}: joint training done; refitting D on the frozen encoder's codes"
                f"{' (and G to them)' if m.hparams.refit_decoder else ''} for {m.total_steps - self.joint_steps} steps")

    def _refit_step(self, x: torch.Tensor) -> None:
        """D on the frozen codes: rows of the cache, drawn per rank and step (each rank gets its own, a resume the
        same), or this batch's codes without a cache; G on this batch's frozen codes, if it refits. E never steps."""
        m, refit_decoder = self.module, self.module.hparams.refit_decoder
        if self.codes is not None:
            g = torch.Generator().manual_seed(1_000_003 * m.global_rank + m.global_step)
            z = m.code_sample(self.codes[torch.randint(len(self.codes), (len(x),), generator=g)].to(m.device))
        if self.codes is None or refit_decoder:
            with torch.no_grad():
                zx = m.autoencoder.encode(x)  # this batch's frozen codes
            if self.codes is None:
                z = zx
        frozen = list(m.autoencoder.encoder.parameters())
        if not refit_decoder:
            m.step_optimizer(m.d_loss(z, "train"), frozen + list(m.autoencoder.decoder.parameters()))
            return
        recon = F.mse_loss(m.autoencoder.decode(zx), x)
        m.log_train({"train/recon": recon})
        m.step_optimizer(m.d_loss(z, "train") + recon, frozen)

    def _fresh_discriminator(self) -> None:
        """D's weights and Adam state as at the start of a post-hoc fit; its input scale read from the final codes. The
        new weights come from a fixed seed, off the global stream: the same on every DDP rank, and resumable."""
        m = self.module
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(m.global_step)
            for layer in m.discriminator.modules():
                if layer is not m.discriminator and hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        opt = m.optimizers().optimizer
        for p in m.discriminator.parameters():
            opt.state.pop(p, None)
        if self.codes is not None:
            rows = torch.randperm(len(self.codes), generator=torch.Generator().manual_seed(0))[:2048]
            m.on_codes(self.codes[rows].to(m.device))
