"""Profiles: a named set of settings per phase on top of a data set's configs, e.g. configs/mnist/cpu.yaml (a
recipe that fits 2 CPU cores). The file maps each phase to the settings it changes, written as in that phase's
config (trainer / model / data, with model and data settings given by name, without init_args):

    reconstruction:
      trainer: {max_steps: 3000}
      model: {hidden: 16}

The pipeline (`--profile cpu`) turns them into phase-targeted overrides (--reconstruction.trainer.max_steps=3000),
placed before the command line's, so that the user's own overrides still apply on top.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from dsls.errors import ConfigError


def _leaves(node, path: tuple = ()):
    """(dotted.path, value) for every leaf; an empty mapping is a leaf too (`samplers.none: {}` turns a sampler on)."""
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, (*path, str(k)))
    else:
        yield ".".join(path), node


def profile_overrides(config_dir: str | Path, name: str, phases: list[str]) -> list[str]:
    """The overrides of profile `name` (<config_dir>/<name>.yaml) for the phases this run has."""
    from dsls.overrides import ALL_PHASES

    every = [p for p, _ in ALL_PHASES]
    path = Path(config_dir, f"{name}.yaml")
    if not path.is_file():
        known = sorted(p.stem for p in Path(config_dir).glob("*.yaml") if p.stem not in every)
        there = f"the profiles of {config_dir}: {', '.join(known)}" if known else f"{config_dir} has none"
        raise ConfigError(f"--profile {name}: {path} does not exist; {there}")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = [str(p) for p in spec if p not in every] if isinstance(spec, dict) else ["its top level"]
    if unknown:
        raise ConfigError(f"{path}: a profile maps phases ({', '.join(every)}) to their settings; "
                          f"{', '.join(unknown)} is not a phase")
    return [f"--{phase}.{key}={value if isinstance(value, str) else json.dumps(value)}"
            for phase in phases if phase in spec for key, value in _leaves(spec[phase])]
