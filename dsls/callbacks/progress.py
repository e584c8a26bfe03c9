"""Progress: the training bar counts optimizer steps toward max_steps (with an ETA), and a tqdm for the other waits.

Lightning's TQDMProgressBar restarts its bar every epoch ("Epoch 5: 9/97"): with max_steps as the stopping rule that
says nothing about how far the run is. StepProgressBar keeps one bar for the whole fit, `global_step/max_steps`, with
the elapsed time, the ETA and the rate in steps/s; the epoch stays in its description. dsls.cli adds it to every run
whose config names no progress bar.

Off a terminal (stdout, where Lightning's bars write, redirected to a log file or a pipe) a bar would add a redrawn
line per step: 1 MB for `make demo > log`. There StepProgressBar prints a plain line every 5 % or 30 s instead
(ProgressLines: `adversarial: step 1500/3000 (50%), 12.30step/s, ETA 02:03, train/d_loss=0.61`), as does the
search's predict loop, and the validation and sanity-check bars stay silent.

`progress(...)` is the bar of the waits outside the Trainer (the search's σ levels, the metric classifier's training,
reference statistics): a tqdm on stderr, shown on a terminal only, so logs and tests stay clean.
"""
from __future__ import annotations

import builtins
import sys
import time
from typing import Any, Callable

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf
from tqdm import tqdm

from dsls.progress import progress  # noqa: F401  (importable here, as before)


