"""Which figures a search writes, and what it sends to a Lightning logger: per-sampler full-resolution grids
(samples-<sampler>.png), the labelled overview (samples.png) with D's logit field for 2-D latents, guided samples by
class (guided-<sampler>.png), the floor (the autoencoder's reconstructions of held-out images: a panel of the
overview, samples-floor.png, and floor.png with each image above its reconstruction), and to any logger the metrics,
a results table and the images. Called by LatentSearchModule._finish on rank 0, after the metrics. The drawing itself
is in dsls.figures."""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from dsls.figures.grids import save_image_grid, save_labelled_grid
from dsls.figures.points import save_scatter
from dsls.figures.search import (class_grid_title, latent_points, logit_field, panel_title, save_class_grid,
                                 save_search_figure, snapshot_sigmas)
from dsls.runs import TABLE_METRICS


def save_search_figures(out_dir: str, model, arrays: dict, trajectories: dict, results: dict,
                        dataset_name: Optional[str], sigma_min: float) -> dict:
    """samples-<sampler>.png per sampler, the overview samples.png and, for samples with requested labels `y`,
    guided-<sampler>.png ('none' included: titled as not guided, the chance level beside the guided ones); for an
    entry with the `real` images it reconstructs (the floor), <name>.png with the images above their reconstructions.
    Returns {name: path} with 'samples' for the overview, 'guided-<sampler>' for the class grids and
    '<name>-pairs' for the reconstruction pairs."""
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
    for name, arr in arrays.items():  # one grid per class: row k holds the samples asked to be class k
        if "y" in arr:
            title = class_grid_title(name, results[name], images=arr["x"].ndim != 2)
            label = "class given (unused)" if results[name].get("guided") is False else "requested class"
            paths[f"guided-{name}"] = save_class_grid(os.path.join(out_dir, f"guided-{name}.png"), arr["x"],
                                                      arr["y"], dataset_name, title=title, label=label)
    for name, arr in arrays.items():
        if "real" in arr:
            paths[f"{name}-pairs"] = save_pairs(os.path.join(out_dir, f"{name}.png"), arr["real"], arr["x"],
                                                titles[name])
    return paths


def save_pairs(path: str, real, reconstructions, title: str, n: int = 16) -> str:
    """The first n real images (top row) above their reconstructions G(E(x)) (bottom row)."""
    n = min(n, len(real))
    return save_labelled_grid(path, np.stack([real[:n], reconstructions[:n]]), row_labels=["x", "G(E(x))"],
                              title=title)


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
