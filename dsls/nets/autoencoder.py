"""The autoencoder E, G as a plain nn.Module (phase 1 trains it; every later phase and dsls.load rebuild it from its
saved settings with autoencoder_from_hparams)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dsls.nets import build_autoencoder


class RunningStandardize(nn.Module):
    """(z − mean) / std with running statistics, in training too: unlike BatchNorm, the code of a sample never
    depends on its batch, so the decoder sees at evaluation exactly the codes it was trained on."""

    def __init__(self, dim: int, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("initialised", torch.tensor(False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                m, v = z.mean(0), z.var(0)
                w = 1.0 if not self.initialised else self.momentum
                self.mean.lerp_(m, w)
                self.var.lerp_(v, w)
                self.initialised.fill_(True)
        return (z - self.mean) / torch.sqrt(self.var + 1e-6)


class Autoencoder(nn.Module):
    """E and G; normalize_latent standardises codes (running statistics) so q sits on the prior's scale."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int, arch="mlp", hidden=256, depth=3,
                 tanh_output=False, normalize_latent=True, code_noise=0.0, channel_mult=None):
        super().__init__()
        self.encoder, self.decoder = build_autoencoder(arch, data_shape, latent_dim, hidden, depth, tanh_output,
                                                       channel_mult)
        self.norm = RunningStandardize(latent_dim) if normalize_latent else nn.Identity()
        self.code_noise = code_noise  # std of a stochastic encoder's Gaussian noise (0 = deterministic)
        self.data_shape, self.latent_dim = tuple(data_shape), latent_dim

    def encode(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        z = self.norm(self.encoder(x))
        return z + self.code_noise * torch.randn_like(z) if sample and self.code_noise > 0 else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


AE_KEYS = ("data_shape", "latent_dim", "arch", "hidden", "depth", "tanh_output", "normalize_latent", "code_noise",
           "channel_mult")


def autoencoder_from_hparams(hp: dict) -> Autoencoder:
    return Autoencoder(**{k: hp[k] for k in AE_KEYS if k in hp})


def same_weights(a: dict, b: dict) -> bool:
    """Whether two state dicts hold the same tensors under the same names (every weight and buffer): the check that a
    latent classifier or a score network was trained on this autoencoder's codes."""
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)
