"""Figures a person would rather look at than read: full-resolution image grids, labelled overviews of a search
(2-D scatter panels with σ-coloured trajectories and D's logit field, or native-size image grids), per-σ accuracy
of D and reconstruction pairs.

Image grids (torchvision make_grid / save_image) put one PNG pixel on each data pixel, with 2 px of white padding and
up to 10 columns; tiny images are first enlarged (nearest) by the integer factor max(1, ⌊32 / side⌋), so that they
can be seen: 8×8 digits ×4 (32 px), 16 px ×2, 28-px MNIST and anything larger ×1."""
from __future__ import annotations

import math
import textwrap
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

GRID_PADDING, GRID_MAX_COLUMNS, GRID_MAX_IMAGES, MIN_SIDE = 2, 10, 100, 32
# plasma without its last, pale-yellow end, which would vanish on white
TRAJECTORY_CMAP = ListedColormap(plt.get_cmap("plasma")(np.linspace(0.0, 0.85, 256)), name="plasma_dark")
PANEL_COLUMNS = 3


def reference_samples(dataset_name: Optional[str], n: int = 2500, seed: int = 0) -> Optional[np.ndarray]:
    """Fresh draws of the toy data set, when it is one, for the 'data' panel."""
    from dsls.data.toy2d import NAMES, sample_toy2d

    return sample_toy2d(dataset_name, n, np.random.default_rng(seed)) if dataset_name in NAMES else None


def upscaled(x: torch.Tensor, min_side: int = MIN_SIDE) -> torch.Tensor:
    """Images (N, C, H, W) enlarged by the integer factor ⌊min_side / side⌋ (nearest), so tiny ones (8×8 digits)
    can be seen in a PNG; min_side px and larger (and 28-px MNIST) stay as they are."""
    k = max(1, min_side // x.shape[-1])
    return torch.nn.functional.interpolate(x, scale_factor=k, mode="nearest") if k > 1 else x


def grid_columns(n: int) -> int:
    """About square, at most GRID_MAX_COLUMNS wide."""
    return max(1, min(GRID_MAX_COLUMNS, math.ceil(math.sqrt(n))))


def image_grid(x: np.ndarray, nrow: int = 10, n: int = 100) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] → an (H', W', C) grid in [0, 1]."""
    g = make_grid(torch.as_tensor(x[:n]).clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1)
    return g.permute(1, 2, 0).numpy()


def native_grid(x, n: int = GRID_MAX_IMAGES, nrow: Optional[int] = None) -> torch.Tensor:
    """The first n images (N, C, H, W) in [-1, 1] as one (3, H', W') grid in [0, 1], at native size (tiny ones
    upscaled), white padding."""
    x = upscaled(torch.as_tensor(np.asarray(x[:n]), dtype=torch.float32).clamp(-1, 1))
    return make_grid(x, nrow=nrow or grid_columns(len(x)), padding=GRID_PADDING, normalize=True, value_range=(-1, 1),
                     pad_value=1)


def save_image_grid(path: str, x, n: int = GRID_MAX_IMAGES, nrow: Optional[int] = None) -> str:
    """A full-resolution PNG of up to n images (see native_grid)."""
    save_image(native_grid(x, n, nrow), path)
    return path


# -- 2-D panels ------------------------------------------------------------------------------------------------
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


def _draw_trajectories(ax, trajectories: np.ndarray, sigmas: np.ndarray, norm) -> None:
    """Each path's segments coloured by the σ level they end at; a dot at the start, a black cross at the end."""
    segs = np.concatenate([np.stack([tr[:-1], tr[1:]], 1) for tr in trajectories])
    colours = np.tile(sigmas[1:], len(trajectories))
    ax.add_collection(LineCollection(segs, array=colours, cmap=TRAJECTORY_CMAP, norm=norm, lw=1.2, alpha=0.9))
    ax.scatter(trajectories[:, 0, 0], trajectories[:, 0, 1], s=12, c=np.full(len(trajectories), sigmas[0]),
               cmap=TRAJECTORY_CMAP, norm=norm, edgecolors="k", linewidths=0.4, zorder=3)
    ax.plot(trajectories[:, -1, 0], trajectories[:, -1, 1], "x", ms=5, c="k", zorder=4)


def _draw_field(fig, ax, field: dict) -> None:
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


def _points_overview(path: str, panels: list, trajectories: dict, traj_sigmas: dict, ref: Optional[np.ndarray],
                     field: Optional[dict]) -> None:
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
            _draw_trajectories(ax, trajs[name], traj_sigmas[name], norm)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(limits[0][0], limits[1][0])
        ax.set_ylim(limits[0][1], limits[1][1])
        ax.set_aspect("equal")
    if norm is not None:
        left.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=TRAJECTORY_CMAP), ax=list(axes[:n]),
                      label="σ of the trajectory (dot: start, ×: end)", shrink=0.7)
    if field is not None:
        _draw_field(right, right.subplots(), field)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- image panels at native size ---------------------------------------------------------------------------------
