"""Logs that stay small: a pipeline whose output goes to a file writes a few lines per phase, not one per step, its
results table starts on a line of its own and it prints no known library warning; `dsls predict --help` lists every
sampler's settings; `import dsls` after torch warns once about OpenMP's wait policy."""
import dataclasses
import os
import re
import subprocess
import sys

import pytest

from dsls.samplers import SAMPLERS

from test_pipeline import TINY  # a whole toy run in a few seconds

BYTES_PER_PERCENT = 300  # the budget of a phase's log, per percent of the phase


def phase_logs(log: str) -> dict[str, str]:
    """phase → what the pipeline printed while it ran (from its `=== phase` header to the next)."""
    parts = re.split(r"^=== phase (\w+): ", log, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.slow
def test_a_redirected_pipeline_logs_a_few_lines_per_phase(tmp_path):
    """200 steps a phase: one redrawn bar line per step (the old log: ~70 kB a phase) would exceed the budget."""
    steps = 200
    args = [a for a in TINY if "progress_bar" not in a and "max_steps" not in a and "logger" not in a]
    csv = "lightning.pytorch.loggers.CSVLogger"  # a logger (Lightning warns about short epochs only with one), offline
    logger = f"--trainer.logger={{class_path: {csv}, init_args: {{save_dir: {tmp_path}}}}}"
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:  # stdout and stderr into one file, as `make demo > log 2>&1`
        subprocess.run([sys.executable, "experiments/run_pipeline.py", "--config-dir", "configs/toy",
                        f"--run-dir={tmp_path / 'run'}", *args, f"--trainer.max_steps={steps}", logger],
                       stdout=log, stderr=subprocess.STDOUT, check=True, timeout=600)
    log = log_path.read_bytes().decode()  # as written: read_text() would turn each \r into a line break
    seconds = dict(re.findall(r"(\w+) (\d+)", log.split("phase seconds: ")[-1]))
    phases = phase_logs(log)
    assert set(phases) == {"reconstruction", "adversarial", "search"}, log[-3000:]
    for phase, text in phases.items():
        assert len(text.encode()) <= BYTES_PER_PERCENT * 100, (phase, len(text), text[-2000:])
        lines = re.findall(rf"^{phase}: (?:step|batch) \d+", text, flags=re.M)
        assert 1 <= len(lines) <= 100 / 5 + 1 + int(seconds[phase]) / 30, (phase, lines)  # not one per step
    assert "\r" not in log
    table = log.index("sampler | ")
    assert log[table - 1] == "\n", log[table - 200: table + 50]  # on a line of its own
    warned = re.findall(r"^.*\b\w*Warning\b.*$", log, flags=re.M)  # e.g. log_every_n_steps: 2 batches an epoch
    assert not warned, warned


def test_predict_help_lists_every_samplers_settings_and_defaults(capsys):
    from dsls.cli import main

    with pytest.raises(SystemExit) as e:
        main(["predict", "--config", "configs/toy/search.yaml", "--help"])
    assert e.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # as one line: the help wraps long ones
    for name, cls in SAMPLERS.items():
        assert f" {name}: " in shown, name
        for f in dataclasses.fields(cls):
            assert re.search(rf" {name}: [^:]*\b{f.name}=\S", shown), (name, f.name)
    assert "langevin: eps0=0.0005, steps_per_level=10," in shown  # values as the command line writes them


IMPORT_ORDERS = [
    ("import torch; import dsls", {}, True),
    ("import dsls; import torch", {}, False),
    ("import torch; import dsls", {"OMP_WAIT_POLICY": "ACTIVE"}, False),  # the user's choice
    ("import torch; import dsls", {"OMP_WAIT_POLICY": "PASSIVE"}, False),  # in effect already
]


@pytest.fixture(scope="module")
def import_processes() -> list:
    """(returncode, stderr) of a fresh interpreter for each of IMPORT_ORDERS, all started at once (each is its
    imports)."""
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # (conftest sets it for the suite)
    procs = [subprocess.Popen([sys.executable, "-W", "always", "-c", f"{code}; import dsls.samplers; import dsls"],
                              env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for code, env, _ in IMPORT_ORDERS]
    return [(p.communicate(timeout=120)[1], p.returncode) for p in procs]


@pytest.mark.parametrize("case", range(len(IMPORT_ORDERS)), ids=[f"{c}-env{i}-{w}" for i, (c, _, w) in
                                                                 enumerate(IMPORT_ORDERS)])
def test_importing_dsls_after_torch_warns_once(import_processes, case):
    warns = IMPORT_ORDERS[case][2]
    stderr, returncode = import_processes[case]
    assert returncode == 0, stderr[-3000:]
    assert stderr.count("dsls was imported after torch") == (1 if warns else 0), stderr
    if warns:
        assert "RuntimeWarning" in stderr and "OMP_WAIT_POLICY=PASSIVE" in stderr