def on_a_terminal(stream=None) -> bool:
    """Whether a bar may redraw in place on `stream` (default: stdout, where Lightning's bars write): a terminal,
    not a log file or a pipe, where each redraw would be one more line. A notebook's output (ipykernel's stream,
    which says it is no terminal) redraws a bar in place too."""
    stream = sys.stdout if stream is None else stream
    if type(stream).__module__.startswith("ipykernel."):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressLines:
    """Progress as plain lines, for logs: one when `percent` % more of `total` is done or `seconds` passed since the
    last line, whichever comes first, and one at the end. The rate and the ETA count from `initial` (a resumed fit
    starts at its step) and are tqdm's (format_meter). total=None: the time rule only, without percent or ETA."""

    FORMAT = "{desc}: {word} {n_fmt}/{total_fmt} ({percentage:.0f}%), {rate_fmt}, ETA {remaining}{postfix}"
    UNBOUNDED = "{desc}: {word} {n_fmt}, {rate_fmt}{postfix}"

    def __init__(self, desc: str, total: int | None, initial: int = 0, word: str = "step", percent: float = 5,
                 seconds: float = 30, clock: Callable[[], float] = time.monotonic):
        self.desc, self.total, self.initial, self.word = desc, total, initial, word
        self.seconds, self.clock = seconds, clock
        self.chunk = max(1, round(total * percent / 100)) if total else None
        self.start = self.last_t = clock()
        self.last_n = initial
        self.next_n = self._next(initial)

    def _next(self, n: int) -> float:
        return (n // self.chunk + 1) * self.chunk if self.chunk else float("inf")

    def due(self, n: int) -> bool:
        """Whether step n gets a line (cheap: the caller builds the metrics only then)."""
        return n != self.last_n and (n >= self.next_n or n == self.total or
                                     self.clock() - self.last_t >= self.seconds)

    def line(self, n: int, metrics: dict | None = None) -> str:
        postfix = ", ".join(f"{k}={v if isinstance(v, str) else tqdm.format_num(v)}"
                            for k, v in (metrics or {}).items())
        fmt = (self.FORMAT if self.total else self.UNBOUNDED).replace("{word}", self.word)
        return tqdm.format_meter(n, self.total, self.clock() - self.start, prefix=self.desc, unit=self.word,
                                 initial=self.initial, postfix=postfix, bar_format=fmt)

    def write(self, n: int, metrics: dict | None = None) -> None:
        """Print step n's line on stdout (flushed: a log shows it at once) and start the next interval."""
        print(self.line(n, metrics), flush=True)
        self.last_n, self.last_t, self.next_n = n, self.clock(), self._next(n)


class StepProgressBar(TQDMProgressBar):
    """TQDMProgressBar whose training bar is global_step/max_steps for the whole fit (a resumed fit starts at its
    step, and its ETA counts this session's rate only). Without max_steps (an epoch-bounded fit) it is Lightning's.
    Off a terminal it draws no bar: the fit and the predict/test loops print ProgressLines (every `log_percent` % or
    `log_seconds` s), and the validation bars are silent."""

    def __init__(self, *args, log_percent: float = 5, log_seconds: float = 30, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_percent, self.log_seconds = log_percent, log_seconds
        self._plain = False  # stdout is not a terminal (decided at each setup)
        self._lines: ProgressLines | None = None  # the running loop's, when plain
        self._batches = 0  # the predict/test batches done, when plain

    @staticmethod
    def _by_steps(trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._plain = not on_a_terminal()  # per run: a notebook may redirect stdout between two fits

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's run id: not progress
        return metrics

    # -- off a terminal: silent bars (each would start with a line of its own), plain lines instead ------------
    def _silent_or(self, init) -> Tqdm:
        return Tqdm(disable=True) if self._plain else init()

    def init_sanity_tqdm(self):
        return self._silent_or(super().init_sanity_tqdm)

    def init_validation_tqdm(self):
        return self._silent_or(super().init_validation_tqdm)

    def init_predict_tqdm(self):
        return self._silent_or(super().init_predict_tqdm)

    def init_test_tqdm(self):
        return self._silent_or(super().init_test_tqdm)

    def init_train_tqdm(self):
        bar = self._silent_or(super().init_train_tqdm)
        bar.unit = "step"
        return bar

    def _start_lines(self, pl_module, total, initial: int = 0, word: str = "step") -> None:
        """The plain lines of the loop that starts (rank 0 only: Lightning disables the bars of the other ranks)."""
        desc = getattr(pl_module, "phase", None) or type(pl_module).__name__
        self._lines = ProgressLines(desc, convert_inf(total), initial, word, self.log_percent,
                                    self.log_seconds) if self._plain and self.is_enabled else None

    def _report(self, n: int, metrics: Callable[[], dict], last: bool = False) -> None:
        if self._lines is not None and (self._lines.due(n) or (last and n != self._lines.last_n)):
            self._lines.write(n, metrics())

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Off a terminal, a plain print (flushed): the results table starts on a line of its own, and is printed
        even though every bar is silent (Lightning's would then print nothing)."""
        if not self._plain:
            return super().print(*args, sep=sep, **kwargs)
        kwargs.pop("nolock", None)  # tqdm.write's
        builtins.print(*args, sep=sep, flush=True, **kwargs)

    # -- the fit ---------------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module, *args: Any) -> None:
        super().on_train_start(trainer, pl_module, *args)
        if self._by_steps(trainer):
            bar = self.train_progress_bar
            bar.reset(total=trainer.max_steps)
            bar.initial = bar.n = trainer.global_step  # the rate (and so the ETA) counts from here
        total = trainer.max_steps if self._by_steps(trainer) else trainer.estimated_stepping_batches
        self._start_lines(pl_module, total, trainer.global_step)

    def on_train_epoch_start(self, trainer, *args: Any) -> None:
        if not self._by_steps(trainer):
            return super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._lines is not None:
            self.train_progress_bar.n = trainer.global_step  # the silent bar still counts
            return self._report(trainer.global_step, lambda: self.get_metrics(trainer, pl_module))
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

    def on_train_end(self, trainer, pl_module) -> None:
        self._report(trainer.global_step, lambda: self.get_metrics(trainer, pl_module), last=True)
        super().on_train_end(trainer, pl_module)

    # -- the search (predict or test), off a terminal: one line per few percent of its batches ---------------
    def _eval_start(self, pl_module, batches: list) -> None:
        self._batches = 0
        self._start_lines(pl_module, sum(batches), word="batch")

    def _eval_batch_end(self) -> None:
        self._batches += 1
        self._report(self._batches, dict)

    def on_predict_start(self, trainer, pl_module) -> None:
        super().on_predict_start(trainer, pl_module)
        self._eval_start(pl_module, trainer.num_predict_batches)

    def on_predict_batch_end(self, trainer, pl_module, *args: Any, **kwargs: Any) -> None:
        super().on_predict_batch_end(trainer, pl_module, *args, **kwargs)
        self._eval_batch_end()

    def on_test_start(self, trainer, pl_module) -> None:
        super().on_test_start(trainer, pl_module)
        self._eval_start(pl_module, trainer.num_test_batches)

    def on_test_batch_end(self, trainer, pl_module, *args: Any, **kwargs: Any) -> None:
        super().on_test_batch_end(trainer, pl_module, *args, **kwargs)
        self._eval_batch_end()
