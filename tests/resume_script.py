"""For tests/test_resume.py: a callback that preempts a `dsls fit` subprocess for real, without racing a timer.

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
