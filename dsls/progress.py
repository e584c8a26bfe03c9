"""`progress(...)`: the bar of the waits outside the Trainer (the search's σ levels, the metric classifier's training,
reference statistics): a tqdm on stderr, drawn on a terminal only and on rank 0, so logs and tests stay clean. Bottom
layer: the samplers and metrics use it; the Trainer's own bar is dsls.callbacks.progress.StepProgressBar."""
from __future__ import annotations

from tqdm import tqdm

from dsls.distributed import is_rank_zero


def progress(iterable=None, *, desc: str, total: float | None = None, unit: str = "it", **kwargs):
    """A tqdm on stderr that disappears when done, drawn only on a terminal (disable=None) and on rank 0.
    Works as an iterable wrapper or, with iterable=None, as a bar to .update() by hand."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True,
                disable=None if is_rank_zero() else True, **kwargs)
