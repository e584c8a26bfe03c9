"""DCGAN-style conv encoder / decoder for 28–32 px images (MNIST, CIFAR-10): stride-2 stages down to 4×4."""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import nn


def group_norm(c: int) -> nn.GroupNorm:
    """Up to 32 groups of ≥4 channels; a power of two dividing c, so any base width (36, 3, ...) is valid."""
    g = 1
    while g < 32 and c % (2 * g) == 0 and c // (2 * g) >= 4:
        g *= 2
    return nn.GroupNorm(g, c)


def block(cin: int, cout: int, depth: int) -> list[nn.Module]:
    layers = []
    for i in range(depth):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), group_norm(cout), nn.SiLU()]
    return layers


def check(data_shape: Sequence[int], channel_mult: Sequence[int], who: str) -> int:
    """Validate the image size and return the final feature-map side (32 halved once per multiplier)."""
    c, h, w = data_shape
    if h != w or h not in (28, 32):
        raise ValueError(f"{who} handles 28 or 32 px square images, got {h}×{w}; use arch=resnet for 64–256")
    if not 1 <= len(channel_mult) <= 4:  # 32 px halves at most 4 times and still leaves a 2×2 map
        raise ValueError(f"{who}: channel_mult {tuple(channel_mult)} has {len(channel_mult)} entries; "
                         "use a channel_mult of length 1–4 (3 → 4×4, the default)")
    return 32 // 2 ** len(channel_mult)


class ConvEncoder(nn.Module):
    """(C, 28|32, 32) → latent. 28 px is zero-padded to 32 so both sizes share one stack."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: int = 64, depth: int = 1,
                 channel_mult: Sequence[int] = (1, 2, 4)):
        super().__init__()
        side = check(data_shape, channel_mult, "ConvEncoder")
        c, h, _ = data_shape
        self.pad = (32 - h) // 2
        chans = [hidden * m for m in channel_mult]
        layers, cin = [nn.Conv2d(c, chans[0], 3, padding=1)], chans[0]
        for cout in chans:  # each stage halves: 32 → 16 → 8 → 4
            layers += block(cin, cout, depth) + [nn.Conv2d(cout, cout, 4, stride=2, padding=1)]
            cin = cout
        self.net = nn.Sequential(*layers, nn.SiLU())
        self.out = nn.Linear(cin * side * side, latent_dim)

    def forward(self, x):
        if self.pad:
            x = F.pad(x, [self.pad] * 4)
        return self.out(self.net(x).flatten(1))


class ConvDecoder(nn.Module):
    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: int = 64, depth: int = 1, tanh: bool = True,
                 channel_mult: Sequence[int] = (1, 2, 4)):
        super().__init__()
        side = check(data_shape, channel_mult, "ConvDecoder")
        c, h, _ = data_shape
        self.crop = (32 - h) // 2
        chans = [hidden * m for m in channel_mult][::-1]
        self.side, self.c0 = side, chans[0]
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
