"""End-of-training figures: phase 1's reconstruction pairs and phase 2's accuracy of D per σ level."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from dsls.figures.grids import GRID_MAX_COLUMNS, GRID_MAX_IMAGES, MIN_SIDE, save_labelled_grid
from dsls.figures.points import plot_limits, set_limits

TOY_PAIRS = 60  # data → reconstruction segments drawn on the toy: more would hide each other


def save_sigma_accuracy(path: str, sigmas: Sequence[float], acc_q: Sequence[float], acc_p: Sequence[float],
                        title: str, fakes: str = "prior N(0, (1+σ²)I)") -> str:
    """D's accuracy per σ level on codes (q) and on what D learns against (p: prior draws, or discriminator
    guidance's samples of s_θ, as `fakes` says), log σ axis; 0.5 is chance."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    ax.semilogx(sigmas, acc_q, "o-", label="q: codes E(x) + σε (D > 0)")
    ax.semilogx(sigmas, acc_p, "s-", label=f"p: {fakes} (D < 0)")
    ax.semilogx(sigmas, (np.asarray(acc_q) + np.asarray(acc_p)) / 2, "--", c="0.4", label="mean")
    ax.axhline(0.5, c="0.6", lw=0.8, ls=":")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("σ (the search runs from right to left)")
    ax.set_ylabel("accuracy of D")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pair_rows(x: np.ndarray, r: np.ndarray, cols: int = GRID_MAX_COLUMNS) -> tuple[np.ndarray, list[str]]:
    """(rows, labels): up to `cols` data images in a row, their reconstructions in the row below, and so on; the
    last rows are filled with white. A pair sits one above the other."""
    n = len(x)
    fill = -(-n // cols) * cols - n
    white = np.ones((fill, *x.shape[1:]), dtype=np.float32)
    xs, rs = (np.concatenate([np.asarray(a, dtype=np.float32), white]).reshape(-1, cols, *x.shape[1:])
              for a in (x, r))
    rows = np.stack([xs, rs], 1).reshape(-1, cols, *x.shape[1:])  # data row, its reconstructions, next data row…
    return rows, ["data", "reconstruction"] * len(xs)


def save_reconstructions(path: str, x: np.ndarray, r: np.ndarray, title: str = "data → reconstruction") -> str:
    """Images: labelled rows, each row of data above the row of its reconstructions G(E(x)) (up to 50 pairs).
    2-D: see save_toy_reconstructions."""
    if x.ndim == 2:
        return save_toy_reconstructions(path, x, r, title)
    n = min(len(x), GRID_MAX_IMAGES // 2)
    rows, labels = pair_rows(x[:n], r[:n])
    return save_labelled_grid(path, rows, row_labels=labels, min_side=MIN_SIDE,
                              title=f"{title}\neach reconstruction G(E(x)) below its data x")


def save_toy_reconstructions(path: str, x: np.ndarray, r: np.ndarray, title: str, pairs: int = TOY_PAIRS) -> str:
    """Two panels on the same axes. Left: all data in grey, and for `pairs` of them an arrow from x to G(E(x)).
    Right: data and reconstructions side by side in matching colours (hue = the angle of x about the data's centre),
    so where each part of the data went can be read even where the arrows are too short to see."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5.4), layout="constrained", sharex=True, sharey=True)
    limits = plot_limits([x, r])
    sub = np.random.default_rng(0).permutation(len(x))[:pairs]
    left.scatter(x[:, 0], x[:, 1], s=1, c="0.8")
    d = r[sub] - x[sub]
    left.quiver(x[sub, 0], x[sub, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, width=0.004,
                color="k")
    left.scatter(x[sub, 0], x[sub, 1], s=8, c="tab:blue", zorder=3)
    left.set_title(f"arrows: data x → its reconstruction G(E(x)) ({len(sub)} of {len(x)})", fontsize=9)
    centre = np.median(x, axis=0)
    hue = np.arctan2(x[:, 1] - centre[1], x[:, 0] - centre[0])
    right.scatter(x[:, 0], x[:, 1], s=3, c=hue, cmap="hsv", marker="o", alpha=0.25)
    right.scatter(r[:, 0], r[:, 1], s=5, c=hue, cmap="hsv", marker="x")
    right.set_title("colour: the angle of x about the data's centre,\nshared by x (faint dot) and G(E(x)) (×)",
                    fontsize=9)
    for ax in (left, right):
        set_limits(ax, limits)
    grey = dict(ls="", c="0.4")
    handles = [Line2D([], [], marker="o", ms=3, alpha=0.4, label="data x", **grey),
               Line2D([], [], marker="x", ms=5, label="reconstruction G(E(x))", **grey),
               Line2D([], [], marker=r"$\rightarrow$", ms=12, c="k", ls="", label="x → G(E(x))")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
