"""The Makefile passes CKPT and DATASET as one argument each, never as shell code; ARGS splits into arguments.
`make clean` keeps every run; `make clean-runs` lists what it deletes and deletes it only after a yes.
`make install` takes torch's CPU build without a GPU, PyPI's CUDA build with one, and TORCH=cpu|cuda forces either."""
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


# `make install` with stand-ins: PY logs each call and answers `pip index versions` from FAKE_<PACKAGE>; nvidia-smi
# lists a GPU or fails like a driver without one. The recipe runs for real, nothing is installed.
FAKE_PY = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[:3] == ["-m", "pip", "show"]:
    sys.exit(1)  # no torch in the venv yet
if args[:4] == ["-m", "pip", "index", "versions"]:
    versions = os.environ.get("FAKE_" + args[4].upper(), "")
    if not versions:
        sys.exit("ERROR: No matching distribution found for " + args[4])
    print(f"{{args[4]}} ({{versions.split(', ')[0]}})")
    print("Available versions: " + versions)
if "--extra-index-url" in args:
    sys.exit(int(os.environ.get("FAKE_CPU_INSTALL_RC", "0")))
"""
CPU_INDEX = "file:///cpu-index"
PAIR = {"FAKE_TORCH": "2.14.1, 2.14.1+cpu, 2.13.0+cpu", "FAKE_TORCHVISION": "0.29.1+cpu, 0.29.1, 0.28.0+cpu"}
THIS_MACHINE = {"FAKE_TORCH": "2.14.1, 2.13.0+cpu", "FAKE_TORCHVISION": "0.29.1, 0.29.0, 0.28.0"}  # no +cpu torchvision
CPU_PAIR = ["--extra-index-url", CPU_INDEX, "torch==2.14.1+cpu", "torchvision==0.29.1+cpu", "-e", ".[dev]"]
DEFAULT = ["-m", "pip", "install", "--quiet", "-e", ".[dev]"]
no_gpu_here = pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="this machine has a GPU")


def make_install(tmp_path, gpu, index, *make_vars, cpu_install_rc=0):
    """Run `make install` into a fresh VENV under tmp_path; return (the process, the argument lists PY was called with)."""
    venv, bin_dir = tmp_path / "venv", tmp_path / "bin"  # the venv's python; nvidia-smi on PATH
    for path, text in [(venv / "bin" / "python", FAKE_PY.format(python=sys.executable)),
                       (bin_dir / "nvidia-smi", "#!/bin/sh\n" + ("echo 'GPU 0: NVIDIA H200'" if gpu else "exit 9"))]:
        path.parent.mkdir(parents=True)
        path.write_text(text)
        path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "TORCH"}
    env.update(index, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_LOG=str(log),
               FAKE_CPU_INSTALL_RC=str(cpu_install_rc))
    out = subprocess.run(["make", "--no-print-directory", "install", f"VENV={venv}", f"TORCH_CPU_INDEX={CPU_INDEX}",
                          *make_vars], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return out, [json.loads(line) for line in log.read_text().splitlines()]


def installs(calls):
    """The `pip install` calls, less pip's own upgrade."""
    return [c for c in calls if c[:3] == ["-m", "pip", "install"] and "pip" not in c[3:]]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("gpu, make_vars", [
    pytest.param(False, [], marks=no_gpu_here),  # no GPU: the CPU build by default
    (True, ["TORCH=cpu"]),                       # forced with a GPU
])
def test_install_takes_the_cpu_build_without_a_gpu(tmp_path, gpu, make_vars):
    out, calls = make_install(tmp_path, gpu, PAIR, *make_vars)
    assert out.returncode == 0, out.stdout + out.stderr
    assert installs(calls) == [["-m", "pip", "install", "--quiet", *CPU_PAIR]]  # newest +cpu pair, with dsls, once
    assert "torch: the CPU build, torch 2.14.1+cpu and torchvision 0.29.1+cpu" in out.stdout
    assert (tmp_path / "venv" / ".installed").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("gpu, make_vars", [
    (True, []),                                              # a GPU: PyPI's CUDA build, the CPU index never asked
    pytest.param(False, ["TORCH=cuda"], marks=no_gpu_here),  # forced without a GPU
])
def test_install_takes_pypis_cuda_build_with_a_gpu_or_when_asked(tmp_path, gpu, make_vars):
    out, calls = make_install(tmp_path, gpu, PAIR, *make_vars)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not [c for c in calls if "index" in c[:4]]
    assert installs(calls) == [DEFAULT]
    assert (tmp_path / "venv" / ".installed").exists()


