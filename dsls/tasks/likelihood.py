"""Latent log-likelihood log q_σmin(z) (dsls.likelihood.ode_log_prob) of three kinds of latents, as a table:

    codes       held-out codes E(x) of the data's validation split: what q should rate highest
    prior       plain draws z ~ N(0, I): the AAE's starting point
    <sampler>   each search's final latents z, read from samples-<sampler>.npz

written as likelihood.json = {"codes": {...}, "prior": {...}, "<sampler>": {...}} (docs/tasks.md), each entry
{mean_log_prob, nats_per_dim, n, nfe}. nats_per_dim = mean_log_prob / d (a log-density per latent dimension: higher
is more likely). nfe is the most score evaluations one batch's ODE solve made. This is the density of latents under
the model's score, not a data NLL: the decoder is deterministic.

A guided search's latents (samples-<sampler>.npz holds the requested labels y) were pulled towards their classes, so
their entries say so: "guided": true with the search's "labels" and "guidance_scale", and the table's row reads
e.g. 'langevin (guided, w=3, balanced labels)'. 'none' of a guided search ignored the labels: "guided": false.
"""
from __future__ import annotations

import math
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch

from dsls.errors import TaskError
from dsls.likelihood import ode_log_prob
from dsls.noise import SigmaLadder
from dsls.tasks.heldout import heldout_codes, load_latent_model


def prior_draws(shape: Sequence[int], n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def sampler_latents(out_dir: str, name: str, n: int) -> torch.Tensor:
    path = os.path.join(out_dir, f"samples-{name}.npz")
    if not os.path.isfile(path):
        raise TaskError(f"{path} is missing: run the search into {out_dir} first")
    with np.load(path) as f:
        return torch.from_numpy(f["z"][:n]).float()


def guidance_info(out_dir: str, name: str, hp: dict) -> dict:
    """{} for unguided samples; for a guided search's (its npz holds y) {"guided": true, "labels", "guidance_scale"}
    from its settings hp, and {"guided": false} for 'none', which ignores the labels."""
    with np.load(os.path.join(out_dir, f"samples-{name}.npz")) as f:
        if "y" not in f.files:
            return {}
    if name.removeprefix("pixel_") == "none":
        return {"guided": False}
    return {"guided": True, **{k: hp[k] for k in ("labels", "guidance_scale") if hp.get(k) is not None}}


def log_prob_summary(score_fn, z: torch.Tensor, ladder: SigmaLadder, batch_size: int, device, seed: int = 0) -> dict:
    """{mean_log_prob, nats_per_dim, n, nfe} of the rows of z, solved batch by batch."""
    parts, nfe = [], 0
    for i, chunk in enumerate(z.split(batch_size)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)  # the Hutchinson probe (d > 16), fixed per batch
        lp, n = ode_log_prob(score_fn, chunk.to(device), ladder, generator=g)
        parts.append(lp.detach().cpu())
        nfe = max(nfe, n)
    lp = torch.cat(parts).double()
    if not torch.isfinite(lp).all():
        print(f"warning: {int((~torch.isfinite(lp)).sum())} of {len(lp)} log-probabilities are not finite", flush=True)
    mean, d = float(lp.mean()), z[0].numel()
    return {"mean_log_prob": mean, "nats_per_dim": mean / d, "n": int(len(lp)), "nfe": int(nfe)}


NUM_CODES, BATCH = 500, 500  # codes rated per set (held-out, prior, each sampler's), and per ODE solve


def evaluate_likelihood(hp: dict, out_dir: str, samplers: Sequence[str], n: int = NUM_CODES, batch_size: int = BATCH,
                        device: Optional[str] = None) -> dict:
    """Write <out_dir>/likelihood.json for the held-out codes, prior draws and each sampler's samples-<name>.npz.
    hp: the search's settings (ckpt, and the sigma_max/sigma_min/num_levels overrides of the ladder, seed)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_latent_model(hp["ckpt"]).to(device)
    ladder = model.ladder.with_overrides(hp.get("sigma_max"), hp.get("sigma_min"), hp.get("num_levels"))
    score, seed, batch_size = model.score_fn(), hp["seed"], min(batch_size, n)
    sets = {"codes": lambda: heldout_codes(model, n, batch_size, device),
            "prior": lambda: prior_draws(model.latent_shape, n, seed)}
    sets.update({name: (lambda name=name: sampler_latents(out_dir, name, n)) for name in samplers})
    out = {}
    print(f"likelihood log q_σmin by the probability-flow ODE, {ladder}:", flush=True)
    for name, latents in sets.items():
        z = latents()
        print(f"  {name}: {len(z)} latents ...", end=" ", flush=True)
        t0 = time.perf_counter()
        out[name] = log_prob_summary(score, z, ladder, batch_size, device, seed)
        if name in samplers:
            out[name].update(guidance_info(out_dir, name, hp))
        print(f"mean log q = {out[name]['mean_log_prob']:.4g} nats, {out[name]['nfe']} NFE, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    from dsls.checkpoints import save_json

    save_json(os.path.join(out_dir, "likelihood.json"), out, indent=2)  # atomic: a full disk keeps no half file
    return out


def format_likelihood(results: dict) -> str:
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"  # noqa: E731
    lines = ["latents | n | mean log q_σmin (nats) | nats per dim | nfe", "--- | --- | --- | --- | ---"]
    lines += [f"{row_label(k, r)} | {r['n']} | {fmt(r['mean_log_prob'])} | {fmt(r['nats_per_dim'])} | {r['nfe']}"
              for k, r in results.items()]
    return "\n".join(lines)


def row_label(name: str, entry: dict) -> str:
    """The table's name of a set of latents: 'langevin (guided, w=3, balanced labels)' for guided ones."""
    if entry.get("guided") is False:
        return f"{name} (not guided: labels ignored)"
    if not entry.get("guided"):
        return name
    parts = ["guided"]
    if entry.get("guidance_scale") is not None:
        parts.append(f"w={entry['guidance_scale']:g}")
    labels = entry.get("labels")
    if labels is not None:
        parts.append("balanced labels" if labels == "balanced" else f"class {labels}")
    return f"{name} ({', '.join(parts)})"
