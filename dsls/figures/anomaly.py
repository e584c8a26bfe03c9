"""anomaly.png, the figure of the anomaly task (dsls.tasks.anomaly): one histogram per score of normal against
anomalous test images, then the ROC and the precision-recall curves of every score (the PR panel marks the base
rate: a score at chance lies on it)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

HIST_BINS = 40
PANELS_PER_ROW = 4


def _histogram(ax, name: str, s: np.ndarray, labels: np.ndarray, auprc: float, default: bool) -> None:
    finite = np.isfinite(s)
    s, lab = s[finite], labels[finite]
    lo, hi = np.percentile(s, [0.5, 99.5]) if len(s) else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1)
    for value, colour, what in ((0, "tab:blue", "normal"), (1, "tab:red", "anomalous")):
        ax.hist(np.clip(s[lab == value], bins[0], bins[-1]), bins=bins, density=True, alpha=0.55, color=colour,
                label=f"{what} ({int((lab == value).sum())})")
    ax.set_title(f"{name}{' (default)' if default else ''}\nAUPRC {auprc:.3f}", fontsize=8)
    ax.set_xlabel("score (higher = more anomalous)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6)


def save_anomaly_figure(path: str, labels: np.ndarray, scores: dict, default: str, title: str = "") -> str:
    """scores: {name: array}, labels: 1 = anomaly. The default score is drawn thicker in the curves."""
    labels = np.asarray(labels).astype(int)
    names = list(scores)
    from sklearn.metrics import average_precision_score

    auprc = {n: float(average_precision_score(labels, scores[n])) for n in names}
    rows = math.ceil(len(names) / PANELS_PER_ROW) + 1
    fig = plt.figure(figsize=(3.2 * PANELS_PER_ROW, 2.6 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, PANELS_PER_ROW)
    for i, n in enumerate(names):
        _histogram(fig.add_subplot(grid[i // PANELS_PER_ROW, i % PANELS_PER_ROW]), n, np.asarray(scores[n]), labels,
                   auprc[n], n == default)
    roc_ax = fig.add_subplot(grid[rows - 1, : PANELS_PER_ROW // 2])
    pr_ax = fig.add_subplot(grid[rows - 1, PANELS_PER_ROW // 2:])
    for n in names:
        s = np.nan_to_num(np.asarray(scores[n], dtype=float), nan=-np.inf)
        fpr, tpr, _ = roc_curve(labels, s)
        precision, recall, _ = precision_recall_curve(labels, s)
        width = 2.2 if n == default else 1.0
        roc_ax.plot(fpr, tpr, lw=width, label=n)
        pr_ax.plot(recall, precision, lw=width, label=f"{n} ({auprc[n]:.3f})")
    base = float(labels.mean()) if len(labels) else 0.0
    roc_ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="chance")
    pr_ax.axhline(base, color="k", ls=":", lw=0.8, label=f"base rate {base:.3f}")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (AUPRC in the legend)", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=6, loc="lower right" if ax is roc_ax else "upper right")
    fig.suptitle(title or "anomaly scores of the test images: normal (blue) against anomalous (red)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
