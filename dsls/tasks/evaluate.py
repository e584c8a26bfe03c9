"""Evaluate a checkpoint: rebuild the search from what the checkpoint saved, run it, and optionally rate the latents
by their likelihood (dsls.tasks.likelihood). experiments/evaluate.py is the command.

A phase-2 checkpoint gets the search settings saved beside it in its run folder (<run>/config.yaml, written by the
search phase) when there are any, else the module's defaults. A phase-3 checkpoint (search.ckpt, written by every
search) carries its own. --model.X=value overrides either; nested sampler settings merge into the saved ones
(--model.samplers.langevin.eps0=1e-3 keeps langevin's other settings and the other samplers).
"""
from __future__ import annotations

import inspect
import os
import time
from pathlib import Path

import torch
import yaml

from dsls.errors import TaskError
from dsls.nested import deep_merge, parse_overrides
from dsls.runs import check_writable
from dsls.samplers import sampler_flag_hint
from dsls.tasks.likelihood import NUM_CODES

LEGACY_KEYS = ("eps0", "steps_per_level", "denoise", "init")  # sampler settings that were module arguments once


def _search_module():
    from dsls.phases.search import LatentSearchModule

    return LatentSearchModule


def _legacy_samplers(hp: dict) -> dict:
    """A run saved before samplers carried their own settings: move the flat ones under each named sampler."""
    from dsls.samplers import setting_names

    flat = {k: hp.pop(k) for k in LEGACY_KEYS if k in hp}
    names = hp.get("samplers")
    if flat and isinstance(names, (list, tuple)):
        hp["samplers"] = {n: {k: v for k, v in flat.items() if k in setting_names(n)} for n in names}
    return hp


def search_settings(ckpt_path: str) -> dict:
    """The LatentSearchModule arguments a checkpoint implies (see the module docstring); samplers as a mapping."""
    from dsls.phases.base import load_phase_checkpoint

    ckpt = load_phase_checkpoint(ckpt_path, ("adversarial", "pixel_ncsn", "search"), flag="--ckpt")  # no code runs
    phase = ckpt["dsls_phase"]
    if phase == "search":
        hp = {**{k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}, "out_dir": None}
    else:  # adversarial, pixel_ncsn
        saved = Path(ckpt_path).resolve().parents[2] / "config.yaml"  # <run>/adversarial/checkpoints/x.ckpt
        hp = {}
        if saved.is_file():
            model = (yaml.safe_load(saved.read_text()) or {}).get("model") or {}
            if model.get("class_path", "").endswith("LatentSearchModule"):
                hp = dict(model.get("init_args") or {}, out_dir=None)
        hp["ckpt"] = ckpt_path
    hp = _legacy_samplers(hp)
    defaults = {k: p.default for k, p in inspect.signature(_search_module()).parameters.items()
                if p.default is not inspect.Parameter.empty and k not in hp}
    hp = {**defaults, **hp}  # what a phase-2 checkpoint alone does not say (seed, ...): the search's own defaults
    if not isinstance(hp.get("samplers"), dict):  # a list of names, or none saved: the defaults as a mapping
        from dsls.samplers import build_samplers

        spec = hp.get("samplers") or inspect.signature(_search_module()).parameters["samplers"].default
        hp["samplers"] = {n: s.settings() for n, s in build_samplers(spec).items()}
    return hp


def check_model_keys(model_overrides: dict) -> None:
    """Every --model.X names a LatentSearchModule argument; a sampler setting given at the top says where it goes."""
    valid = inspect.signature(_search_module()).parameters
    for key in model_overrides:
        if key in valid:
            continue
        valid_keys = ", ".join(k for k in valid if k != "self")
        raise TaskError(sampler_flag_hint(key) or f"--model.{key} is not a search setting; valid: {valid_keys}")


def resolve(ckpt: str, overrides: list[str]) -> tuple[dict, dict]:
    """(LatentSearchModule arguments, Trainer arguments) for a checkpoint and the command's overrides."""
    unknown = [a for a in overrides if not a.startswith(("--model.", "--trainer."))]
    if unknown:
        raise TaskError(f"unknown arguments {unknown}; use --model.X=value or --trainer.X=value")
    model_over = parse_overrides(list(overrides), "model")
    check_model_keys(model_over)
    hp = deep_merge(search_settings(ckpt), model_over)
    trainer_kw = {"logger": False, "inference_mode": False, **parse_overrides(list(overrides), "trainer")}
    return hp, trainer_kw


