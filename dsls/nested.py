"""Nested settings as plain dicts: `--a.b=value` overrides parsed into {"a": {"b": value}} and merged key by key, as
the CLI merges them (the pipeline's profiles, evaluate.py's saved search settings). Bottom layer: yaml only."""
from __future__ import annotations

import re

import yaml


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
