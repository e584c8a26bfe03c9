"""Chain the three phases for one configs/<dataset> folder, in one process, and print the results table.

    python experiments/run_pipeline.py --config-dir configs/toy [--name demo] [overrides…]

Overrides go to every phase that accepts them: --trainer.* to all, --data.* to the fit phases,
--model.X to the phases whose module has a parameter X. Prefix with a phase to target one
(--adversarial.model.mode=joint). After preemption, rerun with --run-dir <the run> --resume: finished
phases are skipped, and the interrupted one resumes from its last.ckpt.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

import yaml

PHASES = [("reconstruction", "fit"), ("adversarial", "fit"), ("search", "predict")]
ALL_PHASES = PHASES + [("pixel_ncsn", "fit")]  # the pixel-space baseline: experiments/ablate.py trains it too
NEEDS = {"adversarial": ("--model.autoencoder_ckpt", "reconstruction"), "search": ("--model.ckpt", "adversarial")}


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
        module_path, cls_name = config["model"]["class_path"].rsplit(".", 1)
        cls = getattr(__import__(module_path, fromlist=[cls_name]), cls_name)
        return rest.split(".")[0] in inspect.signature(cls.__init__).parameters
    return True


def phase_args(phase: str, config: dict, overrides: list[str]) -> list[str]:
    out = []
    for arg in overrides:
        prefix = f"--{phase}."
        if arg.startswith(prefix):
            out.append("--" + arg[len(prefix):])
        elif not any(arg.startswith(f"--{p}.") for p, _ in ALL_PHASES) and _accepts(config, arg):
            out.append(arg)
    return out


def last_ckpt(run_dir: str, phase: str) -> str:
    return os.path.join(run_dir, phase, "checkpoints", "last.ckpt")


def run_pipeline(config_dir: str, overrides: list[str], run_dir: str | None = None, resume: bool = False,
                 phases: list[tuple[str, str]] = PHASES) -> dict:
    """Run `phases` in order into one run folder; each takes the checkpoint of the phase it NEEDS from there."""
    from dsls.cli import main

    config_dir = Path(config_dir)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", required=True)
    p.add_argument("--run-dir", default=None, help="default: runs/<config-dir name>/<timestamp>")
    p.add_argument("--resume", action="store_true",
                   help="with --run-dir: skip finished phases, resume a preempted one from its last.ckpt")
    args, overrides = p.parse_known_args()
    from dsls.cli import USER_ERRORS

    try:
        out = run_pipeline(args.config_dir, overrides, args.run_dir, args.resume)
    except USER_ERRORS as e:
        raise SystemExit(f"error: {e}") from None
    from dsls.phases.search import format_table

    print("\n" + format_table(out["results"]))
    print(f"\nrun folder: {out['run_dir']}  (samples.png, samples-*.npz, results.json)")
    print("phase seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in out["seconds"].items()))


if __name__ == "__main__":
    sys.exit(main())
