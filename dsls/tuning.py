"""Search defaults measured, not guessed (experiments/tune_search.py is the command).

On the checkpoints of one peer-table run (dsls.ablation: DS-LS's D, the latent DSM score, NCP-VAE's D, discriminator
guidance), every model gets the same grid of sampler settings (GRID), the same tuning budget for DS-LS and its peers.
Each point is scored by the data set's metric, and RULE picks each model's settings per sampler: the lowest
classifier-FID (FID) whose recall is at least the floor's recall − RECALL_SLACK, the floor being the autoencoder's
reconstructions of held-out images (toy data, which have no recall: the lowest rev_kl). A search config's defaults
then come from the DS-LS rows (docs/results/tuning.md records each measurement and its command).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from dsls.ablation import Search, hyper_parameters, run_search, search_settings, table_rows
from dsls.noise import LATENT_LADDER
from dsls.samplers import make_sampler

GRID = {  # each sampler's settings tried, over its defaults (dsls/samplers)
    "langevin": [{"steps_per_level": t, "eps0": e} for t in (10, 30) for e in (1e-4, 5e-4, 2e-3)],
    "pc": [{"levels": 18, "snr": s} for s in (0.08, 0.16, 0.5)],
    "ode": [{"method": "heun2", "steps": s} for s in (10, 18, 35)],
}
RECALL_SLACK = 0.05  # a default may lose this much recall against the floor, no more
RULE = (f"the lowest classifier-FID (FID) with recall >= the floor's recall - {RECALL_SLACK}; where no setting reaches "
        "that recall, the highest recall (ties: the lower FID); toy data: the lowest rev_kl")
MODELS = {  # the peer-table run's checkpoints that get tuned: (title, phase folder)
    "DS-LS": "adversarial", "latent DSM score": "latent_score", "NCP-VAE D": "peers/ncp/adversarial",
    "discriminator guidance w=1": "peers/dg/adversarial"}


def pick(rows: list[dict], floor_recall: Optional[float]) -> Optional[dict]:
    """The row RULE picks among one model's rows for one sampler (rows without the metric are skipped)."""
    for metric, recall in (("classifier_fid", "classifier_recall"), ("fid", "recall")):
        scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
        if not scored:
            continue
        if floor_recall is None or not all(recall in r for r in scored):
            return min(scored, key=lambda r: r[metric])
        enough = [r for r in scored if r[recall] >= floor_recall - RECALL_SLACK]
        return min(enough, key=lambda r: r[metric]) if enough else max(scored, key=lambda r: (r[recall], -r[metric]))
    scored = [r for r in rows if isinstance(r.get("rev_kl"), (int, float))]
    return min(scored, key=lambda r: r["rev_kl"]) if scored else None


def tune(config_dir: str, run_dir: str, overrides: list[str] = (), models: dict = MODELS, grid: dict = GRID) -> dict:
    """Every model of `models` found in run_dir, every `grid` point of the samplers its search config runs; writes
    <run>/tuning-<time>/tuning.md and tuning.json (every row, with its npz) and returns them."""
    from dsls.checkpoints import done_checkpoint

    config_dir = Path(config_dir)
    settings, trainer_kw = search_settings(config_dir, list(overrides))
    module = {k: v for k, v in settings.items() if k != "samplers"}
    samplers = [n for n in (settings.get("samplers") or grid) if n in grid]
    out_dir = os.path.join(run_dir, "tuning-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir)
    rows, floor = [], None
    adv = done_checkpoint(run_dir, "adversarial")  # DS-LS's ladder: NCP-VAE's D gets its L·T steps
    levels = module.get("num_levels") or (hyper_parameters(adv)["num_levels"] if adv else LATENT_LADDER.num_levels)
    for title, phase in models.items():
        ckpt = done_checkpoint(os.path.dirname(os.path.join(run_dir, phase)), os.path.basename(phase))
        if ckpt is None:
            print(f"note: {run_dir}/{phase} has no finished checkpoint: {title} is not tuned", flush=True)
            continue
        single = title.startswith("NCP")  # NCP-VAE's D samples at σ_min only: Langevin, one level
        names = [n for n in samplers if n == "langevin"] if single else samplers
        for name in names:
            for i, point in enumerate(grid[name]):
                # NCP-VAE's D: all L·T of the point's steps at σ_min, from N(0, I) (as in the peer table)
                steps = make_sampler(name, point).settings().get("steps_per_level")
                spec = {**point, "init": "prior", "steps_per_level": levels * steps} if single else point
                extra = {"num_levels": 1} if single else {}
                search = Search(f"{phase.replace('/', '-')}/{name}-{i}", ckpt, {**module, **extra,
                                                                               "samplers": {name: spec}},
                                {name: f"{title}, {name}"})
                if floor is None:
                    search.titles["floor"] = "floor (reconstructions)"
                print(f"\n=== tuning: {title}, {name} {point}", flush=True)
                got = table_rows(search, run_search(search, trainer_kw, out_dir))
                for r in got:
                    if r["row"].startswith("floor"):
                        floor = r
                    else:
                        rows.append({**r, "model": title, "sampler": name, "point": point})
    floor_recall = None if floor is None else floor.get("classifier_recall", floor.get("recall"))
    chosen = []
    for title in models:
        for name in grid:
            best = pick([r for r in rows if r["model"] == title and r["sampler"] == name], floor_recall)
            if best is not None:
                chosen.append({"model": title, "sampler": name, "point": best["point"], "row": best})
    table = format_tuning(rows, floor, chosen, config_dir.name)
    Path(out_dir, "tuning.md").write_text(table + "\n")
    Path(out_dir, "tuning.json").write_text(json.dumps(
        {"config_dir": str(config_dir), "rule": RULE, "floor": floor, "rows": rows, "chosen": chosen}, indent=2))
    return {"out_dir": out_dir, "rows": rows, "floor": floor, "chosen": chosen, "table": table}


def format_tuning(rows: list[dict], floor: Optional[dict], chosen: list[dict], dataset: str) -> str:
    cols = [c for c in ("hq_fraction", "rev_kl", "modes", "classifier_fid", "classifier_precision", "classifier_recall",
                        "fid", "precision", "recall") if any(c in r for r in rows)] + ["nfe", "seconds_per_sample"]
    fmt = lambda v: "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    picked = {id(c["row"]) for c in chosen}
    lines = [f"search settings on {dataset}: {RULE}", "", "model | sampler | settings | " + " | ".join(cols),
             "--- | --- | --- | " + " | ".join("---" for _ in cols)]
    for r in ([floor] if floor else []) + rows:
        star = "**" if id(r) in picked else ""
        point = ", ".join(f"{k}={v}" for k, v in (r.get("point") or {}).items())
        lines.append(f"{star}{r.get('model', r['row'])}{star} | {r.get('sampler', '—')} | {point or '—'} | "
                     + " | ".join("diverged" if "error" in r and c not in r else fmt(r.get(c)) for c in cols))
    return "\n".join(lines + ["", "chosen (in bold above):"] + [
        f"- {c['model']}, {c['sampler']}: {', '.join(f'{k}={v}' for k, v in c['point'].items())}" for c in chosen])
