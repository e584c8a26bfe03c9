"""Sample figures during training: saved as PNGs in <phase dir>/figures/ and sent to W&B when it is the logger."""
from __future__ import annotations

import os

import lightning as L
import torch

from dsls.callbacks.plots import save_search_figure
from dsls.phases.reconstruction import unpack
from dsls.samplers import SamplerSettings, build_samplers, sample_indices


class SampleFigures(L.Callback):
    """Phase 1: data | reconstructions. Phase 2: one panel per sampler with the current D; by default the prior
    decode and a short Langevin search (T = 3). The start noise is fixed by `seed`, so figures from successive
    validations show the same samples moving."""

    QUICK = {"none": {}, "langevin": {"steps_per_level": 3}}  # when none are named: cheap enough for every validation

    def __init__(self, num: int = 64, samplers: SamplerSettings = SamplerSettings(), seed: int = 0):
        self.num, self.seed = num, seed
        # an unknown name or setting fails here, not at the first figure
        self.samplers = build_samplers(samplers, default=self.QUICK)

    def _search_panels(self, pl_module: L.LightningModule) -> dict:
        panels, score = {}, pl_module.score_fn()  # the Score leaves no_grad / inference mode for its own gradient
        for name, sampler in self.samplers.items():
            out, x = sample_indices(pl_module, sampler, score, pl_module.ladder, self.seed, range(self.num))
            panels[f"{name} ({out.nfe} NFE)" if out.nfe else name] = x
        return panels

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.datamodule is None:
            return
        if pl_module.phase == "reconstruction":
            ae = pl_module.autoencoder
            x = unpack(next(iter(trainer.datamodule.val_dataloader())))[: self.num].to(pl_module.device)
            panels = {"data": x, "reconstruction": ae.decode(ae.encode(x, sample=False))}
        else:
            panels = self._search_panels(pl_module)
        path = os.path.join(trainer.default_root_dir, "figures", f"step-{trainer.global_step:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ref = None if pl_module.phase == "reconstruction" else getattr(pl_module, "dataset_name", None)  # data shown
        save_search_figure(path, {k: v.float().cpu().numpy() for k, v in panels.items()}, {}, ref)
        if hasattr(trainer.logger, "log_image"):  # WandbLogger
            trainer.logger.log_image(key=f"{pl_module.phase}/samples", images=[path], step=trainer.global_step)
