"""Networks. `build_autoencoder` maps an architecture name to an (encoder, decoder) pair."""
from __future__ import annotations

from typing import Optional, Sequence

from dsls.nets.conv import ConvDecoder, ConvEncoder
from dsls.nets.discriminator import NoiseConditionalDiscriminator
from dsls.nets.mlp import MLPDecoder, MLPEncoder
from dsls.nets.resnet import ResNetDecoder, ResNetEncoder

ARCHS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder), "resnet": (ResNetEncoder, ResNetDecoder)}


def build_autoencoder(arch: str, data_shape: Sequence[int], latent_dim: int, hidden: int, depth: int, tanh: bool,
                      channel_mult: Optional[Sequence[int]] = None):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {sorted(ARCHS)}")
    enc_cls, dec_cls = ARCHS[arch]
    kw = {} if channel_mult is None else {"channel_mult": tuple(channel_mult)}
    if kw and arch == "mlp":
        raise ValueError("channel_mult applies to conv/resnet autoencoders, not mlp")
    return enc_cls(data_shape, latent_dim, hidden, depth, **kw), dec_cls(data_shape, latent_dim, hidden, depth, tanh, **kw)


__all__ = ["build_autoencoder", "NoiseConditionalDiscriminator", "MLPEncoder", "MLPDecoder"]
