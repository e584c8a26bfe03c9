"""Mode metrics for the toy 2-D Gaussian mixtures (PacGAN / VEEGAN protocol).

A sample is *high-quality* (HQ) if its distance to the nearest mixture mean is ≤ 3·std; it is then
assigned to that mean. A mode is *covered* if at least one HQ sample is assigned to it. ``rev_kl`` is
KL(histogram of HQ samples over the K modes ‖ uniform over K), with the 0·log 0 = 0 convention, so it
lies in [0, log K]: 0 for perfectly balanced coverage, log K when every HQ sample sits in one mode.

The swiss roll gets the same three numbers with its own modes: a sample is HQ within 3·noise std of the noiseless
curve, and is assigned to one of SWISSROLL_SEGMENTS arcs of equal length in t (the data is uniform in t).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from dsls.data.toy2d import MIXTURES, mixture_spec  # noqa: F401  (the data's own modes; importable here)

SWISSROLL_SEGMENTS = 20


def _swissroll_nearest(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the noiseless roll, index of the nearest of SWISSROLL_SEGMENTS equal-t arcs) of each sample."""
    from dsls.data.toy2d import SWISSROLL_SCALE

    t = np.linspace(1.5 * np.pi, 4.5 * np.pi, 4000)  # ~6e-3 apart along the curve: far below the 0.15 tolerance
    curve = SWISSROLL_SCALE * np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    dist = np.linalg.norm(x[:, None, :] - curve[None, :, :], axis=-1)
    nearest = dist.argmin(axis=1)
    return dist[np.arange(len(x)), nearest], nearest * SWISSROLL_SEGMENTS // len(t)


def toy_metrics(x: np.ndarray | torch.Tensor, name: str) -> dict:
    """Mode coverage, HQ fraction and reverse KL of samples ``x`` (N, 2) against mixture ``name``.

    Returns plain Python numbers (JSON-serialisable): ``modes`` (int), ``hq_fraction`` (float),
    ``rev_kl`` (float, or None when there is no HQ sample) and ``num_samples`` (int).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if x.shape[1] != 2:
        raise ValueError(f"toy metrics need samples of shape (N, 2), got {x.shape}")
    n = len(x)
    if name == "swissroll":
        from dsls.data.toy2d import SWISSROLL_NOISE

        dist, nearest = _swissroll_nearest(x)
        k, hq = SWISSROLL_SEGMENTS, dist <= 3 * SWISSROLL_NOISE
    else:  # distance of every sample to every mean; nearest-mean assignment
        means, std = mixture_spec(name)
        dist = np.linalg.norm(x[:, None, :] - means[None, :, :], axis=-1)  # (N, K)
        nearest = dist.argmin(axis=1)
        k, hq = len(means), dist[np.arange(n), nearest] <= 3 * std

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
