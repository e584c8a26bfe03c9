"""One writer per run folder, and nothing of an earlier run overwritten.

The pipeline (run_pipeline) and `dsls fit`/`dsls predict` hold a lock on the folder they write, the file
<folder>/.dsls-lock (JSON: host, pid, command, since). A second writer into that folder is refused with one line that
names the holder; two runs mixed into one folder leave last.ckpt beside last-v1.ckpt and a results table that no file
matches. The lock is stale only when it was taken on this host by a process that no longer exists: it is then taken
over, with a note. One from another host is never judged (its PID means nothing here): the error says how to remove it.

Under DDP, rank 0 owns the lock and the run folder's bookkeeping (DONE stamps, moving old files aside, the pipeline's
progress lines); the other ranks neither take nor check it. The rank is read from the launcher's environment, as
Lightning reads it before the process group exists (the CLI and the pipeline run before it).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import shlex
import socket
import sys
import time
import uuid
from typing import Iterator

from dsls.distributed import is_rank_zero  # noqa: F401  (importable here, as before)
from dsls.errors import ConfigError
from dsls.errors import RunFolderBusy  # noqa: F401  (defined there; importable here)

LOCK = ".dsls-lock"  # in the run folder; a name the pipeline's "does this folder hold a run?" check skips


RUN_DIR_ENV = "DSLS_DEFAULT_RUN_DIR"  # the default run folder's name, handed from rank 0 to the ranks it launches


def default_run_dir(make) -> str:
    """A default run folder named once for every rank of a DDP run: rank 0 names it (make(), a timestamp) and leaves
    the name in the environment, which Lightning's launcher copies into the processes it starts; the other ranks read
    it there instead of taking a timestamp of their own, which could name another folder a second later."""
    if not is_rank_zero() and os.environ.get(RUN_DIR_ENV):
        return os.environ[RUN_DIR_ENV]
    os.environ[RUN_DIR_ENV] = make()
    return os.environ[RUN_DIR_ENV]


def say(*args, **kwargs) -> None:
    """print, on rank 0 only: under DDP every rank runs the pipeline's loop, and its lines would print once per rank."""
    if is_rank_zero():
        print(*args, **{"flush": True, **kwargs})


# -- the lock ---------------------------------------------------------------------------------------------------------
_held: dict[str, dict] = {}  # lock path → {count: re-entrant holds, token: ours in the file, pid, made: the folder}
_scopes: list[list[str]] = []  # lock_scope()s open in this process: the holds each releases when it ends


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _read(path: str) -> dict | None:
    """The lock's record, or None if it vanished. A file being written right now (create, then write) is read again;
    one that stays unreadable is reported as it is."""
    for _ in range(20):
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            time.sleep(0.05)
    return {"host": "?", "pid": "?", "command": "?", "since": "?", "unreadable": True}


def _holder(record: dict) -> str:
    host = "this host" if record.get("host") == socket.gethostname() else f"host {record.get('host')}"
    command = str(record.get("command", "?"))
    command = command if len(command) <= 160 else command[:157] + "..."
    return f"pid {record.get('pid')} on {host}, since {record.get('since')}: {command}"


def _is_stale(record: dict) -> bool:
    """Taken on this host by a process that is gone. Never judged for another host: its PIDs are not ours."""
    pid = record.get("pid")
    return record.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_exists(pid)


def _refuse(folder: str, path: str, record: dict) -> RunFolderBusy:
    if record.get("unreadable"):
        return RunFolderBusy(f"{folder} holds an unreadable lock ({path}): if no run writes into this folder, "
                             f"rm {shlex.quote(path)}")
    if record.get("host") == socket.gethostname():
        return RunFolderBusy(f"{folder} is in use by another run ({_holder(record)}): wait for it to end, or "
                             f"write into another folder")
    return RunFolderBusy(f"{folder} is in use by a run on another host ({_holder(record)}): wait for it to end, or "
                         f"if you are sure that run is gone, rm {shlex.quote(path)}")


