"""Evaluate a checkpoint with one command: one task (dsls.tasks) on a phase-2 checkpoint or a search.ckpt.

    --task generate     (default) rerun the checkpoint's search: samples-<sampler>.npz, results.json, samples.png
    --task likelihood   also rate held-out codes, prior draws and the search's latents by log q_σmin (likelihood.json)
    --task inpaint      latent DPS on held-out images with a missing box (--mask box) or random pixels (--mask random)
    --task colorize     latent DPS from the luma of held-out colour images
    --task interpolate  linear vs DS-LS (ODE up to σ_top, interpolate, ODE down) paths between held-out pairs
    --task anomaly      anomaly scores of test images (the run's held-out classes, or --ood-data): AUROC, AUPRC

    python experiments/evaluate.py --ckpt runs/digits/<run>/adversarial/checkpoints/last.ckpt \\
        --task generate --classifier-ckpt runs/digits/<run>/latent_classifier/checkpoints/last.ckpt --labels balanced
    python experiments/evaluate.py --ckpt runs/digits/<run>/adversarial/checkpoints/last.ckpt --task inpaint --out <dir>
    python experiments/evaluate.py --ckpt runs/cifar10/<run>/search.ckpt --model.samplers.langevin.steps_per_level=20

A phase-2 checkpoint gets the search settings saved beside it in its run folder (<run>/config.yaml, written by the
search phase) when there are any, else the module's defaults; a search.ckpt carries its own. --model.X=value
overrides either (sampler settings merge into the saved ones); --trainer.X=value sets the Trainer. --likelihood is
--task likelihood: the search is skipped when --out already holds every sampler's samples from the same search.
"""
from __future__ import annotations

import argparse


def _label(value: str):
    return value if value == "balanced" else int(value)


def _sigma_top(value: str):
    return value if value == "max" else float(value)


def _names(value: str) -> list:
    """A comma-separated list; numbers become ints (class indices), other names stay text (class folders)."""
    return [int(v) if v.strip().lstrip("-").isdigit() else v.strip() for v in value.split(",") if v.strip()]


def main() -> None:
    from dsls.anomaly import DEFAULT_KINDS, DEFAULT_SCORE, KINDS
    from dsls.tasks.registry import TASKS
    from dsls.tasks.interpolate import PAIRS, SIGMA_TOP, STEPS
    from dsls.tasks.inverse import MASKS, NUM_IMAGES, SCALE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="phase-2 checkpoint or search.ckpt")
    p.add_argument("--task", default="generate", choices=list(TASKS))
    p.add_argument("--out", "--out-dir", dest="out_dir", default=None, help="default: <run>/eval-<time>")
    p.add_argument("--likelihood", action="store_true", help="the same as --task likelihood")
    p.add_argument("--likelihood-n", type=int, default=None, help="likelihood: latents per set (default 500)")
    p.add_argument("--classifier-ckpt", default=None, help="generate: a latent_classifier checkpoint to guide with")
    p.add_argument("--labels", type=_label, default=None, help="generate: 'balanced' (i mod K) or one class")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help=f"w of the class guidance (generate; the search's default) or of the measurement term "
                        f"(inpaint/colorize; {SCALE:g})")
    p.add_argument("--sampler", default=None, help="inpaint/colorize: the sampler that searches (langevin)")
    p.add_argument("--mask", default=None, choices=MASKS, help="inpaint: the bottom half (box), or random pixels")
    p.add_argument("--fraction", type=float, default=None, help="inpaint --mask random: the missing fraction (0.5)")
    p.add_argument("--num", type=int, default=None,
                   help=f"held-out images (inpaint/colorize, {NUM_IMAGES}), pairs (interpolate, {PAIRS}) or test "
                        "images drawn with --model.seed (anomaly: all)")
    p.add_argument("--steps", type=int, default=None, help=f"interpolate: frames per path ({STEPS})")
    p.add_argument("--interp-sigma", type=_sigma_top, default=None,
                   help=f"interpolate: the σ where the path is drawn; 'max' is a slerp at σ_max ({SIGMA_TOP:g})")
    p.add_argument("--anomaly-classes", type=_names, default=None,
                   help="anomaly: the classes scored as anomalies, e.g. 9 or 1,9 (default: the run's excluded ones)")
    p.add_argument("--ood-data", default=None,
                   help="anomaly: a config file whose data: section is another data set of the same image shape; its "
                        "test images are the anomalies (e.g. configs/mnist/reconstruction.yaml)")
    p.add_argument("--scores", type=_names, default=None,
                   help=f"anomaly: the score kinds, comma-separated, from {','.join(KINDS)} (default "
                        f"{','.join(DEFAULT_KINDS)}: nll, the ODE, is the slow one)")
    p.add_argument("--default-score", default=None,
                   help=f"anomaly: the headline score, fixed before scoring (default {DEFAULT_SCORE})")
    args, overrides = p.parse_known_args()
    from dsls.cli import one_line_errors
    from dsls.tasks.registry import run_task

    if args.likelihood and args.task != "generate":
        raise SystemExit(f"error: --likelihood is --task likelihood; it cannot go with --task {args.task}")
    task = "likelihood" if args.likelihood else args.task
    if any(v is not None and v < 1 for v in (args.likelihood_n, args.num)):
        raise SystemExit("error: --likelihood-n and --num must be >= 1")
    with one_line_errors():  # a user error (dsls.cli.USER_ERRORS, TaskError among them) prints one line
        out = run_task(task, args.ckpt, args.out_dir, overrides, num=args.num, sampler=args.sampler,
                       scale=args.guidance_scale, mask=args.mask, fraction=args.fraction, steps=args.steps,
                       sigma_top=args.interp_sigma, classifier_ckpt=args.classifier_ckpt, labels=args.labels,
                       likelihood_n=args.likelihood_n, anomaly_classes=args.anomaly_classes,
                       ood_data=args.ood_data, scores=args.scores, default_score=args.default_score)
    print("\n" + out["report"])


if __name__ == "__main__":
    main()
