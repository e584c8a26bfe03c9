"""What a search's figures say: one title per sampler panel (its settings as it really ran them, the guidance, the σ
ladder and NFE, its metrics), the labelled overview samples.png (2-D scatter panels with σ-coloured trajectories and
D's logit field, or native-size image grids), and guided samples by requested class (guided-<sampler>.png)."""
from __future__ import annotations

import textwrap
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import torch

from dsls.figures.grids import GRID_MAX_COLUMNS, GRID_PADDING, MIN_SIDE, native_grid, save_labelled_grid, upscaled
from dsls.figures.points import points_overview, reference_samples
from dsls.noise import SigmaLadder
from dsls.runs import TABLE_METRICS
from dsls.samplers.ode import FIXED_STEP

SYMBOLS = {"eps0": "ε₀", "steps_per_level": "T", "levels": "L", "corrector_steps": "corrector steps"}
SHORT_METRICS = {"hq_fraction": "hq", "class_accuracy": "class acc", "mean_confidence": "confidence",
                 "colour_accuracy": "colour acc", "classifier_precision": "precision", "classifier_recall": "recall"}


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# -- titles ------------------------------------------------------------------------------------------------------
def settings_line(settings: dict) -> str:
    """A sampler's settings as it used them. The ODE: a fixed-step method walks its own grid of `steps` σ's and
    ignores rtol/atol ('heun2, 18 steps'); an adaptive one picks its steps by rtol/atol ('dopri5, rtol=…, atol=…')."""
    s = dict(settings)
    parts = []
    method = s.pop("method", None)
    if method is not None:
        rtol, atol, steps = s.pop("rtol", None), s.pop("atol", None), s.pop("steps", None)
        parts.append(f"{method}, {steps} steps" if method in FIXED_STEP else
                     f"{method}, rtol={_fmt(rtol)}, atol={_fmt(atol)}")
    init, denoise = s.pop("init", "wide"), s.pop("denoise", None)
    parts += [f"{SYMBOLS.get(k, k)}={_fmt(v)}" for k, v in s.items() if v is not None]
    if init != "wide":
        parts.append(f"init={init}")
    if denoise is False:
        parts.append("no denoise")
    return ", ".join(parts)


def guidance_note(result: dict) -> str:
    """'' for an unguided search; else what guided the samples ('guided: w = 3, balanced labels'), or, for 'none' of
    a guided search (results say guided: false), that it ignored the labels."""
    if result.get("guided") is False:
        return "not guided (labels ignored)"
    if "guidance_scale" not in result:
        return ""
    labels = result.get("labels")
    which = "balanced labels" if labels == "balanced" else f"class {labels}" if labels is not None else "labels"
    return f"guided: w = {result['guidance_scale']:g}, {which}"


def cost_line(result: dict) -> str:
    """The σ range, the number of levels when the sampler walks the ladder's own (Langevin; pc without `levels`),
    and the NFE. pc's `levels` and the ODE's grid are in its settings line, not here. A row that was not sampled
    (the floor: reconstructions of real images) says what it is, its `source`."""
    if "source" in result:
        return result["source"]
    settings, nfe, lad = result.get("settings") or {}, result.get("nfe", 0), result.get("ladder")
    if not nfe:  # 'none' never reads the ladder
        return f"prior draw, no search, NFE {nfe}"
    parts = [f"NFE {nfe}"]
    if lad:
        walks_ladder = not settings.get("levels") and "method" not in settings
        parts.insert(0, (f"L={lad['num_levels']}, " if walks_ladder else "") +
                     f"σ {lad['sigma_min']:.3g}–{lad['sigma_max']:.3g}")
    return ", ".join(parts)


def panel_title(name: str, result: dict) -> str:
    """'<sampler>' / its settings / its guidance / the σ ladder and NFE / its metrics, one line each (lines left out
    when empty)."""
    metrics = [f"{SHORT_METRICS.get(m, m)} {_fmt(result[m])}" for m in TABLE_METRICS if result.get(m) is not None]
    lines = (name, settings_line(result.get("settings") or {}), guidance_note(result), cost_line(result),
             ", ".join(metrics))
    return "\n".join(line for line in lines if line)


def class_grid_title(name: str, result: dict, images: bool = True) -> str:
    """guided-<sampler>.png's title: the sampler, whether and how it was guided, what the rows (colours) mean."""
    note = guidance_note(result) or "guided"
    layout = "one row per requested class" if images else "colour: requested class"
    if result.get("guided") is False:
        layout = ("rows: the label each sample was given" if images else "colour: the label each sample was given") \
            + ", unused (the chance level)"
    acc = f"; class acc {_fmt(result['class_accuracy'])}" if result.get("class_accuracy") is not None else ""
    return f"{name}: {note}\n{layout}{acc}"


