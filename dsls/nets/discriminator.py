"""Noise-conditional latent discriminator D(z, σ) → logit, conditioned on log σ (not a level index). With out_dim=K
the same net gives the K class logits of the latent classifier C(y | z, σ)."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn


class FourierEmbedding(nn.Module):
    """Fixed random Fourier features of log σ: smooth in σ, so any σ inside the ladder is valid."""

    def __init__(self, dim: int = 64, scale: float = 4.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=g) * scale)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        a = 2 * math.pi * torch.log(sigma).unsqueeze(-1) * self.freqs
        return torch.cat([a.sin(), a.cos()], dim=-1)


class NoiseConditionalDiscriminator(nn.Module):
    """MLP on z with the σ embedding added to every hidden layer (as NCSN++ does for time).

    input_scaling divides z by sqrt(code_var + σ²) so the input stays O(1) at every σ (EDM's c_in);
    code_var is a buffer set from the encoder's codes before training.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: int = 256,
        depth: int = 3,
        embed_dim: int = 64,
        spectral_norm: bool = False,
        input_scaling: bool = True,
        out_dim: int = 1,
    ):
        super().__init__()
        wrap = sn if spectral_norm else (lambda m: m)
        self.embed = FourierEmbedding(embed_dim)
        dims = [latent_dim] + [hidden] * depth
        self.layers = nn.ModuleList(wrap(nn.Linear(a, b)) for a, b in zip(dims[:-1], dims[1:]))
        self.cond = nn.ModuleList(nn.Linear(embed_dim, hidden) for _ in range(depth))
        self.out = wrap(nn.Linear(hidden, out_dim))  # 1: D's logit; K: a latent classifier's logits
        self.act = nn.SiLU()
        self.input_scaling = input_scaling
        self.register_buffer("code_var", torch.ones(()))

    def forward(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device).expand(z.shape[0])
        h = z / torch.sqrt(self.code_var + sigma**2).unsqueeze(-1) if self.input_scaling else z
        e = self.embed(sigma)
        for layer, cond in zip(self.layers, self.cond):
            h = self.act(layer(h) + cond(e))
        out = self.out(h)
        return out.squeeze(-1) if out.shape[-1] == 1 else out
