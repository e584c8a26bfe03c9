"""2-D panels (toy data and 2-D latents): scatter over the data in grey, trajectories coloured by σ on axes that hold
every path whole, and D's logit field with its 0-contour."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap, LogNorm

# plasma without its last, pale-yellow end, which would vanish on white
TRAJECTORY_CMAP = ListedColormap(plt.get_cmap("plasma")(np.linspace(0.0, 0.85, 256)), name="plasma_dark")
PANEL_COLUMNS = 3


def reference_samples(dataset_name: Optional[str], n: int = 2500, seed: int = 0) -> Optional[np.ndarray]:
    """Fresh draws of the toy data set, when it is one, for the 'data' panel."""
    from dsls.data.toy2d import NAMES, sample_toy2d

    return sample_toy2d(dataset_name, n, np.random.default_rng(seed)) if dataset_name in NAMES else None


def plot_limits(points: Sequence[np.ndarray], trajectories: Sequence[np.ndarray] = (), pad: float = 0.05):
    """(lo, hi) per axis: the 0.5–99.5 percentiles of the points (a few strays do not shrink the picture), widened
    to hold every trajectory whole, start included."""
    lo, hi = np.percentile(np.concatenate(points), [0.5, 99.5], axis=0)
    for tr in trajectories:
        t = np.asarray(tr).reshape(-1, 2)
        t = t[np.isfinite(t).all(1)]
        if len(t):
            lo, hi = np.minimum(lo, t.min(0)), np.maximum(hi, t.max(0))
    margin = pad * max(float((hi - lo).max()), 1e-6)
    return lo - margin, hi + margin


def set_limits(ax, limits) -> None:
    (lo, hi) = limits
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")


def draw_trajectories(ax, trajectories: np.ndarray, sigmas: np.ndarray, norm) -> None:
    """Each path's segments coloured by the σ level they end at; a dot at the start, a black cross at the end."""
    segs = np.concatenate([np.stack([tr[:-1], tr[1:]], 1) for tr in trajectories])
    colours = np.tile(sigmas[1:], len(trajectories))
    ax.add_collection(LineCollection(segs, array=colours, cmap=TRAJECTORY_CMAP, norm=norm, lw=1.2, alpha=0.9))
    ax.scatter(trajectories[:, 0, 0], trajectories[:, 0, 1], s=12, c=np.full(len(trajectories), sigmas[0]),
               cmap=TRAJECTORY_CMAP, norm=norm, edgecolors="k", linewidths=0.4, zorder=3)
    ax.plot(trajectories[:, -1, 0], trajectories[:, -1, 1], "x", ms=5, c="k", zorder=4)


def draw_field(fig, ax, field: dict) -> None:
    """D's logit over a latent grid (red: D says data, blue: prior), its 0-contour, and the codes over it."""
    vmax = float(np.percentile(np.abs(field["logit"]), 99)) or 1.0
    mesh = ax.pcolormesh(field["x"], field["y"], field["logit"], cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                         shading="auto")
    ax.contour(field["x"], field["y"], field["logit"], levels=[0.0], colors="k", linewidths=0.8)
    pts = field["points"]
    ax.scatter(pts[:, 0], pts[:, 1], s=1, c="k", alpha=0.35)
    fig.colorbar(mesh, cax=ax.inset_axes((1.04, 0.0, 0.05, 1.0)), label=f"logit D(z, σ={field['sigma']:.3g})")
    ax.set_title(f"D's logit field in latent space\nat σ_min = {field['sigma']:.3g}; black: "
                 f"{field.get('points_label', 'codes')}", fontsize=9)
    ax.set_xlim(field["x"].min(), field["x"].max())
    ax.set_ylim(field["y"].min(), field["y"].max())
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_aspect("equal")


def points_overview(path: str, panels: list, trajectories: dict, traj_sigmas: dict, ref: Optional[np.ndarray],
                    field: Optional[dict]) -> None:
    """panels [(name, title, points)] in rows of PANEL_COLUMNS, the data (ref) in grey behind each, the trajectories
    of trajectories[name] coloured by traj_sigmas[name], and D's logit field on the right when given."""
    trajs = {k: np.asarray(v) for k, v in trajectories.items() if len(v) and k in traj_sigmas}
    limits = plot_limits([x for _, _, x in panels], list(trajs.values()))
    n = len(panels)
    rows, cols = -(-n // PANEL_COLUMNS), min(n, PANEL_COLUMNS)
    fig = plt.figure(figsize=(4.6 * cols + 5.4 * (field is not None), 5.0 * rows), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[4.6 * cols, 5.4]) if field is not None else (fig, None)
    axes = left.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    all_sigmas = np.concatenate([traj_sigmas[k] for k in trajs]) if trajs else np.array([])
    norm = LogNorm(all_sigmas.min(), all_sigmas.max()) if len(all_sigmas) and all_sigmas.min() > 0 else None
    for ax, (name, title, x) in zip(axes, panels):
        if ref is not None and name != "data":  # the data in grey behind, to judge the samples against
            ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.82")
        ax.scatter(x[:, 0], x[:, 1], s=1.5 if len(x) > 500 else 6, alpha=0.5, c="k" if name == "data" else "tab:blue")
        if name in trajs and norm is not None:
            draw_trajectories(ax, trajs[name], traj_sigmas[name], norm)
        ax.set_title(title, fontsize=9)
        set_limits(ax, limits)
    if norm is not None:
        left.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=TRAJECTORY_CMAP), ax=list(axes[:n]),
                      label="σ of the trajectory (dot: start, ×: end)", shrink=0.7)
    if field is not None:
        draw_field(right, right.subplots(), field)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_scatter(path: str, x: np.ndarray, title: str, dataset_name: Optional[str] = None) -> str:
    """One sampler's 2-D samples, all of them, over the data (grey) when it is known: the toy's full grid."""
    ref = reference_samples(dataset_name)
    fig, ax = plt.subplots(figsize=(5, 5.4), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.1)  # room above the four-line title
    if ref is not None:
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.82", label="data")
    ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, c="tab:blue", label="samples")
    set_limits(ax, plot_limits([x] if ref is None else [ref, x]))
    return save_points(fig, ax, path, title, markerscale=4)


def save_points(fig, ax, path: str, title: str, markerscale: float) -> str:
    """The common end of a 2-D points figure: equal axes, its title, the legend below, saved and closed."""
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, markerscale=markerscale)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
