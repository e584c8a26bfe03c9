"""Chaining the phases of one configs/<dataset> folder in one process, and routing command-line overrides to them.

Overrides go to every phase that accepts them: --trainer.* to all, --data.* to the fit phases, --model.X to the
phases whose module has a parameter X (--model.samplers.langevin.eps0 reaches the search only). Prefix one with a
phase to target that phase alone (--adversarial.model.mode=joint). experiments/run_pipeline.py is the command.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import time
from pathlib import Path

import yaml

PHASES = [("reconstruction", "fit"), ("adversarial", "fit"), ("search", "predict")]
GUIDED_PHASES = PHASES[:2] + [("latent_classifier", "fit"), PHASES[2]]  # --classifier: a class-guided search
ALL_PHASES = GUIDED_PHASES + [("pixel_ncsn", "fit")]  # the pixel-space baseline: dsls.ablation trains it too
NEEDS = {"adversarial": ("--model.autoencoder_ckpt", "reconstruction"),
         "latent_classifier": ("--model.autoencoder_ckpt", "adversarial"),  # joint mode's E, D's σ_max
         "search": ("--model.ckpt", "adversarial")}


class OverrideError(ValueError):
    """An override that would reach no phase; the message says what to write instead."""


def sampler_flag_hint(key: str, prefix: str = "--model.") -> str | None:
    """For a --model.X that is a sampler's setting (eps0, steps_per_level, ...): where it goes now."""
    from dsls.samplers import SAMPLERS, setting_names

    owners = [n for n in SAMPLERS if key in setting_names(n)]
    if not owners:
        return None
    return (f"{prefix}{key} is a sampler setting: write {prefix}samplers.{owners[0]}.{key}=... "
            f"(samplers with this setting: {', '.join(owners)})")