def run_search(hp: dict, trainer_kw: dict) -> dict:
    """One search into hp['out_dir']; returns its results.json entries."""
    import lightning as L

    from dsls.callbacks.progress import StepProgressBar

    model = _search_module()(**hp)
    kw = dict(trainer_kw)
    if kw.get("enable_progress_bar") is not False and "callbacks" not in kw:  # compact lines when piped, as dsls's
        kw["callbacks"] = [StepProgressBar()]
    L.Trainer(**kw).predict(model, return_predictions=False)
    return model.results


def sampler_names(hp: dict) -> list[str]:
    return [name for name, settings in hp["samplers"].items() if settings is not None]


SAME_SEARCH_KEYS = ("num_samples", "seed", "sigma_max", "sigma_min", "num_levels", "classifier_ckpt", "labels",
                    "guidance_scale")


def check_same_search(hp: dict) -> None:
    """Samples in out_dir are reused only if its search.ckpt says they came from this checkpoint and these settings."""
    from dsls.phases.base import load_phase_checkpoint

    path = os.path.join(hp["out_dir"], "search.ckpt")
    saved = load_phase_checkpoint(path, "search", flag=f"the reused samples' {path}")["hyper_parameters"] \
        if os.path.isfile(path) else {}
    from dsls.samplers import build_samplers

    settings = lambda h: {n: s.settings() for n, s in build_samplers(h.get("samplers")).items()}  # noqa: E731
    differs = [k for k in SAME_SEARCH_KEYS if k != "samplers" and saved.get(k) != hp.get(k)]
    if saved and settings(saved) != settings(hp):
        differs.append("samplers")
    if not saved.get("ckpt") or Path(saved["ckpt"]).resolve() != Path(hp["ckpt"]).resolve():
        differs.insert(0, "ckpt")
    if differs:
        raise TaskError(f"{hp['out_dir']} holds samples of another search (its search.ckpt differs in "
                        f"{', '.join(differs)}): pass --ckpt {path} to rate them, or another --out-dir")


def evaluate(ckpt: str, out_dir: str | None = None, overrides: list[str] = (), likelihood: bool = False,
             likelihood_n: int = NUM_CODES) -> dict:
    """Run the checkpoint's search into out_dir (default <run>/eval-<time>). likelihood: also write likelihood.json;
    the search is then skipped when out_dir already holds every sampler's samples from the same search."""
    hp, trainer_kw, device = resolve_task(ckpt, out_dir, overrides)
    if likelihood:  # before any sampling: a pixel-space model has no latents to rate
        from dsls.phases.base import load_phase_checkpoint

        load_phase_checkpoint(hp["ckpt"], "adversarial", flag="--ckpt")
    names = sampler_names(hp)
    have = all(os.path.isfile(os.path.join(hp["out_dir"], f"samples-{n}.npz")) for n in names)
    out = {"out_dir": hp["out_dir"], "results": None}
    if likelihood and have:
        check_same_search(hp)
        print(f"using the samples in {hp['out_dir']} (samples-{{{','.join(names)}}}.npz)", flush=True)
    else:
        out["results"] = run_search(hp, trainer_kw)
    if likelihood:
        from dsls.tasks.likelihood import evaluate_likelihood

        out["likelihood"] = evaluate_likelihood(hp, hp["out_dir"], names, n=likelihood_n, device=device)
    return out


def resolve_task(ckpt: str, out_dir: str | None, overrides) -> tuple[dict, dict, str]:
    """(search settings with out_dir set, Trainer arguments, device) of a task on a checkpoint. out_dir defaults to
    <run>/eval-<time>; the device is the CPU when asked (--trainer.accelerator=cpu) or when there is no GPU."""
    hp, trainer_kw = resolve(ckpt, list(overrides))
    hp["out_dir"] = out_dir or os.path.join(Path(hp["ckpt"]).resolve().parents[2],
                                            f"eval-{time.strftime('%Y%m%d-%H%M%S')}")
    check_writable(hp["out_dir"], "--out")  # before the search, not at its first save
    device = "cpu" if trainer_kw.get("accelerator") == "cpu" or not torch.cuda.is_available() else "cuda"
    return hp, trainer_kw, device


