"""What a search shows a person: per-sampler full-resolution grids (samples-<sampler>.png), the labelled overview
(samples.png), D's logit field for 2-D latents, and the same to any Lightning logger (metrics, a results table,
the images). Called by LatentSearchModule._finish on rank 0, after the metrics."""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
import torch

from dsls.callbacks.plots import reference_samples, save_image_grid, save_scatter, save_search_figure
from dsls.noise import SigmaLadder
from dsls.runs import TABLE_METRICS

SYMBOLS = {"eps0": "ε₀", "steps_per_level": "T", "levels": "L", "corrector_steps": "corrector steps"}
SHORT_METRICS = {"hq_fraction": "hq", "class_accuracy": "class acc", "mean_confidence": "confidence"}


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def panel_title(name: str, result: dict) -> str:
    """'<sampler>' / its settings / the σ ladder and NFE / its metrics, one line each (lines left out when empty)."""
    settings = result.get("settings") or {}
    parts = [f"{SYMBOLS.get(k, k)}={_fmt(v)}" for k, v in settings.items()
             if v is not None and k not in ("init", "denoise")]
    if settings.get("init", "wide") != "wide":
        parts.append(f"init={settings['init']}")
    if settings.get("denoise") is False:
        parts.append("no denoise")
    nfe = result.get("nfe", 0)
    lad = result.get("ladder")
    cost = [f"NFE {nfe}"]
    if nfe and lad:  # 'none' never reads the ladder
        levels = "" if settings.get("levels") else f"L={lad['num_levels']}, "
        cost.insert(0, f"{levels}σ {lad['sigma_min']:.3g}–{lad['sigma_max']:.3g}")
    if not nfe:
        cost.insert(0, "prior draw, no search")
    metrics = [f"{SHORT_METRICS.get(m, m)} {_fmt(result[m])}" for m in TABLE_METRICS if result.get(m) is not None]
    return "\n".join(line for line in (name, ", ".join(parts), ", ".join(cost), ", ".join(metrics)) if line)


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


def save_search_figures(out_dir: str, model, arrays: dict, trajectories: dict, results: dict,
                        dataset_name: Optional[str], sigma_min: float) -> dict:
    """samples-<sampler>.png per sampler and the overview samples.png; returns {name: path} with 'samples' for the
    overview."""
    titles = {name: panel_title(name, results[name]) for name in arrays}
    paths = {}
    for name, arr in arrays.items():
        path = os.path.join(out_dir, f"samples-{name}.png")
        if arr["x"].ndim == 2:
            paths[name] = save_scatter(path, arr["x"], titles[name], dataset_name)
        else:
            paths[name] = save_image_grid(path, arr["x"])
    field = None
    if arrays[next(iter(arrays))]["x"].ndim == 2:
        points, label = latent_points(model, dataset_name, arrays)
        field = logit_field(model, points, sigma_min, label=label)
    traj_sigmas = {n: snapshot_sigmas(n, t.shape[1], results[n]) for n, t in trajectories.items()}
    paths["samples"] = os.path.join(out_dir, "samples.png")
    save_search_figure(paths["samples"], {n: a["x"] for n, a in arrays.items()}, trajectories, dataset_name, titles,
                       traj_sigmas, field)
    return paths


def results_table(results: dict) -> tuple[list[str], list[list]]:
    """(columns, one row per sampler): its metrics, cost, ladder and settings (as JSON)."""
    metrics = [m for m in TABLE_METRICS if any(m in r for r in results.values())]
    cols = ["sampler", *metrics, "nfe", "seconds_per_sample", "num_samples", "sigma_max", "sigma_min", "num_levels",
            "settings"]
    rows = []
    for name, r in results.items():
        lad = r.get("ladder") or {}
        rows.append([name, *(r.get(m) for m in metrics), r.get("nfe"), r.get("seconds_per_sample"),
                     r.get("num_samples"), lad.get("sigma_max"), lad.get("sigma_min"), lad.get("num_levels"),
                     json.dumps(r.get("settings") or {}, sort_keys=True)])
    return cols, rows


def numeric_metrics(results: dict) -> dict:
    """search/<sampler>/<metric> for every number of every sampler (the W&B sweeps optimise search/langevin/fid)."""
    return {f"search/{n}/{k}": v for n, r in results.items() for k, v in r.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_search_metrics(logger, results: dict) -> None:
    """Every number to any Lightning logger, before any figure is drawn: a sweep gets its metric whatever follows."""
    if logger is not None:
        logger.log_metrics(numeric_metrics(results))
        logger.save()


def log_search_media(logger, results: dict, images: dict) -> None:
    """A results table (log_table) and the images with their settings as captions (log_image), where the logger has
    them (WandbLogger)."""
    if hasattr(logger, "log_table"):
        cols, rows = results_table(results)
        logger.log_table(key="search/results", columns=cols, data=rows)
    if hasattr(logger, "log_image"):
        logger.log_image(key="search/samples", images=[images["samples"]], caption=[" | ".join(results)])
        for name in results:
            if name in images:
                logger.log_image(key=f"search/{name}/samples", images=[images[name]],
                                 caption=[panel_title(name, results[name]).replace("\n", "; ")])
