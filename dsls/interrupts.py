"""Honest exits on SIGTERM, what schedulers send before they stop a job.

Lightning's signal connector (kept as it is, so SLURM's requeue signal works as Lightning intends) sets
trainer.received_sigterm, and its fit loop then raises SIGTERMException, a SystemExit that exits 0: a preempted run
looked finished. Here a fit saves its last.ckpt first (SaveLastOnSigterm, the on_exception hook Lightning names for
it), the search stops at its next batch without writing (stop_on_sigterm), and the command ends with Interrupted:
exit code 143 (128 + 15, what a shell reports for a process SIGTERM ended) and one line that says how to continue.
Bottom layer: imports lightning and dsls.checkpoints only.
"""
from __future__ import annotations

import shlex
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dsls.errors import SaveError


class Interrupted(SystemExit):
    """SIGTERM ended the command: exit code 143. `what`: what was done and kept; `then`: what to run next (the
    pipeline puts its own --resume there). str(): the one line to print (dsls.cli.one_line_errors prints it);
    empty on the ranks that do not speak."""

    CODE = 128 + signal.SIGTERM

    def __init__(self, what: str, then: str = "", quiet: bool = False):
        super().__init__(self.CODE)
        self.what, self.then, self.quiet = what, then, quiet

    def __str__(self) -> str:
        return "" if self.quiet else "; ".join(filter(None, [self.what, self.then]))


class SaveLastOnSigterm(L.Callback):
    """On the SIGTERMException of a fit, saves last.ckpt through the run's ModelCheckpoint (so --ckpt_path last and
    the pipeline's --resume continue exactly), unless it saved at this very step already. Every rank takes part, as
    in any save. With save_last="link" a real file is written: no kept checkpoint holds this step."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        callback = trainer.checkpoint_callback
        if (not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING
                or trainer.sanity_checking or callback is None or not getattr(callback, "save_last", False)):
            return
        if callback._last_global_step_saved == trainer.global_step and \
                callback._last_checkpoint_saved == callback.last_model_path:
            return  # this step's last.ckpt is on disk (the save ModelCheckpoint makes on_train_batch_end)
        mode, callback.save_last = callback.save_last, True
        try:
            callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
        finally:
            callback.save_last = mode


def stop_on_sigterm(trainer: L.Trainer, every_rank: bool = False) -> None:
    """Raise SIGTERMException once SIGTERM arrived, as Lightning's fit loop does (its predict loop does not look).
    every_rank: agree across ranks first, so that no rank waits in a gather that another left; a collective, so
    call it where every rank calls it."""
    received = trainer.received_sigterm
    if every_rank and trainer.world_size > 1:
        received = trainer.strategy.reduce_boolean_decision(received, all=False)
    if received:
        raise SIGTERMException()


def _without(args: list[str], flags: tuple[str, ...], switches: tuple[str, ...] = ()) -> list[str]:
    """args without `flags` (as --flag=value or --flag value) and `switches` (no value)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif a not in switches and not a.startswith(tuple(f + "=" for f in flags)):
            out.append(a)
    return out


def fit_resume_command(args: list[str], run_dir: str) -> str:
    """The `dsls fit` command that continues a fit: its own arguments, in its run folder, from last.ckpt."""
    return shlex.join(["dsls", *_without(args, ("--run_dir", "--ckpt_path")), f"--run_dir={run_dir}",
                       "--ckpt_path=last"])


def rerun_command(args: list[str]) -> str:
    """The same `dsls` command."""
    return shlex.join(["dsls", *args])


def interrupted(trainer: L.Trainer, subcommand: str, phase: str, args: Optional[list[str]], run_dir: str,
                finished: bool = False) -> Interrupted:
    """The Interrupted of a `dsls` command SIGTERM stopped. finished: it arrived after the run's last look (its
    files are complete). args: the command's arguments (None: called with a dict, no command to repeat)."""
    quiet = not trainer.is_global_zero
    if subcommand == "fit":
        callback = trainer.checkpoint_callback
        path = getattr(callback, "last_model_path", "") if callback is not None else ""
        what = (f"interrupted by SIGTERM at step {trainer.global_step}{' (the fit had finished)' if finished else ''}; "
                + (f"saved {path}" if path else "no checkpoint saved (--checkpoint.save_last is off)"))
        then = f"resume with: {fit_resume_command(args, run_dir)}" if path and args is not None else ""
        return Interrupted(what, then, quiet)
    if finished:
        return Interrupted(f"interrupted by SIGTERM after the {phase} phase wrote its files (they are complete)",
                           quiet=quiet)
    what = ("interrupted by SIGTERM: the search stopped and wrote no samples, results.json or search.ckpt"
            if phase == "search" else f"interrupted by SIGTERM: the {phase} phase stopped")
    return Interrupted(what, f"run it again with: {rerun_command(args)}" if args is not None else "", quiet)


def command_interrupted() -> Interrupted:
    """The Interrupted of a command whose Trainer is not dsls.cli's (experiments/evaluate.py, the ablation's
    searches): Lightning's SIGTERMException reached the command itself."""
    return Interrupted("interrupted by SIGTERM", f"run it again with: {shlex.join(['python', *sys.argv])}")


def pipeline_resume_command(config_dir: str, run_dir: str, resumes: bool, argv: Optional[list[str]] = None) -> str:
    """The command line that continues a pipeline in run_dir: the script as it was started (sys.argv), with
    --run-dir <run_dir>, and --resume unless the script resumes by itself (`resumes`, as the ablation does)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or not argv[0].endswith(".py"):  # called from Python (a test, a notebook): the pipeline's command
        argv = ["experiments/run_pipeline.py", f"--config-dir={config_dir}"]
    rest = _without(argv[1:], ("--run-dir",), ("--overwrite", "--resume"))
    again = ["--resume"] if not resumes or "--resume" in argv else []
    return shlex.join(["python", argv[0], *rest, f"--run-dir={run_dir}", *again])


@contextmanager
def continued_by(command: str) -> Iterator[None]:
    """A SIGTERM (Interrupted) or a failed save (SaveError) inside the block ends its line with `resume with:
    command`: a pipeline is continued by its own --resume, not by the phase's `dsls` command."""
    try:
        yield
    except Interrupted as e:
        e.then = f"resume with: {command}"
        raise
    except Exception as e:
        failed = failed_save(e)
        if failed is not None:
            failed.then = f"then resume with: {command}"
        raise


def failed_save(e: Optional[BaseException]) -> Optional[SaveError]:
    """The SaveError in e's chain (__cause__, __context__), if any: what wraps it does not matter."""
    seen = set()
    while e is not None and not isinstance(e, SaveError) and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return e if isinstance(e, SaveError) else None


def after_failed_save(e: BaseException, subcommand: str, args: list[str], run_dir: str) -> None:
    """A failed save's line ends with the command that continues: a fit resumes from the last.ckpt it kept, anything
    else runs again."""
    failed = failed_save(e)
    if failed is None:
        return
    resumes = subcommand == "fit" and failed.existed and failed.path.endswith(".ckpt")
    failed.then = (f"then resume with: {fit_resume_command(args, run_dir)}" if resumes
                   else f"then run it again: {rerun_command(args)}")
