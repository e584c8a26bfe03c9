"""Sampler registry. Every phase module and script samples through `run_sampler`.

A sampler takes a score function s(z, σ), standard-normal start noise n0 (B, d), the σ ladder and its
own settings, and returns the initial latent z0, the final latent z and (optionally) a trajectory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from dsls.noise import SigmaLadder

ScoreFn = Callable[[torch.Tensor, float], torch.Tensor]
SAMPLERS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        SAMPLERS[name] = fn
        return fn

    return deco


@dataclass
class SamplerOutput:
    z0: torch.Tensor
    z: torch.Tensor
    nfe: int = 0  # score evaluations per sample
    trajectory: list[torch.Tensor] = field(default_factory=list)  # z[:track] after each level


def run_sampler(name: str, score_fn: ScoreFn, n0: torch.Tensor, ladder: SigmaLadder, **kwargs) -> SamplerOutput:
    if name not in SAMPLERS:
        raise KeyError(f"unknown sampler {name!r}; registered: {sorted(SAMPLERS)}")
    return SAMPLERS[name](score_fn, n0, ladder, **kwargs)


def initial_latent(n0: torch.Tensor, ladder: SigmaLadder, init: str) -> torch.Tensor:
    """'wide' = N(0, (1+σ_max²)I), the noised prior p_σmax (default); 'prior' = N(0, I) as in the design text."""
    if init == "wide":
        return n0 * math.sqrt(1 + ladder.sigma_max**2)
    if init == "prior":
        return n0.clone()
    raise ValueError(f"unknown init {init!r}; use 'wide' or 'prior'")


def check_finite(z: torch.Tensor, where: str) -> None:
    if not torch.isfinite(z).all():
        bad = (~torch.isfinite(z)).flatten(1).any(1).sum().item()
        raise FloatingPointError(
            f"search diverged: {bad} latent(s) became NaN/Inf {where}. Lower eps0 or check D's checkpoint."
        )


def check_level(flags: list[torch.Tensor], z: torch.Tensor, level: int, sigma: float) -> None:
    """flags[t]: 'z has a NaN/Inf after step t', kept on the device so a GPU syncs once per level, not per step.
    NaN/Inf never heal, so the first flagged step is where the search diverged."""
    if flags and torch.stack(flags).any():
        step = int(torch.stack(flags).nonzero()[0])
        check_finite(z, f"at level {level} (sigma={sigma:.4g}), step {step}")


@register("none")
def sample_none(score_fn, n0, ladder, **_) -> SamplerOutput:
    """Plain AAE sampling: z ~ N(0, I), no search."""
    return SamplerOutput(z0=n0, z=n0.clone(), nfe=0)


@register("langevin")
def sample_langevin(
    score_fn: ScoreFn,
    n0: torch.Tensor,
    ladder: SigmaLadder,
    eps0: float = 2e-4,
    steps_per_level: int = 10,
    denoise: bool = True,
    init: str = "wide",
    track: int = 0,
    generator: torch.Generator | None = None,
    **_,
) -> SamplerOutput:
    """Annealed Langevin: for each σ_i, T steps of z += (α_i/2)·s + √α_i·ε with α_i = ε₀σ_i²/σ_min².

    With denoise=True a last Tweedie step z += σ_min²·s(z, σ_min) removes the residual σ_min noise.
    """
    z = initial_latent(n0, ladder, init)
    z0, traj, nfe = z.clone(), [z[:track].clone()] if track else [], 0
    for i, sigma in enumerate(ladder.sigmas.tolist()):
        alpha, flags = eps0 * (sigma / ladder.sigma_min) ** 2, []
        for t in range(steps_per_level):
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z + 0.5 * alpha * score_fn(z, sigma) + math.sqrt(alpha) * noise
            nfe += 1
            flags.append(~torch.isfinite(z).all())
        check_level(flags, z, i, sigma)
        if track:
            traj.append(z[:track].clone())
    if denoise:
        z = z + ladder.sigma_min**2 * score_fn(z, ladder.sigma_min)
        nfe += 1
        check_finite(z, f"in the final denoise step (sigma={ladder.sigma_min:.4g})")
        if track:
            traj.append(z[:track].clone())
    return SamplerOutput(z0=z0, z=z, nfe=nfe, trajectory=traj)
