"""The probability-flow ODE: deterministic search from σ_max to σ_min (and back up: `flow`, dsls.likelihood).

dz/dσ = −σ·s(z, σ). It is integrated in t = log σ, where it reads dz/dt = −σ²·s(z, σ): the same ODE, with the
solver's steps spread evenly over the ladder's log-range instead of crowding at σ_max.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torchdiffeq import odeint

from dsls.samplers.base import Sampler, SamplerOutput, check_finite, check_positive, denoise, register


class CountedDrift:
    """dz/dt = −σ²·s(z, σ) at σ = e^t, counting its score evaluations (the NFE it reports are the real ones)."""

    def __init__(self, score_fn):
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        sigma = float(torch.exp(t))
        return -(sigma**2) * self.score_fn(z, sigma)


# torchdiffeq's solvers (its registry is private): adaptive ones pick their steps, fixed-step ones take the grid
ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_STEP = ("euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams", "fixed_adams")


@register("ode")
@dataclass(frozen=True)
class ProbabilityFlow(Sampler):
    """Integrates the probability-flow ODE from σ_max to σ_min with torchdiffeq, then with denoise takes Tweedie's
    step at σ_min. Deterministic: the start latent alone fixes the result.

    method: an adaptive solver (dopri5, with rtol/atol set here, not torchdiffeq's 1e-7/1e-9 defaults) or a
    fixed-step one (e.g. heun2, EDM's choice) on `steps` geometric σ's from σ_max to σ_min. An adaptive solver
    chooses its steps for the whole batch, so a sample can differ across batch sizes, within the tolerances; a fixed
    grid does not. init: 'wide' starts at p_σmax = N(0, (1+σ_max²)I), the distribution the ODE maps to q_σmin."""

    rtol: float = 1e-5
    atol: float = 1e-5
    method: str = "dopri5"
    steps: Optional[int] = None
    denoise: bool = True
    init: Literal["wide", "prior"] = "wide"

    def __post_init__(self):
        check_positive(self, rtol=self.rtol, atol=self.atol)
        if self.method not in ADAPTIVE + FIXED_STEP:
            raise ValueError(f"sampler 'ode': unknown method {self.method!r}; adaptive: {', '.join(ADAPTIVE)}; "
                             f"fixed-step (with steps): {', '.join(FIXED_STEP)}")
        if self.method in FIXED_STEP and (self.steps is None or self.steps < 2):
            raise ValueError(f"sampler 'ode': method {self.method!r} takes fixed steps; set steps >= 2 "
                             f"(the σ grid's size), got {self.steps}")

    def sample(self, score_fn, n0, ladder, rng, track=0) -> SamplerOutput:
        z0 = ladder.initial_latent(n0, self.init)
        drift = CountedDrift(score_fn)
        if self.steps:
            grid = ladder.with_overrides(num_levels=self.steps).sigmas
        else:
            grid = ladder.with_overrides(num_levels=max(ladder.num_levels, 2)).sigmas if track else \
                torch.tensor([ladder.sigma_max, ladder.sigma_min])  # track: the solution at the ladder's σ's too
        t = torch.log(grid.to(dtype=z0.dtype, device=z0.device))
        path = odeint(drift, z0, t, rtol=self.rtol, atol=self.atol, method=self.method)
        z = path[-1]
        check_finite(z, f"in the ODE solve from sigma={ladder.sigma_max:.4g} to {ladder.sigma_min:.4g}")
        nfe, traj = drift.nfe, [p[:track].clone() for p in path] if track else []
        if self.denoise:
            z, nfe = denoise(score_fn, z, ladder.sigma_min), nfe + 1
            if track:
                traj.append(z[:track].clone())
        return SamplerOutput(z0=z0, z=z, nfe=nfe, trajectory=traj)


def flow(score_fn, z: torch.Tensor, sigma_from: float, sigma_to: float, rtol: float = 1e-5, atol: float = 1e-5,
         method: str = "dopri5") -> tuple[torch.Tensor, int]:
    """Carry z along the probability-flow ODE from σ_from to σ_to, in either direction (up: a code to its σ_max
    'noise code'; down: back), returning (z at σ_to, score evaluations). Used by interpolation."""
    drift = CountedDrift(score_fn)
    t = torch.log(torch.tensor([sigma_from, sigma_to], dtype=z.dtype, device=z.device))
    out = odeint(drift, z, t, rtol=rtol, atol=atol, method=method)[-1]
    check_finite(out, f"in the ODE solve from sigma={sigma_from:.4g} to {sigma_to:.4g}")
    return out, drift.nfe
