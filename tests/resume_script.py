"""For tests/test_resume.py (and, below, tests/test_signals.py): a callback that preempts a `dsls fit` subprocess
for real, without racing a timer.

    python -m dsls.cli fit ... '--trainer.callbacks+={"class_path": "resume_script.KillAtStep",
                                                      "init_args": {"step": 15}}'

(with tests/ on PYTHONPATH). The checkpoint of step K is written in on_train_batch_end of step K, so the process
SIGKILLs itself at the start of the next batch: after that checkpoint, before any more training."""
import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SlowSteps(L.Callback):
    """For tests/test_signals.py: each step takes `seconds` longer, so that a SIGTERM sent from outside lands while
    the fit still trains, however fast the machine."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import time

        time.sleep(self.seconds)


class TermAtStep(L.Callback):
    """For tests/test_signals.py: a real SIGTERM to this process at the start of training step `step` (once)."""

    def __init__(self, step: int):
        self.step, self.sent = step, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


class TermAtBatch(L.Callback):
    """For tests/test_signals.py: a real SIGTERM to this process at the start of predict batch `batch`; `ended`
    lists the batches that ran to their end."""

    ended: list[int] = []

    def __init__(self, batch: int):
        self.batch = batch

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.ended.append(batch_idx)


class RecordSignals(L.Callback):
    """For tests/test_signals.py: the signal handlers in force while a fit trains (Lightning's, once it started)."""

    seen: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        RecordSignals.seen = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
