"""Evaluate a checkpoint with one command: rebuild the search from what the checkpoint saved, run the samplers,
write samples-<sampler>.npz, results.json and samples.png (a sample grid for images).

    python experiments/evaluate.py --ckpt runs/cifar10/<run>/adversarial/checkpoints/last.ckpt \\
        [--model.samplers.langevin.eps0=1e-3]
    python experiments/evaluate.py --ckpt runs/cifar10/<run>/search.ckpt --out-dir runs/cifar10/<run>/eval-T20 \\
        --model.samplers.langevin.steps_per_level=20 '--model.samplers.pc={}'
    python experiments/evaluate.py --ckpt runs/toy/<run>/adversarial/checkpoints/last.ckpt --out-dir runs/toy/<run> \\
        --likelihood

A phase-2 checkpoint gets the search settings saved beside it in its run folder (<run>/config.yaml, written by
the search phase) when there are any, else the module's defaults. A phase-3 checkpoint (search.ckpt, written by
every search) carries its own. --model.X=value overrides either (sampler settings merge into the saved ones);
--trainer.X=value sets the Trainer.

--likelihood also writes likelihood.json: the mean latent log-likelihood log q_σmin (probability-flow ODE) of
held-out codes E(x) of the validation split, of prior draws N(0, I) and of each sampler's final latents. The search
is skipped when --out-dir already holds every sampler's samples from the same checkpoint and settings (its
search.ckpt says so); other samples there stop with an error. The logic is dsls.tasks.
"""
from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="phase-2 checkpoint or search.ckpt")
    p.add_argument("--out-dir", default=None, help="default: <run>/eval-<time>")
    p.add_argument("--likelihood", action="store_true", help="also write likelihood.json (latent log q_σmin)")
    p.add_argument("--likelihood-n", type=int, default=500, help="latents per set for --likelihood (default 500)")
    args, overrides = p.parse_known_args()
    from dsls.cli import USER_ERRORS
    from dsls.tasks import TaskError
    from dsls.tasks.evaluate import evaluate

    if args.likelihood_n < 1:
        raise SystemExit(f"error: --likelihood-n must be >= 1, got {args.likelihood_n}")
    try:
        out = evaluate(args.ckpt, args.out_dir, overrides, args.likelihood, args.likelihood_n)
    except (*USER_ERRORS, TaskError) as e:
        raise SystemExit(f"error: {e}") from None
    if out["results"] is not None:
        print(f"wrote {out['out_dir']}/{{samples-*.npz, results.json, samples.png, search.ckpt}}")
    if "likelihood" in out:
        from dsls.tasks.likelihood import format_likelihood

        print("\n" + format_likelihood(out["likelihood"]))
        print(f"\nwrote {out['out_dir']}/likelihood.json")


if __name__ == "__main__":
    main()