def _image_overview(path: str, panels: list, dpi: int = 100, max_panel_px: int = 420, min_col_px: int = 280) -> None:
    """One native-size grid per panel (as many images as fit in about max_panel_px, up to 10×10), each under its
    wrapped title. The axes are placed in pixels, so one figure pixel shows one grid pixel."""
    side = upscaled(torch.zeros(1, 1, *panels[0][2].shape[-2:])).shape[-1] + GRID_PADDING
    cols = max(2, min(GRID_MAX_COLUMNS, max_panel_px // side))
    grids = [native_grid(x, n=cols * cols, nrow=cols).permute(1, 2, 0).numpy() for _, _, x in panels]
    col_w = [max(g.shape[1], min_col_px) + 20 for g in grids]
    wrap = lambda t, w: "\n".join(textwrap.fill(line, max(20, w // 7)) for line in t.split("\n"))  # noqa: E731
    titles = [wrap(t, w) for (_, t, _), w in zip(panels, col_w)]
    head = 16 * max(t.count("\n") + 1 for t in titles) + 12
    W, H = sum(col_w), head + max(g.shape[0] for g in grids) + 10
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi)
    x0 = 0
    for g, t, w in zip(grids, titles, col_w):
        left = x0 + (w - g.shape[1]) / 2
        ax = fig.add_axes((left / W, (H - head - g.shape[0]) / H, g.shape[1] / W, g.shape[0] / H))
        ax.imshow(g, interpolation="nearest")
        ax.axis("off")
        fig.text((x0 + w / 2) / W, 1 - 6 / H, t, ha="center", va="top", fontsize=9)
        x0 += w
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def save_search_figure(path: str, samples: dict, trajectories: dict, dataset_name: Optional[str] = None,
                       titles: Optional[dict] = None, traj_sigmas: Optional[dict] = None,
                       field: Optional[dict] = None) -> None:
    """One panel per sampler, beside the data when it is known, each titled by titles[name] (default: the name).
    2-D: scatter over the data in grey, trajectories (K snapshots each) coloured by traj_sigmas[name] (K σ's), on axes
    that hold every path whole, and D's logit field as a last panel when given (see dsls.callbacks.search_figures).
    Images: native-size grids."""
    titles = titles or {}
    is_2d = next(iter(samples.values())).ndim == 2
    panels = [(k, titles.get(k, k), np.asarray(v)) for k, v in samples.items()]
    if not is_2d:
        _image_overview(path, panels)
        return
    ref = reference_samples(dataset_name)
    if ref is not None:
        panels = [("data", f"data ({dataset_name})", ref)] + panels
    _points_overview(path, panels, trajectories, traj_sigmas or {}, ref, field)


def save_scatter(path: str, x: np.ndarray, title: str, dataset_name: Optional[str] = None) -> str:
    """One sampler's 2-D samples, all of them, over the data (grey) when it is known: the toy's full grid."""
    ref = reference_samples(dataset_name)
    fig, ax = plt.subplots(figsize=(5, 5.4), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.1)  # room above the four-line title
    if ref is not None:
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.82", label="data")
    ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, c="tab:blue", label="samples")
    lo, hi = plot_limits([x] if ref is None else [ref, x])
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    return _save_points(fig, ax, path, title, markerscale=4)


def _save_points(fig, ax, path: str, title: str, markerscale: float) -> str:
    """The common end of a 2-D points figure: equal axes, its title, the legend below, saved and closed."""
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, markerscale=markerscale)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- training-end figures ----------------------------------------------------------------------------------------
def save_sigma_accuracy(path: str, sigmas: Sequence[float], acc_q: Sequence[float], acc_p: Sequence[float],
                        title: str) -> str:
    """D's accuracy per σ level on codes (q) and prior draws (p), log σ axis; 0.5 is chance."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    ax.semilogx(sigmas, acc_q, "o-", label="q: codes E(x) + σε (D > 0)")
    ax.semilogx(sigmas, acc_p, "s-", label="p: prior N(0, (1+σ²)I) (D < 0)")
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


def save_reconstructions(path: str, x: np.ndarray, r: np.ndarray, title: str = "data → reconstruction") -> str:
    """Images: data and reconstruction side by side in pairs (data, recon, data, recon, … 5 pairs a row), native
    size. 2-D: each data point joined to its reconstruction."""
    if x.ndim == 2:
        fig, ax = plt.subplots(figsize=(5, 5.4), layout="constrained")
        ax.plot(np.stack([x[:, 0], r[:, 0]]), np.stack([x[:, 1], r[:, 1]]), "-", c="0.6", lw=0.5)
        ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:blue", label="data")
        ax.scatter(r[:, 0], r[:, 1], s=2, c="tab:orange", label="reconstruction")
        return _save_points(fig, ax, path, title, markerscale=3)
    n = min(len(x), GRID_MAX_IMAGES // 2)
    pairs = np.stack([x[:n], r[:n]], 1).reshape(2 * n, *x.shape[1:])  # x0, r0, x1, r1, …
    return save_image_grid(path, pairs, n=2 * n, nrow=min(GRID_MAX_COLUMNS, 2 * grid_columns(n)))


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
