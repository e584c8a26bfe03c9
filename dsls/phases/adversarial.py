"""Phase 2: train the noise-conditional latent discriminator D(z, σ) (manual optimization).

Post hoc (the default, and the case this module reads as): E and G are frozen; D alone learns the density ratio
q_σ/p_σ of the codes against the prior, on codes encoded once (cache_codes: LatentPhase.train_dataloader serves them).
Joint (AAE) mode (`mode: joint`): E, G train beside D, then D refits on the frozen final codes; the module hands those
steps to a JointGame (dsls.phases.joint) and keeps D's loss, the optimizer and the checkpoint, which are the same in
both modes.

Two peers of DS-LS are settings of this phase, not copies of it:
- NCP-VAE (Aneja et al. 2021), `noise_conditional: false`: D learns codes against prior draws at σ_min alone, so its σ
  input is a constant (an unconditioned D), and its ladder is the one level σ_min: a search is Langevin at σ_min.
- Discriminator guidance (Kim et al. 2023), `fake_ckpt: <a latent_score checkpoint>`: D_g learns codes against samples
  of that checkpoint's score network s_θ (dsls.phases.fakes) instead of prior draws, both noised on the ladder; at its
  optimum ∇z logit D_g = ∇z log q_σ − ∇z log p^θ_σ corrects s_θ, and s_θ travels in this checkpoint (fake_score_net).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from dsls.data.codes import train_views
from dsls.data.loaders import unpack
from dsls.errors import ConfigError, PhaseCheckpointError
from dsls.losses import dsm, ratio_bce
from dsls.nets import NoiseConditionalDiscriminator
from dsls.noise import LATENT_LADDER, SigmaLadder
from dsls.phases.base import LATENT_NET, LatentPhase, init_args
from dsls.phases.fakes import check_same_autoencoder, fake_score_net, read_fake_checkpoint, timed_fakes
from dsls.phases.joint import JointGame
from dsls.phases.schedules import cosine
from dsls.score import LogRatio, Score, noised_prior, prior_score

Noisy = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # z -> (z + σε, σ, ε)


def ratio_loss(discriminator: Callable, noisy: Noisy, zq: torch.Tensor,
               fakes: Callable[[torch.Tensor], torch.Tensor] = torch.randn_like,
               score_matching_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """D's loss: BCE of the codes zq (label 1) against fakes(zq) (label 0: prior draws N(0, I) by default, or
    discriminator guidance's samples of s_θ), each noised by `noisy`. Its optimum is logit D(z, σ) = log q_σ(z) −
    log f_σ(z), f the fakes' distribution. score_matching_weight > 0 adds the DSM term on the score D implies,
    ∇z logit D + ∇z log p_σ, which is the codes' score only when the fakes are prior draws.
    Returns (loss, metrics without their stage prefix)."""
    zq_t, sq, nq = noisy(zq)
    zp_t, sp, _ = noisy(fakes(zq))
    if score_matching_weight > 0:
        zq_t.requires_grad_(True)
    lq, lp = discriminator(zq_t, sq), discriminator(zp_t, sp)
    loss = ratio_bce(lq, lp)
    metrics = {"d_loss": loss, "d_acc_q": (lq > 0).float().mean(), "d_acc_p": (lp < 0).float().mean()}
    if score_matching_weight > 0:
        (g,) = torch.autograd.grad(lq.sum(), zq_t, create_graph=True)
        s = g + prior_score(zq_t, sq)  # the latent score s(z̃, σ), with its prior term
        metrics["dsm"] = dsm_term = dsm(s, sq, nq)
        loss = loss + score_matching_weight * dsm_term
    return loss, metrics


class AdversarialModule(LatentPhase):
    phase = "adversarial"

    def __init__(
        self,
        autoencoder_ckpt: Optional[str] = None,
        fake_ckpt: Optional[str] = None,
        mode: str = "posthoc",
        noise_conditional: bool = True,
        sigma_max: Optional[float] = None,
        sigma_min: float = LATENT_LADDER.sigma_min,
        num_levels: int = LATENT_LADDER.num_levels,
        sigma_sampling: str = LATENT_LADDER.sigma_sampling,
        d_hidden: int = LATENT_NET.hidden,
        d_depth: int = LATENT_NET.depth,
        d_embed_dim: int = LATENT_NET.embed_dim,
        spectral_norm: bool = False,
        input_scaling: bool = True,
        lr_d: float = LATENT_NET.lr,
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
        fake_net: Optional[dict] = None,
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
        noise_conditional=False: NCP-VAE's D, trained at σ = σ_min alone (post hoc), its ladder the one level σ_min.
        fake_ckpt: None trains D against prior draws (DS-LS); a latent_score checkpoint on the same autoencoder trains
        discriminator guidance's D_g against its score network's samples (dsls.phases.fakes), by plain BCE as Kim et
        al. do (score_matching_weight=0: the DSM term needs the fakes' score in closed form). σ_max=None then takes
        s_θ's. `fake_net` is filled from it and saved, and s_θ's weights are in this checkpoint (fake_score_net).
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
        _check_peer(mode, noise_conditional, fake_ckpt or fake_net, score_matching_weight)
        _fake_weights = None  # s_θ's weights, read from fake_ckpt (not from this phase's own checkpoint)
        if fake_net is None and fake_ckpt is not None:
            fake_net, _fake_weights, _fake_ae = read_fake_checkpoint(fake_ckpt)
            sigma_max = fake_net["sigma_max"] if sigma_max is None else sigma_max  # s_θ's ladder, D_g's too
            _ae_state_known = autoencoder is None  # loaded below from autoencoder_ckpt, so comparable
        self.joint = JointGame(self) if mode == "joint" else None  # read by autoencoder_frozen inside _init_latent
        self.caches_codes = cache_codes  # posthoc and the refit: the frozen encoder runs once per example
        autoencoder = self._init_latent(autoencoder_ckpt, autoencoder, sigma_max)
        if _fake_weights is not None and _ae_state_known:
            check_same_autoencoder(_fake_ae, self.autoencoder, fake_ckpt, autoencoder_ckpt)
        self.save_hyperparameters(init_args(locals()))
        self.automatic_optimization = False
        self.discriminator = NoiseConditionalDiscriminator(
            autoencoder["latent_dim"], d_hidden, d_depth, d_embed_dim, spectral_norm, input_scaling
        )
        # discriminator guidance's s_θ (frozen, saved in the state_dict), or None: D learns against prior draws
        self.fake_score_net = None if fake_net is None else fake_score_net(fake_net, _fake_weights)
        self.fakes: Optional[torch.Tensor] = None  # this fit's samples of s_θ (draw_fakes), on the CPU

    @property
    def autoencoder_frozen(self) -> bool:
        return self.joint is None or self.joint.refitting

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self._trainer is not None and len(checkpoint.get("optimizer_states", [None])) != 1:
            raise PhaseCheckpointError("this phase-2 checkpoint comes from the joint mode before the D refit (two "
                                       "optimizers, two steps a batch) and cannot be resumed: start phase 2 again")

    def score_fn(self) -> Score:
        """s(z, σ) = ∇z [logit D(z, σ) + log p_σ(z)]; discriminator guidance: s_θ(z, σ) + ∇z logit D_g(z, σ)."""
        if self.fake_score_net is not None:
            return Score([LogRatio(self.discriminator)], direct=[self.fake_score_net])
        return Score([LogRatio(self.discriminator), noised_prior])

    @property
    def ladder(self) -> SigmaLadder:
        """The σ ladder D trained on and a search anneals along; NCP-VAE's D: the one level σ_min."""
        if self.hparams.noise_conditional:
            return super().ladder
        return SigmaLadder(self.sigma_max.item(), self.hparams.sigma_min, 1)

    def noisy(self, z: torch.Tensor):
        """(z + σε, σ, ε), σ drawn per row by sigma_sampling; NCP-VAE's D: σ_min for every row."""
        if self.hparams.noise_conditional:
            return super().noisy(z)
        sigma = self.ladder.sample(z.shape[0], "levels", device=z.device)  # the one level
        noise = torch.randn_like(z)
        return z + sigma.unsqueeze(-1) * noise, sigma, noise

    def fake_like(self, z: torch.Tensor) -> torch.Tensor:
        """The fakes D learns to tell codes from, shaped like z: prior draws N(0, I), or rows of this fit's samples of
        s_θ (discriminator guidance) picked by the global RNG (its state travels in the checkpoint)."""
        if self.fake_score_net is None:
            return torch.randn_like(z)
        if self.fakes is None:
            self.draw_fakes()
        return self.fakes[torch.randint(len(self.fakes), (len(z),))].to(z.device, z.dtype)

    def draw_fakes(self) -> None:
        """s_θ's samples, as many as there are training codes (every view of the training set): drawn again, the
        same, by every fit and resume (dsls.phases.fakes), and by `dsls validate`."""
        n = sum(len(view) for view in train_views(self.trainer.datamodule))
        self.fakes, line = timed_fakes(self.fake_score_net, self.hparams.fake_net, n, self.device)
        self.print(line)

    def on_fit_start(self) -> None:
        super().on_fit_start()  # the codes first, then their fakes
        if self.fake_score_net is not None:
            self.draw_fakes()

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        self.fakes = None  # drawn again by the next fit

    @property
    def latent_net(self) -> torch.nn.Module:
        return self.discriminator

    def d_loss(self, zq: torch.Tensor, stage: str) -> torch.Tensor:
        """D's loss (ratio_loss) on codes zq against this phase's fakes (fake_like), both noised by the phase's σ's,
        logged under `stage`."""
        loss, metrics = ratio_loss(self.discriminator, self.noisy, zq, self.fake_like,
                                   self.hparams.score_matching_weight)
        metrics = {f"{stage}/{k}": v for k, v in metrics.items()}
        if stage == "val":
            self.log_dict(metrics, prog_bar=True, on_epoch=True, sync_dist=True)  # the mean over every rank's batches
        else:
            self.log_train(metrics)
        return loss

    def training_step(self, batch, batch_idx):
        """Post hoc: one D step on the codes of this batch (served cached, or encoded here). Joint mode: the game's
        step (dsls.phases.joint)."""
        x = unpack(batch)
        if self.joint is not None:
            return self.joint.training_step(x)
        if self.batches_are_codes:
            z = self.code_sample(x)
        else:
            with torch.no_grad():
                z = self.autoencoder.encode(x)
        self.step_optimizer(self.d_loss(z, "train"))

    def step_optimizer(self, loss: torch.Tensor, frozen: Sequence[torch.nn.Parameter] = ()) -> None:
        """One backward and one optimizer step per batch (D's and, in joint mode, E, G's parameter groups), so
        global_step counts batches in both modes. `frozen`: parameters that must not move this step (joint mode's E,
        G on D-only steps and in the refit). Under DDP every parameter that requires grad gets exactly one gradient."""
        opt, sched = self.optimizers(), self.lr_schedulers()
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
                self.d_loss(z, "val")
            with torch.no_grad():  # accuracy at each ladder level: where along the ladder D is weak
                for sigma in self.ladder.sigmas.tolist():
                    s = torch.full((len(z),), sigma, device=z.device)
                    lq = self.discriminator(z + sigma * torch.randn_like(z), s)
                    lp = self.discriminator(self.fake_like(z) + sigma * torch.randn_like(z), s)
                    self.log_dict({f"val_sigma/acc_q@{sigma:.3g}": (lq > 0).float().mean(),
                                   f"val_sigma/acc_p@{sigma:.3g}": (lp < 0).float().mean()}, on_epoch=True,
                                  sync_dist=True)

    def discriminator_group(self) -> dict:
        return {"params": self.discriminator.parameters(), "lr": self.hparams.lr_d, "betas": LATENT_NET.betas}

    def configure_optimizers(self):
        """One Adam: post hoc, D's parameter group on a cosine over the fit; joint mode adds E, G's group and restarts
        the cosine for the refit (JointGame.param_groups). The factors are read lazily, as total_steps is known only at
        the start of fit."""
        if self.joint is not None:
            groups, factors = self.joint.param_groups()
        else:
            groups, factors = [self.discriminator_group()], [lambda step: cosine(step, 0, self.total_steps)]
        opt = torch.optim.Adam(groups)
        return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, factors)]


