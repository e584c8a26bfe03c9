"""The peer table of one data set, in one run (experiments/ablate.py is the command).

In one run folder it trains what the folder lacks, all from the same phase 1, every second stage at D's budget
(optimizer steps × batch):
    DS-LS's D                 phase 2 (adversarial.yaml)
    latent DSM score s_θ      the LSGM / latent-diffusion prior, by DSM on the same codes (latent_score.yaml)
    NCP-VAE's D               phase 2 at σ_min only, without noise conditioning (in <run>/peers/ncp)
    discriminator guidance    phase 2's D_g against s_θ's samples (in <run>/peers/dg; its cost includes s_θ's)
    pixel NCSN                the pixel-space score network (pixel_ncsn.yaml)
then samples every row with the settings of <config-dir>/search.yaml: no search; DS-LS and the latent DSM score with
each of its samplers; NCP-VAE's D by Langevin at σ_min (DS-LS's step there, the same L·T steps, from N(0, I));
discriminator guidance with the same samplers at w ∈ DG_WEIGHTS; the pixel NCSN at the same Langevin steps and at
matched wall time; the floor (the autoencoder's reconstructions of held-out data, where the search scores one).
It writes <run>/ablation-<time>/: ablation.md, ablation.json (each row names its samples-*.npz, relative to that
folder) and every search's samples in a subfolder, so anyone can recompute the figures.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dsls.nested import deep_merge, parse_overrides
from dsls.overrides import ALL_PHASES, PHASES, join_values, phase_args
from dsls.pipeline import run_pipeline

FIT_PHASES = [p for p in ALL_PHASES if p[1] == "fit" and p[0] != "latent_classifier"]  # the main run's phases
PEERS = {"ncp": lambda ckpts: ["--adversarial.model.noise_conditional=false"],  # phase-2 variants: their overrides
         "dg": lambda ckpts: [f"--adversarial.model.fake_ckpt={os.path.abspath(ckpts['latent_score'])}",
                              "--adversarial.model.score_matching_weight=0"]}  # Kim et al.'s D_g: BCE alone
DG_WEIGHTS = (0.5, 1.0, 2.0)  # discriminator guidance's w in the table (1: its default, dsls.priors.DG_SCALE)
METRIC_COLUMNS = ["modes", "hq_fraction", "rev_kl",  # toy
                  "classifier_fid", "classifier_precision", "classifier_recall", "class_kl",  # digits, MNIST
                  "colour_accuracy",  # tinted digits
                  "fid", "precision", "recall", "is_mean", "kid_mean"]  # Inception metrics (GPU data sets)
COST_COLUMNS = ["train_steps_x_batch", "train_seconds", "parameters", "nfe", "seconds_per_sample"]
HEADLINE = [("hq_fraction", max), ("classifier_fid", min), ("fid", min)]  # the metric a sentence compares rows by
SAME = 0.01  # two rows' headline metrics within 1 % (relative) are "about the same" in the sentences
PUBLIC = ("num_levels", "num_samples", "batch_size", "seed", "dg_scale")  # what a row's settings show


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


def sampler_settings(samplers) -> dict:
    """Each sampler of a search config with its full settings (its entry over the sampler's defaults)."""
    from dsls.samplers import make_sampler

    spec = {n: {} for n in samplers} if isinstance(samplers, (list, tuple)) else dict(samplers or {})
    return {name: make_sampler(name, s).settings() for name, s in spec.items()}


def matched_budget(seconds: float, pixel_seconds: float, pixel_nfe: int, levels: int) -> dict:
    """Pixel sampler settings that spend about `seconds` per sample: total evaluations = seconds / (cost of one),
    spread over at most `levels` levels with equal steps (at most levels − 1 evaluations left unspent)."""
    budget = max(1, math.floor(seconds / (pixel_seconds / pixel_nfe) + 1e-9))
    denoise = budget >= 2
    steps = budget - int(denoise)
    per_level = math.ceil(steps / min(levels, steps))
    return {"num_levels": steps // per_level, "steps_per_level": per_level, "denoise": denoise}


# -- training: the main run, then the phase-2 peers in <run>/peers/<name>, sharing its phase 1 ------------------------
def train_peer(config_dir: Path, overrides: list[str], run_dir: str, name: str, ckpts: dict) -> str:
    """Phase 2 of peer `name` (PEERS) into <run>/peers/<name>, on the main run's phase 1 (a symlink to its folder);
    resumed or reused like the main run. Returns its checkpoint."""
    peer = os.path.join(run_dir, "peers", name)
    os.makedirs(peer, exist_ok=True)
    link = os.path.join(peer, "reconstruction")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(os.path.join(run_dir, "reconstruction")), link)
    others = [p for p in FIT_PHASES + [("search", "predict")] if p not in PHASES[:2]]  # their overrides are checked
    out = run_pipeline(str(config_dir), overrides + PEERS[name](ckpts), peer, resume=True, phases=PHASES[:2],
                       check_also=others)
    return out["checkpoints"]["adversarial"]


def stage_cost(ckpt: str) -> dict:
    """The training cost of the phase that wrote `ckpt` (its DONE stamp beside the checkpoints folder): optimizer
    steps × batch, wall seconds, and the parameters of the nets it trained (DG's: D_g and the s_θ it holds)."""
    from dsls.checkpoints import load_phase_checkpoint
    from dsls.loading import load_phase_module

    phase_dir = Path(ckpt).parent.parent
    done = json.loads((phase_dir / "DONE").read_text())
    ck = load_phase_checkpoint(ckpt, ("adversarial", "latent_score", "pixel_ncsn"), flag="ablation")
    batch = (ck.get("datamodule_hyper_parameters") or {}).get("batch_size")
    module = load_phase_module(ckpt, "ablation", ("adversarial", "latent_score", "pixel_ncsn"), loaded=ck)
    nets = [getattr(module, n, None) for n in ("discriminator", "fake_score_net", "score_net")]
    return {"train_steps_x_batch": done["global_step"] * batch if batch else None,
            "train_seconds": done.get("seconds"),
            "parameters": sum(p.numel() for net in nets if net is not None for p in net.parameters())}


def add_costs(score: dict, dg: dict) -> dict:
    """Discriminator guidance's cost: s_θ's training and D_g's together; its parameters are D_g's and the s_θ it holds
    (counted once)."""
    both = lambda k: None if score.get(k) is None or dg.get(k) is None else score[k] + dg[k]  # noqa: E731
    return {"train_steps_x_batch": both("train_steps_x_batch"), "train_seconds": both("train_seconds"),
            "parameters": dg["parameters"]}


# -- sampling: one search per checkpoint and settings, one row per sampler --------------------------------------------
@dataclass
class Search:
    """One search of the table: its folder (under the table's), checkpoint, LatentSearchModule arguments, the title
    of the row of each results key, and the training cost its rows carry."""

    slug: str
    ckpt: str
    settings: dict
    titles: dict
    cost: dict = field(default_factory=dict)


def run_search(search: Search, trainer_kw: dict, out_dir: str) -> dict:
    """{results key: its results entry, with `npz` (relative to out_dir)}. A sampler that diverges costs its own row
    only: the search runs again one sampler at a time, and a diverged one gives {"error": …}."""
    try:
        return _predict(search.settings, search.ckpt, trainer_kw, out_dir, search.slug)
    except FloatingPointError:
        pass
    out = {}
    for name, spec in search.settings["samplers"].items():
        try:
            out.update(_predict({**search.settings, "samplers": {name: spec}}, search.ckpt, trainer_kw, out_dir,
                                f"{search.slug}/{name}"))
        except FloatingPointError as e:
            print(f"warning: {search.slug}/{name} diverged: {e}", flush=True)
            key = next(k for k in search.titles if k.endswith(name))
            out[key] = {"error": f"diverged: {e}"}
    return out


def _predict(settings: dict, ckpt: str, trainer_kw: dict, out_dir: str, slug: str) -> dict:
    import lightning as L

    from dsls.phases.search import LatentSearchModule

    folder = os.path.join(out_dir, slug)
    model = LatentSearchModule(**{**settings, "ckpt": ckpt, "out_dir": folder, "track": 0})
    L.Trainer(**{"enable_progress_bar": False, "enable_model_summary": False, **trainer_kw}).predict(
        model, return_predictions=False)
    results = json.loads(Path(folder, "results.json").read_text())  # the search's own, with its floor if it has one
    return {key: {**{k: v for k, v in entry.items() if k not in ("settings", "ladder")},
                  "npz": f"{slug}/samples-{key}.npz", "sampler_settings": entry.get("settings")}
            for key, entry in results.items()}


def hyper_parameters(ckpt: str) -> dict:
    """A checkpoint's hyper-parameters (its ladder, sizes), read as tensors and plain data only."""
    import torch

    return torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]


