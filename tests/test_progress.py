"""Progress on every long wait: the training bar counts global steps toward max_steps across epochs, the CLI adds it
by default, and the search's samplers, the metric classifier and feature extraction draw a bar on a terminal only,
without changing what they compute. Off a terminal (a log file; pytest's captured stdout) the fit prints a plain line
every 5 % or 30 s instead of a bar."""
import io
import re
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ProgressBar
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dsls.callbacks.progress import ProgressLines, StepProgressBar, on_a_terminal, progress


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so that the bars draw into it."""

    def isatty(self) -> bool:
        return True


def terminal(monkeypatch) -> Terminal:
    """stderr as a terminal, from here on in the test (pytest puts its own stderr back between a fixture's setup
    and the test). tqdm draws a bar when it starts (0/total), then at most every 0.1 s."""
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    return term


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def training_step(self, batch, _):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Probe(L.Callback):
    """(epoch, global_step, the bar's n and total) after every training batch."""

    def __init__(self, bar: StepProgressBar):
        self.bar, self.seen = bar, []

    def on_train_batch_end(self, trainer, *_):
        self.seen.append((trainer.current_epoch, trainer.global_step, self.bar.train_progress_bar.n,
                          self.bar.train_progress_bar.total))


def test_the_training_bar_counts_steps_toward_max_steps_across_epochs(tiny_trainer):
    bar = StepProgressBar()
    probe = Probe(bar)
    data = DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=4)  # 3 batches an epoch
    trainer = tiny_trainer(max_steps=8, max_epochs=-1, callbacks=[bar, probe], enable_progress_bar=True)
    trainer.fit(Tiny(), data)
    assert {epoch for epoch, *_ in probe.seen} == {0, 1, 2}, probe.seen
    assert all(n == step and total == 8 for _, step, n, total in probe.seen), probe.seen  # never reset per epoch
    assert probe.seen[-1][1] == 8 and bar.train_progress_bar.unit == "step"


class Printing(Tiny):
    """Prints a line through Lightning when its fit ends, as the search prints its results table."""

    def on_train_end(self):
        self.print("sampler | modes")


def fit_tiny(tiny_trainer, steps: int) -> None:
    data = DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=4)
    trainer = tiny_trainer(max_steps=steps, max_epochs=-1, callbacks=[StepProgressBar()], enable_progress_bar=True)
    trainer.fit(Printing(), data)


def test_off_a_terminal_the_fit_prints_a_plain_line_every_5_percent(tiny_trainer, capsys):
    fit_tiny(tiny_trainer, 400)
    out = capsys.readouterr().out  # not a terminal
    steps = [int(m[1]) for m in re.finditer(r"^Printing: step (\d+)/400 \(\d+%\), .*step/s, ETA ", out, re.M)]
    assert steps == list(range(20, 401, 20)), out  # 20 lines, not 400 redraws
    assert "\r" not in out and "\nsampler | modes\n" in out  # the table starts on a line of its own


def test_on_a_terminal_the_fit_draws_its_bar(tiny_trainer, monkeypatch):
    term = Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    fit_tiny(tiny_trainer, 40)
    assert "\r" in term.getvalue() and "40/40" in term.getvalue() and "Printing: step" not in term.getvalue()


def test_bars_redraw_on_a_terminal_or_in_a_notebook_only():
    notebook = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})()  # says it is no terminal
    assert on_a_terminal(Terminal()) and on_a_terminal(notebook)
    assert not on_a_terminal(io.StringIO()) and not on_a_terminal(object())


def test_progress_lines_come_every_5_percent_or_30_seconds(capsys):
    now = [0.0]
    lines = ProgressLines("adversarial", total=3000, initial=1000, clock=lambda: now[0])  # a fit resumed at 1000
    shown = []
    for n in range(1001, 3001):
        now[0] += 0.5 if n <= 1200 else 0.01  # slow steps first: the 30 s rule, then the 5 % rule
        if lines.due(n):
            lines.write(n, {"train/d_loss": 0.61234})
            shown.append(n)
    # 1050: 5 % of 3000 crossed (25 s in); 1110, 1170: 30 s later each; then every 150 steps (5 %)
    assert shown == [1050, 1110, 1170, *range(1200, 3001, 150)], shown
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "adversarial: step 1050/3000 (35%),  2.00step/s, ETA 16:15, train/d_loss=0.612", first


class NoFit(L.Trainer):
    def fit(self, *args, **kwargs):  # the test is about the trainer the CLI builds
        return None


def test_the_cli_adds_the_step_bar_unless_progress_bars_are_off(tmp_path):
    from dsls.cli import main

    args = ["fit", "--config", "configs/toy/reconstruction.yaml", "--trainer.logger=false", f"--run_dir={tmp_path}"]
    bars = lambda cli: [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]  # noqa: E731
    assert [type(b) for b in bars(main(args, trainer_class=NoFit))] == [StepProgressBar]
    assert bars(main([*args, "--trainer.enable_progress_bar=false"], trainer_class=NoFit)) == []


def test_progress_draws_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal, as in a log file or under pytest
    assert progress(range(3), desc="x").disable
    terminal(monkeypatch)
    assert not progress(range(3), desc="x").disable
    monkeypatch.setenv("RANK", "1")  # the other processes of a DDP run
    assert progress(range(3), desc="x").disable


@pytest.mark.parametrize("name, settings, label, start", [
    ("langevin", {"steps_per_level": 2}, "langevin: σ levels", "0/4"),  # the ladder's 4 levels
    ("pc", {"levels": 4}, "pc: σ levels", "0/3"),  # 3 steps between 4 levels
    ("ode", {"method": "heun2", "steps": 4}, "ode: σ 2→0.1", "0/100"),  # percent of the log-σ range
])
def test_each_sampler_shows_its_progress_and_samples_the_same(monkeypatch, name, settings, label, start):
    from dsls.noise import SigmaLadder
    from dsls.samplers import PerSampleRNG, make_sampler

    sampler, ladder = make_sampler(name, settings), SigmaLadder(sigma_max=2.0, sigma_min=0.1, num_levels=4)
    score = lambda z, sigma: -z / (1 + sigma**2)  # noqa: E731  (the score of N(0, (1 + σ²) I))
    n0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))

    def run():
        return sampler.sample(score, n0, ladder, PerSampleRNG(range(8))).z

    term = terminal(monkeypatch)
    drawn = run()
    shown = term.getvalue()
    assert f"{label}:   0%" in shown and start in shown, shown
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert torch.equal(run(), drawn)  # the bar changes nothing


def test_the_metric_classifier_and_feature_extraction_show_progress(monkeypatch):
    from dsls.data.digit_splits import load_splits
    from dsls.metrics.digit_classifier import train_classifier
    from dsls.metrics.fidelity import Uint8Images

    splits = load_splits("digits")
    term = terminal(monkeypatch)
    train_classifier("digits", epochs=1, splits={**splits, "train": tuple(t[:256] for t in splits["train"])})
    assert "digits classifier (once, then cached):   0%" in term.getvalue() and "0/4 " in term.getvalue()
    images = Uint8Images(torch.zeros(5, 1, 4, 4), desc="features of the test images")
    assert [tuple(images[i].shape) for i in range(5)] == [(3, 4, 4)] * 5
    assert "features of the test images" in term.getvalue() and images.bar is None  # closed after one pass
