"""The figures of evaluate.py's tasks: inverse-<task>.png (observation | DS-LS | [DS-LS pasted] | baseline | truth,
one labelled row per held-out image) and interpolate.png (per pair a linear row above its DS-LS row, columns t)."""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np

from dsls.figures.grids import save_labelled_grid
from dsls.figures.points import reference_samples

INVERSE_IMAGES = 16  # rows of inverse-<task>.png (all of them when there are fewer)
INTERPOLATION_PAIRS = 8  # pairs in interpolate.png
# the inverse figure's columns: the npz array and its label; dsls_pasted only when the arrays hold it
INVERSE_COLUMNS = (("observed", "observed"), ("dsls", "DS-LS"), ("dsls_pasted", "DS-LS pasted"),
                   ("baseline", "baseline"), ("truth", "truth"))
OBSERVATION = {"inpaint": "observation: missing pixels grey", "colorize": "observation: the luma"}


def inverse_columns(arrays: dict) -> list[tuple[str, str]]:
    """(array, label) of each column the arrays can fill, in the figure's order."""
    return [(k, label) for k, label in INVERSE_COLUMNS if k in arrays]


def inverse_title(task: Optional[str], shown: int, total: int, columns: list) -> str:
    """What the figure shows: the task, how many of the images, and what each column is."""
    notes = [OBSERVATION.get(task, "")]
    if any(k == "dsls_pasted" for k, _ in columns):
        notes.append("DS-LS pasted: the observed pixels put back")
    notes.append("baseline: G(E(observation))")
    head = f"{task}: " if task else ""
    return f"{head}{shown} of {total} held-out images (rows: their index)\n" + "; ".join(n for n in notes if n)


def save_inverse_figure(path: str, arrays: dict, n: int = INVERSE_IMAGES, task: Optional[str] = None) -> str:
    """One labelled row per image (the first n), one labelled column per kind (INVERSE_COLUMNS), pixels enlarged as
    the sample grids do; more than 8 rows are split into two blocks side by side."""
    columns = inverse_columns(arrays)
    total = len(arrays["truth"])
    shown = min(n, total)
    images = np.stack([np.asarray(arrays[k][:shown]) for k, _ in columns], 1)  # (rows, columns, C, H, W)
    return save_labelled_grid(path, images, row_labels=[f"#{i}" for i in range(shown)],
                              col_labels=[label for _, label in columns], blocks=2 if shown > 8 else 1,
                              title=inverse_title(task, shown, total, columns))


def interpolation_rows(linear: np.ndarray, dsls: np.ndarray, n: int) -> tuple[np.ndarray, list[str]]:
    """(rows, labels) of the first n pairs: the linear path's frames, then the DS-LS path's, per pair."""
    k = min(n, len(linear))
    rows = np.stack([linear[:k], dsls[:k]], 1).reshape(2 * k, *linear.shape[1:])
    return rows, [label for i in range(k) for label in (f"pair {i}: linear", "DS-LS")]


def save_interpolation_figure(path: str, linear: np.ndarray, dsls: np.ndarray, dataset_name=None,
                              n: int = INTERPOLATION_PAIRS) -> str:
    """Images: per pair a labelled linear row above its DS-LS row, columns labelled by t (0: one end's code, 1: the
    other's). 2-D points: both paths of the first n pairs over the data."""
    if linear.ndim == 3:
        return _points_interpolation(path, linear, dsls, dataset_name, n)
    rows, labels = interpolation_rows(linear, dsls, n)
    steps = linear.shape[1]
    cols = [f"t={t:.3g}" for t in np.linspace(0, 1, steps)]
    title = (f"interpolation between {len(rows) // 2} of {len(linear)} pairs of held-out images, decoded\n"
             "linear: a straight line between the codes; DS-LS: through the probability-flow ODE")
    return save_labelled_grid(path, rows, row_labels=labels, col_labels=cols, title=title)


def _points_interpolation(path: str, linear: np.ndarray, dsls: np.ndarray, dataset_name, n: int) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 5.5), layout="constrained")
    ref = reference_samples(dataset_name)
    if ref is not None:
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8", label="data")
    for i in range(min(n, len(linear))):
        ax.plot(linear[i, :, 0], linear[i, :, 1], "o-", ms=2, c="tab:red", label="linear" if i == 0 else None)
        ax.plot(dsls[i, :, 0], dsls[i, :, 1], "o-", ms=2, c="tab:blue", label="DS-LS" if i == 0 else None)
    ends = linear[:n, [0, -1]].reshape(-1, 2)
    ax.scatter(ends[:, 0], ends[:, 1], s=25, facecolors="none", edgecolors="k", label="end points (held-out data)")
    ax.legend(fontsize=8)
    ax.set_aspect("equal")
    ax.set_title(f"interpolations of {min(n, len(linear))} pairs, decoded: linear in latent space (red) "
                 "vs DS-LS (blue)", fontsize=9, wrap=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
