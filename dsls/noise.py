"""The σ ladder: one object shared by D's training noise and the search's annealing schedule."""
from __future__ import annotations

import math

import torch


class SigmaLadder:
    """Geometric noise levels σ_max = σ_1 > … > σ_L = σ_min.

    Training draws σ per sample (D is conditioned on σ itself, so any σ in range is valid at search time):
      'loguniform': log σ uniform on [log σ_min, log σ_max];
      'lowbiased':  log σ = log σ_min + u²·(log σ_max − log σ_min), u ~ U(0, 1): half the draws land in the lowest
                    quarter of the log-range, where D's gradient must be sharpest (the search ends there);
      'levels':     uniform over the L discrete levels.
    """

    def __init__(self, sigma_max: float, sigma_min: float, num_levels: int):
        if not (sigma_max > sigma_min > 0):
            raise ValueError(f"need sigma_max > sigma_min > 0, got {sigma_max} and {sigma_min}")
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
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

    def with_overrides(self, sigma_max=None, sigma_min=None, num_levels=None) -> "SigmaLadder":
        return SigmaLadder(sigma_max or self.sigma_max, sigma_min or self.sigma_min, num_levels or self.num_levels)

    def state_dict(self) -> dict:
        return {"sigma_max": self.sigma_max, "sigma_min": self.sigma_min, "num_levels": self.num_levels}

    def __repr__(self) -> str:
        return f"SigmaLadder(sigma_max={self.sigma_max:.4g}, sigma_min={self.sigma_min:.4g}, L={self.num_levels})"