def table_searches(config_dir: Path, overrides: list[str], ckpts: dict) -> tuple[list[Search], dict]:
    """The table's searches (before the pixel NCSN at matched wall time, which needs the others' timings), and the
    trainer arguments they run with."""
    settings, trainer_kw = search_settings(config_dir, overrides)
    module = {k: v for k, v in settings.items() if k != "samplers"}  # the ladder, counts, seed: module arguments
    samplers = sampler_settings(settings.get("samplers"))
    searched = {n: s for n, s in samplers.items() if n != "none"}
    lang = samplers.get("langevin") or sampler_settings(["langevin"])["langevin"]
    adv, score, pix = ckpts["adversarial"], ckpts["latent_score"], ckpts["pixel_ncsn"]
    hp = hyper_parameters
    levels, steps = settings.get("num_levels") or hp(adv)["num_levels"], lang["steps_per_level"]
    # the same relative step α_i/σ_i² = eps0/σ_min² in both spaces, so "the same sampler" means the same thing
    pixel_eps0 = lang["eps0"] * (hp(pix)["sigma_min"] / (settings.get("sigma_min") or hp(adv)["sigma_min"])) ** 2
    pixel = {k: v for k, v in module.items() if k not in ("sigma_max", "sigma_min")}
    single = {**lang, "steps_per_level": levels * steps, "init": "prior"}  # Langevin at σ_min, the same L·T steps
    costs = {name: stage_cost(ckpts[name]) for name in ("adversarial", "latent_score", "pixel_ncsn", *PEERS)}
    dg_cost = add_costs(costs["latent_score"], costs["dg"])
    searches = [
        Search("dsls", adv, {**module, "samplers": samplers},
               {"none": "no search", **{n: f"DS-LS, {n}" for n in searched}, "floor": "floor (reconstructions)"},
               costs["adversarial"]),
        Search("latent-score", score, {**module, "samplers": searched}, {n: f"latent DSM score, {n}" for n in searched},
               costs["latent_score"]),
        Search("ncp", ckpts["ncp"], {**module, "num_levels": 1, "samplers": {"langevin": single}},
               {"langevin": "NCP-VAE D, langevin at σ_min"}, costs["ncp"]),
        *[Search(f"dg-w{w:g}", ckpts["dg"], {**module, "dg_scale": w, "samplers": searched},
                 {n: f"discriminator guidance w={w:g}, {n}" for n in searched}, dg_cost) for w in DG_WEIGHTS],
        Search("pixel", pix, {**pixel, "num_levels": levels, "samplers": {"langevin": {**lang, "eps0": pixel_eps0}}},
               {"pixel_langevin": "pixel NCSN, same steps"}, costs["pixel_ncsn"]),
    ]
    return searches, trainer_kw


