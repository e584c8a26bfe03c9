"""The run folder's files (docs/concepts.md, "What a run writes"): samples-<sampler>.npz (and samples-floor.npz),
results.json, search.ckpt, and the results table.
Each is written atomically (dsls.checkpoints): a full disk keeps the previous file, never half of a new one."""
from __future__ import annotations

import json
import os

import numpy as np

from dsls.checkpoints import save_json, save_npz, save_torch

TABLE_METRICS = ["modes", "hq_fraction", "rev_kl", "class_accuracy", "classifier_fid", "classifier_precision",
                 "classifier_recall", "class_kl", "mean_confidence", "colour_accuracy", "fid", "is_mean", "kid_mean",
                 "precision", "recall"]


def save_samples(out_dir: str, name: str, arrays: dict) -> str:
    """samples-<name>.npz with float32 x (data space), z0 and z (latents), plus int64 y when the samples have labels;
    any other array float32 too (the floor's `real`: the held-out images it reconstructs)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"samples-{name}.npz")
    save_npz(path, **{k: np.asarray(v, dtype=np.int64 if k == "y" else np.float32) for k, v in arrays.items()})
    return path


def save_search_ckpt(out_dir: str, dataset_name, hyper_parameters: dict) -> str:
    """The search phase's 'checkpoint': what is needed to rerun it (experiments/evaluate.py takes it)."""
    path = os.path.join(out_dir, "search.ckpt")
    save_torch({"dsls_phase": "search", "dsls_dataset": dataset_name, "hyper_parameters": dict(hyper_parameters)},
               path)
    return path


def merge_results(path: str, new: dict) -> dict:
    """results.json keeps one entry per sampler ever run in this folder; a re-run replaces its own entry."""
    old = json.load(open(path)) if os.path.isfile(path) else {}
    old.update(new)
    save_json(path, old, indent=2)
    return old


def format_table(results: dict) -> str:
    """A markdown table: one row per sampler (and the floor: the autoencoder's reconstructions of held-out images),
    the metrics any row has, then cost ("n/a" where a row has none)."""
    cols = [c for c in TABLE_METRICS if any(c in r for r in results.values())] + ["seconds_per_sample", "nfe"]
    fmt = lambda v: "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["sampler | " + " | ".join(cols), "--- | " + " | ".join("---" for _ in cols)]
    lines += [f"{name} | " + " | ".join(fmt(r.get(c)) for c in cols) for name, r in results.items()]
    return "\n".join(lines)


def check_writable(folder: str, flag: str) -> None:
    """Fail before any work when `folder` (or, if it does not exist yet, the nearest folder above it) takes no new
    file: a search or a fit would otherwise end in a traceback when it first saves. Probed by creating a file, as
    os.access says yes to root on a read-only file system."""
    import tempfile

    from dsls.errors import ConfigError

    probe = os.path.abspath(folder)
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        fd, path = tempfile.mkstemp(prefix=".dsls-write-test-", dir=probe)
        os.close(fd)
        os.remove(path)
    except OSError as e:
        raise ConfigError(f"{flag}={folder}: cannot write into {probe} ({e.strerror}); pass a writable folder") from e
