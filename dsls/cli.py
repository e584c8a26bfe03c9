"""LightningCLI entry point (console script `dsls`).

    dsls fit     --config configs/toy/reconstruction.yaml [--model.lr=…]
    dsls fit     --config configs/toy/adversarial.yaml --model.autoencoder_ckpt=<phase-1 ckpt>
    dsls predict --config configs/toy/search.yaml --model.ckpt=<phase-2 ckpt>

Every run writes into a run folder (--run_dir, default runs/<dataset>/<timestamp>): fit phases into
<run_dir>/<phase>/ (config.yaml + checkpoints/), the search phase into <run_dir>/ itself.
"""
from __future__ import annotations

import importlib
import netrc
import os
import time
from pathlib import Path
from typing import Optional

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from dsls.data.images import MissingDataError
from dsls.metrics.fidelity import MissingWeightsError
from dsls.phases.base import PhaseCheckpointError, load_phase_checkpoint
from dsls.tasks import TaskError


class RunConfigCallback(SaveConfigCallback):
    """Saves the merged config beside the checkpoints, in the phase folder (not in the logger's folder)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer, pl_module, stage) -> None:
        os.makedirs(trainer.default_root_dir, exist_ok=True)
        path = os.path.join(trainer.default_root_dir, self.config_filename)
        self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=self.multifile)


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


class DSLSCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="Run folder (default: runs/<dataset>/<timestamp>; search: beside its checkpoint).")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0})

    def _parse_ckpt_path(self) -> None:
        """Lightning rebuilds the model named in the --ckpt_path checkpoint: refuse another phase's checkpoint first,
        or `fit --config <phase A> --ckpt_path=<phase B>` would silently train phase B."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if sub == "fit" and ckpt_path and Path(ckpt_path).is_file():  # not 'last', 'hpc', ...: Lightning resolves those
            load_phase_checkpoint(ckpt_path, _phase_of(self.config[sub]), flag="--ckpt_path")
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        phase = _phase_of(cfg)
        run_dir = cfg.run_dir
        if run_dir is None:
            ckpt = cfg.model.init_args.get("ckpt") if phase == "search" else None
            run_dir = (str(Path(ckpt).resolve().parents[2]) if ckpt and Path(ckpt).is_file()
                       else os.path.join("runs", _dataset_of(cfg), time.strftime("%Y%m%d-%H%M%S")))
        cfg.run_dir = run_dir
        phase_dir = run_dir if phase == "search" else os.path.join(run_dir, phase)
        cfg.trainer.default_root_dir = phase_dir
        if cfg.checkpoint.dirpath is None:
            cfg.checkpoint.dirpath = os.path.join(phase_dir, "checkpoints")

    def instantiate_trainer(self, **kwargs):
        cfg = self.config_init[self.subcommand]
        if cfg.trainer.get("logger") in (None, True):  # default logger: W&B, offline without a key
            from lightning.pytorch.loggers import WandbLogger

            kwargs["logger"] = WandbLogger(project="dsls", save_dir=cfg.run_dir, offline=wandb_offline(),
                                           name=f"{Path(cfg.run_dir).name}-{_phase_of(self.config[self.subcommand])}")
        return super().instantiate_trainer(**kwargs)


def main(args=None, run: bool = True, **kwargs) -> DSLSCLI:
    """Programmatic entry (raises); the console script `dsls` is `console_main`. kwargs go to LightningCLI."""
    return DSLSCLI(subclass_mode_model=True, subclass_mode_data=True, save_config_callback=RunConfigCallback,
                   save_config_kwargs={"overwrite": True}, args=args, run=run,
                   parser_kwargs={"parser_mode": "omegaconf"}, **kwargs)


# errors whose message says what to do: printed as one line, no traceback
USER_ERRORS = (MissingDataError, MissingWeightsError, PhaseCheckpointError, TaskError)


def console_main() -> None:
    try:
        main()
    except USER_ERRORS as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    console_main()
