"""The small CNN whose features classifier-FID compares on the digit data sets (dsls.metrics.classifier)."""
from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


class DigitClassifier(nn.Module):
    """Three 3×3 convs (two of them stride 2) → 2×2 average pool → SiLU penultimate layer → 10 logits.

    Works for any side ≥ 4 (8 for digits, 28 for MNIST). Input: float (B, 1, H, W) in [-1, 1]. SiLU (not
    ReLU) on the penultimate layer avoids dead features, so feature covariances stay well conditioned for FID.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * width, feature_dim), nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim): what classifier-FID compares."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
