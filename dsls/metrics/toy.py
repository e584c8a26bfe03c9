"""Mode metrics for the toy 2-D Gaussian mixtures (PacGAN / VEEGAN protocol, DESIGN.md §3).

A sample is *high-quality* (HQ) if its distance to the nearest mixture mean is ≤ 3·std; it is then
assigned to that mean. A mode is *covered* if at least one HQ sample is assigned to it. ``rev_kl`` is
KL(histogram of HQ samples over the K modes ‖ uniform over K), with the 0·log 0 = 0 convention, so it
lies in [0, log K]: 0 for perfectly balanced coverage, log K when every HQ sample sits in one mode.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

#: name → (means (K, 2), std). Both mixtures have equal weights.
MIXTURES: dict[str, tuple[np.ndarray, float]] = {
    # 5×5 grid at {-4, -2, 0, 2, 4}².
    "grid25": (np.array(list(itertools.product(range(-4, 5, 2), repeat=2)), dtype=np.float64), 0.05),
    # 8 means on the circle of radius 2, at angles 2πk/8.
    "ring8": (
        2.0 * np.stack([np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)], axis=1),
        0.02,
    ),
}


def mixture_spec(name: str) -> tuple[np.ndarray, float]:
    """Return a copy of the mixture's means (K, 2) and its per-component std."""
    if name not in MIXTURES:
        raise ValueError(f"unknown toy mixture {name!r}; valid names are: {', '.join(sorted(MIXTURES))}")
    means, std = MIXTURES[name]
    return means.copy(), std


def toy_metrics(x: np.ndarray | torch.Tensor, name: str) -> dict:
    """Mode coverage, HQ fraction and reverse KL of samples ``x`` (N, 2) against mixture ``name``.

    Returns plain Python numbers (JSON-serialisable): ``modes`` (int), ``hq_fraction`` (float),
    ``rev_kl`` (float, or None when there is no HQ sample) and ``num_samples`` (int).
    """
    means, std = mixture_spec(name)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if x.shape[1] != 2:
        raise ValueError(f"toy metrics need samples of shape (N, 2), got {x.shape}")
    n, k = len(x), len(means)

    # Distance of every sample to every mean; nearest-mean assignment.
    dist = np.linalg.norm(x[:, None, :] - means[None, :, :], axis=-1)  # (N, K)
    nearest = dist.argmin(axis=1)
    hq = dist[np.arange(n), nearest] <= 3 * std

    counts = np.bincount(nearest[hq], minlength=k)
    num_hq = int(counts.sum())
    if num_hq == 0:
        rev_kl = None
    else:
        p = counts[counts > 0] / num_hq  # empty bins contribute 0·log 0 = 0
        rev_kl = float(np.sum(p * (np.log(p) + math.log(k))))  # Σ p log(p / (1/K))
        rev_kl = max(rev_kl, 0.0)  # clip −1e-17 round-off

    return {
        "modes": int((counts > 0).sum()),
        "hq_fraction": float(num_hq / n) if n else 0.0,
        "rev_kl": rev_kl,
        "num_samples": int(n),
    }