def _create(path: str, token: str) -> bool:
    """Create the lock atomically (O_CREAT | O_EXCL): False if it exists."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "command": shlex.join(sys.argv),
              "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": token}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.write("\n")
    except BaseException:  # e.g. a full disk: no empty lock left to block the next run
        os.remove(path)
        raise
    return True


def _writable_create(folder: str, path: str, token: str) -> bool:
    """_create, with a folder that cannot be written (read-only, no permission) as one line instead of a traceback."""
    try:
        os.makedirs(folder, exist_ok=True)
        return _create(path, token)
    except OSError as e:
        raise ConfigError(f"cannot write into the run folder {folder} ({e.strerror}): pass a writable folder") from e


def _remove_stale(path: str, record: dict) -> None:
    """Move the stale lock out of the way and delete it, unless another process replaced it meanwhile (then it is
    put back, and the caller finds that holder on its next try)."""
    aside = f"{path}.stale-{os.getpid()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process took it over first
    if _read(aside) == record:
        os.remove(aside)
        print(f"note: took over the lock of a run that is gone ({_holder(record)}): {path}", flush=True)
        return
    with contextlib.suppress(FileExistsError):
        os.link(aside, path)  # a live lock: back where it was (unless a third process created one meanwhile)
    os.remove(aside)


def _acquire(folder: str) -> str | None:
    """Hold `folder`'s lock (re-entrant in this process); the lock's path, or None on a rank other than 0."""
    if not is_rank_zero():
        return None
    path = os.path.realpath(os.path.join(folder, LOCK))
    if path in _held:
        _held[path]["count"] += 1
        return path
    token, made = uuid.uuid4().hex, not os.path.isdir(folder)
    for _ in range(5):
        if _writable_create(folder, path, token):
            _held[path] = {"count": 1, "token": token, "pid": os.getpid(), "made": made}
            return path
        record = _read(path)
        if record is None:
            continue  # released meanwhile
        if not _is_stale(record):
            raise _refuse(folder, path, record)
        _remove_stale(path, record)
    raise RunFolderBusy(f"{folder}: could not take its lock {path}, other runs keep taking it: write into another "
                        "folder")


def _release(path: str) -> None:
    """One hold less; the file goes with the last, and only if it is still ours; so does the folder, if taking the
    lock made it and the run left it empty (it stopped before writing anything)."""
    hold = _held.get(path)
    if hold is None:
        return
    hold["count"] -= 1
    if hold["count"] > 0:
        return
    del _held[path]
    record = _read(path)
    if record and record.get("token") == hold["token"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    if hold["made"]:
        with contextlib.suppress(OSError):  # not empty: the run wrote into it
            os.rmdir(os.path.dirname(path))


@atexit.register
def _release_all() -> None:
    """At exit, whatever is still held (a run stopped by an exception outside lock_scope, or by sys.exit). A forked
    child (a data loader's worker) inherits _held but never releases its parent's lock."""
    for path in list(_held):
        if _held[path]["pid"] != os.getpid():
            continue
        _held[path]["count"] = 1
        _release(path)


def take_lock(folder: str) -> None:
    """Hold `folder`'s lock until the innermost open lock_scope() ends (or the process exits). Re-entrant: the
    pipeline holds its run folder, and the phases it runs in the same process take it again."""
    path = _acquire(folder)
    if path is not None and _scopes:
        _scopes[-1].append(path)


@contextlib.contextmanager
def lock_scope() -> Iterator[None]:
    """Release the locks take_lock() takes inside this block when it ends, normally or by an exception."""
    _scopes.append([])
    try:
        yield
    finally:
        for path in reversed(_scopes.pop()):
            _release(path)


def releases_locks(fn):
    """Decorator: fn's body is one lock_scope()."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with lock_scope():
            return fn(*args, **kwargs)

    return wrapper


# -- nothing overwritten ----------------------------------------------------------------------------------------------
def versioned(path: str, k: int) -> str:
    """name.ext → name-v<k>.ext (k = 0: the name itself), as Lightning names a second last.ckpt last-v1.ckpt."""
    stem, ext = os.path.splitext(path)
    return f"{stem}-v{k}{ext}" if k else path


def checkpoint_version(ckpt_path: str | None) -> int | None:
    """k of a checkpoint named <name>-v<k>.ckpt (0 without a suffix); None for no checkpoint."""
    if not ckpt_path:
        return None
    found = re.search(r"-v(\d+)\.ckpt$", os.path.basename(str(ckpt_path)))
    return int(found[1]) if found else 0


def free_version(paths: list[str], resumed_from: str | None = None) -> int:
    """The version k (versioned()) under which none of `paths` exists yet: one k for files that belong together (a
    png and its json). A fit resumed from <name>-v<k>.ckpt keeps that k: it continues the run that wrote them."""
    k = checkpoint_version(resumed_from)
    if k is not None:
        return k
    return next(k for k in range(100_000) if not any(os.path.exists(versioned(p, k)) for p in paths))


# -- --resume -----------------------------------------------------------------------------------------------------
def note_unapplied(done: dict, routed: dict) -> None:
    """One line per finished phase that --resume skips, naming the overrides it therefore did not apply."""
    for phase, ckpt in done.items():
        if ckpt and routed.get(phase):
            say(f"note: --resume: the {phase} phase had finished, so it did not get {' '.join(routed[phase])} "
                f"(to retrain it with them, start over with --overwrite)")
