"""Offline feature extractor: a fixed random conv net, so fidelity metrics run (and are tested) without downloads.

Its numbers are not comparable with Inception FID; they only track distances between image sets consistently.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dsls.metrics.fidelity import register_module_extractor


class OfflineFeatures(nn.Module):
    """uint8 (B, 3, H, W) → {"penultimate": (B, dim), "logits_unbiased": (B, classes)}, any H, W ≥ 4.

    Weights are drawn from ``torch.Generator().manual_seed(seed)`` (never the global RNG) and never trained,
    so every process and run builds the same network — its reference cache stays valid across runs.
    """

    def __init__(self, dim: int = 64, classes: int = 10, width: int = 32, seed: int = 0):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, width, 3, 2, 1), nn.Conv2d(width, width, 3, 2, 1)])
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(4 * width, dim)
        self.head = nn.Linear(dim, classes)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():  # variance-preserving scale, so tanh stays out of saturation
                fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = x.float() / 127.5 - 1  # uint8 back to [-1, 1]
        for conv in self.convs:
            h = torch.tanh(conv(h))
        feat = torch.tanh(self.fc(self.pool(h).flatten(1)))
        return {"penultimate": feat, "logits_unbiased": self.head(feat)}


def register_offline_extractor(name: str = "dsls-offline", **kwargs) -> str:
    """Register `OfflineFeatures(**kwargs)` with torch-fidelity under ``name``; use ``feature_extractor=name``."""
    return register_module_extractor(name, OfflineFeatures(**kwargs))
