"""Baseline: a pixel-space (data-space) noise-conditional score network, SMLD/NCSN style.

It trains by denoising score matching on the same SigmaLadder as D, and samples with the same registered samplers
(annealed Langevin in pixel space) through LatentSearchModule, which accepts its checkpoint: the "latent" is then
the image itself and decoding is the identity. This is the cost/quality reference for searching in latent space.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from dsls.data.loaders import unpack
from dsls.losses import dsm
from dsls.nets.score_nets import build_score_net
from dsls.noise import PIXEL_LADDER, SigmaLadder
from dsls.phases.base import PhaseModule, init_args
from dsls.phases.schedules import warmup_cosine
from dsls.score import Score


class PixelNCSNModule(PhaseModule):
    phase = "pixel_ncsn"

    def __init__(
        self,
        data_shape: Sequence[int] = (2,),
        arch: str = "mlp",
        net: Optional[dict] = None,
        sigma_max: Optional[float] = None,
        sigma_min: float = PIXEL_LADDER.sigma_min,
        num_levels: int = PIXEL_LADDER.num_levels,
        sigma_sampling: str = PIXEL_LADDER.sigma_sampling,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_frac: float = 0.02,
        ema_decay: float = 0.999,
    ):
        """arch: 'unet' for images, 'mlp' for flat data; `net` holds the network's own settings (base, channel_mult,
        blocks, embed_dim for unet; hidden, depth for mlp). sigma_max=None sets σ_max to the largest pairwise
        distance within a data batch at the start of fit (NCSNv2's rule). ema_decay: the weights used for sampling
        are an exponential moving average (NCSN/DDPM practice; 0 disables)."""
        super().__init__()
        self.save_hyperparameters(init_args(locals()))
        self.score_net = build_score_net(arch, data_shape, **(net or {}))
        self.ema = torch.optim.swa_utils.AveragedModel(
            self.score_net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay),
            use_buffers=True).requires_grad_(False) if ema_decay > 0 else None  # no grad: DDP would wait for one
        self.register_buffer("sigma_max", torch.tensor(float("nan") if sigma_max is None else sigma_max))
        self.latent_shape = tuple(data_shape)

    @property
    def ladder(self) -> SigmaLadder:
        return SigmaLadder(self.sigma_max.item(), self.hparams.sigma_min, self.hparams.num_levels)

    @property
    def sampling_net(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.score_net

    def score_fn(self) -> Score:
        """s(x, σ) ≈ ∇x log p_σ(x), given directly by the (EMA) network: one forward pass per evaluation."""
        return Score(direct=[self.sampling_net])

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x  # pixel space: the sampled variable is the image

    @torch.no_grad()
    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is not None:
            return  # resumed: σ_max and data_var come from the checkpoint
        if self.trainer.datamodule is None:
            raise ValueError("PixelNCSNModule reads data statistics from the datamodule: fit with datamodule=…")
        x = torch.cat([unpack(b) for b, _ in zip(self.trainer.datamodule.train_dataloader(), range(8))])[:2048]
        x = x.to(self.device).flatten(1)
        var = self.trainer.strategy.reduce(x.var(0).mean(), reduce_op="mean")
        for net in (self.score_net, self.sampling_net):
            net.data_var.fill_(float(var))
        if math.isnan(self.sigma_max.item()):
            self.sigma_max.fill_(float(self.trainer.strategy.reduce(torch.cdist(x, x).max(), reduce_op="max")))
            self.print(f"auto sigma_max = {self.sigma_max.item():.4g} (largest pairwise data distance); {self.ladder}")

    def _step(self, batch, stage: str) -> torch.Tensor:
        x = unpack(batch)
        sigma = self.ladder.sample(x.shape[0], self.hparams.sigma_sampling, device=x.device)
        net = self.score_net if stage == "train" else self.sampling_net  # validate the weights that sample
        noise = torch.randn_like(x)
        loss = dsm(net(x + sigma.view(-1, *([1] * (x.dim() - 1))) * noise, sigma), sigma, noise, reduction="mean")
        self.log(f"{stage}/dsm", loss, prog_bar=True, on_epoch=True, on_step=stage == "train", sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None and (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0:  # after a step
            self.ema.update_parameters(self.score_net)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.score_net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": warmup_cosine(opt, self, self.hparams.warmup_frac), "interval": "step"}}
