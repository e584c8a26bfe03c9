"""The ablation table, from one set of trained checkpoints, with one command:

    python experiments/ablate.py --config-dir configs/digits [--run-dir runs/digits/<run>] [overrides…]

It trains what the run folder lacks, samples each row (no search, DS-LS at σ_min only, DS-LS annealed, pixel NCSN
at the same steps and at matched wall time) and writes <run>/ablation-<time>/ablation.md and ablation.json (a rerun
writes a new folder).
Overrides are routed like run_pipeline's (--trainer.max_steps=50 shortens every fit; --search.model.X sets
the sampling settings, e.g. --search.model.num_samples=500 or --search.model.samplers.langevin.eps0=1e-4).
The logic is dsls.ablation.
"""
from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", required=True)
    p.add_argument("--run-dir", default=None,
                   help="reuse (or create) this run folder; default runs/<dataset>/ablate-<time>")
    args, overrides = p.parse_known_args()
    from dsls.ablation import ablate
    from dsls.cli import one_line_errors

    with one_line_errors():  # DSLS_DEBUG=1: the traceback instead
        out = ablate(args.config_dir, overrides, args.run_dir)
    print("\n" + out["table"])
    print(f"\nwrote {out['out_dir']}/ablation.md and ablation.json")


if __name__ == "__main__":
    main()
