"""A peer of phase 2: a noise-conditional latent score network s_θ(z, σ), trained by denoising score matching on the
frozen phase-1 autoencoder's codes (the prior of LSGM and latent diffusion, without joint training).

It sees the codes as D does: cached once (cache_codes), noised on the same σ ladder with the same σ sampling, and its
network has D's widths and depth by default. Its recipe is the one those models use: σ²-weighted DSM
(dsls.losses.dsm) and an exponential moving average of the weights, which are the weights that sample and validate.
The search samples it through a `direct` score term (dsls.priors.ScorePrior), with every registered sampler, and
`dsls.load` loads its checkpoint as it loads phase 2's.
"""
from __future__ import annotations

from typing import Optional

import torch

from dsls.data.loaders import unpack
from dsls.errors import ConfigError
from dsls.losses import dsm
from dsls.nets.score_nets import ScoreMLP
from dsls.noise import LATENT_LADDER
from dsls.phases.base import LATENT_NET, LatentPhase, init_args
from dsls.phases.schedules import cosine
from dsls.score import Score


def latent_score_net(latent_dim: int, hidden: int, depth: int, embed_dim: int) -> ScoreMLP:
    """s_θ(z, σ) on codes of latent_dim: an MLP with the σ embedding in every hidden layer, its input scaled by
    1/sqrt(data_var + σ²) and its output divided by σ (dsls.nets.score_nets). A latent_score checkpoint's net is this
    one built from its hyper-parameters, with the `ema.module.*` weights."""
    return ScoreMLP((latent_dim,), hidden, depth, embed_dim)


def num_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


class LatentScoreModule(LatentPhase):
    phase = "latent_score"
    autoencoder_sources = ("reconstruction", "adversarial")  # phase 2's: joint mode's fine-tuned E, and D's σ_max

    def __init__(
        self,
        autoencoder_ckpt: Optional[str] = None,
        sigma_max: Optional[float] = None,
        sigma_min: float = LATENT_LADDER.sigma_min,
        num_levels: int = LATENT_LADDER.num_levels,
        sigma_sampling: str = LATENT_LADDER.sigma_sampling,
        s_hidden: int = LATENT_NET.hidden,
        s_depth: int = LATENT_NET.depth,
        s_embed_dim: int = LATENT_NET.embed_dim,
        lr_s: float = LATENT_NET.lr,
        ema_decay: float = 0.999,
        cache_codes: bool = True,
        autoencoder: Optional[dict] = None,
    ):
        """autoencoder_ckpt: phase 1's checkpoint (or phase 2's: its autoencoder and σ_max). sigma_max=None: the
        largest pairwise code distance at the start of fit, as D chooses it; the other ladder settings and s_hidden,
        s_depth, s_embed_dim default to D's d_hidden, d_depth, d_embed_dim, so the peer has D's ladder and size (the
        s_ prefix keeps --model.hidden for phase 1 in a pipeline). lr_s: Adam's, on D's cosine schedule (D's lr_d).
        ema_decay: the sampling weights are an exponential moving average of the trained ones (0: the trained weights
        themselves). cache_codes: train on codes encoded once instead of encoding every batch.
        `autoencoder` is filled from autoencoder_ckpt and saved, so a latent_score checkpoint stands alone."""
        super().__init__()
        if not 0 <= ema_decay < 1:
            raise ConfigError(f"--model.ema_decay={ema_decay} must be in [0, 1) (0: sample with the trained weights)")
        self.caches_codes = cache_codes
        autoencoder = self._init_latent(autoencoder_ckpt, autoencoder, sigma_max)
        self.save_hyperparameters(init_args(locals()))
        self.automatic_optimization = False  # one optimizer step and one EMA update per batch, as D's loop
        self.score_net = latent_score_net(autoencoder["latent_dim"], s_hidden, s_depth, s_embed_dim)
        self.ema = torch.optim.swa_utils.AveragedModel(
            self.score_net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay),
            use_buffers=True).requires_grad_(False)  # no grad: DDP would wait for one
        self.num_parameters = num_parameters(self.score_net)

    @property
    def latent_net(self) -> torch.nn.Module:
        return self.score_net

    @property
    def sampling_net(self) -> torch.nn.Module:
        """The EMA weights: what the search samples with and validation scores."""
        return self.ema.module

    def score_fn(self) -> Score:
        """s(z, σ) ≈ ∇z log q_σ(z), given directly by the EMA network: one forward pass per evaluation."""
        return Score(direct=[self.sampling_net])

    def on_codes(self, codes: torch.Tensor) -> None:
        """The input scale of both nets (the trained one and its average) from the first training codes' variance."""
        var = float(self.trainer.strategy.reduce(codes.var(0).mean(), reduce_op="mean"))
        for net in (self.score_net, self.sampling_net):
            net.data_var.fill_(var)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        n = self.num_parameters
        self.print(f"latent score net: {n / 1e6:.2f} M parameters ({n:,})")
        if self.logger is not None:
            self.logger.log_hyperparams({"num_parameters": self.num_parameters})

    def dsm_loss(self, z: torch.Tensor, net: torch.nn.Module) -> torch.Tensor:
        """σ²-weighted DSM of `net` on codes z, noised at σ's drawn from the ladder by sigma_sampling."""
        z_t, sigma, noise = self.noisy(z)
        return dsm(net(z_t, sigma), sigma, noise, reduction="sum")

    def training_step(self, batch, batch_idx):
        x = unpack(batch)
        if self.batches_are_codes:
            z = self.code_sample(x)
        else:
            with torch.no_grad():
                z = self.autoencoder.encode(x)
        loss = self.dsm_loss(z, self.score_net)
        self.log_train({"train/dsm": loss})  # before the step, as D's loop logs
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        sched.step()
        self.ema.update_parameters(self.score_net)

    def validation_step(self, batch, batch_idx):
        """DSM of the EMA weights on validation codes, over the σ sampling and at each ladder level."""
        z = self.autoencoder.encode(unpack(batch))
        net = self.sampling_net
        self.log("val/dsm", self.dsm_loss(z, net), prog_bar=True, on_epoch=True, sync_dist=True)
        for sigma in self.ladder.sigmas.tolist():
            s, noise = torch.full((len(z),), sigma, device=z.device), torch.randn_like(z)
            self.log(f"val_sigma/dsm@{sigma:.3g}", dsm(net(z + sigma * noise, s), s, noise), on_epoch=True,
                     sync_dist=True)

    def configure_optimizers(self):
        """One Adam (D's betas) on a cosine over the fit, read lazily: total_steps is known at the start of fit."""
        opt = torch.optim.Adam(self.score_net.parameters(), lr=self.hparams.lr_s, betas=LATENT_NET.betas)
        return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cosine(step, 0, self.total_steps))]