def ablate(config_dir: str, overrides: list[str], run_dir: str | None = None) -> dict:
    config_dir = Path(config_dir)
    run_dir = run_dir or os.path.join("runs", config_dir.name, "ablate-" + time.strftime("%Y%m%d-%H%M%S"))
    overrides = join_values(overrides)  # '--key value' as '--key=value', here as in the pipeline
    # the searches are run here, not by the pipeline; it still checks their overrides before training
    ckpts = run_pipeline(str(config_dir), overrides, run_dir, resume=True, phases=FIT_PHASES,
                         check_also=[("search", "predict")])["checkpoints"]
    for name in PEERS:
        ckpts[name] = train_peer(config_dir, overrides, run_dir, name, ckpts)
    searches, trainer_kw = table_searches(config_dir, overrides, ckpts)
    stamp, k = os.path.join(run_dir, "ablation-" + time.strftime("%Y%m%d-%H%M%S")), 1
    out_dir = stamp
    while os.path.exists(out_dir):  # a rerun never overwrites an earlier table, even within the same second
        out_dir, k = f"{stamp}-{k}", k + 1
    os.makedirs(out_dir)
    rows = []
    for search in searches:
        print(f"\n=== ablation: {search.slug} ({', '.join(search.titles.values())})", flush=True)
        rows += table_rows(search, run_search(search, trainer_kw, out_dir))
    rows.append(matched_wall_row(searches[-1], rows, trainer_kw, out_dir))
    table = format_ablation(rows, config_dir.name)
    Path(out_dir, "ablation.md").write_text(table + "\n")
    Path(out_dir, "ablation.json").write_text(json.dumps({"config_dir": str(config_dir), "rows": rows}, indent=2))
    return {"run_dir": run_dir, "out_dir": out_dir, "rows": rows, "table": table}


