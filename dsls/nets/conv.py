"""DCGAN-style conv encoder / decoder for 28–32 px images (MNIST, CIFAR-10): stride-2 stages down to 4×4."""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import nn


def block(cin: int, cout: int, depth: int) -> list[nn.Module]:
    layers = []
    for i in range(depth):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.GroupNorm(min(32, cout // 4), cout), nn.SiLU()]
    return layers


class ConvEncoder(nn.Module):
    """(C, 28|32, 32) → latent. 28 px is zero-padded to 32 so both sizes share one stack."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: int = 64, depth: int = 1,
                 channel_mult: Sequence[int] = (1, 2, 4)):
        super().__init__()
        c, h, w = data_shape
        if h != w or h not in (28, 32):
            raise ValueError(f"ConvEncoder takes 28 or 32 px square images, got {h}×{w}; use arch=resnet for 64–256")
        self.pad = (32 - h) // 2
        chans = [hidden * m for m in channel_mult]
        layers, cin = [nn.Conv2d(c, chans[0], 3, padding=1)], chans[0]
        for cout in chans:  # each stage halves: 32 → 16 → 8 → 4
            layers += block(cin, cout, depth) + [nn.Conv2d(cout, cout, 4, stride=2, padding=1)]
            cin = cout
        self.net = nn.Sequential(*layers, nn.SiLU())
        side = 32 // 2 ** len(chans)
        self.out = nn.Linear(cin * side * side, latent_dim)

    def forward(self, x):
        if self.pad:
            x = F.pad(x, [self.pad] * 4)
        return self.out(self.net(x).flatten(1))


class ConvDecoder(nn.Module):
    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: int = 64, depth: int = 1, tanh: bool = True,
                 channel_mult: Sequence[int] = (1, 2, 4)):
        super().__init__()
        c, h, w = data_shape
        if h != w or h not in (28, 32):
            raise ValueError(f"ConvDecoder makes 28 or 32 px square images, got {h}×{w}; use arch=resnet for 64–256")
        self.crop = (32 - h) // 2
        chans = [hidden * m for m in channel_mult][::-1]
        self.side, self.c0 = 32 // 2 ** len(chans), chans[0]
        self.inp = nn.Linear(latent_dim, chans[0] * self.side**2)
        layers, cin = [], chans[0]
        for cout in chans:  # 4 → 8 → 16 → 32
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), *block(cin, cout, depth)]
            cin = cout
        self.net = nn.Sequential(*layers, nn.Conv2d(cin, c, 3, padding=1))
        self.out = nn.Tanh() if tanh else nn.Identity()

    def forward(self, z):
        x = self.net(self.inp(z).view(-1, self.c0, self.side, self.side))
        if self.crop:
            x = x[..., self.crop:-self.crop, self.crop:-self.crop]
        return self.out(x)
