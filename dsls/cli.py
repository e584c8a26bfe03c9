"""LightningCLI entry point (console script `dsls`).

    dsls fit     --config configs/toy/reconstruction.yaml [--model.lr=…]
    dsls fit     --config configs/toy/adversarial.yaml --model.autoencoder_ckpt=<phase-1 ckpt>
    dsls predict --config configs/toy/search.yaml --model.ckpt=<phase-2 ckpt>

Every run writes into a run folder (--run_dir, default runs/<dataset>/<timestamp>): fit phases into
<run_dir>/<phase>/ (config.yaml + checkpoints/), the search phase into <run_dir>/ itself. A run holds its folder's
lock while it runs (the search: the folder it writes): a second `dsls` run into it is refused (dsls.run_folder).

Bad input (a wrong or damaged checkpoint, missing data, contradicting settings) ends in one `error: …` line that
says what to change; DSLS_DEBUG=1 shows the full traceback instead.
"""
from __future__ import annotations

import importlib
import netrc
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

import dsls.quiet  # noqa: F401  (silences the known messages that say nothing about the run)
from dsls.arguments import DSLSArgumentParser, check_sampler_names
from dsls.callbacks.progress import StepProgressBar
from dsls.checkpoints import AtomicCheckpointIO
from dsls.errors import USER_ERRORS, CheckpointPending, ConfigError, PhaseCheckpointError, TaskError, user_error  # noqa: F401
from dsls.help import add_search_help
from dsls.interrupts import Interrupted, SaveLastOnSigterm, after_failed_save, command_interrupted, interrupted
from dsls.phases.base import load_phase_checkpoint
from dsls.run_folder import default_run_dir, lock_scope, take_lock
from dsls.runs import check_writable


