"""ResNet encoder / decoder for 64–256 px images (CelebA-HQ, LSUN): one resolution per channel multiplier,
halving (encoder) or doubling (decoder) between them, down to a 4×4 or 8×8 map, then a linear latent."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from dsls.nets.conv import group_norm as norm


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


def final_side(size: int, channel_mult: Sequence[int]) -> int:
    n = len(channel_mult) - 1  # downsamplings
    if n >= 0 and size % 2**n == 0 and size // 2**n in (4, 8):
        return size // 2**n
    fits = [k + 1 for k in range(1, 9) if size % 2**k == 0 and size // 2**k in (4, 8)]
    hint = (f"use a channel_mult of length {' or '.join(map(str, fits))}" if fits else
            "the image side must be 4 or 8 times a power of two (64, 128, 256, ...)")
    raise ValueError(f"ResNet: {size} px with channel_mult {tuple(channel_mult)} halves {max(n, 0)} times "
                     f"to {size / 2 ** max(n, 0):g} px, not 4 or 8; {hint}")


class ResNetEncoder(nn.Module):
    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: int = 64, depth: int = 1,
                 channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4)):
        super().__init__()
        c, h, w = data_shape
        if h != w:
            raise ValueError(f"ResNetEncoder takes square images, got {h}×{w}")
        side = final_side(h, channel_mult)
        chans = [hidden * m for m in channel_mult]
        layers, cin = [nn.Conv2d(c, chans[0], 3, padding=1)], chans[0]
        for i, cout in enumerate(chans):
            layers += [ResBlock(cin if j == 0 else cout, cout) for j in range(depth)]
            cin = cout
            if i < len(chans) - 1:
                layers.append(nn.Conv2d(cout, cout, 3, stride=2, padding=1))
        self.net = nn.Sequential(*layers, norm(cin), nn.SiLU())
        self.out = nn.Linear(cin * side * side, latent_dim)

    def forward(self, x):
        return self.out(self.net(x).flatten(1))


class ResNetDecoder(nn.Module):
    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: int = 64, depth: int = 1, tanh: bool = True,
                 channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4)):
        super().__init__()
        c, h, w = data_shape
        if h != w:
            raise ValueError(f"ResNetDecoder makes square images, got {h}×{w}")
        self.side = final_side(h, channel_mult)
        chans = [hidden * m for m in channel_mult][::-1]
        self.c0 = chans[0]
        self.inp = nn.Linear(latent_dim, chans[0] * self.side**2)
        layers, cin = [], chans[0]
        for i, cout in enumerate(chans):
            layers += [ResBlock(cin if j == 0 else cout, cout) for j in range(depth)]
            cin = cout
            if i < len(chans) - 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.net = nn.Sequential(*layers, norm(cin), nn.SiLU(), nn.Conv2d(cin, c, 3, padding=1))
        self.out = nn.Tanh() if tanh else nn.Identity()

    def forward(self, z):
        return self.out(self.net(self.inp(z).view(-1, self.c0, self.side, self.side)))
