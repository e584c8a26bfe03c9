"""Fidelity metrics (FID, IS, KID, precision/recall) of phase-2 samples during training, logged per sampler."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import lightning as L
import torch

from dsls.distributed import all_gather
from dsls.metrics.fidelity import check_inception_weights, fidelity_metrics
from dsls.samplers import Sampler, SamplerSettings, build_samplers, sample_indices


class FidelityMetrics(L.Callback):
    """Every ``every_n_val`` validations (never the sanity check), sample ``num_samples`` images with each
    sampler, compare them with the datamodule's val set and log ``fidelity/<sampler>/<metric>``.

    Sample i (a global index) draws its start noise and its search noise from (seed, i, sampler name) alone, as the
    search phase does: the same samples at every validation, for every split of them over ranks. Each rank draws a
    contiguous share of the indices; the shares are gathered once; rank 0 alone computes and logs.
    reference_name names the val set for the on-disk reference cache, e.g. "cifar10-val". samplers: the samplers to
    run with their settings, as in the search config ({none: {}, langevin: {eps0: 5.0e-4}}; a mapping or a list of
    names from Python). The other arguments are `fidelity_metrics`'s (feature_extractor None = Inception).
    """

    def __init__(self, reference_name: str, num_samples: int = 1000, every_n_val: int = 1,
                 samplers: SamplerSettings = SamplerSettings(),
                 batch_size: int = 250, metrics: Sequence[str] = ("fid", "isc", "kid", "prc"),
                 feature_extractor: Optional[str] = None, feature_extractor_weights_path: Optional[str] = None,
                 kid_subset_size: int = 1000, cache_root: Optional[str] = None, seed: int = 0):
        self.reference_name, self.num_samples, self.every_n_val = reference_name, num_samples, every_n_val
        self.samplers: dict[str, Sampler] = build_samplers(samplers)  # an unknown name or setting fails here
        self.batch_size, self.seed = batch_size, seed
        self.metric_kw = {"metrics": tuple(metrics), "feature_extractor": feature_extractor,
                          "feature_extractor_weights_path": feature_extractor_weights_path,
                          "kid_subset_size": kid_subset_size, "cache_root": cache_root}
        self._validations = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Missing Inception weights stop the run now, on every rank, not at the first scored validation."""
        if self.metric_kw["feature_extractor"] is None:
            check_inception_weights(self.metric_kw["feature_extractor_weights_path"])

    def _sample(self, pl_module: L.LightningModule, name: str, indices: range) -> torch.Tensor:
        """The samples of these global indices from one sampler, float (n, C, H, W) in data space."""
        sampler, score = self.samplers[name], pl_module.score_fn()  # pl_module: a SamplingModel (dsls.score)
        xs = [sample_indices(pl_module, sampler, score, pl_module.ladder, self.seed, indices[i:i + self.batch_size])[1]
              for i in range(0, len(indices), self.batch_size)]
        return torch.cat(xs).float()

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
                mine = range(rank * share, (rank + 1) * share)  # indices ≥ num_samples are dropped after the gather
                local = torch.stack([self._sample(pl_module, s, mine) for s in self.samplers])  # (S, n, ...)
        finally:
            for m, flag in modes.items():
                m.training = flag
        gathered = all_gather(local)  # one collective for all samplers: (world, S, n, ...) if world > 1
        if world > 1:
            gathered = gathered.transpose(0, 1).flatten(1, 2)
        if not trainer.is_global_zero:
            return
        reference = trainer.datamodule.val_dataloader().dataset
        logs = {}
        for name, x in zip(self.samplers, gathered[:, : self.num_samples].cpu()):
            res = fidelity_metrics(x, reference, self.reference_name, **self.metric_kw)
            logs.update({f"fidelity/{name}/{k}": float(v) for k, v in res.items() if isinstance(v, float)})
        # rank 0 alone scores: with rank_zero_only Lightning syncs nothing, and sync_dist=True only says so (without
        # it, Lightning advises to sync each epoch-level value under DDP)
        pl_module.log_dict(logs, rank_zero_only=True, sync_dist=True)
