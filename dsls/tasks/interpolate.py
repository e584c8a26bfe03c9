"""Interpolation between pairs of held-out data points, along two paths in latent space:

    linear   z(t) = (1 − t)·E(x_a) + t·E(x_b): what a plain AAE does; it crosses the holes of q between modes
    dsls     both codes carried up the probability-flow ODE to σ_top, interpolated there, and every point of that path
             carried back down to σ_min. At σ_top = σ_max ('max', the design's recipe) the path is a slerp, as
             q_σmax ≈ N(0, (1+σ_max²)I) lives on a shell; below it, a straight line. The default σ_top = 1 (the
             codes' own scale: holes filled, modes still apart) measured best on digits (docs/results/tasks.md)

then decoded (no Tweedie step: the end points stay the codes themselves); the paths' math is dsls.interpolation, which
LatentModel.interpolate uses too. Two hole figures per path:
    on_manifold  the fraction of path points whose D logit at σ_min is at least the 5th percentile of held-out codes'
                 logits (a point as typical as 95 % of real codes);
    path_energy  PPL-style: the mean over segments of ‖x_{k+1} − x_k‖² / ε², ε = 1/(steps − 1), on decoded frames
                 (a straight path at constant speed has the least; a jump through a hole costs a lot).
Writes interpolate.npz (linear, dsls: (pairs, steps, data...)), interpolate.png (dsls.figures.tasks: per pair a
linear row above its DS-LS row, columns t) and results.json["interpolate"].
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from dsls.errors import TaskError
from dsls.interpolation import SIGMA_TOP, linear_path, ode_path, slerp, top_sigma  # noqa: F401  (the paths' math)
from dsls.samplers.ode import TOLERANCE
from dsls.tasks.inverse import check_new_output

PERCENTILE = 5.0  # a path point is on the manifold when its D logit beats this percentile of held-out codes'
PAIRS, STEPS = 64, 9  # the defaults: pairs of held-out points, frames per path (σ of the path: SIGMA_TOP)


def logit_at_sigma_min(model, z: torch.Tensor, sigma_min: float | None = None) -> torch.Tensor:
    """The model's logit (LatentModel.logit: D's) of latents z at σ_min."""
    sigma_min = model.ladder.sigma_min if sigma_min is None else sigma_min
    with torch.no_grad():
        return model.logit(z, torch.full((len(z),), sigma_min, device=z.device))


def hole_figures(model, paths: torch.Tensor, frames: torch.Tensor, threshold: float,
                 sigma_min: float | None = None) -> dict:
    """on_manifold and path_energy of latent paths (pairs, steps, d) and their decoded frames (pairs, steps, ...)."""
    logits = logit_at_sigma_min(model, paths.flatten(0, 1), sigma_min)
    steps = paths.shape[1]
    seg = (frames[:, 1:] - frames[:, :-1]).flatten(2).pow(2).sum(-1) * (steps - 1) ** 2
    return {"on_manifold": float((logits >= threshold).float().mean()), "path_energy": float(seg.mean())}


def run_interpolation(model, out_dir: str, pairs: int = PAIRS, steps: int = STEPS, reference_codes: int = 1000,
                      sigma_top=SIGMA_TOP, rtol: float = TOLERANCE, atol: float = TOLERANCE, ladder=None) -> dict:
    """Interpolate `pairs` pairs of held-out points (validation rows 0..2·pairs−1); the logit threshold comes from
    the next `reference_codes` held-out codes. Writes the npz, the PNG and results.json["interpolate"]."""
    from dsls.checkpoints import save_npz
    from dsls.figures.tasks import save_interpolation_figure
    from dsls.runs import merge_results
    from dsls.tasks.heldout import heldout_codes

    if getattr(model, "phase", None) != "adversarial":
        raise TaskError("interpolation needs a phase-2 (adversarial) checkpoint: its D rates the path points")
    if pairs < 1 or steps < 3:
        raise TaskError(f"need pairs >= 1 and steps >= 3, got {pairs} and {steps}")
    ladder = ladder or model.ladder
    device, t0 = model.device, time.perf_counter()
    check_new_output(out_dir, "interpolate.npz")
    ends = heldout_codes(model, 2 * pairs, 512, device)
    if len(ends) < 4:
        raise TaskError(f"the validation split has {len(ends)} rows: too few for interpolation pairs")
    if len(ends) < 2 * pairs:  # a small validation split: as many pairs as it holds, and half of it for the threshold
        pairs = len(ends) // 4
        print(f"note: the validation split has {len(ends)} rows; using {pairs} pairs", flush=True)
        ends = ends[: 2 * pairs]
    ref = heldout_codes(model, reference_codes, 512, device, offset=2 * pairs)
    threshold = float(torch.quantile(logit_at_sigma_min(model, ref, ladder.sigma_min), PERCENTILE / 100))
    za, zb = ends[0::2], ends[1::2]
    print(f"interpolate: {pairs} pairs x {steps} steps; on-manifold threshold = {threshold:.4g} (the "
          f"{PERCENTILE:g}th percentile of {len(ref)} held-out codes' D logits at sigma_min)", flush=True)
    paths = {"linear": (linear_path(za, zb, steps), 0)}
    paths["dsls"] = ode_path(model.score_fn(), za, zb, steps, ladder, sigma_top, rtol, atol)
    arrays, entry = {}, {"pairs": pairs, "steps": steps, "sigma_top": top_sigma(ladder, sigma_top),
                         "threshold": threshold, "percentile": PERCENTILE,
                         "reference_codes": len(ref), "ladder": ladder.state_dict(), "rtol": rtol, "atol": atol}
    for name, (z, nfe) in paths.items():
        with torch.no_grad():
            frames = model.decode(z.flatten(0, 1)).view(pairs, steps, *model.autoencoder.data_shape)
        arrays[name] = frames.cpu().numpy().astype(np.float32)
        arrays[f"{name}_z"] = z.detach().cpu().numpy().astype(np.float32)
        entry[name] = {**hole_figures(model, z, frames, threshold, ladder.sigma_min), "nfe": nfe}
        print(f"  {name}: on_manifold {entry[name]['on_manifold']:.3f}, path_energy "
              f"{entry[name]['path_energy']:.4g}", flush=True)
    entry["seconds"] = time.perf_counter() - t0
    os.makedirs(out_dir, exist_ok=True)
    save_npz(os.path.join(out_dir, "interpolate.npz"), **arrays)  # atomic: a full disk keeps no half file
    save_interpolation_figure(os.path.join(out_dir, "interpolate.png"), arrays["linear"], arrays["dsls"],
                              model.dataset_name)
    merge_results(os.path.join(out_dir, "results.json"), {"interpolate": entry})
    return entry
