"""Writes tests/data/run-v0.1.0/: a tiny toy run folder made by an old dsls, so that the suite can check that run
folders and checkpoints written by earlier versions still load (tests/test_model.py). Not run by the suite.

Run it with the old code first on the path, from a git worktree of that version, e.g. for v0.1.0 (commit 2eacc7d):

    git worktree add /tmp/dsls-v010 2eacc7d
    cd /tmp/dsls-v010 && PYTHONPATH=/tmp/dsls-v010 /work/main/.venv/bin/python \
        /work/main/tests/data/make_run_v010.py /work/main/tests/data/run-v0.1.0

It runs that version's own pipeline (phase 1, phase 2, the latent classifier and a class-guided search, a few steps
each, nets of width 16) in a temporary folder, then keeps what a loader reads: each phase's checkpoints/last.ckpt,
DONE stamp and config.yaml, the search's search.ckpt and config.yaml, and its guided pc samples (samples-pc.npz: 64
samples, which today's code must reproduce); the figures and the other samples are dropped.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

STEPS = 10
OVERRIDES = [
    f"--trainer.max_steps={STEPS}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu", "--trainer.num_sanity_val_steps=0",
    "--data.train_size=1024", "--data.val_size=256", "--data.batch_size=128",
    "--model.hidden=16", "--model.depth=1", "--model.d_hidden=16", "--model.d_depth=1", "--model.c_hidden=16",
    "--model.c_depth=1", "--model.num_samples=64", "--model.batch_size=64",
]
KEEP = ["search.ckpt", "config.yaml", "samples-pc.npz"] + [f"{p}/{f}" for p in ("reconstruction", "adversarial", "latent_classifier")
                                         for f in ("checkpoints/last.ckpt", "DONE", "config.yaml")]


def main(out: str) -> None:
    import dsls
    from dsls.pipeline import GUIDED_PHASES, run_pipeline

    code = Path(dsls.__file__).resolve().parents[1]
    print(f"dsls from {code}")
    if Path(out).exists():
        raise SystemExit(f"{out} exists: remove it first")
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the run folder is spelt relative, as `run_pipeline.py --run-dir runs/toy/...` writes it
        run = os.path.join("runs", "toy", "run-v0.1.0")
        run_pipeline(str(code / "configs" / "toy"), OVERRIDES, run, phases=GUIDED_PHASES)
        for rel in KEEP:
            os.makedirs(os.path.dirname(os.path.join(out, rel)) or out, exist_ok=True)
            shutil.copy2(os.path.join(run, rel), os.path.join(out, rel))
    for rel in KEEP:
        print(f"{os.path.getsize(os.path.join(out, rel)):>8} {rel}")


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
