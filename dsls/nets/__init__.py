"""Networks. `build_autoencoder` maps an architecture name to an (encoder, decoder) pair."""
from __future__ import annotations

from typing import Sequence

from dsls.nets.discriminator import NoiseConditionalDiscriminator
from dsls.nets.mlp import MLPDecoder, MLPEncoder

ARCHS = {"mlp": (MLPEncoder, MLPDecoder)}


def build_autoencoder(arch: str, data_shape: Sequence[int], latent_dim: int, hidden: int, depth: int, tanh: bool):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {sorted(ARCHS)}")
    enc_cls, dec_cls = ARCHS[arch]
    return enc_cls(data_shape, latent_dim, hidden, depth), dec_cls(data_shape, latent_dim, hidden, depth, tanh)


__all__ = ["build_autoencoder", "NoiseConditionalDiscriminator", "MLPEncoder", "MLPDecoder"]