def table_rows(search: Search, results: dict) -> list[dict]:
    """The search's rows, in its titles' order; the floor costs no training or sampling of its own."""
    rows = []
    for key, title in search.titles.items():
        if key not in results:
            continue  # e.g. no floor for a data set without one
        cost = {} if key == "floor" else {k: v for k, v in search.cost.items()}
        if key == "none":
            cost = {k: None for k in search.cost}  # no second stage: x = G(z)
        settings = {k: search.settings[k] for k in PUBLIC if k in search.settings}
        rows.append({"row": title, **cost, **results[key], "settings": settings})
    return rows


def matched_wall_row(pixel: Search, rows: list[dict], trainer_kw: dict, out_dir: str) -> dict:
    """The pixel NCSN with as many score evaluations as fit in DS-LS's Langevin seconds per sample."""
    title = "pixel NCSN, matched wall time"
    by = {r["row"]: r for r in rows}
    ls, px = by.get("DS-LS, langevin", {}), by.get("pixel NCSN, same steps", {})
    print(f"\n=== ablation: {title}", flush=True)
    if "seconds_per_sample" not in ls or "seconds_per_sample" not in px:
        return {"row": title, "error": "needs the timings of the 'DS-LS, langevin' and 'pixel NCSN, same steps' rows"}
    lang = pixel.settings["samplers"]["langevin"]
    m = matched_budget(ls["seconds_per_sample"], px["seconds_per_sample"], px["nfe"], pixel.settings["num_levels"])
    matched = Search("pixel-matched", pixel.ckpt, {**pixel.settings, "num_levels": m["num_levels"], "samplers": {
        "langevin": {**lang, "steps_per_level": m["steps_per_level"], "denoise": m["denoise"]}}},
        {"pixel_langevin": title}, pixel.cost)
    return table_rows(matched, run_search(matched, trainer_kw, out_dir))[0]


# -- the table and what it says ----------------------------------------------------------------------------------------
def headline(rows: list[dict]):
    """(metric, better) that the sentences compare rows by: toy hq_fraction (higher), else (classifier-)FID (lower)."""
    return next(((m, best) for m, best in HEADLINE if any(m in r for r in rows)), (None, None))


def compare(a: float, b: float, best) -> str:
    """'better', 'worse' or 'about the same' (within SAME, relative) for a against b, `best` being max or min."""
    if abs(a - b) <= SAME * max(abs(a), abs(b)):
        return "about the same"
    return "better" if best(a, b) == a else "worse"


def verdicts(rows: list[dict]) -> list[str]:
    """Plain sentences: is DS-LS's best row at least as good as the latent DSM score's, and did discriminator guidance
    (w = 1) help its own s_θ with each sampler."""
    metric, best = headline(rows)
    if metric is None:
        return []
    scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
    pick = lambda prefix: best((r for r in scored if r["row"].startswith(prefix)),  # noqa: E731
                               key=lambda r: r[metric], default=None)
    dsls, score = pick("DS-LS,"), pick("latent DSM score,")
    out = []
    if dsls and score:
        word = {"better": "better than", "worse": "WORSE than", "about the same": "about the same as"}[
            compare(dsls[metric], score[metric], best)]
        out.append(f"- DS-LS's best row ({dsls['row']}, {metric} {dsls[metric]:.4g}) is {word} the latent DSM "
                   f"score's best ({score['row']}, {score[metric]:.4g}) at the same second-stage budget.")
    by = {r["row"]: r for r in scored}
    for title, r in by.items():
        if not title.startswith("latent DSM score, "):
            continue
        sampler = title.split(", ", 1)[1]
        g = by.get(f"discriminator guidance w=1, {sampler}")
        if g:
            word = {"better": "helped", "worse": "hurt", "about the same": "changed little for"}[
                compare(g[metric], r[metric], best)]
            out.append(f"- discriminator guidance (w = 1) {word} its s_θ with {sampler}: {metric} {r[metric]:.4g} -> "
                       f"{g[metric]:.4g}.")
    return out


def format_ablation(rows: list[dict], dataset: str) -> str:
    cols = [c for c in METRIC_COLUMNS if any(c in r for r in rows)] + COST_COLUMNS
    fmt = lambda v: "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    n = next((r.get("num_samples") for r in rows if r.get("num_samples")), "?")
    lines = [f"peer table on {dataset} ({n} samples per row; training cost of the row's second stage)", "",
             "row | " + " | ".join(cols), "--- | " + " | ".join("---" for _ in cols)]
    lines += [f"{r['row']} | " + " | ".join("diverged" if "error" in r and c not in r else fmt(r.get(c)) for c in cols)
              for r in rows]
    errors = [f"- {r['row']}: {r['error']}" for r in rows if "error" in r]
    said = verdicts(rows)
    return "\n".join(lines + ([""] + said if said else []) + ([""] + errors if errors else []))


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
