"""The Makefile passes CKPT and DATASET as one argument each, never as shell code; ARGS splits into arguments."""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("target, var, expected", [
    ("evaluate", "CKPT", ["experiments/evaluate.py", "--ckpt", "{value}", "--x=1", "--y=2"]),
    ("ablate", "DATASET", ["experiments/ablate.py", "--config-dir", "configs/{value}", "--x=1", "--y=2"]),
])
def test_paths_are_one_argument_never_code(tmp_path, target, var, expected):
    argv = tmp_path / "argv.py"  # stands in for the venv's python: prints the arguments it was given
    argv.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    argv.chmod(argv.stat().st_mode | stat.S_IXUSR)
    value = "x; echo INJECTED $(echo SUBST) \"q' `echo TICK`"
    out = subprocess.run(["make", "--no-print-directory", "-s", "-o", ".venv/.installed", target, f"PY={argv}",
                          f"{var}={value}", "ARGS=--x=1 --y=2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [json.dumps([a.replace("{value}", value) for a in expected])]
