"""Figures a person would rather look at than read: 2-D scatter panels with trajectories, image grids."""
from __future__ import annotations

from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def reference_samples(dataset_name: Optional[str], n: int = 2500, seed: int = 0) -> Optional[np.ndarray]:
    """Fresh draws of the toy data set, when it is one, for the 'data' panel."""
    from dsls.data.toy2d import NAMES, sample_toy2d

    return sample_toy2d(dataset_name, n, np.random.default_rng(seed)) if dataset_name in NAMES else None


def image_grid(x: np.ndarray, nrow: int = 10, n: int = 100) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] → an (H', W', C) grid in [0, 1]."""
    g = make_grid(torch.as_tensor(x[:n]).clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1)
    return g.permute(1, 2, 0).numpy()


def save_search_figure(path: str, samples: dict, trajectories: dict, dataset_name: Optional[str] = None) -> None:
    """One panel per sampler, beside the data when it is known. 2-D: scatter + decoded trajectories as lines."""
    is_2d = next(iter(samples.values())).ndim == 2
    panels = list(samples.items())
    ref = reference_samples(dataset_name) if is_2d else None
    if ref is not None:
        panels = [("data", ref)] + panels
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2), squeeze=False)
    lim = None
    if is_2d:
        allx = np.concatenate([p for _, p in panels])
        lo, hi = np.percentile(allx, [0.5, 99.5], axis=0)
        pad = 0.1 * (hi - lo).max()
        lim = (lo - pad, hi + pad)
    for ax, (name, x) in zip(axes[0], panels):
        ax.set_title(name)
        if is_2d:
            ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, c="tab:blue" if name == "data" else "tab:orange")
            for tr in trajectories.get(name, []):  # (steps, 2): start dot, path, end cross
                ax.plot(tr[:, 0], tr[:, 1], "-", lw=0.8, c="k", alpha=0.7)
                ax.plot(tr[0, 0], tr[0, 1], "o", ms=3, c="tab:green")
                ax.plot(tr[-1, 0], tr[-1, 1], "x", ms=4, c="tab:red")
            ax.set_xlim(lim[0][0], lim[1][0])
            ax.set_ylim(lim[0][1], lim[1][1])
            ax.set_aspect("equal")
        else:
            g = image_grid(x)
            ax.imshow(g.squeeze(-1) if g.shape[-1] == 1 else g, cmap="gray")
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_class_grid(path: str, x: np.ndarray, y: np.ndarray, dataset_name: Optional[str] = None,
                    per_class: int = 10) -> None:
    """Guided samples by requested class: images as one row per class (up to per_class each), 2-D points coloured by
    their class over the data."""
    classes = np.unique(y)
    if x.ndim == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        ref = reference_samples(dataset_name)
        if ref is not None:
            ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8")
        sc = ax.scatter(x[:, 0], x[:, 1], s=2, c=y, cmap="tab20")
        fig.colorbar(sc, ax=ax, label="requested class")
        ax.set_aspect("equal")
    else:
        rows = []
        for k in classes:
            xs = x[y == k][:per_class]
            pad = np.full((per_class - len(xs), *x.shape[1:]), 1.0, dtype=x.dtype)  # white where a class runs short
            rows.append(np.concatenate([xs, pad]))
        g = image_grid(np.concatenate(rows), nrow=per_class, n=len(classes) * per_class)
        fig, ax = plt.subplots(figsize=(0.5 * per_class + 1, 0.5 * len(classes) + 0.6))
        ax.imshow(g.squeeze(-1) if g.shape[-1] == 1 else g, cmap="gray")
        ax.set_yticks([(i + 0.5) * g.shape[0] / len(classes) for i in range(len(classes))], [str(k) for k in classes])
        ax.set_xticks([])
        ax.set_ylabel("requested class")
    ax.set_title("guided samples, one row per class" if x.ndim != 2 else "guided samples by requested class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def upscaled(x: torch.Tensor, min_side: int = 32) -> torch.Tensor:
    """Images (N, C, H, W) enlarged by an integer factor (nearest) so tiny ones (8×8 digits) can be seen in a PNG."""
    k = max(1, -(-min_side // x.shape[-1]))
    return torch.nn.functional.interpolate(x, scale_factor=k, mode="nearest") if k > 1 else x