@no_gpu_here
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("index, cpu_install_rc", [
    (THIS_MACHINE, 0),  # a +cpu torch but PyPI's torchvision only (it needs CUDA torch): not a pair
    ({}, 0),            # the index does not answer
    (PAIR, 1),          # the pair does not install (e.g. torchvision pins another torch)
])
def test_install_falls_back_to_pypi_without_a_cpu_pair(tmp_path, index, cpu_install_rc):
    out, calls = make_install(tmp_path, False, index, cpu_install_rc=cpu_install_rc)
    assert out.returncode == 0, out.stdout + out.stderr
    assert installs(calls)[-1] == DEFAULT
    assert "PyPI's default instead" in out.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("make_vars, index", [(["TORCH=cpu"], THIS_MACHINE), (["TORCH=gpu"], PAIR)])
def test_install_stops_with_one_error_line(tmp_path, make_vars, index):
    out, calls = make_install(tmp_path, False, index, *make_vars)
    assert out.returncode != 0
    errors = [line for line in out.stdout.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), out.stdout
    assert DEFAULT not in installs(calls)
    assert not (tmp_path / "venv" / ".installed").exists()


# -- clean and clean-runs: nothing a user made is deleted without a yes ------------------------------------------------
def make_in(folder, *args, answer=None):
    """This Makefile's target run in `folder` (never in the repository: its runs/ are a user's), answering `answer`."""
    return subprocess.run(["make", "--no-print-directory", "-f", os.path.join(ROOT, "Makefile"), *args], cwd=folder,
                          input=answer, capture_output=True, text=True, timeout=60)


def user_files(tmp_path):
    for path in ("runs/toy/20250101-000000/samples.png", "runs/digits/demo/adversarial/DONE", "wandb/offline-run/x",
                 ".pytest_cache/v/x"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_clean_keeps_the_runs(tmp_path):
    user_files(tmp_path)
    out = make_in(tmp_path, "clean")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "runs/toy/20250101-000000/samples.png").is_file()
    assert (tmp_path / "wandb/offline-run/x").is_file()
    assert not (tmp_path / ".pytest_cache").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("answer", [None, "n\n", "\n"])  # no answer (a script, CI), no, just Enter
def test_clean_runs_lists_what_it_deletes_and_deletes_nothing_without_a_yes(tmp_path, answer):
    user_files(tmp_path)
    out = make_in(tmp_path, "clean-runs", answer=answer)
    assert out.returncode != 0
    listed = out.stdout.splitlines()
    assert "  runs/toy/20250101-000000" in listed and "  runs/digits/demo" in listed and "  wandb" in listed
    assert "nothing deleted" in out.stdout and "CONFIRM=yes" in out.stdout
    assert (tmp_path / "runs/toy/20250101-000000/samples.png").is_file()
    assert (tmp_path / "wandb/offline-run/x").is_file()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("args, answer", [(["CONFIRM=yes"], None), ([], "y\n")])
def test_clean_runs_deletes_the_runs_after_a_yes(tmp_path, args, answer):
    user_files(tmp_path)
    out = make_in(tmp_path, "clean-runs", *args, answer=answer)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "  runs/toy/20250101-000000" in out.stdout.splitlines()  # said what it deletes
    assert out.stdout.rstrip().endswith("rm -rf runs wandb")  # the exact command it ran (after the question)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "wandb").exists()
    assert (tmp_path / ".pytest_cache/v/x").is_file()  # only the runs
