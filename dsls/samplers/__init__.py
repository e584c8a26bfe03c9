"""Samplers: a registry (base.py) and one file per family. Each sampler is a frozen dataclass of its own settings.

    none      plain prior sampling, the AAE baseline (base.py)
    langevin  annealed Langevin dynamics (langevin.py)
    pc        predictor–corrector: reverse diffusion + Langevin corrector (pc.py)
    ode       probability-flow ODE, deterministic (ode.py)

`SamplerSettings` has one optional field per registered sampler, typed by its settings class, so the CLI validates,
documents (`--help`) and merges them: `--model.samplers.langevin.eps0=1e-3` changes one setting and keeps the rest.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from dsls.errors import ConfigError
from dsls.samplers.base import (SAMPLERS, PerSampleRNG, Sampler, SamplerOutput, make_sampler, pad_rows,  # noqa: F401
                                register, sample_indices, sample_seed, setting_names)
from dsls.samplers import langevin, pc, ode  # noqa: F401,E402,I001  (registers the families, in this order)

SamplerSettings = dataclasses.make_dataclass(
    "SamplerSettings", [(name, Optional[cls], dataclasses.field(default=None)) for name, cls in SAMPLERS.items()],
    frozen=True)
SamplerSettings.__module__ = __name__  # importable as dsls.samplers.SamplerSettings (configs, pickles)
SamplerSettings.__doc__ = "The samplers a search runs (the fields that are set), each with its settings."


DEFAULT_SAMPLERS = ("none", "langevin")  # what a search runs when its config names no samplers


def _cli_value(value) -> str:
    """A default as the command line writes it (YAML: null, true, false)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def settings_help() -> str:
    """Every registered sampler with its settings and their defaults, one sampler a line: the end of `dsls predict
    --help` (dsls.help). Built from the registry, so a new sampler or setting is listed without editing any text."""
    lines = [f"Samplers ({', '.join(SAMPLERS)}): the search runs the ones its config sets, and null turns one off. "
             "Set a setting with --model.samplers.<name>.<setting>=value, e.g. --model.samplers.langevin.eps0=1.0e-3. "
             "The settings a config leaves unset take these defaults:"]
    for name, cls in SAMPLERS.items():
        values = ", ".join(f"{f.name}={_cli_value(_default(f))}" for f in dataclasses.fields(cls))
        lines.append(f"  {name}: {values or '(no settings)'}")
    return "\n".join(lines)


def build_samplers(spec=None, default=DEFAULT_SAMPLERS) -> dict[str, Sampler]:
    """name → Sampler from a SamplerSettings, a mapping {name: {setting: value}} or a list of names (default
    settings). A spec that names no sampler (None, {}, an empty SamplerSettings) gives `default`."""
    if isinstance(spec, SamplerSettings):
        items = [(f.name, getattr(spec, f.name)) for f in dataclasses.fields(spec) if getattr(spec, f.name) is not None]
    elif isinstance(spec, dict):  # a null entry (as the CLI writes for unset fields) is not run
        items = [(name, settings) for name, settings in spec.items() if settings is not None]
    elif isinstance(spec, (list, tuple)):
        items = [(name, None) for name in spec]
    elif spec is None:
        items = []
    else:
        raise ConfigError(f"samplers must be a mapping like {{none: {{}}, langevin: {{eps0: 5.0e-4}}}}, got {spec!r}")
    if not items:
        if (isinstance(spec, dict) and spec) or not default:  # {langevin: null}: every named one switched off
            raise ConfigError(f"no sampler selected in {spec!r}: name at least one, e.g. samplers: {{none: {{}}, "
                             "langevin: {}}")
        return build_samplers(default, default=())
    return {name: make_sampler(name, settings) for name, settings in items}


def sampler_flag_hint(key: str, prefix: str = "--model.") -> str | None:
    """For a --model.X that is a sampler's setting (eps0, steps_per_level, ...): where it goes now."""
    owners = [n for n in SAMPLERS if key in setting_names(n)]
    if not owners:
        return None
    return (f"{prefix}{key} is a sampler setting: write {prefix}samplers.{owners[0]}.{key}=... "
            f"(samplers with this setting: {', '.join(owners)})")
