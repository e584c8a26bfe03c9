"""Exact latent log-likelihood log q_σmin(z) by the instantaneous change of variables along the probability-flow ODE.

In t = log σ the flow is dz/dt = f(z, σ) = −σ²·s(z, σ), and d log q_σ(z(t))/dt = −div f. Integrating up from
z(σ_min) = z to σ_max gives
    log q_σmin(z) = log π(z(σ_max)) + ∫ div f dt = log π(z(σ_max)) − ∫_{σ_min}^{σ_max} σ·div_z s dσ,
with π the terminal density (the noised prior p_σmax by default). This is the density of latents, not a data NLL:
the decoder is deterministic.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch
from torchdiffeq import odeint

from dsls.noise import SigmaLadder
from dsls.samplers.ode import TOLERANCE

EXACT_DIVERGENCE_MAX_DIM = 16  # above this, Hutchinson–Skilling's estimate replaces d backward passes


def divergence(s: torch.Tensor, z: torch.Tensor, probe: Optional[torch.Tensor]) -> torch.Tensor:
    """div_z s per row. probe=None: exact, one backward pass per dimension. Otherwise Hutchinson–Skilling,
    E[vᵀ (∂s/∂z) v] with the given Rademacher probe v (fixed for the whole solve)."""
    if probe is not None:
        (vjp,) = torch.autograd.grad((s * probe).sum(), z)
        return (vjp * probe).flatten(1).sum(1)
    flat = s.flatten(1)
    div = torch.zeros(flat.shape[0], dtype=s.dtype, device=s.device)
    for j in range(flat.shape[1]):
        (g,) = torch.autograd.grad(flat[:, j].sum(), z, retain_graph=j < flat.shape[1] - 1)
        div = div + g.flatten(1)[:, j]
    return div


def _takes_create_graph(score_fn: Callable) -> bool:
    """dsls.score.Score detaches its output unless asked to keep the graph; a plain score_fn(z, σ) keeps it anyway."""
    try:
        params = inspect.signature(score_fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: call it plainly
        return False
    return any(p.name == "create_graph" or p.kind is p.VAR_KEYWORD for p in params)


class _AugmentedFlow:
    """(z, ℓ) ↦ (f, div f) at σ = e^t, counting score evaluations."""

    def __init__(self, score_fn: Callable, probe: Optional[torch.Tensor]):
        self.score_fn, self.probe, self.nfe = score_fn, probe, 0
        self.kwargs = {"create_graph": True} if _takes_create_graph(score_fn) else {}

    def __call__(self, t: torch.Tensor, state):
        z, _ = state
        self.nfe += 1
        sigma = float(torch.exp(t))
        with torch.inference_mode(False), torch.enable_grad():
            z = z.detach().clone().requires_grad_(True)
            s = self.score_fn(z, sigma, **self.kwargs)
            if not s.requires_grad:
                raise TypeError("score_fn(z, sigma) returned a tensor with no graph back to z: compute the score from "
                                "z with differentiable torch operations (no .detach(), no torch.no_grad())")
            div = divergence(s, z, self.probe)
        return -(sigma**2) * s.detach(), -(sigma**2) * div.detach()


def ode_log_prob(score_fn: Callable, z: torch.Tensor, ladder: SigmaLadder, *,
                 terminal_log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 exact_divergence: Optional[bool] = None, rtol: float = TOLERANCE, atol: float = TOLERANCE,
                 generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, int]:
    """log q_σmin(z) per row, and the score evaluations made (nfe).

    score_fn(z, σ) is any differentiable function of z: it is called on a z that requires grad, and the divergence
    differentiates its output (a score_fn that takes `create_graph`, as dsls.score.Score does, gets True).
    terminal_log_prob(z) defaults to the ladder's p_σmax. exact_divergence=None: exact for d ≤ 16, Hutchinson above;
    the Rademacher probe is drawn once per solve from `generator` (resampling inside an adaptive solve makes it
    explode: torchdiffeq#120).
    """
    d = z[0].numel()
    exact = d <= EXACT_DIVERGENCE_MAX_DIM if exact_divergence is None else exact_divergence
    probe = None
    if not exact:
        probe = torch.randint(0, 2, z.shape, generator=generator, dtype=torch.int64).to(z.device, z.dtype) * 2 - 1
    flow = _AugmentedFlow(score_fn, probe)
    t = torch.log(torch.tensor([ladder.sigma_min, ladder.sigma_max], dtype=z.dtype, device=z.device))
    start = (z.detach(), torch.zeros(z.shape[0], dtype=z.dtype, device=z.device))
    z_path, delta_path = odeint(flow, start, t, rtol=rtol, atol=atol, method="dopri5")
    terminal = terminal_log_prob or ladder.terminal_log_prob
    return terminal(z_path[-1]) + delta_path[-1], flow.nfe
