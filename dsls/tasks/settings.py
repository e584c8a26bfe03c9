"""The search settings a task runs with: rebuilt from what a checkpoint saved, then the command's --model.X and
--trainer.X overrides on top.

A phase-2 checkpoint gets the search settings saved beside it in its run folder (<run>/config.yaml, written by the
search phase) when there are any, else the search module's defaults. A phase-3 checkpoint (search.ckpt, written by
every search) carries its own. --model.X=value overrides either; nested sampler settings merge into the saved ones
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


def resolve_task(ckpt: str, out_dir: str | None, overrides) -> tuple[dict, dict, str]:
    """(search settings with out_dir set, Trainer arguments, device) of a task on a checkpoint. out_dir defaults to
    <run>/eval-<time>; the device is the CPU when asked (--trainer.accelerator=cpu) or when there is no GPU."""
    hp, trainer_kw = resolve(ckpt, list(overrides))
    hp["out_dir"] = out_dir or os.path.join(Path(hp["ckpt"]).resolve().parents[2],
                                            f"eval-{time.strftime('%Y%m%d-%H%M%S')}")
    check_writable(hp["out_dir"], "--out")  # before the search, not at its first save
    device = "cpu" if trainer_kw.get("accelerator") == "cpu" or not torch.cuda.is_available() else "cuda"
    return hp, trainer_kw, device


def task_model(hp: dict, device):
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
