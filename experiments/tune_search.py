"""Search defaults measured on a trained peer table's checkpoints, with one command:

    python experiments/tune_search.py --config-dir configs/digits --run-dir runs/digits/<ablate run> [overrides…]

Every model of the run (DS-LS's D, the latent DSM score, NCP-VAE's D, discriminator guidance) gets the same grid of
sampler settings; each point is scored by the data set's metric, and the rule (dsls.tuning.RULE: the lowest
classifier-FID with recall at least the floor's − 0.05) picks each model's settings per sampler. Writes
<run>/tuning-<time>/tuning.md and tuning.json. Train the run first with experiments/ablate.py. The logic is
dsls.tuning.
"""
from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", required=True)
    p.add_argument("--run-dir", required=True, help="a run folder experiments/ablate.py trained")
    p.add_argument("--models", nargs="+", default=None, help="tune only these (default: every model the run has)")
    args, overrides = p.parse_known_args()
    from dsls.cli import one_line_errors
    from dsls.tuning import MODELS, tune

    with one_line_errors():  # DSLS_DEBUG=1: the traceback instead
        unknown = sorted(set(args.models or ()) - set(MODELS))
        if unknown:
            p.error(f"--models {' '.join(unknown)}: the models are {', '.join(repr(m) for m in MODELS)}")
        models = {m: MODELS[m] for m in args.models} if args.models else MODELS
        out = tune(args.config_dir, args.run_dir, overrides, models=models)
    print("\n" + out["table"])
    print(f"\nwrote {out['out_dir']}/tuning.md and tuning.json")


if __name__ == "__main__":
    main()