def _check_peer(mode: str, noise_conditional: bool, guided, score_matching_weight: float) -> None:
    """The settings NCP-VAE's D and discriminator guidance's D_g refuse (guided: fake_ckpt or fake_net is set)."""
    if not noise_conditional and mode != "posthoc":
        raise ConfigError("--model.noise_conditional=false (NCP-VAE's D) trains post hoc on a frozen autoencoder's "
                          "codes; joint mode's fool term acts only at σ >= fool_min_sigma, which a D at σ_min never "
                          "sees: drop --model.mode=joint")
    if guided and not noise_conditional:
        raise ConfigError("--model.fake_ckpt (discriminator guidance) corrects s_θ at every σ a search visits, so D_g is "
                          "noise-conditional: drop --model.noise_conditional=false")
    if guided and mode != "posthoc":
        raise ConfigError("--model.fake_ckpt (discriminator guidance) needs the codes s_θ was trained on, which joint "
                          "mode moves: drop --model.mode=joint")
    if guided and score_matching_weight > 0:
        raise ConfigError(f"--model.score_matching_weight={score_matching_weight} adds a DSM term on the score D "
                          "implies, which needs the fakes' score in closed form (prior draws); discriminator guidance "
                          "(--model.fake_ckpt) trains D_g by plain BCE, as Kim et al. do: add "
                          "--model.score_matching_weight=0")
