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

from dsls.errors import ConfigError
from dsls.progress import progress
from dsls.samplers.base import Sampler, SamplerOutput, check_finite, check_positive, denoise, register


class CountedDrift:
    """dz/dt = −σ²·s(z, σ) at σ = e^t, counting its score evaluations (the NFE it reports are the real ones).
    bar: a progress bar of the solve, in percent of the log-σ range [t_from, t_to] covered so far."""

    def __init__(self, score_fn, bar=None, t_from: float = 0.0, t_to: float = 1.0):
        self.score_fn, self.nfe = score_fn, 0
        self.bar = bar if bar is not None and not bar.disable else None  # (off the terminal: no work)
        self.t_from, self.span = t_from, (t_to - t_from) or 1.0

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        sigma = float(torch.exp(t))
        if self.bar is not None:
            self.show(math.log(sigma))
        return -(sigma**2) * self.score_fn(z, sigma)

    def show(self, t: float) -> None:
        done = min(100, round(100 * (t - self.t_from) / self.span))
        if done > self.bar.n:  # an adaptive solver's rejected step goes back: the bar does not
            self.bar.update(done - self.bar.n)
        self.bar.set_postfix(nfe=self.nfe, refresh=False)


def solve_progress(sigma_from: float, sigma_to: float, desc: str):
    """The bar of one ODE solve from σ_from to σ_to: percent of its log-σ range (dsls.callbacks.progress)."""
    return progress(desc=f"{desc}: σ {sigma_from:.3g}→{sigma_to:.3g}", total=100, unit="%")


# torchdiffeq's solvers (its registry is private): adaptive ones pick their steps, fixed-step ones take the grid
TOLERANCE = 1e-5  # rtol and atol of every probability-flow solve (search, interpolation, likelihood) unless set
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

    rtol: float = TOLERANCE
    atol: float = TOLERANCE
    method: str = "dopri5"
    steps: Optional[int] = None
    denoise: bool = True
    init: Literal["wide", "prior"] = "wide"

    def __post_init__(self):
        check_positive(self, rtol=self.rtol, atol=self.atol)
        if self.method not in ADAPTIVE + FIXED_STEP:
            raise ConfigError(f"sampler 'ode': unknown method {self.method!r}; adaptive: {', '.join(ADAPTIVE)}; "
                             f"fixed-step (with steps): {', '.join(FIXED_STEP)}")
        if self.method in FIXED_STEP and (self.steps is None or self.steps < 2):
            raise ConfigError(f"sampler 'ode': method {self.method!r} takes fixed steps; set steps >= 2 "
                             f"(the σ grid's size), got {self.steps}")

    def sample(self, score_fn, n0, ladder, rng, track=0) -> SamplerOutput:
        z0 = ladder.initial_latent(n0, self.init)
        if self.steps:
            grid = ladder.with_overrides(num_levels=self.steps).sigmas
        else:
            grid = ladder.with_overrides(num_levels=max(ladder.num_levels, 2)).sigmas if track else \
                torch.tensor([ladder.sigma_max, ladder.sigma_min])  # track: the solution at the ladder's σ's too
        t = torch.log(grid.to(dtype=z0.dtype, device=z0.device))
        with solve_progress(ladder.sigma_max, ladder.sigma_min, "ode") as bar:
            drift = CountedDrift(score_fn, bar, math.log(ladder.sigma_max), math.log(ladder.sigma_min))
            path = odeint(drift, z0, t, rtol=self.rtol, atol=self.atol, method=self.method)
        z = path[-1]
        check_finite(z, f"in the ODE solve from sigma={ladder.sigma_max:.4g} to {ladder.sigma_min:.4g}")
        nfe, traj = drift.nfe, [p[:track].clone() for p in path] if track else []
        if self.denoise:
            z, nfe = denoise(score_fn, z, ladder.sigma_min), nfe + 1
            if track:
                traj.append(z[:track].clone())
        return SamplerOutput(z0=z0, z=z, nfe=nfe, trajectory=traj)


def flow(score_fn, z: torch.Tensor, sigma_from: float, sigma_to: float, rtol: float = TOLERANCE,
         atol: float = TOLERANCE, method: str = "dopri5") -> tuple[torch.Tensor, int]:
    """Carry z along the probability-flow ODE from σ_from to σ_to, in either direction (up: a code to its σ_max
    'noise code'; down: back), returning (z at σ_to, score evaluations). Used by interpolation."""
    t = torch.log(torch.tensor([sigma_from, sigma_to], dtype=z.dtype, device=z.device))
    with solve_progress(sigma_from, sigma_to, "ode flow") as bar:
        drift = CountedDrift(score_fn, bar, math.log(sigma_from), math.log(sigma_to))
        out = odeint(drift, z, t, rtol=rtol, atol=atol, method=method)[-1]
    check_finite(out, f"in the ODE solve from sigma={sigma_from:.4g} to {sigma_to:.4g}")
    return out, drift.nfe
