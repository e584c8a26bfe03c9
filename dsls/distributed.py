"""Which rank this process is, before the process group exists (is_rank_zero), and gathering tensors across the
ranks of a DDP run without a deprecation warning at each call (all_gather).

LightningModule.all_gather goes through torch.distributed.nn.functional.all_gather (the autograd-aware collective),
which torch 2.10+ deprecates with a FutureWarning printed at every call. dsls gathers samples and counts, never
gradients, so the plain collective torch.distributed.all_gather does the same job without the warning.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` stacked in rank order, (world, *tensor.shape), as LightningModule.all_gather returns it;
    without a process group (one process), the tensor itself. Every rank must call it with the same shape; NCCL
    needs the tensor on the rank's GPU."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.stack(parts)


def is_rank_zero() -> bool:
    """Rank 0 of a DDP run (or the only process). Read from the environment, in Lightning's order (RANK, LOCAL_RANK,
    SLURM_PROCID, JSM_NAMESPACE_RANK: lightning.fabric.utilities.rank_zero), plus NODE_RANK: on the second node of a
    multi-node launch, LOCAL_RANK=0 is not the run's rank 0."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "") != "":
            if int(os.environ[key]) != 0:
                return False
            break
    return os.environ.get("NODE_RANK", "0") in ("", "0")
