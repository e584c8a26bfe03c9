"""The σ ladder: one object shared by D's training noise and the search's annealing schedule. It owns the noised
prior p_σ = N(0, (1+σ²)I): its start draws and its log-density (the search's prior term and the likelihood's
default terminal density)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from dsls.errors import ConfigError


@dataclass(frozen=True)
class LadderSettings:
    """The σ ladder's settings, each with its one default. D and the latent classifier train on LATENT_LADDER (the
    classifier must know every σ the search visits); the pixel-space baseline on PIXEL_LADDER, whose data are not
    standardised codes (a lower σ_min, log-uniform draws as NCSNv2). The phases take the four as arguments with these
    defaults, so configs name a value only where they change it."""

    sigma_max: Optional[float] = None  # None: the largest pairwise distance in the training set, chosen at fit start
    sigma_min: float = 0.03
    num_levels: int = 10
    sigma_sampling: str = "lowbiased"  # see SigmaLadder.sample


LATENT_LADDER = LadderSettings()
PIXEL_LADDER = LadderSettings(sigma_min=0.01, sigma_sampling="loguniform")


def as_sigma(sigma, z: torch.Tensor) -> torch.Tensor:
    """Broadcast a float or (B,) σ to shape (B,) on z's device and dtype."""
    s = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
    return s.expand(z.shape[0]) if s.dim() == 0 else s


def gaussian_log_prob(z: torch.Tensor, var) -> torch.Tensor:
    """log N(z; 0, var·I) per row, for z of any shape (B, ...) and var a float or (B,)."""
    v = as_sigma(var, z)
    d = z[0].numel()
    return -0.5 * (z.flatten(1) ** 2).sum(1) / v - 0.5 * d * torch.log(2 * math.pi * v)


def noised_prior_log_prob(z: torch.Tensor, sigma) -> torch.Tensor:
    """log p_σ(z) per row, p_σ = N(0, I) ∗ N(0, σ²I) = N(0, (1+σ²)I)."""
    return gaussian_log_prob(z, 1 + as_sigma(sigma, z) ** 2)


class SigmaLadder:
    """Geometric noise levels σ_max = σ_1 > … > σ_L = σ_min.

    Training draws σ per sample (D is conditioned on σ itself, so any σ in range is valid at search time):
      'loguniform': log σ uniform on [log σ_min, log σ_max];
      'lowbiased':  log σ = log σ_min + u²·(log σ_max − log σ_min), u ~ U(0, 1): half the draws land in the lowest
                    quarter of the log-range, where D's gradient must be sharpest (the search ends there);
      'levels':     uniform over the L discrete levels.
    """

    def __init__(self, sigma_max: float, sigma_min: float, num_levels: int):
        checks = [(sigma_min > 0, f"--model.sigma_min={sigma_min:g} must be > 0"),
                  # sigma_max may be the auto value (the largest code distance): name both ways out
                  (sigma_max > sigma_min, f"need sigma_max > sigma_min, got sigma_max={sigma_max:.4g} and "
                                          f"--model.sigma_min={sigma_min:g}: lower --model.sigma_min or raise "
                                          "--model.sigma_max"),
                  (num_levels >= 1, f"--model.num_levels={num_levels} must be >= 1")]
        problem = next((msg for ok, msg in checks if not ok), None)
        if problem:
            raise ConfigError(problem)
        self.sigma_max, self.sigma_min, self.num_levels = float(sigma_max), float(sigma_min), int(num_levels)

    @property
    def sigmas(self) -> torch.Tensor:
        """Descending levels, float32, shape (L,). A single level is σ_min."""
        if self.num_levels == 1:
            return torch.tensor([self.sigma_min])
        return torch.logspace(math.log10(self.sigma_max), math.log10(self.sigma_min), self.num_levels)

    def sample(self, n: int, mode: str = "loguniform", device=None, generator=None) -> torch.Tensor:
        """σ per sample for training D; see the class docstring for the modes."""
        u = torch.rand(n, device=device, generator=generator)
        if mode in ("loguniform", "lowbiased"):
            lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
            return torch.exp(lo + (hi - lo) * (u if mode == "loguniform" else u**2))
        if mode == "levels":
            idx = (u * self.num_levels).long().clamp_max(self.num_levels - 1)
            return self.sigmas.to(device)[idx]
        raise ValueError(f"unknown sigma sampling mode {mode!r}; use 'loguniform', 'lowbiased' or 'levels'")

    def initial_latent(self, n0: torch.Tensor, init: str) -> torch.Tensor:
        """The search's start from standard-normal n0: 'wide' = p_σmax = N(0, (1+σ_max²)I), the distribution the
        annealing starts at (default); 'prior' = N(0, I), as the design text writes."""
        if init == "wide":
            return n0 * math.sqrt(1 + self.sigma_max**2)
        if init == "prior":
            return n0.clone()
        raise ValueError(f"unknown init {init!r}; use 'wide' or 'prior'")

    def terminal_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p_σmax(z): the probability-flow ODE's default terminal density."""
        return noised_prior_log_prob(z, self.sigma_max)

    def with_overrides(self, sigma_max=None, sigma_min=None, num_levels=None) -> "SigmaLadder":
        """None keeps the trained value; anything else (0 included) is checked, never silently replaced."""
        pick = lambda new, old: old if new is None else new  # noqa: E731
        return SigmaLadder(pick(sigma_max, self.sigma_max), pick(sigma_min, self.sigma_min),
                           pick(num_levels, self.num_levels))

    def state_dict(self) -> dict:
        return {"sigma_max": self.sigma_max, "sigma_min": self.sigma_min, "num_levels": self.num_levels}

    def __repr__(self) -> str:
        return f"SigmaLadder(sigma_max={self.sigma_max:.4g}, sigma_min={self.sigma_min:.4g}, L={self.num_levels})"
