"""Inverse problems on held-out images by latent DPS: inpainting (a box or random pixels missing) and colorization
(only the luma observed). The search runs with the measurement term −w·‖A(G(ẑ₀)) − y_obs‖ added to the model's score
(dsls.guidance.Measurement); every sample keeps its per-sample seeds. Beside it, the naive baseline: encode the
observation and decode it.

Writes inverse-<task>.npz (truth, observed, mask, dsls, baseline, and for inpainting dsls_pasted: (N, C, H, W) in
[-1, 1]; mask 1 = known; solve says how dsls and dsls_pasted differ), inverse-<task>.png (dsls.figures.tasks:
labelled columns observation | DS-LS | baseline | truth, one row per image) and results.json["<task>"] with, for
DS-LS and the baseline: psnr_missing (mean over images of the PSNR on the missing pixels, peak-to-peak 2;
colorization: all pixels), residual (RMS of A(x) − y_obs; inpainting also residual_pasted, of dsls_pasted) and the
data set's image metric of the results (classifier-FID for digits and MNIST, FID for other images where its weights
are present).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

from dsls.errors import TaskError
from dsls.guidance import MEASUREMENT_SCALE, Luma, Masking, box_mask, random_pixel_mask
from dsls.model import DPS_BATCH, paste_back
from dsls.samplers import make_sampler

TASKS = ("inpaint", "colorize")
MASKS = ("box", "random")
SCALE = MEASUREMENT_SCALE  # the measurement weight w (dsls.guidance: its one default)
NUM_IMAGES = 100  # held-out images per task


def operator_for(task: str, truth: torch.Tensor, indices, mask: str = "box", fraction: float = 0.5,
                 seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, y_obs = A(truth), mask (1 = known), the observation as an image) for these rows. The random pixel mask
    of a sample depends on (seed, its index) alone; the observation shows missing pixels as 0 (mid-grey)."""
    shape = tuple(truth.shape[1:])
    if task == "inpaint":
        if mask not in MASKS:
            raise TaskError(f"--mask must be one of {', '.join(MASKS)}, got {mask!r}")
        m = box_mask(shape, len(truth)) if mask == "box" else random_pixel_mask(shape, indices, fraction, seed)
        op = Masking(m.to(truth.device))
        y = op(truth)
        return op, y, m, y
    if task == "colorize":
        if shape[0] != 3:
            raise TaskError(f"colorization needs colour images; this data set has {shape[0]} channel(s) "
                            "(try the tinted digits: configs/tinted_digits)")
        op = Luma()
        y = op(truth)
        return op, y, torch.ones_like(truth), y.expand_as(truth).clone()
    raise TaskError(f"unknown inverse task {task!r}; valid: {', '.join(TASKS)}")


def psnr(x: torch.Tensor, truth: torch.Tensor, where: torch.Tensor) -> float:
    """Mean over images of the PSNR (data range [-1, 1], so peak-to-peak 2) on the pixels where `where` is 1."""
    err = ((x - truth) ** 2 * where).flatten(1).sum(1) / where.flatten(1).sum(1).clamp_min(1)
    return float((10 * torch.log10(4.0 / err.clamp_min(1e-12))).mean())


def solve(model, truth: torch.Tensor, task: str, sampler_name: str = "langevin", settings: dict | None = None,
          scale: float = SCALE, mask: str = "box", fraction: float = 0.5, seed: int = 0, batch_size: int = DPS_BATCH,
          ladder=None, log=print) -> dict:
    """DS-LS and the baseline for every row of truth; returns the npz arrays and their metrics (no files). DS-LS is
    LatentModel.dps, the code path of model.inpaint and model.colorize: a result depends on its row's index and the
    seed alone, never on the batch (a row's random mask too: drawn from (seed, index)).

    Inpainting also gives `dsls_pasted`, the DS-LS result with the observed pixels replaced by the observation
    (dsls.model.paste_back; what model.inpaint returns by default), and its residual_pasted (0 but for rounding);
    `dsls` stays the decoded search result as it is, whose observed pixels DPS fits only approximately. psnr_missing
    is the same for both (only missing pixels count). Colorization observes no pixel, only the luma, so it has
    nothing to paste: its arrays and results have no _pasted entries."""
    if task == "inpaint" and mask == "random" and not 0 < fraction < 1:
        raise TaskError(f"--fraction must be in (0, 1), got {fraction}")
    sampler = make_sampler(sampler_name, settings)
    ladder, n, t0 = ladder or model.ladder, len(truth), time.perf_counter()
    truth = truth.to(model.device)
    op, y_obs, m, shown = operator_for(task, truth, range(n), mask, fraction, seed)  # every row at once
    rows_op = (lambda rows: Masking(m[rows])) if task == "inpaint" else (lambda rows: op)
    sol = model.dps(rows_op, truth, sampler_name, seed, scale, batch_size, ladder, **(settings or {}))
    with torch.no_grad():
        base = torch.cat([model.decode(model.encode(b)) for b in shown.split(batch_size)])
    results = {"dsls": sol.x, "baseline": base}
    if task == "inpaint":
        results["dsls_pasted"] = paste_back(sol.x, truth, m)
    log(f"  {task}: {n} images, {sol.nfe} NFE per batch")
    arrays = {k: v.detach().cpu().clamp(-1, 1) for k, v in  # the run-folder contract: images in [-1, 1]
              {"truth": truth, "observed": shown, "mask": m, **results}.items()}
    missing = arrays["mask"] == 0 if task == "inpaint" else torch.ones_like(arrays["mask"], dtype=torch.bool)
    metrics = {name: {"psnr_missing": psnr(arrays[name], arrays["truth"], missing.float()),
                      "residual": float(_residual(op, y_obs, results[name], n).mean())}
               for name in ("dsls", "baseline")}
    if task == "inpaint":
        metrics["dsls"]["residual_pasted"] = float(_residual(op, y_obs, results["dsls_pasted"], n).mean())
    info = {"sampler": sampler_name, "settings": sampler.settings(), "guidance_scale": float(scale), "seed": seed,
            "num_samples": n, "nfe": sol.nfe, "seconds_per_sample": (time.perf_counter() - t0) / max(n, 1),
            "ladder": ladder.state_dict()}
    if task == "inpaint":
        info.update(mask=mask, **({"fraction": fraction} if mask == "random" else {}))
    return {"arrays": {k: v.numpy().astype(np.float32) for k, v in arrays.items()}, "metrics": metrics, "info": info}


