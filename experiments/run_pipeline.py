"""Chain the three phases for one configs/<dataset> folder, in one process, and print the results table.

    python experiments/run_pipeline.py --config-dir configs/toy [--run-dir runs/toy/demo] [overrides…]

Overrides go to every phase that accepts them: --trainer.* to all, --data.* to the fit phases,
--model.X to the phases whose module has a parameter X (--model.samplers.langevin.eps0=1e-3 reaches the search).
Prefix with a phase to target one (--adversarial.model.mode=joint). An override that reaches no phase, or that a
phase's parser refuses, stops the run before anything trains. --classifier adds the latent classifier
phase and guides the search with it (sample i asks for class i mod K). --profile cpu applies <config-dir>/cpu.yaml's
settings to every phase first (dsls.profiles), so the overrides still apply on top. Each phase takes the
checkpoint the phase before it wrote in this run. A --run-dir that already holds files needs --resume (continue it: finished phases are
skipped, an interrupted one resumes from its last.ckpt) or --overwrite (start over). A second run into a folder that
a running one writes is refused (dsls.run_folder). The logic is dsls.pipeline.
"""
from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # so no override is read as an abbreviation of ours
    p.add_argument("--config-dir", required=True)
    p.add_argument("--run-dir", default=None, help="default: runs/<config-dir name>/<timestamp>")
    p.add_argument("--profile", default=None,
                   help="a named settings file of the config folder applied to every phase before the overrides, "
                        "e.g. cpu (<config-dir>/cpu.yaml: a recipe that fits 2 CPU cores)")
    p.add_argument("--classifier", action="store_true",
                   help="also train the latent classifier (configs/<dataset>/latent_classifier.yaml) after phase 2 "
                        "and run a class-guided search (labels balanced)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="with --run-dir: skip finished phases, resume a preempted one from its last.ckpt")
    mode.add_argument("--overwrite", action="store_true",
                      help="with --run-dir that holds a run: start over; the old files are moved (not deleted) to "
                           "<run-dir>/.overwritten-<time>/")
    args, overrides = p.parse_known_args()
    from dsls.cli import one_line_errors
    from dsls.pipeline import GUIDED_PHASES, PHASES, run_pipeline
    from dsls.profiles import profile_overrides
    from dsls.run_folder import say

    phases = GUIDED_PHASES if args.classifier else PHASES
    with one_line_errors():  # DSLS_DEBUG=1: the traceback instead
        if args.profile:
            overrides = profile_overrides(args.config_dir, args.profile, [p for p, _ in phases]) + overrides
        out = run_pipeline(args.config_dir, overrides, args.run_dir, args.resume, phases, overwrite=args.overwrite)
    say(f"\nrun folder: {out['run_dir']}  (samples.png, samples-*.npz, results.json)")  # rank 0 only, under DDP
    say("phase seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in out["seconds"].items()))


if __name__ == "__main__":
    main()
