"""Figures of a training phase, as PNGs in its folder and to the logger when it takes images (WandbLogger):
at each validation <phase dir>/figures/step-*.png; at the end of training, phase 1's reconstruction pairs
(reconstructions.png) and phase 2's accuracy of D per σ level (sigma_accuracy.png, numbers in sigma_accuracy.json).

A second fit into the same phase folder never overwrites the first's: its files get a version suffix, as Lightning
names a second last.ckpt last-v1.ckpt (figures-v1/, reconstructions-v1.png, sigma_accuracy-v1.png/.json; one suffix
for all of a fit's files). A fit resumed from <name>-v<k>.ckpt of this phase folder (--ckpt_path) continues the run
that wrote it, and replaces that run's files of version k: they would show a model that training has since moved on
from. Resumed from another folder's checkpoint, it takes a new version here."""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import lightning as L
import torch

from dsls.data.loaders import unpack
from dsls.figures.search import save_search_figure
from dsls.figures.training import save_reconstructions, save_sigma_accuracy
from dsls.run_folder import free_version, versioned
from dsls.samplers import SamplerSettings, build_samplers, sample_indices


class SampleFigures(L.Callback):
    """Phase 1: data | reconstructions. Phase 2: one panel per sampler with the current D; by default the prior
    decode and a short Langevin search (T = 3). The start noise is fixed by `seed`, so figures from successive
    validations show the same samples moving. At the end of training: see the module docstring; the per-σ accuracy
    reads up to `accuracy_codes` validation codes, noised with `seed`."""

    QUICK = {"none": {}, "langevin": {"steps_per_level": 3}}  # when none are named: cheap enough for every validation

    def __init__(self, num: int = 64, samplers: SamplerSettings = SamplerSettings(), seed: int = 0,
                 accuracy_codes: int = 2048):
        self.num, self.seed, self.accuracy_codes = num, seed, accuracy_codes
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
            x, r = self._reconstructions(trainer, pl_module)
            panels = {"data": x, "reconstruction": r}
        else:
            panels = self._search_panels(pl_module)
        path = os.path.join(self._phase_file(trainer, "figures"), f"step-{trainer.global_step:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ref = None if pl_module.phase == "reconstruction" else getattr(pl_module, "dataset_name", None)  # data shown
        save_search_figure(path, {k: v.float().cpu().numpy() for k, v in panels.items()}, {}, ref)
        _log_image(trainer, f"{pl_module.phase}/samples", path)

    # -- the end of training -------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """This fit's file version: after Lightning has read --ckpt_path (trainer.ckpt_path), before any figure."""
        root, names = trainer.default_root_dir, ("figures", "reconstructions.png", "sigma_accuracy.png",
                                                 "sigma_accuracy.json")
        resumed = trainer.ckpt_path  # a checkpoint of another folder's run: a new version here
        inside = resumed and os.path.realpath(str(resumed)).startswith(os.path.realpath(root) + os.sep)
        self._version = free_version([os.path.join(root, n) for n in names], resumed if inside else None)

    def _phase_file(self, trainer: L.Trainer, name: str) -> str:
        """<phase dir>/<name>, with this fit's version suffix (the module docstring)."""
        os.makedirs(trainer.default_root_dir, exist_ok=True)  # a run without logger or checkpoints has not made it
        return versioned(os.path.join(trainer.default_root_dir, name), getattr(self, "_version", 0))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.check_weights()  # a diverged phase fails (PhaseModule.on_train_end), before figures of NaNs
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        was_training = pl_module.training
        pl_module.eval()  # measuring: a training autoencoder would move its running code statistics
        try:
            with torch.no_grad():
                if pl_module.phase == "reconstruction":
                    self._save_reconstructions(trainer, pl_module)
                elif getattr(pl_module, "discriminator", None) is not None:
                    self._save_sigma_accuracy(trainer, pl_module)
        finally:
            pl_module.train(was_training)

    def _reconstructions(self, trainer: L.Trainer, pl_module: L.LightningModule, n: Optional[int] = None):
        ae = pl_module.autoencoder
        x = unpack(next(iter(trainer.datamodule.val_dataloader())))[: n or self.num].to(pl_module.device)
        return x, ae.decode(ae.encode(x, sample=False))

    def _save_reconstructions(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        x, r = self._reconstructions(trainer, pl_module, n=500 if len(pl_module.autoencoder.data_shape) == 1 else 50)
        path = self._phase_file(trainer, "reconstructions.png")
        save_reconstructions(path, x.float().cpu().numpy(), r.float().cpu().numpy(),
                             f"data → reconstruction, step {trainer.global_step}")
        _log_image(trainer, "reconstruction/pairs", path)

    def _save_sigma_accuracy(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sigmas, acc_q, acc_p, n, fakes = sigma_accuracy(pl_module, trainer.datamodule.val_dataloader(),
                                                        self.accuracy_codes, self.seed)
        path = self._phase_file(trainer, "sigma_accuracy.png")
        with open(os.path.splitext(path)[0] + ".json", "w") as f:
            json.dump({"step": trainer.global_step, "num_codes": n, "sigmas": sigmas, "acc_q": acc_q, "acc_p": acc_p,
                       "fakes": fakes}, f, indent=2)
        save_sigma_accuracy(path, sigmas, acc_q, acc_p, f"accuracy of D per σ level, step {trainer.global_step} "
                                                        f"({n} validation codes)", fakes)
        _log_image(trainer, "adversarial/sigma_accuracy", path)


@torch.no_grad()
def sigma_accuracy(pl_module, loader, max_codes: int = 2048, seed: int = 0):
    """(σ's of the ladder, accuracy on q, accuracy on the fakes, number of codes, what the fakes are) as plain data:
    q = codes E(x) + σε of the loader's first max_codes examples (D right when logit > 0); the fakes (D right when
    < 0) are what D learns against: N(0, (1 + σ²)I) prior draws, or, for discriminator guidance, its samples of s_θ
    plus σε. The noise comes from its own generator: the training RNG stream is left alone."""
    codes = []
    for batch in loader:
        codes.append(pl_module.autoencoder.encode(unpack(batch).to(pl_module.device), sample=False).float())
        if sum(len(c) for c in codes) >= max_codes:
            break
    z = torch.cat(codes)[:max_codes]
    gen = torch.Generator().manual_seed(seed)
    fakes = getattr(pl_module, "fakes", None) if getattr(pl_module, "fake_score_net", None) is not None else None
    if fakes is not None:
        rows = torch.randint(len(fakes), (len(z),), generator=gen)
        base, what = fakes[rows].to(z.device, z.dtype), "samples of s_θ + σε"
    else:
        base, what = None, "prior N(0, (1+σ²)I)"
    sigmas = pl_module.ladder.sigmas.tolist()
    acc_q, acc_p = [], []
    for sigma in sigmas:
        s = torch.full((len(z),), sigma, device=z.device)
        eq, ep = (torch.randn(z.shape, generator=gen).to(z.device) for _ in range(2))
        fake = ep * math.sqrt(1 + sigma**2) if base is None else base + sigma * ep
        acc_q.append(float((pl_module.discriminator(z + sigma * eq, s) > 0).float().mean()))
        acc_p.append(float((pl_module.discriminator(fake, s) < 0).float().mean()))
    return sigmas, acc_q, acc_p, int(len(z)), what


def _log_image(trainer: L.Trainer, key: str, path: str) -> None:
    if hasattr(trainer.logger, "log_image"):  # WandbLogger
        trainer.logger.log_image(key=key, images=[path], step=trainer.global_step)
