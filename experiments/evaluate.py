"""Evaluate a checkpoint with one command: rebuild the search from what the checkpoint saved, run the samplers,
write samples-<sampler>.npz, results.json and samples.png (a sample grid for images).

    python experiments/evaluate.py --ckpt runs/cifar10/<run>/adversarial/checkpoints/last.ckpt [--model.eps0=1e-3]
    python experiments/evaluate.py --ckpt runs/cifar10/<run>/search.ckpt --out-dir runs/cifar10/<run>/eval-T20 \\
        --model.steps_per_level=20

A phase-2 checkpoint gets the search settings saved beside it in its run folder (<run>/config.yaml, written by
the search phase) when there are any, else the module's defaults. A phase-3 checkpoint (search.ckpt, written by
every search) carries its own. --model.X=value overrides either; --trainer.X=value sets the Trainer.
"""
from __future__ import annotations

import argparse
import re
import os
import time
from pathlib import Path

import torch
import yaml


def search_settings(ckpt_path: str) -> dict:
    from dsls.phases.base import PhaseCheckpointError

    if not os.path.isfile(ckpt_path):
        raise PhaseCheckpointError(f"--ckpt={ckpt_path} does not exist: pass <run>/adversarial/checkpoints/last.ckpt "
                                   "or <run>/search.ckpt.")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    phase = ckpt.get("dsls_phase") if isinstance(ckpt, dict) else None
    if phase == "search":
        return {**{k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}, "out_dir": None}
    if phase in ("adversarial", "pixel_ncsn"):
        saved = Path(ckpt_path).resolve().parents[2] / "config.yaml"  # <run>/adversarial/checkpoints/x.ckpt
        hp = {}
        if saved.is_file():
            model = (yaml.safe_load(saved.read_text()) or {}).get("model") or {}
            if model.get("class_path", "").endswith("LatentSearchModule"):
                hp = dict(model.get("init_args") or {}, out_dir=None)
        return dict(hp, ckpt=ckpt_path)
    raise PhaseCheckpointError(f"--ckpt={ckpt_path} is {'a ' + phase if phase else 'not a dsls'} checkpoint; "
                               "evaluate.py takes a phase-2 (adversarial) or pixel_ncsn checkpoint, or a search.ckpt.")


def _number_or(value):
    """YAML 1.1 reads 1e4 / 5e-4 (no dot) as strings; the CLI reads them as numbers, and so do we."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        return float(value)
    return value


def parse_overrides(items: list[str], prefix: str) -> dict:
    out = {}
    for item in items:
        if not item.startswith(f"--{prefix}.") or "=" not in item:
            continue
        key, value = item[len(prefix) + 3:].split("=", 1)
        out[key] = _number_or(yaml.safe_load(value))
    return out


def evaluate(ckpt: str, out_dir: str | None = None, overrides: list[str] = ()) -> dict:
    import lightning as L

    from dsls.phases.search import LatentSearchModule

    unknown = [a for a in overrides if not a.startswith(("--model.", "--trainer."))]
    if unknown:
        raise SystemExit(f"error: unknown arguments {unknown}; use --model.X=value or --trainer.X=value")
    hp = {**search_settings(ckpt), **parse_overrides(list(overrides), "model")}
    hp["out_dir"] = out_dir or os.path.join(Path(hp["ckpt"]).resolve().parents[2], f"eval-{time.strftime('%Y%m%d-%H%M%S')}")
    model = LatentSearchModule(**hp)
    trainer_kw = {"logger": False, "inference_mode": False, **parse_overrides(list(overrides), "trainer")}
    L.Trainer(**trainer_kw).predict(model, return_predictions=False)
    return {"out_dir": hp["out_dir"], "results": model.results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="phase-2 checkpoint or search.ckpt")
    p.add_argument("--out-dir", default=None, help="default: <run>/eval-<time>")
    args, overrides = p.parse_known_args()
    from dsls.cli import USER_ERRORS

    try:
        out = evaluate(args.ckpt, args.out_dir, overrides)
    except USER_ERRORS as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {out['out_dir']}/{{samples-*.npz, results.json, samples.png, search.ckpt}}")


if __name__ == "__main__":
    main()
