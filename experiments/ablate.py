"""The peer table of one data set, from one run folder, with one command:

    python experiments/ablate.py --config-dir configs/digits [--run-dir runs/digits/<run>] [--profile cpu] [overrides…]

It trains what the run folder lacks (phase 1; DS-LS's D; the latent DSM score network; NCP-VAE's D; discriminator
guidance's D_g; the pixel NCSN), samples every row (no search; DS-LS and the latent score with each sampler of
search.yaml; NCP-VAE's D; discriminator guidance at w = 0.5, 1, 2; the pixel NCSN at the same steps and at matched
wall time; the floor) and writes <run>/ablation-<time>/ablation.md, ablation.json and each row's samples-*.npz (a rerun
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
    p.add_argument("--profile", default=None, help="<config-dir>/<profile>.yaml's settings first, e.g. cpu")
    args, overrides = p.parse_known_args()
    from dsls.ablation import FIT_PHASES, ablate
    from dsls.cli import one_line_errors
    from dsls.profiles import profile_overrides

    with one_line_errors():  # DSLS_DEBUG=1: the traceback instead
        if args.profile:
            phases = [p for p, _ in FIT_PHASES] + ["search"]
            overrides = profile_overrides(args.config_dir, args.profile, phases) + overrides
        out = ablate(args.config_dir, overrides, args.run_dir)
    print("\n" + out["table"])
    print(f"\nwrote {out['out_dir']}/ablation.md and ablation.json")


if __name__ == "__main__":
    main()
