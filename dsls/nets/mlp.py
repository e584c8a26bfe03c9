"""MLP encoder / decoder for toy 2-D data and small flattened images (digits 8×8)."""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn


def mlp(in_dim: int, out_dim: int, hidden: int, depth: int, act=nn.SiLU) -> nn.Sequential:
    layers, d = [], in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), act()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, out_dim))


class MLPEncoder(nn.Module):
    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: int = 256, depth: int = 3):
        super().__init__()
        self.net = mlp(math.prod(data_shape), latent_dim, hidden, depth)

    def forward(self, x):
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: int = 256, depth: int = 3, tanh: bool = False):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = mlp(latent_dim, math.prod(data_shape), hidden, depth)
        self.out = nn.Tanh() if tanh else nn.Identity()

    def forward(self, z):
        return self.out(self.net(z)).view(-1, *self.data_shape)