class RunConfigCallback(SaveConfigCallback):
    """Saves the merged config beside the checkpoints, in the phase folder (not in the logger's folder)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer, pl_module, stage) -> None:
        """A config.yaml already there (a resumed or repeated run) is kept as config-<n>.yaml when it differs."""
        os.makedirs(trainer.default_root_dir, exist_ok=True)
        path = os.path.join(trainer.default_root_dir, self.config_filename)
        new = self.parser.dump(self.config, skip_unset=False)  # (skip_none's name since jsonargparse 4.49)
        if os.path.isfile(path) and Path(path).read_text() != new:
            stem, ext = os.path.splitext(path)
            k = next(k for k in range(1, 10_000) if not os.path.exists(f"{stem}-{k}{ext}"))
            os.replace(path, f"{stem}-{k}{ext}")
            print(f"note: kept the earlier {self.config_filename} as {os.path.basename(stem)}-{k}{ext}", flush=True)
        Path(path).write_text(new)


def wandb_offline() -> bool:
    """Offline unless a W&B API key is configured (env var or ~/.netrc), or WANDB_MODE says otherwise."""
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"] != "online"
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


class PhaseWandbLogger(WandbLogger):
    """dsls's default logger, W&B's run of one phase: named <run>-<phase>, in the group <run> (the run folder's name)
    with job_type <phase>, written to <run_dir>/wandb/ (offline-run-*). DSLSCLI finishes it when the phase ends."""

    def __init__(self, run_dir: str, phase: str, offline: bool):
        import wandb

        run = Path(run_dir).name
        os.makedirs(run_dir, exist_ok=True)  # W&B looks for a git repo there: a missing folder is a warning
        super().__init__(project="dsls", save_dir=run_dir, offline=offline, name=f"{run}-{phase}", group=run,
                         job_type=phase, settings=wandb.Settings(quiet=offline))  # offline: no banner, its folder only
        self._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None, which W&B warns is deprecated


def _dataset_of(cfg) -> str:
    data = cfg.get("data")
    if data is not None and data.get("init_args") is not None:
        return str(data.init_args.get("name") or data.class_path.rsplit(".", 1)[-1].replace("DataModule", "").lower())
    return "search"


def _phase_of(cfg) -> str:
    """The module's `phase` tag (reconstruction, adversarial, pixel_ncsn, search): the phase folder's name."""
    module_path, name = cfg.model.class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_path), name, None)
    return getattr(cls, "phase", None) or name.replace("Module", "").lower()



def _last_checkpoint(cfg) -> str:
    """`--ckpt_path last` of a fit, found before the model is built: LightningCLI takes the model's hyper-parameters
    from a checkpoint file only, and Lightning would look for 'last' after building the model (a phase-2 resume would
    then need --model.autoencoder_ckpt again). The newest last*.ckpt of the phase's checkpoint folder, as Lightning."""
    folder = cfg.checkpoint.dirpath or (cfg.run_dir and os.path.join(cfg.run_dir, _phase_of(cfg), "checkpoints"))
    if not folder:
        raise PhaseCheckpointError("--ckpt_path last resumes a run: pass its folder too, "
                                   "--run_dir=runs/<dataset>/<run>")
    found = sorted(Path(folder).glob("last*.ckpt"), key=os.path.getmtime)
    if not found:
        raise PhaseCheckpointError(f"--ckpt_path last: no last.ckpt in {folder}; pass the --run_dir of the run to "
                                   "resume")
    return str(found[-1])


class DSLSCLI(LightningCLI):
    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs) -> None:
        """`dsls predict --help` ends with every sampler's settings and defaults (dsls.help)."""
        super()._add_subcommands(parser, **kwargs)
        add_search_help(self._subcommand_parsers)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="Run folder (default: runs/<dataset>/<timestamp>; search: beside its checkpoint).")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # last.ckpt every 500 steps, not only at the end: a preempted run then has a recent place to resume from
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0,
                             "checkpoint.every_n_train_steps": 500})

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """As Lightning's, without its warning when `args` are given while sys.argv has arguments: the pipeline calls
        main(args) for each phase, and sys.argv is then its own command line, not this phase's."""
        self.args = None if isinstance(args, (dict, Namespace)) else list(sys.argv[1:] if args is None else args)
        if self.args is not None:  # (the command line, for the line that says how to resume)
            check_sampler_names(self.args)
        self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)

    def _parse_ckpt_path(self) -> None:
        """Lightning rebuilds the model named in the --ckpt_path checkpoint: refuse another phase's checkpoint first,
        or `fit --config <phase A> --ckpt_path=<phase B>` would silently train phase B. The search has no weights
        of its own to restore: its checkpoint is --model.ckpt."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path:
            return super()._parse_ckpt_path()
        phase = _phase_of(self.config[sub])
        if phase == "search":
            raise ConfigError(f"the search does not read --ckpt_path: pass the phase-2 checkpoint as "
                              f"--model.ckpt={ckpt_path}")
        if sub == "fit" and ckpt_path == "last":  # as a file, so that the model's hyper-parameters come from it
            ckpt_path = self.config[sub].ckpt_path = _last_checkpoint(self.config[sub])
        if ckpt_path not in ("best", "last", "hpc") and not ckpt_path.startswith("registry") and "://" not in ckpt_path:
            load_phase_checkpoint(ckpt_path, phase, flag="--ckpt_path")  # (the names and URLs Lightning resolves)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        phase = _phase_of(cfg)
        run_dir = cfg.run_dir
        if run_dir is None:
            ckpt = cfg.model.init_args.get("ckpt") if phase == "search" else None
            run_dir = (str(Path(ckpt).resolve().parents[2]) if ckpt and Path(ckpt).is_file() else default_run_dir(
                lambda: os.path.join("runs", _dataset_of(cfg), time.strftime("%Y%m%d-%H%M%S"))))
        cfg.run_dir = run_dir
        if phase == "search":  # the search writes beside its samples: --model.out_dir, else the run folder
            phase_dir = cfg.model.init_args.get("out_dir") or run_dir
        else:
            phase_dir = os.path.join(run_dir, phase)
        check_writable(phase_dir, "--model.out_dir" if cfg.model.init_args.get("out_dir") else "--run_dir")
        take_lock(phase_dir if phase == "search" else run_dir)  # one writer per run folder (dsls.run_folder)
        if phase == "search" and self.subcommand in ("predict", "test") and os.path.isfile(
                os.path.join(phase_dir, "search.ckpt")):  # before its config.yaml replaces the earlier search's
            raise TaskError(f"{phase_dir} already holds an earlier search (search.ckpt): pass another "
                            "--model.out_dir, or move its files away first")
        cfg.trainer.default_root_dir = phase_dir
        if cfg.checkpoint.dirpath is None:
            cfg.checkpoint.dirpath = os.path.join(phase_dir, "checkpoints")

    def instantiate_trainer(self, **kwargs):
        cfg = self.config_init[self.subcommand]
        if cfg.trainer.get("logger") in (None, True):  # default logger: W&B, offline without a key
            kwargs["logger"] = PhaseWandbLogger(cfg.run_dir, _phase_of(self.config[self.subcommand]), wandb_offline())
        callbacks = list(cfg.trainer.get("callbacks") or [])
        if cfg.trainer.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in callbacks):  # progress toward max_steps, unless a config says
            callbacks.append(StepProgressBar())
        kwargs["callbacks"] = [*callbacks, SaveLastOnSigterm()]  # SIGTERM: last.ckpt first, then exit 143
        plugins = cfg.trainer.get("plugins")
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins] if plugins else []
        if not any(isinstance(p, CheckpointIO) for p in plugins):  # unless a config names its own
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]  # saves never left half-written (dsls.checkpoints)
        return super().instantiate_trainer(**kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        """Runs the phase, then finishes its W&B run, failed or not: one W&B run per phase. Left open, the next phase
        of a pipeline (the same process) would log into it ("…will reuse this run")."""
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:  # Lightning's, a SystemExit that would exit 0
            self._finish_wandb(exit_code=Interrupted.CODE)
            raise self._interrupted() from None
        except BaseException as e:
            self._finish_wandb(exit_code=1)
            if self.args is not None:  # a failed save's line ends with the command that continues
                after_failed_save(e, self.subcommand, self.args, self.config[self.subcommand].run_dir)
            raise
        if getattr(self.trainer, "received_sigterm", False):  # after the loops last looked: still an interruption
            self._finish_wandb(exit_code=Interrupted.CODE)
            raise self._interrupted(finished=True)
        self._finish_wandb(exit_code=0)

    def _interrupted(self, finished: bool = False) -> Interrupted:
        cfg = self.config[self.subcommand]
        return interrupted(self.trainer, self.subcommand, _phase_of(cfg), self.args, cfg.run_dir, finished)

    def _finish_wandb(self, exit_code: int) -> None:
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:  # None: nothing was logged
                logger._experiment.finish(exit_code=exit_code)


class ParseOnlyCLI(DSLSCLI):
    """Parses and checks a command (its --ckpt_path included) and builds its data module and model, so that every
    check their constructors make runs, and does nothing else: no seeding, run folder, Trainer, data read or run.
    The pipeline checks every phase with it before phase 1 trains, with the checkpoints that earlier phases will
    write marked pending (dsls.phases.base.pending_checkpoints): a module checks its settings before it loads one."""

    def _set_seed(self) -> None:
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        instantiate = getattr(self.parser, "instantiate", None) or self.parser.instantiate_classes  # (4.49's name)
        for part in ("data", "model"):  # one at a time: a model that waits for a checkpoint must not hide the data's
            config = self.config.clone()
            sub = config[self.subcommand]
            sub.trainer.logger, sub.trainer.callbacks, sub.trainer.plugins = False, None, None  # no runs, no files
            sub["model" if part == "data" else "data"] = None
            try:
                instantiate(config)
            except Exception as e:
                if user_error(e, (CheckpointPending,)) is None:
                    raise

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def main(args=None, run: bool = True, parse_only: bool = False, **kwargs) -> DSLSCLI:
    """Programmatic entry (raises); the console script `dsls` is `console_main`. kwargs go to LightningCLI.
    parse_only: parse and check the arguments only (ParseOnlyCLI)."""
    # auto_configure_optimizers=False: each phase owns its optimizers and schedules (phase 2 has two); Lightning's
    # --optimizer/--lr_scheduler would replace phase 1's schedule silently and crash phase 2.
    cli = ParseOnlyCLI if parse_only else DSLSCLI
    with lock_scope():  # the run folder's lock, taken once its name is known, is released when the run ends
        return cli(subclass_mode_model=True, subclass_mode_data=True, save_config_callback=RunConfigCallback,
                   save_config_kwargs={"overwrite": True}, args=args, run=run, auto_configure_optimizers=False,
                   parser_class=DSLSArgumentParser, parser_kwargs={"parser_mode": "omegaconf"}, **kwargs)


@contextmanager
def one_line_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Exit with `error: <message>` when a user error (USER_ERRORS or `extra`) ends the block; any other exception,
    or any at all under DSLS_DEBUG=1, keeps its traceback. SIGTERM (Interrupted) prints its line and exits 143."""
    try:
        yield
    except (Interrupted, SIGTERMException) as e:  # SIGTERMException: a bare Trainer's (evaluate.py, the ablation)
        stop = e if isinstance(e, Interrupted) else command_interrupted()
        if str(stop):
            print(stop, file=sys.stderr, flush=True)
        raise stop from None
    except Exception as e:
        found = user_error(e, (*USER_ERRORS, *extra))
        if found is None or os.environ.get("DSLS_DEBUG", "") not in ("", "0"):
            raise
        raise SystemExit(f"error: {found}") from None


def console_main() -> None:
    with one_line_errors():
        main()


if __name__ == "__main__":
    console_main()
