"""Paths between two latents: the straight line of a plain AAE, and the DS-LS path along the probability-flow ODE.

    linear   z(t) = (1 − t)·z_a + t·z_b: it crosses the holes of q between modes
    dsls     both codes carried up the ODE to σ_top, interpolated there, and every point of that path carried back
             down to σ_min. At σ_top = σ_max ('max', the design's recipe) the path is a slerp, as
             q_σmax ≈ N(0, (1+σ_max²)I) lives on a shell; below it, a straight line. The default σ_top = 1 (the codes'
             own scale: holes filled, modes still apart) measured best on digits (docs: tasks, "Interpolation").

LatentModel.interpolate and the interpolate task (dsls.tasks.interpolate) both use these functions.
"""
from __future__ import annotations

import torch

from dsls.samplers.ode import TOLERANCE, flow

SIGMA_TOP = 1.0  # the σ at which the DS-LS path interpolates (see the module docstring)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of rows a, b (B, d) at fractions t (S,) → (B, S, d); the norm goes linearly from ‖a‖
    to ‖b‖ (a Gaussian's typical set is a shell: the straight chord would cut inside it)."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na, b / nb
    omega = torch.arccos((ua * ub).sum(1).clamp(-1 + 1e-7, 1 - 1e-7)).view(-1, 1, 1)
    t = t.view(1, -1, 1)
    direction = torch.sin((1 - t) * omega) * ua.unsqueeze(1) + torch.sin(t * omega) * ub.unsqueeze(1)
    direction = direction / torch.sin(omega)
    return direction * ((1 - t) * na.unsqueeze(1) + t * nb.unsqueeze(1))


def linear_path(za: torch.Tensor, zb: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps, d): the straight lines from za to zb, ends included."""
    t = torch.linspace(0, 1, steps, dtype=za.dtype, device=za.device).view(1, -1, 1)
    return (1 - t) * za.unsqueeze(1) + t * zb.unsqueeze(1)


def top_sigma(ladder, sigma_top) -> float:
    """σ_top: 'max' (or None) is σ_max; a number is clipped into the ladder's range."""
    if sigma_top in (None, "max"):
        return ladder.sigma_max
    return min(max(float(sigma_top), ladder.sigma_min), ladder.sigma_max)


def ode_path(score_fn, za: torch.Tensor, zb: torch.Tensor, steps: int, ladder, sigma_top=SIGMA_TOP,
             rtol: float = TOLERANCE, atol: float = TOLERANCE) -> tuple[torch.Tensor, int]:
    """(pairs, steps, d) latents of the DS-LS path, and the score evaluations it took."""
    top_s = top_sigma(ladder, sigma_top)
    ends, nfe_up = flow(score_fn, torch.cat([za, zb]), ladder.sigma_min, top_s, rtol, atol)
    ua, ub = ends.split(len(za))
    t = torch.linspace(0, 1, steps, dtype=za.dtype, device=za.device)
    top = slerp(ua, ub, t) if top_s == ladder.sigma_max else linear_path(ua, ub, steps)  # (pairs, steps, d)
    down, nfe_down = flow(score_fn, top.flatten(0, 1), top_s, ladder.sigma_min, rtol, atol)
    return down.view_as(top), nfe_up + nfe_down
