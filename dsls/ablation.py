"""The ablation table, from one set of trained checkpoints (experiments/ablate.py is the command).

It trains what the run folder lacks (phase 1, phase 2 and the pixel-space NCSN baseline; finished phases are
reused, a preempted one resumes), then samples every row with the Langevin settings of <config-dir>/search.yaml:

    no search                    x = G(z), z ~ N(0, I): the plain AAE sample
    DS-LS, single σ (σ_min)      Langevin at σ_min only from z ~ N(0, I), the same total number of steps (L·T)
    DS-LS, annealed              the σ ladder, T steps per level
    pixel NCSN, same steps       annealed Langevin in pixel space, the same L, T and α_i/σ_i² as DS-LS
    pixel NCSN, matched wall     as many pixel score evaluations as fit in DS-LS's measured seconds per sample

and writes <run>/ablation.md and <run>/ablation.json (each row's samples live in <run>/ablation/<row>/).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import yaml

from dsls.nested import deep_merge, parse_overrides
from dsls.overrides import ALL_PHASES, PHASES, join_values, phase_args
from dsls.pipeline import run_pipeline

FIT_PHASES = [p for p in ALL_PHASES if p[1] == "fit" and p[0] != "latent_classifier"]  # what the ablation compares
METRIC_COLUMNS = ["modes", "hq_fraction", "rev_kl",  # toy
                  "classifier_fid", "class_kl", "mean_confidence",  # digits, MNIST
                  "fid", "is_mean", "kid_mean", "precision", "recall"]  # Inception metrics (GPU data sets)
PUBLIC = ("samplers", "num_levels", "num_samples", "batch_size", "seed")  # what a row's settings show


def search_settings(config_dir: Path, overrides: list[str]) -> tuple[dict, dict]:
    """(model init_args, trainer args) of the search phase: search.yaml plus the overrides that reach it."""
    from dsls.tasks.settings import check_model_keys

    cfg = yaml.safe_load((config_dir / "search.yaml").read_text())
    args = phase_args("search", cfg, overrides)
    model_over = parse_overrides(args, "model")
    check_model_keys(model_over)
    model = deep_merge(cfg["model"].get("init_args") or {}, model_over)
    trainer = {**cfg.get("trainer", {}), **parse_overrides(args, "trainer"), "logger": False}
    keep = ("accelerator", "devices", "precision", "inference_mode", "logger", "num_nodes", "strategy")
    return model, {k: v for k, v in trainer.items() if k in keep}


def langevin_settings(samplers) -> dict:
    """The full Langevin settings a search config implies (its langevin entry over the defaults)."""
    from dsls.samplers import make_sampler

    spec = {n: {} for n in samplers} if isinstance(samplers, (list, tuple)) else dict(samplers or {})
    return make_sampler("langevin", spec.get("langevin")).settings()


def sample_row(ckpt: str, settings: dict, trainer_kw: dict, out_dir: str) -> dict:
    """Run one search into out_dir; returns its results.json entry, or {"error": …} if the sampler diverged
    (the other rows are still worth having)."""
    import lightning as L

    from dsls.phases.search import LatentSearchModule

    model = LatentSearchModule(**{**settings, "ckpt": ckpt, "out_dir": out_dir, "track": 0})
    try:
        L.Trainer(**{"enable_progress_bar": False, "enable_model_summary": False, **trainer_kw}).predict(
            model, return_predictions=False)
    except FloatingPointError as e:
        print(f"warning: this row diverged: {e}", flush=True)
        return {"error": str(e)}
    (entry,) = model.results.values()
    return {k: v for k, v in entry.items() if k != "settings"}  # the row's own settings replace the sampler's


def matched_budget(seconds: float, pixel_seconds: float, pixel_nfe: int, levels: int) -> dict:
    """Pixel sampler settings that spend about `seconds` per sample: total evaluations = seconds / (cost of one),
    spread over at most `levels` levels with equal steps (at most levels − 1 evaluations left unspent)."""
    budget = max(1, math.floor(seconds / (pixel_seconds / pixel_nfe) + 1e-9))
    denoise = budget >= 2
    steps = budget - int(denoise)
    per_level = math.ceil(steps / min(levels, steps))
    return {"num_levels": steps // per_level, "steps_per_level": per_level, "denoise": denoise}


def _langevin_row(module: dict, num_levels: int, **langevin) -> dict:
    return {**module, "num_levels": num_levels, "samplers": {"langevin": langevin}}


def ablate(config_dir: str, overrides: list[str], run_dir: str | None = None) -> dict:
    import torch

    config_dir = Path(config_dir)
    run_dir = run_dir or os.path.join("runs", config_dir.name, "ablate-" + time.strftime("%Y%m%d-%H%M%S"))
    overrides = join_values(overrides)  # '--key value' as '--key=value', here as in the pipeline
    # the search rows are sampled here, not by the pipeline; it still checks their overrides before training
    ckpts = run_pipeline(str(config_dir), overrides, run_dir, resume=True, phases=FIT_PHASES,
                         check_also=[("search", "predict")])["checkpoints"]
    settings, trainer_kw = search_settings(config_dir, overrides)
    module = {k: v for k, v in settings.items() if k != "samplers"}  # the ladder, counts, seed: module arguments
    lang = langevin_settings(settings.get("samplers"))
    adv, pix = ckpts["adversarial"], ckpts["pixel_ncsn"]  # the checkpoints the phases wrote
    hp = lambda path: torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]  # noqa: E731
    levels, steps = settings.get("num_levels") or hp(adv)["num_levels"], lang["steps_per_level"]
    # the same relative step α_i/σ_i² = eps0/σ_min² in both spaces, so "the same sampler" means the same thing
    pixel_eps0 = lang["eps0"] * (hp(pix)["sigma_min"] / (settings.get("sigma_min") or hp(adv)["sigma_min"])) ** 2
    pixel = {k: v for k, v in module.items() if k not in ("sigma_max", "sigma_min")}
    rows = [
        ("no search", "none", adv, {**module, "samplers": {"none": {}}}),
        # single σ starts from the prior N(0, I): the wide start belongs to the annealed schedule's σ_max
        ("DS-LS, single σ (σ_min)", "single", adv,
         _langevin_row(module, 1, **{**lang, "steps_per_level": levels * steps, "init": "prior"})),
        ("DS-LS, annealed", "annealed", adv, _langevin_row(module, levels, **lang)),
        ("pixel NCSN, same steps", "pixel", pix, _langevin_row(pixel, levels, **{**lang, "eps0": pixel_eps0})),
    ]
    stamp, k = os.path.join(run_dir, "ablation-" + time.strftime("%Y%m%d-%H%M%S")), 1
    out_dir = stamp
    while os.path.exists(out_dir):  # a rerun never overwrites an earlier table, even within the same second
        out_dir, k = f"{stamp}-{k}", k + 1
    os.makedirs(out_dir)
    out = []
    for title, slug, ckpt, row in rows:
        print(f"\n=== ablation row: {title}", flush=True)
        out.append({"row": title, "settings": _public(row),
                    **sample_row(ckpt, row, trainer_kw, f"{out_dir}/{slug}")})
    ls, px = out[2], out[3]
    print("\n=== ablation row: pixel NCSN, matched wall time", flush=True)
    if "error" in ls or "error" in px:
        out.append({"row": "pixel NCSN, matched wall time", "settings": {},
                    "error": "needs the timings of the 'DS-LS, annealed' and 'pixel NCSN, same steps' rows"})
    else:
        m = matched_budget(ls["seconds_per_sample"], px["seconds_per_sample"], px["nfe"], levels)
        pixel_lang = rows[3][3]["samplers"]["langevin"]
        matched = _langevin_row(pixel, m["num_levels"], **{**pixel_lang, "steps_per_level": m["steps_per_level"],
                                                           "denoise": m["denoise"]})
        out.append({"row": "pixel NCSN, matched wall time", "settings": _public(matched),
                    **sample_row(pix, matched, trainer_kw, f"{out_dir}/pixel-matched")})
    table = format_ablation(out, config_dir.name)
    Path(out_dir, "ablation.md").write_text(table + "\n")
    Path(out_dir, "ablation.json").write_text(json.dumps({"config_dir": str(config_dir), "rows": out}, indent=2))
    return {"run_dir": run_dir, "out_dir": out_dir, "rows": out, "table": table}


def _public(settings: dict) -> dict:
    return {k: settings[k] for k in PUBLIC if k in settings}


def format_ablation(rows: list[dict], dataset: str) -> str:
    cols = [c for c in METRIC_COLUMNS if any(c in r for r in rows)] + ["seconds_per_sample", "nfe"]
    fmt = lambda v: "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"ablation on {dataset} ({rows[0].get('num_samples')} samples per row)", "",
             "row | " + " | ".join(cols), "--- | " + " | ".join("---" for _ in cols)]
    lines += [f"{r['row']} | " + " | ".join("diverged" if "error" in r and c not in r else fmt(r.get(c)) for c in cols)
              for r in rows]
    errors = [f"- {r['row']}: {r['error']}" for r in rows if "error" in r]
    return "\n".join(lines + ([""] + errors if errors else []))


def run_variant(config_dir: str, args: list[str], run: str, trained: dict[str, str]) -> dict:
    """The pipeline of one study variant into `run`, reusing fit phases that an earlier variant trained with the same
    arguments (a symlink to its phase folder; `trained` maps those arguments to the folders, and grows)."""
    import hashlib

    configs = {ph: yaml.safe_load(Path(config_dir, f"{ph}.yaml").read_text()) for ph, _ in PHASES}
    routed = []
    for ph, sub in PHASES:
        if sub != "fit":
            continue
        routed += phase_args(ph, configs[ph], args)  # a phase depends on its own and the earlier phases' arguments
        key, dst = hashlib.sha1(" ".join(routed).encode()).hexdigest()[:10], os.path.join(run, ph)
        if key in trained and not os.path.exists(dst):
            os.makedirs(run, exist_ok=True)
            os.symlink(os.path.abspath(trained[key]), dst)
        trained.setdefault(key, dst)
    return run_pipeline(config_dir, args, run_dir=run, resume=True)
