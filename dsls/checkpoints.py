"""Saves that are never left half-written: checkpoints, the search's files (dsls.runs) and the tasks' outputs.

A file is written to a temporary file in its own folder, flushed and fsynced, then renamed onto its name: a rename
within one file system is atomic, so a reader sees the previous file or the new one, whole. Lightning's own save
writes to /tmp and copies across file systems: a full disk there left a truncated last.ckpt that --resume refused.
A failed save removes its temporary file, keeps any previous file, and raises SaveError, whose message is one line
(dsls.cli prints it as `error: …`). Bottom layer: imports torch, numpy and lightning only.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import secrets
from typing import IO, Any, Callable, Optional

import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

# what to do about the errors a save meets in practice; any other: the OS's words and "fix that"
_FIXES = {errno.ENOSPC: "free space on its disk", errno.EDQUOT: "free space within your disk quota",
          errno.EACCES: "make its folder writable", errno.EPERM: "make its folder writable",
          errno.EROFS: "save to a writable disk", errno.EFBIG: "raise the file size limit (ulimit -f)"}


class SaveError(OSError):
    """A save that failed and left nothing half-written. `then`: what to run next (set by the command that knows
    it, e.g. `resume with: dsls fit … --ckpt_path last`); str(): one line for the user."""

    def __init__(self, path: str, cause: OSError, existed: bool):
        super().__init__(cause.errno, cause.strerror, path)
        self.path, self.cause, self.existed, self.then = path, cause, existed, "then run it again"

    def __str__(self) -> str:
        what = os.strerror(self.errno) if self.errno else str(self.cause)
        name = os.path.basename(self.path)
        kept = f"the previous {name} is intact" if self.existed else f"no {name} was left behind"
        fix = _FIXES.get(self.errno, "fix that")
        return f"{what[:1].lower()}{what[1:]} while saving {self.path} ({kept}): {fix}, {self.then}"


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
