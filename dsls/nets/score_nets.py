"""Noise-conditional score networks for the pixel-space baseline (SMLD/NCSN): s(x, σ) in data space.

Both are preconditioned the same way (NCSNv2 / EDM): the input is scaled by c_in = 1/sqrt(data_var + σ²) so it
stays O(1) at every σ, and the output is divided by σ, because the true score of the σ-noised data scales as 1/σ.
`data_var` is a buffer set from the data before training.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dsls.nets.conv import group_norm
from dsls.nets.discriminator import FourierEmbedding


class SigmaEmbedding(nn.Module):
    """Fourier features of log σ (low frequencies: neighbouring σ share what they learn), then a small MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(FourierEmbedding(dim, scale=1.0), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(sigma)


class Preconditioned(nn.Module):
    """Shared input/output scaling; subclasses implement `net(x_scaled, sigma)`."""

    def __init__(self):
        super().__init__()
        self.register_buffer("data_var", torch.ones(()))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        shape = (-1,) + (1,) * (x.dim() - 1)
        x_in = x / torch.sqrt(self.data_var + sigma**2).view(shape)
        return self.net(x_in, sigma) / sigma.view(shape)


class ScoreMLP(Preconditioned):
    """For flat data (toy 2-D): an MLP with the σ embedding added to every hidden layer."""

    def __init__(self, data_shape: Sequence[int], hidden: int = 256, depth: int = 3, embed_dim: int = 64):
        super().__init__()
        dim = int(torch.tensor(data_shape).prod())
        self.embed = SigmaEmbedding(embed_dim)
        dims = [dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.cond = nn.ModuleList(nn.Linear(embed_dim, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    def net(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h, e = x.flatten(1), self.embed(sigma)
        for layer, cond in zip(self.layers, self.cond):
            h = F.silu(layer(h) + cond(e))
        return self.out(h).view_as(x)


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv twice, with the σ embedding added in between (DDPM/NCSN++ style)."""

    def __init__(self, cin: int, cout: int, embed_dim: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(embed_dim, cout)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class ScoreUNet(Preconditioned):
    """A small U-Net: `blocks` ResBlocks per resolution, halving the side between levels of channel_mult,
    one skip connection per level. The side must be divisible by 2^(len(channel_mult) − 1)."""

    def __init__(self, data_shape: Sequence[int], base: int = 64, channel_mult: Sequence[int] = (1, 2, 2, 2),
                 blocks: int = 2, embed_dim: int = 128):
        super().__init__()
        c, h, w = data_shape
        if h % 2 ** (len(channel_mult) - 1) or w % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"ScoreUNet: {h}×{w} images cannot be halved {len(channel_mult) - 1} times; "
                             "use a shorter channel_mult")
        chans = [base * m for m in channel_mult]
        self.embed = SigmaEmbedding(embed_dim)
        self.inp = nn.Conv2d(c, base, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        prev = base
        for ch in chans:
            self.down.append(nn.ModuleList(ResBlock(prev if i == 0 else ch, ch, embed_dim) for i in range(blocks)))
            prev = ch
        self.mid = nn.ModuleList([ResBlock(prev, prev, embed_dim), ResBlock(prev, prev, embed_dim)])
        for ch in reversed(chans):
            self.up.append(nn.ModuleList(ResBlock(prev + ch if i == 0 else ch, ch, embed_dim) for i in range(blocks)))
            prev = ch
        self.out = nn.Sequential(group_norm(prev), nn.SiLU(), nn.Conv2d(prev, c, 3, padding=1))

    def net(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        e, h, skips = self.embed(sigma), self.inp(x), []
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, e)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        for block in self.mid:
            h = block(h, e)
        for i, level in enumerate(self.up):
            h = torch.cat([h, skips.pop()], 1)
            for block in level:
                h = block(h, e)
            if i < len(self.up) - 1:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.out(h)


def build_score_net(arch: str, data_shape: Sequence[int], **kwargs) -> Preconditioned:
    if arch == "mlp":
        return ScoreMLP(data_shape, **kwargs)
    if arch == "unet":
        if len(data_shape) != 3:
            raise ValueError(f"arch=unet needs (C, H, W) images, got data_shape {tuple(data_shape)}; use arch=mlp")
        return ScoreUNet(data_shape, **kwargs)
    raise ValueError(f"unknown score-net arch {arch!r}; use 'unet' (images) or 'mlp' (flat data)")
