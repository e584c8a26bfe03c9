"""Checkpoint I/O at the bottom of the package: strict reading (a dsls checkpoint of an expected phase, tensors and
plain data only) and saves that are never left half-written (checkpoints, the search's files, the tasks' outputs).

A file is written to a temporary file in its own folder, flushed and fsynced, then renamed onto its name: a rename
within one file system is atomic, so a reader sees the previous file or the new one, whole. Lightning's own save
writes to /tmp and copies across file systems: a full disk there left a truncated last.ckpt that --resume refused.
A failed save removes its temporary file, keeps any previous file, and raises SaveError, whose message is one line
(dsls.cli prints it as `error: …`). Bottom layer: imports torch, numpy, lightning and dsls.errors only.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
from typing import IO, Any, Callable, Optional

import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dsls.errors import CheckpointPending, PhaseCheckpointError, SaveError  # noqa: F401  (SaveError: importable here)


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (best effort: some file systems cannot open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path, write: Callable[[IO[bytes]], Any]) -> str:
    """Call write(f) on a temporary binary file beside `path`, fsync it, and rename it onto `path`. On any error
    the temporary file is removed and a previous file at `path` is left as it was; an OSError (a full disk, a
    read-only folder) becomes a SaveError. The temporary name starts with a dot, so no glob of the folder sees it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    existed = os.path.exists(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(tmp, "xb") as f:  # (the umask's permissions, as a plain open of `path` would give)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # KeyboardInterrupt too: no temporary file stays behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, SaveError):
            raise SaveError(path, e, existed) from e
        raise
    _fsync_folder(folder)
    return path


def save_torch(obj: Any, path) -> str:
    """torch.save(obj, path), atomically. Serialized in memory first (as Lightning does): torch's zip writer turns
    an OSError of the file's write into a RuntimeError, which would lose what went wrong (a full disk)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def save_npz(path, **arrays) -> str:
    """np.savez(path, **arrays), atomically. `path` is used as given (np.savez would add .npz to a bare name)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def save_json(path, obj: Any, **dump_kwargs) -> str:
    """json.dump(obj, open(path, "w"), **dump_kwargs), atomically."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, **dump_kwargs).encode()))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with atomic saves of local files (every trainer.save_checkpoint: ModelCheckpoint's
    last.ckpt, an interrupted fit's, the tests'). Remote paths (s3://, …) keep Lightning's own save."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_torch(checkpoint, path)


# -- reading: a checkpoint must be a dsls checkpoint of an expected phase -------------------------------------
PHASES = {"reconstruction": "phase 1", "adversarial": "phase 2", "pixel_ncsn": "pixel-space baseline",
          "latent_classifier": "latent classifier", "search": "phase 3, search.ckpt",
          "latent_score": "latent score network"}
FLAG_FOR = {"reconstruction": "--model.autoencoder_ckpt", "adversarial": "--model.ckpt", "pixel_ncsn": "--model.ckpt",
            "latent_classifier": "--model.classifier_ckpt", "latent_score": "--model.ckpt"}


_PENDING: set[str] = set()  # absolute paths: see pending_checkpoints


@contextlib.contextmanager
def pending_checkpoints(paths):
    """Within the block, loading one of `paths` that does not exist yet raises CheckpointPending."""
    added = {os.path.abspath(p) for p in paths} - _PENDING
    _PENDING.update(added)
    try:
        yield
    finally:
        _PENDING.difference_update(added)


def _an(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _describe(phases: tuple[str, ...]) -> str:
    return " or ".join(f"{_an(p)} ({PHASES[p]}) checkpoint" for p in phases)


def _read(path, flag: str, expected: tuple[str, ...]) -> object:
    """torch.load with weights_only=True: tensors and plain containers only, so a checkpoint cannot run code when
    loaded (Lightning's own --ckpt_path loading does the same). Every dsls checkpoint is such data."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as e:
        raise PhaseCheckpointError(f"{flag}={path} cannot be read ({e.strerror}): check its permissions.") from e
    except Exception as e:  # a damaged file fails anywhere in the zip reader (OSError too) or the unpickler
        blocked = re.search(r"GLOBAL ([\w.]+)", str(e))
        if blocked:
            raise PhaseCheckpointError(
                f"{flag}={path} holds Python objects ({blocked[1]}) that dsls never saves; it is refused because "
                f"loading it could run code. Pass {_describe(expected)} written by dsls.") from e
        raise PhaseCheckpointError(
            f"{flag}={path} is not a readable checkpoint (truncated or corrupt?). Pass {_describe(expected)}; "
            "if it was copied from elsewhere, copy it again.") from e


def load_phase_checkpoint(path: str | os.PathLike | None, expected: str | tuple[str, ...],
                          flag: str | None = None) -> dict:
    """Load a checkpoint and check it was written by an `expected` phase, with an error that names the fix.
    Loads tensors and plain data only (weights_only=True): a file that needs other objects is refused, never run."""
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    flag = flag or FLAG_FOR[expected[0]]
    if not path:
        raise PhaseCheckpointError(f"{flag} is required: pass {_describe(expected)}.")
    if not os.path.isfile(path):
        if os.path.abspath(path) in _PENDING:
            raise CheckpointPending(path)
        raise PhaseCheckpointError(
            f"{flag}={path} does not exist. Pass {_describe(expected)}, "
            f"e.g. runs/<dataset>/<run>/{expected[0]}/checkpoints/last.ckpt."
        )
    ckpt = _read(path, flag, expected)
    found = ckpt.get("dsls_phase") if isinstance(ckpt, dict) else None
    if found not in expected:
        what = f"{_an(found)} ({PHASES.get(found, '?')}) checkpoint" if found else "not a dsls checkpoint"
        raise PhaseCheckpointError(f"{flag}={path} is {what}, but this needs {_describe(expected)}.")
    return ckpt


# -- a finished phase's DONE stamp: which checkpoint it wrote --------------------------------------------------------
def write_done(run_dir: str, phase: str, ckpt: str, global_step: int, seconds: float) -> str:
    """<run>/<phase>/DONE: the phase finished and wrote `ckpt`, recorded relative to the phase's folder (so the run
    folder may move) unless it lies outside it. Written atomically, like the checkpoint it names."""
    rel = os.path.relpath(ckpt, os.path.join(run_dir, phase))
    return save_json(os.path.join(run_dir, phase, "DONE"), {
        "checkpoint": os.path.abspath(ckpt) if rel.startswith("..") else rel, "global_step": int(global_step),
        "seconds": round(seconds)})


def done_checkpoint(run_dir: str, phase: str, fix: str = "put it back, or pass another checkpoint",
                    error: type = PhaseCheckpointError) -> Optional[str]:
    """The checkpoint a finished phase of a run folder wrote, as its DONE stamp names it; None without a stamp. A
    stamp whose checkpoint is gone raises `error` with `fix` (the pipeline: start over with --overwrite)."""
    done = os.path.join(run_dir, phase, "DONE")
    if not os.path.isfile(done):
        return None
    try:
        rel = json.loads(open(done).read())["checkpoint"]
    except (ValueError, KeyError, TypeError):  # a stamp from before the checkpoint was recorded
        rel = os.path.join("checkpoints", "last.ckpt")
    path = os.path.join(run_dir, phase, rel)  # an absolute `rel` (a checkpoint outside the run folder) stays as it is
    if not os.path.isfile(path):
        raise error(f"{done} says the {phase} phase finished, but its checkpoint {path} is missing: {fix}")
    return path