TASKS = ("generate", "inpaint", "colorize", "interpolate", "likelihood")
TASK_OPTIONS = {"generate": {"classifier_ckpt", "labels", "scale"},  # what each task reads: others are refused
                "inpaint": {"num", "sampler", "scale", "mask", "fraction"}, "colorize": {"num", "sampler", "scale"},
                "interpolate": {"num", "steps", "sigma_top"}, "likelihood": {"likelihood_n"}}


def _task_model(hp: dict, device):
    """The frozen phase-2 model, its ladder with the search's overrides, and the metric options of its data."""
    from dsls.metrics.samples import metric_options
    from dsls.tasks.heldout import datamodule_hparams, load_latent_model

    model = load_latent_model(hp["ckpt"]).to(device)
    ladder = model.ladder.with_overrides(hp.get("sigma_max"), hp.get("sigma_min"), hp.get("num_levels"))
    default = {k: p.default for k, p in inspect.signature(_search_module()).parameters.items()}
    get = lambda k: hp[k] if k in hp else default[k]  # noqa: E731
    options = metric_options(datamodule_hparams(model), hp.get("data_dir"), get("fidelity"),
                             get("fid_reference_split"), get("feature_extractor_weights_path"))
    return model, ladder, options


def run_task(task: str, ckpt: str, out_dir: str | None = None, overrides: list[str] = (), **options) -> dict:
    """One task on a checkpoint into out_dir (default <run>/eval-<time>); options (None = the task's default):
    generate: classifier_ckpt, labels, scale (the search's class guidance); inpaint / colorize: num held-out images,
    sampler (its settings from the search's config), scale w, mask, fraction (dsls.tasks.inverse); interpolate:
    num pairs, steps frames, sigma_top (dsls.tasks.interpolate); likelihood: likelihood_n (as evaluate(...,
    likelihood=True)). An option the task does not read is an error."""
    if task not in TASKS:
        raise TaskError(f"unknown --task {task!r}; valid: {', '.join(TASKS)}")
    given = {k: v for k, v in options.items() if v is not None}
    unused = sorted(set(given) - TASK_OPTIONS[task])
    if unused:
        raise TaskError(f"--task {task} does not use {', '.join(unused)}; it reads "
                        f"{', '.join(sorted(TASK_OPTIONS[task])) or 'no options'}")
    classifier_ckpt, labels, scale = given.get("classifier_ckpt"), given.get("labels"), given.get("scale")
    if task == "generate" and (classifier_ckpt or labels is not None or scale is not None):
        guided = {"classifier_ckpt": classifier_ckpt, "labels": labels}
        if scale is not None:
            guided["guidance_scale"] = scale
        overrides = [*overrides, *(f"--model.{k}={v}" for k, v in guided.items() if v is not None)]
    if task in ("generate", "likelihood"):
        return evaluate(ckpt, out_dir, overrides, likelihood=task == "likelihood",
                        **({"likelihood_n": given["likelihood_n"]} if "likelihood_n" in given else {}))
    hp, _, device = resolve_task(ckpt, out_dir, overrides)
    model, ladder, metric_options = _task_model(hp, device)
    seed = hp["seed"]
    if task == "interpolate":
        from dsls.tasks.interpolate import run_interpolation

        kw = {k: given[k] for k in ("steps", "sigma_top") if k in given}
        entry = run_interpolation(model, hp["out_dir"], **({"pairs": given["num"]} if "num" in given else {}),
                                  ladder=ladder, **kw)
    else:
        from dsls.tasks.inverse import run_inverse

        kw = {k: given[k] for k in ("scale", "mask", "fraction") if k in given}
        sampler = given.get("sampler", "langevin")
        settings = (hp.get("samplers") or {}).get(sampler) or {}
        entry = run_inverse(model, task, hp["out_dir"], **({"n": given["num"]} if "num" in given else {}),
                            options=metric_options, sampler_name=sampler, settings=settings, seed=seed,
                            ladder=ladder, **kw)
    return {"out_dir": hp["out_dir"], "task": task, "entry": entry}
