"""Gathering tensors across the ranks of a DDP run, without a deprecation warning at each call.

LightningModule.all_gather goes through torch.distributed.nn.functional.all_gather (the autograd-aware collective),
which torch 2.10+ deprecates with a FutureWarning printed at every call. dsls gathers samples and counts, never
gradients, so the plain collective torch.distributed.all_gather does the same job without the warning.
"""
from __future__ import annotations

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
