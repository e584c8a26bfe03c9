"""Fidelity metrics (FID, IS, KID, precision/recall) of phase-2 samples during training, logged per sampler."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import lightning as L
import torch

from dsls.metrics.fidelity import check_inception_weights, fidelity_metrics
from dsls.samplers import run_sampler


class FidelityMetrics(L.Callback):
    """Every ``every_n_val`` validations (never the sanity check), sample ``num_samples`` images with each
    sampler, compare them with the datamodule's val set and log ``fidelity/<sampler>/<metric>``.

    Every rank draws its share from its own fixed seed (the same start noise at every validation and for every
    sampler, so curves compare like with like); the shares are gathered once; rank 0 alone computes and logs.
    reference_name names the val set for the on-disk reference cache, e.g. "cifar10-val". The other arguments
    are `fidelity_metrics`'s (feature_extractor None = Inception) and the Langevin settings.
    """

    def __init__(self, reference_name: str, num_samples: int = 1000, every_n_val: int = 1,
                 samplers: Sequence[str] = ("none", "langevin"), batch_size: int = 250,
                 metrics: Sequence[str] = ("fid", "isc", "kid", "prc"), feature_extractor: Optional[str] = None,
                 feature_extractor_weights_path: Optional[str] = None, kid_subset_size: int = 1000,
                 cache_root: Optional[str] = None, eps0: float = 5e-4, steps_per_level: int = 10, seed: int = 0):
        self.reference_name, self.num_samples, self.every_n_val = reference_name, num_samples, every_n_val
        self.samplers, self.batch_size, self.seed = list(samplers), batch_size, seed
        self.sampler_kw = {"eps0": eps0, "steps_per_level": steps_per_level}
        self.metric_kw = {"metrics": tuple(metrics), "feature_extractor": feature_extractor,
                          "feature_extractor_weights_path": feature_extractor_weights_path,
                          "kid_subset_size": kid_subset_size, "cache_root": cache_root}
        self._validations = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Missing Inception weights stop the run now, on every rank, not at the first scored validation."""
        if self.metric_kw["feature_extractor"] is None:
            check_inception_weights(self.metric_kw["feature_extractor_weights_path"])

    def _sample(self, pl_module: L.LightningModule, name: str, n: int, rank: int) -> torch.Tensor:
        """This rank's n samples from one sampler, float (n, C, H, W) in data space."""
        dev = pl_module.device
        shape = getattr(pl_module, "latent_shape", (pl_module.autoencoder.latent_dim,))
        decode = getattr(pl_module, "decode", None) or pl_module.autoencoder.decode
        g = torch.Generator(dev).manual_seed(self.seed * 1_000_003 + rank)  # per rank; same for every sampler
        n0s = torch.randn(n, *shape, generator=g, device=dev).split(self.batch_size)  # all before any search noise
        xs = []
        for n0 in n0s:
            z = run_sampler(name, pl_module.score, n0, pl_module.ladder, generator=g, **self.sampler_kw).z
            with torch.no_grad():
                xs.append(decode(z).float())
        return torch.cat(xs)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if self._validations % self.every_n_val:
            return
        if trainer.datamodule is None:  # on every rank, before any collective
            raise ValueError("FidelityMetrics compares with the datamodule's val set: fit with datamodule=…")
        world, rank = trainer.world_size, trainer.global_rank
        share = math.ceil(self.num_samples / world)
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        try:
            # The score differentiates D: leave Lightning's inference mode for the search, decode without grad.
            with torch.inference_mode(False), torch.enable_grad():
                local = torch.stack([self._sample(pl_module, s, share, rank) for s in self.samplers])  # (S, n, ...)
        finally:
            for m, flag in modes.items():
                m.training = flag
        gathered = pl_module.all_gather(local)  # one collective for all samplers: (world, S, n, ...) if world > 1
        if world > 1:
            gathered = gathered.transpose(0, 1).flatten(1, 2)
        if not trainer.is_global_zero:
            return
        reference = trainer.datamodule.val_dataloader().dataset
        logs = {}
        for name, x in zip(self.samplers, gathered[:, : self.num_samples].cpu()):
            res = fidelity_metrics(x, reference, self.reference_name, **self.metric_kw)
            logs.update({f"fidelity/{name}/{k}": float(v) for k, v in res.items() if isinstance(v, float)})
        pl_module.log_dict(logs, rank_zero_only=True)
