"""What every phase module shares: a phase tag in each checkpoint and a strict loader for it."""
from __future__ import annotations

import math
import os

import lightning as L
import torch

PHASES = {"reconstruction": "phase 1", "adversarial": "phase 2", "pixel_ncsn": "pixel-space baseline"}
FLAG_FOR = {"reconstruction": "--model.autoencoder_ckpt", "adversarial": "--model.ckpt", "pixel_ncsn": "--model.ckpt"}


def init_args(frame_locals: dict) -> dict:
    """An __init__'s arguments, for save_hyperparameters(dict). Explicit, because LightningCLI's recorded args
    would otherwise leak into modules built inside another module's __init__ (the search phase builds phase 2).
    `_class_path` is what LightningCLI reads back from a checkpoint on `--ckpt_path` resume."""
    cls = type(frame_locals["self"])
    args = {k: v for k, v in frame_locals.items() if k not in ("self", "__class__") and not k.startswith("_")}
    return {"_class_path": f"{cls.__module__}.{cls.__qualname__}", **args}


def warmup_cosine(opt: torch.optim.Optimizer, module: "PhaseModule", warmup_frac: float = 0.0):
    """Linear warm-up over warmup_frac of training, then cosine decay to 0, per optimizer step. The length is read
    from the Trainer at every fit (PhaseModule.on_train_start), so resuming with a longer max_steps stretches the
    schedule instead of overrunning a fixed one."""

    def factor(step: int) -> float:
        total = max(module.total_steps, 1)
        warm = warmup_frac * total
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(total - warm, 1))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class PhaseCheckpointError(ValueError):
    """A checkpoint that is missing or belongs to another phase."""


def _an(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _describe(phases: tuple[str, ...]) -> str:
    return " or ".join(f"{_an(p)} ({PHASES[p]}) checkpoint" for p in phases)


def load_phase_checkpoint(path: str | os.PathLike | None, expected: str | tuple[str, ...],
                          flag: str | None = None) -> dict:
    """Load a checkpoint and check it was written by an `expected` phase, with an error that names the fix."""
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    flag = flag or FLAG_FOR[expected[0]]
    if not path:
        raise PhaseCheckpointError(f"{flag} is required: pass {_describe(expected)}.")
    if not os.path.isfile(path):
        raise PhaseCheckpointError(
            f"{flag}={path} does not exist. Pass {_describe(expected)}, "
            f"e.g. runs/<dataset>/<run>/{expected[0]}/checkpoints/last.ckpt."
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    found = ckpt.get("dsls_phase") if isinstance(ckpt, dict) else None
    if found not in expected:
        what = f"{_an(found)} ({PHASES.get(found, '?')}) checkpoint" if found else "not a dsls checkpoint"
        raise PhaseCheckpointError(f"{flag}={path} is {what}, but this needs {_describe(expected)}.")
    return ckpt


class PhaseModule(L.LightningModule):
    """Tags checkpoints with the phase and the data set they were trained on."""

    phase: str = ""
    dataset_name: str | None = None
    datamodule_hparams: dict | None = None  # the data module a loaded checkpoint was trained with (for its metrics)
    total_steps: int = 1

    def on_train_start(self) -> None:
        self.total_steps = int(self.trainer.estimated_stepping_batches)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "dataset_name", None):
            self.dataset_name = dm.dataset_name

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        load_phase_checkpoint(checkpoint_path, cls.phase, flag="checkpoint_path")  # clear error before __init__
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dsls_phase"] = self.phase
        checkpoint["dsls_dataset"] = self.dataset_name
        # The noise D trains on comes from the global RNG: keep its state so a resumed run continues the stream.
        checkpoint["dsls_rng"] = {"torch": torch.get_rng_state(),
                                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # also runs on --ckpt_path resume
        if checkpoint.get("dsls_phase") != self.phase:
            raise PhaseCheckpointError(
                f"cannot resume {type(self).__name__} ({self.phase}) from a {checkpoint.get('dsls_phase')} checkpoint."
            )
        self.dataset_name = checkpoint.get("dsls_dataset")
        rng = checkpoint.get("dsls_rng")
        if rng is not None and self._trainer is not None:  # resuming a fit; a bare load leaves the RNG alone
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