def _residual(op, y_obs: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    """RMS of A(x) − y_obs per image."""
    r = (op(x) - y_obs[: len(x)])[:n]
    return r.flatten(1).pow(2).mean(1).sqrt().detach().cpu()


def image_options(options: dict) -> dict:
    """The search's metric options with FID alone (classifier-FID for digits and MNIST): IS, KID and PR would be
    computed only to be dropped."""
    return {**options, "fidelity": ["fid"] if options.get("fidelity") else []}


def run_inverse(model, task: str, out_dir: str, n: int = NUM_IMAGES, options: dict | None = None,
                **solve_kw) -> dict:
    """Solve `task` on the first n held-out images and write the npz, the PNG and results.json["<task>"]; an
    out_dir that already holds this task's results is refused (nothing is overwritten)."""
    from dsls.checkpoints import save_npz
    from dsls.figures.tasks import save_inverse_figure
    from dsls.metrics.samples import metric_kind, sample_metrics
    from dsls.runs import merge_results
    from dsls.tasks.heldout import heldout_data

    if len(model.latent_shape) != 1 or getattr(model, "phase", None) != "adversarial":
        raise TaskError("inverse problems need a phase-2 (adversarial) checkpoint of an image data set")
    check_new_output(out_dir, f"inverse-{task}.npz")
    options = image_options(options or {})
    if metric_kind(model.dataset_name, options) == "fidelity":  # fail before solving, not after
        from dsls.metrics.fidelity import check_inception_weights

        check_inception_weights(options.get("feature_extractor_weights_path"))
    truth = heldout_data(model, n)
    if truth.dim() != 4:
        raise TaskError(f"--task {task} needs image data; {model.dataset_name!r} is not an image data set")
    print(f"{task}: {len(truth)} held-out images, latent DPS with w = {solve_kw.get('scale', SCALE)}", flush=True)
    out = solve(model, truth, task, **solve_kw)
    os.makedirs(out_dir, exist_ok=True)
    save_npz(os.path.join(out_dir, f"inverse-{task}.npz"), **out["arrays"])  # atomic: a full disk keeps no half
    save_inverse_figure(os.path.join(out_dir, f"inverse-{task}.png"), out["arrays"], task=task)
    entry = {**out["metrics"], **out["info"]}
    try:  # the npz is on disk before any metric can fail
        for name in ("dsls", "baseline"):
            got = sample_metrics(out["arrays"][name], model.dataset_name, options)
            entry[name].update({k: v for k, v in got.items() if k in ("classifier_fid", "fid", "colour_accuracy")})
    finally:
        merge_results(os.path.join(out_dir, "results.json"), {task: entry})
    return entry


def check_new_output(out_dir: str, name: str) -> None:
    path = os.path.join(out_dir, name)
    if os.path.exists(path):
        raise TaskError(f"{path} exists: pass another --out, or delete it to redo this task")


def format_inverse(task: str, entry: dict) -> str:
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"  # noqa: E731
    cols = [c for c in ("psnr_missing", "residual", "classifier_fid", "fid", "colour_accuracy") if c in entry["dsls"]]
    lines = [f"{task} | " + " | ".join(cols), "--- | " + " | ".join("---" for _ in cols)]
    lines += [f"{name} | " + " | ".join(fmt(entry[name].get(c)) for c in cols) for name in ("dsls", "baseline")]
    return "\n".join(lines)