# -- the σ of trajectory snapshots, and D's logit field ------------------------------------------------------------
def snapshot_sigmas(name: str, k: int, result: dict) -> np.ndarray:
    """The σ of each of a trajectory's k snapshots. Langevin keeps its start (at p_σmax) and one snapshot after each
    level σ_1..σ_L; pc and ode snapshot their geometric σ grid from σ_max to σ_min, start included; a final denoise
    (Tweedie's step at σ_min) adds one snapshot, drawn at σ_min."""
    lad, settings = result["ladder"], result.get("settings") or {}
    m = k - bool(settings.get("denoise"))
    ladder = SigmaLadder(lad["sigma_max"], lad["sigma_min"], lad["num_levels"])
    sigmas = [ladder.sigma_max] + ladder.sigmas.tolist() if name.endswith("langevin") else []
    if len(sigmas) != m:  # any other sampler (or a langevin with another count): its geometric grid
        sigmas = ladder.with_overrides(num_levels=max(m, 1)).sigmas.tolist()[:m]
    return np.array(sigmas + [ladder.sigma_min] * (k - m))


@torch.no_grad()
def logit_field(model, points: np.ndarray, sigma: float, res: int = 120, label: str = "codes") -> Optional[dict]:
    """logit D(z, σ) on a res × res grid of the 2-D latent space that holds the points and the prior's ±3σ square;
    None when the model has no D (pixel baseline) or its latents are not 2-D."""
    if getattr(model, "discriminator", None) is None or tuple(model.latent_shape) != (2,):
        return None
    lo, hi = np.percentile(points, [0.5, 99.5], axis=0)
    lo, hi = np.minimum(lo, -3.0), np.maximum(hi, 3.0)
    pad = 0.05 * (hi - lo)
    gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], res),
                         np.linspace(lo[1] - pad[1], hi[1] + pad[1], res))
    z = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32, device=model.device)
    logit = model.discriminator(z, torch.full((len(z),), sigma, device=z.device)).float().cpu().numpy()
    return {"x": gx, "y": gy, "logit": logit.reshape(res, res), "points": points, "sigma": sigma,
            "points_label": label}


@torch.no_grad()
def latent_points(model, dataset_name: Optional[str], arrays: dict) -> tuple[np.ndarray, str]:
    """What to draw over D's field: the codes of fresh toy data when the data set is a toy one, else the last
    sampler's latents."""
    ref = reference_samples(dataset_name)
    if ref is not None and hasattr(model, "autoencoder"):
        x = torch.as_tensor(ref, dtype=torch.float32, device=model.device)
        return model.autoencoder.encode(x, sample=False).float().cpu().numpy(), "data codes E(x)"
    name = list(arrays)[-1]
    return arrays[name]["z"].reshape(len(arrays[name]["z"]), -1), f"{name} latents"


# -- the overview --------------------------------------------------------------------------------------------------
def image_overview(path: str, panels: list, dpi: int = 100, max_panel_px: int = 420, min_col_px: int = 280) -> None:
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
    that hold every path whole, and D's logit field as a last panel when given (logit_field). Images: native-size
    grids."""
    titles = titles or {}
    is_2d = next(iter(samples.values())).ndim == 2
    panels = [(k, titles.get(k, k), np.asarray(v)) for k, v in samples.items()]
    if not is_2d:
        image_overview(path, panels)
        return
    ref = reference_samples(dataset_name)
    if ref is not None:
        panels = [("data", f"data ({dataset_name})", ref)] + panels
    points_overview(path, panels, trajectories, traj_sigmas or {}, ref, field)


def save_class_grid(path: str, x: np.ndarray, y: np.ndarray, dataset_name: Optional[str] = None,
                    per_class: int = 10, title: str = "guided samples by requested class",
                    label: str = "requested class") -> str:
    """Samples by requested class: images as one labelled row per class (up to per_class each, white where a class
    runs short), 2-D points coloured by their class over the data. label: the colour bar's name for the class
    ('requested class'; for 'none', the class it was given and did not use)."""
    classes = np.unique(y)
    if x.ndim != 2:
        rows = []
        for k in classes:
            xs = x[y == k][:per_class]
            rows.append(np.concatenate([xs, np.full((per_class - len(xs), *x.shape[1:]), 1.0, dtype=x.dtype)]))
        return save_labelled_grid(path, np.stack(rows), row_labels=[f"class {k}" for k in classes], title=title,
                                  min_side=MIN_SIDE)
    fig, ax = plt.subplots(figsize=(5.5, 5.6), layout="constrained")
    ref = reference_samples(dataset_name)
    if ref is not None:
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8")
    sc = ax.scatter(x[:, 0], x[:, 1], s=4, c=y, cmap="tab20")
    fig.colorbar(sc, ax=ax, label=label)
    ax.set_aspect("equal")
    ax.set_title("\n".join(textwrap.fill(line, 60) for line in title.split("\n")), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
