"""Sample figures during training: saved as PNGs in <phase dir>/figures/ and sent to W&B when it is the logger."""
from __future__ import annotations

import os

import lightning as L
import torch

from dsls.callbacks.plots import save_search_figure
from dsls.phases.reconstruction import unpack
from dsls.samplers import run_sampler


class SampleFigures(L.Callback):
    """Phase 1: data | reconstructions. Phase 2: prior decode | a short Langevin search with the current D."""

    def __init__(self, num: int = 64, steps_per_level: int = 3, eps0: float = 5e-4):
        self.num, self.steps_per_level, self.eps0 = num, steps_per_level, eps0

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.datamodule is None:
            return
        ae = pl_module.autoencoder
        if pl_module.phase == "reconstruction":
            x = unpack(next(iter(trainer.datamodule.val_dataloader())))[: self.num].to(pl_module.device)
            panels = {"data": x, "reconstruction": ae.decode(ae.encode(x, sample=False))}
        else:
            n0 = torch.randn(self.num, ae.latent_dim, device=pl_module.device)
            z = run_sampler("langevin", pl_module.score, n0, pl_module.ladder, eps0=self.eps0,
                            steps_per_level=self.steps_per_level).z
            panels = {"none": ae.decode(n0), f"langevin (T={self.steps_per_level})": ae.decode(z)}
        path = os.path.join(trainer.default_root_dir, "figures", f"step-{trainer.global_step:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ref = None if pl_module.phase == "reconstruction" else getattr(pl_module, "dataset_name", None)  # data shown
        save_search_figure(path, {k: v.float().cpu().numpy() for k, v in panels.items()}, {}, ref)
        if hasattr(trainer.logger, "log_image"):  # WandbLogger
            trainer.logger.log_image(key=f"{pl_module.phase}/samples", images=[path], step=trainer.global_step)
