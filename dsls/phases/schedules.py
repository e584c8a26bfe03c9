"""The phases' learning-rate schedules: one cosine factor, and linear warm-up then cosine decay to max_steps."""
from __future__ import annotations

import math

import torch


def cosine(step: float, start: float, length: float) -> float:
    """Cosine decay from 1 at `start` to 0 at `start + length`, and 0 outside: the phases' learning-rate factor (D's
    small-σ detail is learned late, at low learning rates)."""
    if step < start:
        return 0.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / max(length, 1))))


def warmup_cosine(opt: torch.optim.Optimizer, module, warmup_frac: float = 0.0):  # module: a PhaseModule
    """Linear warm-up over warmup_frac of training, then cosine decay to 0, per optimizer step. The length is read
    from the Trainer at every fit (PhaseModule.on_train_start), so resuming with a longer max_steps stretches the
    schedule instead of overrunning a fixed one."""

    def factor(step: int) -> float:
        total = max(module.total_steps, 1)
        warm = warmup_frac * total
        if step < warm:
            return (step + 1) / warm
        return cosine(step, warm, total - warm)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