def module_class(config: dict) -> type:
    """The LightningModule class a phase config names (model.class_path)."""
    module_path, cls_name = config["model"]["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module_path), cls_name)


def _accepts(config: dict, arg: str) -> bool:
    key = arg.lstrip("-").split("=", 1)[0]
    section, _, rest = key.partition(".")
    if section in ("trainer", "seed_everything", "run_dir", "checkpoint"):
        return True
    if section == "ckpt_path":  # resuming is for the fit phases; predict's --ckpt_path means something else
        return "data" in config
    if section not in config:
        return False
    if section == "model" and rest:
        return rest.split(".")[0] in inspect.signature(module_class(config).__init__).parameters
    return True


def phase_args(phase: str, config: dict, overrides: list[str]) -> list[str]:
    """The overrides that reach `phase` (config: its parsed yaml), with any --<phase>. prefix removed."""
    out = []
    for arg in overrides:
        prefix = f"--{phase}."
        if arg.startswith(prefix):
            out.append("--" + arg[len(prefix):])
        elif not any(arg.startswith(f"--{p}.") for p, _ in ALL_PHASES) and _accepts(config, arg):
            out.append(arg)
    return out


def check_sampler_flags(config_dir: Path, overrides: list[str]) -> None:
    """A sampler setting given as --model.X (the old flags) would silently reach no phase: stop with the new flag."""
    configs = {p: yaml.safe_load((config_dir / f"{p}.yaml").read_text())
               for p, _ in ALL_PHASES if (config_dir / f"{p}.yaml").is_file()}
    for arg in overrides:
        phase = next((p for p in configs if arg.startswith(f"--{p}.")), None)
        routed = "--" + arg[len(phase) + 3:] if phase else arg
        if not routed.startswith("--model."):
            continue
        key = routed[len("--model."):].split("=", 1)[0].split(".")[0]
        hint = sampler_flag_hint(key, f"--{phase}.model." if phase else "--model.")
        targets = [configs[phase]] if phase else list(configs.values())
        if hint and not any(_accepts(cfg, routed) for cfg in targets):
            raise OverrideError(hint)


def last_ckpt(run_dir: str, phase: str) -> str:
    return os.path.join(run_dir, phase, "checkpoints", "last.ckpt")


def number_or(value):
    """YAML 1.1 reads 1e4 / 5e-4 (no dot) as strings; the CLI reads them as numbers, and so do we."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        return float(value)
    return value


def parse_overrides(items: list[str], prefix: str) -> dict:
    """--<prefix>.a.b=value items → {"a": {"b": value}}, values read as YAML (so {} and [1, 2] work)."""
    out: dict = {}
    for item in items:
        if not item.startswith(f"--{prefix}.") or "=" not in item:
            continue
        key, value = item[len(prefix) + 3:].split("=", 1)
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--{prefix}.{key}: {p!r} was already set to a value, not a mapping")
        node[leaf] = number_or(yaml.safe_load(value))
    return out


def deep_merge(base: dict, over: dict) -> dict:
    """base with over's values; mappings merge key by key (as the CLI does), and a null in base that receives a
    mapping is treated as an empty one (`--model.samplers.pc.snr=0.1` turns on a sampler the config left null)."""
    out = dict(base)
    for k, v in over.items():
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict | None):  # so {} keeps what is there, as the CLI does
            out[k] = deep_merge(old or {}, v)
        else:
            out[k] = v
    return out


def run_pipeline(config_dir: str, overrides: list[str], run_dir: str | None = None, resume: bool = False,
                 phases: list[tuple[str, str]] = PHASES) -> dict:
    """Run `phases` in order into one run folder; each takes the checkpoint of the phase it NEEDS from there.
    resume: skip phases whose DONE stamp exists, and continue a preempted fit from its last.ckpt."""
    from dsls.cli import main

    config_dir = Path(config_dir)
    missing = [f"{config_dir}/{p}.yaml" for p, _ in phases if not (config_dir / f"{p}.yaml").is_file()]
    if missing:  # before any training: e.g. --classifier on a data set without labels
        raise OverrideError(f"{', '.join(missing)} does not exist" + (
            ": --classifier needs a labelled data set with a latent_classifier.yaml (toy, digits, mnist, cifar10)"
            if any(m.endswith("latent_classifier.yaml") for m in missing) else ""))
    check_sampler_flags(config_dir, overrides)
    run_dir = run_dir or os.path.join("runs", config_dir.name, time.strftime("%Y%m%d-%H%M%S"))
    timings = {}
    for phase, subcommand in phases:
        done = os.path.join(run_dir, phase, "DONE")  # written when a fit phase finished, not when it was preempted
        if resume and os.path.isfile(done):
            continue
        cfg_path = config_dir / f"{phase}.yaml"
        config = yaml.safe_load(cfg_path.read_text())
        args = [subcommand, "--config", str(cfg_path), *phase_args(phase, config, overrides), f"--run_dir={run_dir}"]
        if phase in NEEDS:
            flag, needed = NEEDS[phase]
            args.append(f"{flag}={last_ckpt(run_dir, needed)}")
        if phase == "search" and ("latent_classifier", "fit") in phases:  # guide with the classifier just trained
            args.insert(3, f"--model.classifier_ckpt={last_ckpt(run_dir, 'latent_classifier')}")
            args.insert(4, "--model.labels=balanced")  # before the user's overrides, which may name a class
        if resume and subcommand == "fit" and os.path.isfile(last_ckpt(run_dir, phase)):
            args.append(f"--ckpt_path={last_ckpt(run_dir, phase)}")  # a preempted phase continues where it stopped
        t0 = time.time()
        print(f"\n=== phase {phase}: dsls {' '.join(args)}", flush=True)
        main(args)
        timings[phase] = time.time() - t0
        if subcommand == "fit":
            Path(done).write_text(f"{timings[phase]:.0f} s\n")
    results_path = Path(run_dir, "results.json")
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    return {"run_dir": run_dir, "results": results, "seconds": timings}
