"""Progress: the training bar counts optimizer steps toward max_steps (with an ETA), and a tqdm for the other waits.

Lightning's TQDMProgressBar restarts its bar every epoch ("Epoch 5: 9/97"): with max_steps as the stopping rule that
says nothing about how far the run is. StepProgressBar keeps one bar for the whole fit, `global_step/max_steps`, with
the elapsed time, the ETA and the rate in steps/s; the epoch stays in its description. dsls.cli adds it to every run
whose config names no progress bar.

`progress(...)` is the bar of the waits outside the Trainer (the search's σ levels, the metric classifier's training,
reference statistics): a tqdm on stderr, shown on a terminal only, so logs and tests stay clean.
"""
from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm import tqdm


class StepProgressBar(TQDMProgressBar):
    """TQDMProgressBar whose training bar is global_step/max_steps for the whole fit (a resumed fit starts at its
    step, and its ETA counts this session's rate only). Without max_steps (an epoch-bounded fit) it is Lightning's."""

    @staticmethod
    def _by_steps(trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's run id: not progress
        return metrics

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.unit = "step"
        return bar

    def on_train_start(self, trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        if self._by_steps(trainer):
            bar = self.train_progress_bar
            bar.reset(total=trainer.max_steps)
            bar.initial = bar.n = trainer.global_step  # the rate (and so the ETA) counts from here

    def on_train_epoch_start(self, trainer, *args: Any) -> None:
        if not self._by_steps(trainer):
            return super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = trainer.global_step
        bar = self.train_progress_bar
        if self._should_update(n, bar.total) and not bar.disable:
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # (redraws the bar)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._by_steps(trainer):
            return super().on_train_epoch_end(trainer, pl_module)
        if not self.train_progress_bar.disable:  # one bar for the whole fit: not closed per epoch
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


def _rank_zero() -> bool:
    """Bars on the first process only (DDP launches set RANK; torch.distributed may not be up yet)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def progress(iterable=None, *, desc: str, total: float | None = None, unit: str = "it", **kwargs):
    """A tqdm on stderr that disappears when done, drawn only on a terminal (disable=None) and on rank 0.
    Works as an iterable wrapper or, with iterable=None, as a bar to .update() by hand."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True,
                disable=None if _rank_zero() else True, **kwargs)
