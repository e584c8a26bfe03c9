"""Every error class a user may meet, in one place at the bottom of the package: each message says what to change,
and the commands print it as one `error: …` line (dsls.cli.one_line_errors; DSLS_DEBUG=1 keeps the traceback)."""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the bottom of the package imports no torch
    import torch

class ConfigError(ValueError):
    """Settings that contradict each other, the data or a checkpoint; the message names the flag to change.
    The `dsls` command prints it as one line (dsls.cli.USER_ERRORS)."""


class PhaseCheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or belongs to another phase."""


class CheckpointPending(Exception):
    """A checkpoint that an earlier phase of this run has not written yet: raised instead of PhaseCheckpointError
    while the pipeline checks every phase's settings before phase 1 trains (`pending_checkpoints`). A module's
    __init__ checks its own settings before it loads a checkpoint, so reaching this means they all passed."""


class TaskError(ValueError):
    """A task's input is missing or wrong; the message says what to do (the scripts print it without a traceback)."""


class MissingDataError(FileNotFoundError):
    """The data set is not on disk (and was not downloaded). The message is meant to be read on its own."""

    def __init__(self, name: str, where: str, layout: str, how: str):
        self.parts = (name, where, layout, how)
        super().__init__(f"{name} data not found at {where} (expected layout: {layout}). To get it: {how}")

    def __reduce__(self):  # rebuild from the parts (the default would pass only the message), e.g. across DDP ranks
        return type(self), self.parts


class CorruptDataError(ValueError):
    """A data file that is on disk but cannot be read (an interrupted download or copy): the message names the file
    and how to get it again."""

    def __init__(self, name: str, path: str, reason: str, how: str):
        self.parts = (name, path, reason, how)
        super().__init__(f"{name} file {path} is truncated or corrupt ({reason}): {how}")

    def __reduce__(self):  # as MissingDataError's: rebuilt from the parts, e.g. across DDP ranks
        return type(self), self.parts


class MissingWeightsError(FileNotFoundError):
    """The feature extractor's pretrained weights are neither on disk nor downloadable."""


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


class DivergedError(ConfigError):
    """A phase's weights are non-finite; the message names the phase and the learning rates to lower."""


class RunFolderBusy(ConfigError):
    """Another run writes into this folder; the message names it and what to do."""


class PipelineError(ConfigError):
    """Bad input to the pipeline (an override, a run folder, a run that trains nothing); the message says the fix.
    A ConfigError, so every command prints it as one `error:` line (dsls.cli.USER_ERRORS)."""


class OverrideError(PipelineError):
    """An override that would reach no phase, or that a phase's parser refuses; the message says what to write."""


class SearchDiverged(FloatingPointError):
    """Latents became NaN/Inf. bad: which rows (a bool per row); the message counts them. sample_indices cuts the
    rows back to the real samples (of_rows), so that pad_rows' copies are never counted."""

    def __init__(self, bad: torch.Tensor, where: str):
        self.bad, self.where = bad, where
        super().__init__(f"search diverged: the latents of {int(bad.sum())} of the {len(bad)} samples in a batch "
                         f"became NaN/Inf {where}. "
                         "Lower the step size (eps0, snr) or check D's checkpoint.")

    def of_rows(self, n: int) -> "SearchDiverged":
        return SearchDiverged(self.bad[:n], self.where)


# errors whose message says what to do: printed as one line, no traceback (FloatingPointError: a diverged search)
USER_ERRORS = (MissingDataError, CorruptDataError, MissingWeightsError, PhaseCheckpointError, ConfigError, TaskError,
               FloatingPointError, SaveError)


def exception_chain(e: BaseException | None):
    """e, then what it was raised from, as its traceback shows the chain (__cause__, else an unsuppressed
    __context__): jsonargparse and Lightning wrap what a module's __init__ or hook raises."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)


def user_error(e: BaseException, kinds: tuple[type[BaseException], ...] = USER_ERRORS) -> BaseException | None:
    """The first error of `kinds` in e's chain (exception_chain)."""
    return next((x for x in exception_chain(e) if isinstance(x, kinds)), None)


def first_line(e: BaseException) -> str:
    """An error's first non-empty line (or its type), to quote in a one-line message."""
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
