"""Annealed Langevin dynamics (SMLD/NCSN): the seed's search."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from dsls.progress import progress
from dsls.samplers.base import Sampler, SamplerOutput, check_level, check_positive, denoise, register


@register("langevin")
@dataclass(frozen=True)
class Langevin(Sampler):
    """For each σ_i of the ladder, steps_per_level steps of z ← z + (α_i/2)·s(z, σ_i) + √α_i·n with
    α_i = eps0·σ_i²/σ_min²; then, with denoise, Tweedie's step z + σ_min²·s(z, σ_min).
    init: 'wide' starts at p_σmax = N(0, (1+σ_max²)I), 'prior' at N(0, I)."""

    eps0: float = 5e-4  # α at σ_min
    steps_per_level: int = 10
    denoise: bool = True
    init: Literal["wide", "prior"] = "wide"

    def __post_init__(self):
        check_positive(self, eps0=self.eps0, steps_per_level=self.steps_per_level)

    def sample(self, score_fn, n0, ladder, rng, track=0) -> SamplerOutput:
        z = ladder.initial_latent(n0, self.init)
        z0, traj, nfe = z.clone(), [z[:track].clone()] if track else [], 0
        for i, sigma in enumerate(progress(ladder.sigmas.tolist(), desc="langevin: σ levels", unit="level")):
            alpha, flags = self.eps0 * (sigma / ladder.sigma_min) ** 2, []
            noise = rng.randn(self.steps_per_level, z.shape[1:], dtype=z.dtype)
            for t in range(self.steps_per_level):
                z = z + 0.5 * alpha * score_fn(z, sigma) + math.sqrt(alpha) * noise[t]
                nfe += 1
                flags.append(~torch.isfinite(z).all())
            check_level(flags, z, i, sigma)
            if track:
                traj.append(z[:track].clone())
        if self.denoise:
            z, nfe = denoise(score_fn, z, ladder.sigma_min), nfe + 1
            if track:
                traj.append(z[:track].clone())
        return SamplerOutput(z0=z0, z=z, nfe=nfe, trajectory=traj)
