"""SIGTERM, what schedulers send before they stop a job: a fit saves last.ckpt, then exits 143 (128 + 15) with one
line that says how to resume, and resuming continues exactly; the search stops at its next batch and writes
nothing. Lightning alone exits 0 on SIGTERM, and its predict loop ignores it."""
import json
import os
import runpy
import shlex
import signal
import sys
import time

import pytest

from dsls.cli import main, one_line_errors
from resume_script import RecordSignals, TermAtBatch
from test_pipeline import TINY as PIPELINE_TINY
from test_resume import TINY, assert_same, finish, last_ckpt, load, start_fit

MODEL = ["--model.hidden=32", "--model.depth=2"]
SLOW = '--trainer.callbacks+={"class_path": "resume_script.SlowSteps", "init_args": {"seconds": 0.1}}'


def wait_for(path, proc, timeout: float = 120) -> None:
    """Until `path` exists (saved atomically: whole once it is there), while proc still runs."""
    end = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, "the fit ended before its first checkpoint: " + proc.communicate()[0][-3000:]
        assert time.time() < end, "no checkpoint yet"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_saves_last_ckpt_exits_143_and_resumes_exactly(tmp_path):
    """SIGTERM from outside, once the step-5 checkpoint shows training is under way (25 steps of 0.1 s: it lands
    mid-run); the line's own command resumes it (in-process), to the weights of a run that never stopped."""
    run = tmp_path / "stopped"
    proc = start_fit("reconstruction", run, *MODEL, SLOW)
    wait_for(last_ckpt(run, "reconstruction"), proc)
    proc.send_signal(signal.SIGTERM)
    rc, out = finish(proc)
    assert rc == 143, out[-3000:]
    line = out.strip().splitlines()[-1]
    assert line.startswith("interrupted by SIGTERM at step ") and "; saved " in line, out[-3000:]
    stopped = load(last_ckpt(run, "reconstruction"))
    assert 5 <= stopped["global_step"] < 25 and f"at step {stopped['global_step']};" in line

    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:2] == ["dsls", "fit"] and command[-1] == "--ckpt_path=last"
    main(command[1:])  # as the line says
    main(["fit", "--config", "configs/toy/reconstruction.yaml", f"--run_dir={tmp_path / 'straight'}", *TINY, *MODEL])
    resumed, straight = (load(last_ckpt(tmp_path / d, "reconstruction")) for d in ("stopped", "straight"))
    assert resumed["global_step"] == straight["global_step"] == 25
    assert_same(straight["state_dict"], resumed["state_dict"])


@pytest.fixture
def survive_sigterm():
    """In-process SIGTERM: a handler of ours under Lightning's (which calls it too), so that a signal arriving
    outside a run cannot end pytest."""
    old = signal.signal(signal.SIGTERM, lambda *_: None)
    yield
    signal.signal(signal.SIGTERM, old)


def test_sigterm_between_checkpoints_saves_that_step(tmp_path, survive_sigterm, capsys):
    """In-process, SIGTERM during step 8 (checkpoints every 5 steps): last.ckpt is saved at step 8, after the step
    ended (Lightning's "on last" restart state, not the on_train_batch_end one of the periodic saves), and
    resuming from it ends with the weights of a run that never stopped."""
    term = '--trainer.callbacks+={"class_path": "resume_script.TermAtStep", "init_args": {"step": 7}}'
    fit = ["fit", "--config", "configs/toy/reconstruction.yaml", *TINY, *MODEL]
    with pytest.raises(SystemExit) as e, one_line_errors():
        main([*fit, f"--run_dir={tmp_path / 'stopped'}", term])
    assert e.value.code == 143
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted by SIGTERM at step 8; saved ")
    assert load(last_ckpt(tmp_path / "stopped", "reconstruction"))["global_step"] == 8
    main([*fit, f"--run_dir={tmp_path / 'stopped'}", "--ckpt_path=last"])
    main([*fit, f"--run_dir={tmp_path / 'straight'}"])
    resumed, straight = (load(last_ckpt(tmp_path / d, "reconstruction")) for d in ("stopped", "straight"))
    assert resumed["global_step"] == straight["global_step"] == 25
    assert_same(straight["state_dict"], resumed["state_dict"])


