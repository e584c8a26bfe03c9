"""Score terms that steer the search (docs/concepts.md), added to the model's score with Score.plus:

    ClassGuidance   w · log C(y | z, σ)                      a latent classifier trained on noised codes
    Measurement     −w(σ) · ‖A(G(ẑ₀)) − y_obs‖, ẑ₀ = z + σ²·s(z, σ)   latent DPS, through the decoder

and the measurement operators A: `Masking` (inpainting: a box, or random pixels) and `Luma` (colorization). Each term
holds one row of conditions per row of the batch it is built for (labels, observations), so it is built per batch.
score_sde's pixel replacement trick does not carry over through a nonlinear decoder, hence DPS.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from dsls.samplers.base import sample_seed

FULL_WEIGHT_BELOW = 1.0  # σ below which the measurement term has its full weight w (see Measurement.weight)
MEASUREMENT_SCALE = 10.0  # the default w: the best of {3, 5, 10, 20, 30} on digits inpainting and tinted colorization
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L"); the weights sum to 1, so [-1, 1] maps to itself


class ClassGuidance(nn.Module):
    """w · log C(y_i | z_i, σ) per row: the classifier-guidance term of guided diffusion, on latents."""

    def __init__(self, log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], labels: torch.Tensor,
                 scale: float):
        super().__init__()
        self.log_prob, self.scale = log_prob, float(scale)
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.long))

    def forward(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        lp = self.log_prob(z, sigma)  # (B, K)
        return self.scale * lp.gather(1, self.labels.to(lp.device).view(-1, 1)).squeeze(1)


class Masking(nn.Module):
    """A(x) = mask ⊙ x, mask 1 where the pixel is observed (one mask per row)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask[: len(x)].to(x.device) * x  # the first len(x) rows: a batch cut back from its padding


class Luma(nn.Module):
    """A(x) = the BT.601 luma of an RGB image, (B, 3, H, W) → (B, 1, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"colorization needs RGB images (3 channels), got {x.shape[1]}")
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (w * x).sum(1, keepdim=True)


class Measurement(nn.Module):
    """−w(σ)·‖A(G(ẑ₀)) − y_obs‖ per row with ẑ₀ = z + σ²·s(z, σ): latent DPS. The gradient runs through the decoder
    and through s (one double-backward through D), so it is the exact gradient of this term."""

    def __init__(self, score: Callable, decode: Callable, operator: nn.Module, observed: torch.Tensor, scale: float):
        super().__init__()
        self.score, self.decode, self.operator, self.scale = score, decode, operator, float(scale)
        self.register_buffer("observed", observed)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """‖A(x) − y_obs‖ per row."""
        return (self.operator(x) - self.observed.to(x.device)).flatten(1).norm(dim=1)

    def forward(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s2 = (sigma**2).view(-1, *([1] * (z.dim() - 1)))
        z0 = z + s2 * self.score(z, sigma, create_graph=True)  # Tweedie's E[z₀ | z_σ]
        return -self.weight(sigma) * self.residual(self.decode(z0))

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """w up to σ = FULL_WEIGHT_BELOW (the codes' scale), w·(1/σ)² above it. A Langevin step is α_i ∝ σ_i², so a
        constant w would make this term's moves (σ_max/σ_min)² times larger at σ_max than at σ_min; above σ = 1
        the move is instead the same at every σ, as DPS's fixed step size. Measured: docs/results/tasks.md."""
        return self.scale * torch.clamp(FULL_WEIGHT_BELOW**2 / sigma**2, max=1.0)


# -- masks: one per sample, from (seed, sample index) alone -----------------------------------------------------------
def box_mask(shape, n: int) -> torch.Tensor:
    """The bottom half of every image missing (0), the top half observed (1): (n, C, H, W)."""
    c, h, w = shape
    mask = torch.ones(n, c, h, w)
    mask[:, :, h // 2:] = 0
    return mask


def random_pixel_mask(shape, indices, fraction: float, seed: int) -> torch.Tensor:
    """Each sample misses `fraction` of its pixels (all channels of a pixel), drawn from (seed, index) alone."""
    if not 0 < fraction < 1:
        raise ValueError(f"the missing fraction must be in (0, 1), got {fraction}")
    c, h, w = shape
    masks = []
    for i in indices:
        g = torch.Generator().manual_seed(sample_seed(seed, int(i), "mask"))
        keep = torch.ones(h * w)
        keep[torch.randperm(h * w, generator=g)[: round(fraction * h * w)]] = 0
        masks.append(keep.view(1, h, w).expand(c, h, w))
    return torch.stack(masks)