def test_slurm_requeue_signal_stays_lightnings(tmp_path, monkeypatch):
    """Under SLURM, SIGUSR1 still runs Lightning's requeue handler (dsls hooks into SIGTERM's outcome only)."""
    from lightning.pytorch.trainer.connectors.signal_connector import _HandlersCompose, _SignalConnector

    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "dsls", "SLURM_NODELIST": "localhost",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    record = '--trainer.callbacks+={"class_path": "resume_script.RecordSignals"}'
    main(["fit", "--config", "configs/toy/reconstruction.yaml", *TINY, "--trainer.max_steps=1",
          f"--run_dir={tmp_path}", record])
    handler = RecordSignals.seen[signal.SIGUSR1]
    assert isinstance(handler, _HandlersCompose)
    assert _SignalConnector._slurm_sigusr_handler_fn in [getattr(h, "__func__", h) for h in handler.signal_handlers]


def test_sigterm_stops_the_search_before_it_writes(tmp_path, toy_adv_ckpt, survive_sigterm, capsys):
    """A real SIGTERM at the start of batch 1 of 4: the search stops there (Lightning's predict loop would run all
    four, then exit 0) and writes no samples, results.json or search.ckpt."""
    out = tmp_path / "search"
    term = '--trainer.callbacks+={"class_path": "resume_script.TermAtBatch", "init_args": {"batch": 1}}'
    args = ["predict", "--config", "configs/toy/search.yaml", f"--model.ckpt={toy_adv_ckpt}", f"--model.out_dir={out}",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--model.num_samples=8",
            "--model.batch_size=2", "--model.samplers={none: {}}", term]
    TermAtBatch.ended.clear()
    with pytest.raises(SystemExit) as e, one_line_errors():
        main(args)
    assert e.value.code == 143
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("interrupted by SIGTERM: the search stopped and wrote no samples"), line
    assert "run it again with: dsls predict " in line
    assert TermAtBatch.ended == [0]  # batch 1 (its search) did not run, nor 2 and 3
    assert not [p for p in os.listdir(out) if p.endswith((".npz", ".json", ".ckpt"))]


@pytest.mark.slow
def test_sigterm_in_a_pipeline_phase_stamps_no_done_and_resume_finishes(tmp_path, survive_sigterm, capsys,
                                                                         monkeypatch):
    """experiments/run_pipeline.py, SIGTERM in phase 2: exit 143, no DONE for it and no search; the line's
    command (--resume) continues phase 2 from its last.ckpt and runs the search."""
    run = tmp_path / "run"
    term = '--adversarial.trainer.callbacks+={"class_path": "resume_script.TermAtStep", "init_args": {"step": 5}}'
    monkeypatch.setattr(sys, "argv", ["experiments/run_pipeline.py", "--config-dir", "configs/toy",
                                      f"--run-dir={run}", *PIPELINE_TINY, term])
    with pytest.raises(SystemExit) as e:
        runpy.run_path("experiments/run_pipeline.py", run_name="__main__")
    assert e.value.code == 143
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("interrupted by SIGTERM at step 6; saved "), line
    assert (run / "reconstruction" / "DONE").is_file() and not (run / "adversarial" / "DONE").exists()
    assert not (run / "results.json").exists() and not list(run.glob("samples-*.npz"))

    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:2] == ["python", "experiments/run_pipeline.py"] and command[-2:] == [f"--run-dir={run}", "--resume"]
    monkeypatch.setattr(sys, "argv", [a for a in command[1:] if a != term])  # (without the test's SIGTERM)
    runpy.run_path("experiments/run_pipeline.py", run_name="__main__")
    assert json.loads((run / "adversarial" / "DONE").read_text())["global_step"] == 12
    assert (run / "results.json").is_file()
