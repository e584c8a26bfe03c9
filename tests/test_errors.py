"""Bad input reaches the user as one `error: …` line that names the fix, exit ≠ 0, no traceback (issue 9); the
traceback only with DSLS_DEBUG=1. Each case runs the `dsls` command in-process (dsls.cli.console_main)."""
from __future__ import annotations

import math
import os
import random
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsls.cli import console_main, main, user_error
from dsls.errors import ConfigError
from test_image_data import make_cifar, make_mnist

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.accelerator=cpu", "--trainer.callbacks=[]"]
TOY = ["--data.train_size=512", "--data.val_size=64"]


def dsls_error(monkeypatch, *args: str) -> str:
    """Run `dsls *args`; return the message it exits with, checked to be one `error:` line."""
    monkeypatch.setattr(sys, "argv", ["dsls", *args, *QUIET])
    monkeypatch.delenv("DSLS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        console_main()
    msg = e.value.code
    assert isinstance(msg, str) and msg.startswith("error: ") and "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def toy(toy_ae_ckpt, toy_adv_ckpt) -> dict:
    return {"ae": toy_ae_ckpt, "adv": toy_adv_ckpt}  # conftest's tiny toy phases 1 and 2


# ---------------------------------------------------------------- 1. checkpoints: wrong phase, missing, damaged
def bad_checkpoint(kind: str, good: str, wrong: str, tmp_path: Path) -> tuple[str, str]:
    """(path, what the error must say) for a checkpoint of `kind`; `good` is one of the right phase."""
    path = tmp_path / f"{kind}.ckpt"
    if kind == "wrong_phase":
        return wrong, "checkpoint, but this needs"
    if kind == "missing":
        return str(path), "does not exist"
    if kind == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    else:  # truncated: a copy cut off half way
        data = Path(good).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return str(path), "is not a readable checkpoint (truncated or corrupt?)"


@pytest.mark.parametrize("kind", ["wrong_phase", "missing", "random", "truncated"])
def test_bad_checkpoint_for_fit_and_predict(kind, toy, tmp_path, monkeypatch):
    path, says = bad_checkpoint(kind, toy["ae"], toy["adv"], tmp_path)
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/toy/adversarial.yaml", f"--run_dir={tmp_path}",
                     f"--model.autoencoder_ckpt={path}")
    assert f"--model.autoencoder_ckpt={path} " in msg and says in msg and "reconstruction (phase 1)" in msg
    path, says = bad_checkpoint(kind, toy["adv"], toy["ae"], tmp_path)
    msg = dsls_error(monkeypatch, "predict", "--config", "configs/toy/search.yaml", f"--run_dir={tmp_path}",
                     f"--model.ckpt={path}")
    assert f"--model.ckpt={path} " in msg and says in msg and "adversarial (phase 2)" in msg


def test_damaged_resume_checkpoint(tmp_path, monkeypatch):
    path, says = bad_checkpoint("random", "", "", tmp_path)
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/toy/reconstruction.yaml", f"--run_dir={tmp_path}",
                     f"--ckpt_path={path}")
    assert f"--ckpt_path={path} " in msg and says in msg


class RunsCode:
    """Unpickling this calls open(marker, 'w'): a stand-in for any code a foreign pickle could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_checkpoint_that_would_run_code_is_refused_unrun(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    path = tmp_path / "foreign.ckpt"
    torch.save({"dsls_phase": "reconstruction", "hyper_parameters": RunsCode(marker)}, path)
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/toy/adversarial.yaml", f"--run_dir={tmp_path}",
                     f"--model.autoencoder_ckpt={path}")
    assert "holds Python objects (io.open)" in msg and "could run code" in msg
    assert not marker.exists()


# ---------------------------------------------------------------- 2., 4. data files and data settings
def mnist_fit(tmp_path, *extra: str) -> list[str]:
    return ["fit", "--config", "configs/mnist/reconstruction.yaml", f"--data.data_dir={tmp_path}",
            "--data.download=false", "--data.num_workers=0", "--data.val_size=20", "--trainer.max_steps=1",
            f"--run_dir={tmp_path / 'run'}", *extra]


def test_truncated_mnist_file(tmp_path, monkeypatch):
    make_mnist(tmp_path)
    from dsls.data import MNISTDataModule

    MNISTDataModule(str(tmp_path), download=False)._decompress()
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    msg = dsls_error(monkeypatch, *mnist_fit(tmp_path))
    assert f"MNIST file {path} is truncated or corrupt (5000 bytes, its header says 94096)" in msg
    assert "delete it and rerun with --data.download=true" in msg


def test_truncated_mnist_gz_leaves_no_temporary_file(tmp_path, monkeypatch):
    make_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    gz = raw / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    msg = dsls_error(monkeypatch, *mnist_fit(tmp_path))
    assert f"MNIST file {gz} is truncated or corrupt (" in msg and "--data.download=true" in msg
    assert sorted(p.name for p in raw.iterdir() if "train-images" in p.name) == [gz.name]  # no .tmpNNNN, no half file


def test_garbage_cifar_pickle(tmp_path, monkeypatch):
    folder = make_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(random.Random(0).randbytes(3000))
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/cifar10/reconstruction.yaml",
                     f"--data.data_dir={tmp_path}", "--data.download=false", "--data.num_workers=0",
                     "--data.val_size=10", "--trainer.max_steps=1", f"--run_dir={tmp_path / 'run'}")
    assert f"CIFAR-10 file {folder / 'data_batch_3'} is truncated or corrupt (not a readable pickle" in msg
    assert "delete it and rerun with --data.download=true" in msg


def test_missing_data(tmp_path, monkeypatch):
    msg = dsls_error(monkeypatch, *mnist_fit(tmp_path))
    assert f"MNIST data not found at {tmp_path / 'MNIST' / 'raw'} (expected layout: " in msg
    assert "To get it: pass --data.download=true" in msg


def test_data_settings(tmp_path, monkeypatch):
    make_mnist(tmp_path, n_train=120)
    msg = dsls_error(monkeypatch, *mnist_fit(tmp_path, "--data.val_size=120"))
    assert "--data.val_size=120 leaves no training images: the data set has 120" in msg
    msg = dsls_error(monkeypatch, *mnist_fit(tmp_path, "--data.batch_size=0"))
    assert "--data.batch_size=0 must be >= 1" in msg


# ---------------------------------------------------------------- 3. a checkpoint's data shape vs the data
def test_channel_mismatch(tmp_path, monkeypatch):
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/digits/reconstruction.yaml",
                     "--data=dsls.data.digits.TintedDigitsDataModule", f"--run_dir={tmp_path}")
    assert "--model.data_shape=[1, 8, 8] but the data is [3, 8, 8]; set --model.data_shape=[3, 8, 8]" in msg
    main(["fit", "--config", "configs/digits/reconstruction.yaml", "--trainer.max_steps=1", "--model.hidden=8",
          "--trainer.limit_val_batches=0", f"--run_dir={tmp_path}", *QUIET])
    ae = tmp_path / "reconstruction" / "checkpoints" / "last.ckpt"
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/tinted_digits/adversarial.yaml", f"--run_dir={tmp_path}",
                     f"--model.autoencoder_ckpt={ae}")
    assert "the data is [3, 8, 8] but the autoencoder was trained on [1, 8, 8]" in msg and "--data." in msg


# ---------------------------------------------------------------- 4. settings that contradict each other
def test_sigma_and_sampler_settings(toy, tmp_path, monkeypatch):
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/toy/adversarial.yaml", f"--run_dir={tmp_path}", *TOY,
                     f"--model.autoencoder_ckpt={toy['ae']}", "--model.sigma_max=0.01", "--trainer.max_steps=1")
    assert "need sigma_max > sigma_min, got sigma_max=0.01 and --model.sigma_min=0.03: lower" in msg
    msg = dsls_error(monkeypatch, "predict", "--config", "configs/toy/search.yaml", f"--run_dir={tmp_path}",
                     f"--model.ckpt={toy['adv']}", "--model.samplers.langevin.eps0=-1")
    assert "eps0 must be > 0, got -1.0 (--model.samplers.langevin.eps0)" in msg


# ---------------------------------------------------------------- 5., 6. CLI arguments that do not apply
def test_search_refuses_ckpt_path(toy, tmp_path, monkeypatch):
    msg = dsls_error(monkeypatch, "predict", "--config", "configs/toy/search.yaml", f"--run_dir={tmp_path}",
                     f"--ckpt_path={toy['adv']}")
    assert f"pass the phase-2 checkpoint as --model.ckpt={toy['adv']}" in msg


def test_no_optimizer_flags(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dsls", "fit", "--help"])
    with pytest.raises(SystemExit):
        console_main()
    help_text = capsys.readouterr().out
    assert "--trainer.max_steps" in help_text and "--optimizer" not in help_text and "--lr_scheduler" not in help_text
    monkeypatch.setattr(sys, "argv", ["dsls", "fit", "--config", "configs/toy/reconstruction.yaml", "--optimizer=SGD"])
    with pytest.raises(SystemExit) as e:
        console_main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error: unrecognized arguments: --optimizer=SGD" in err
    assert "usage:" not in err and len(err.strip().splitlines()) == 2  # the --help tip and the error


# ---------------------------------------------------------------- 7. validate a phase-2 checkpoint
def test_validate_phase_2(toy, tmp_path):
    """`dsls validate` on a phase-2 checkpoint computes D's validation metrics (the DSM term needs autograd, which
    Trainer.validate's inference mode would switch off), and they are finite numbers of a trained D."""
    cli = main(["validate", "--config", "configs/toy/adversarial.yaml", *TOY, *QUIET, "--trainer.limit_val_batches=1",
                f"--run_dir={tmp_path}", f"--ckpt_path={toy['adv']}"])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    assert {"val/d_loss", "val/d_acc_q", "val/d_acc_p"} <= set(metrics), metrics
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert 0 <= metrics["val/d_acc_q"] <= 1 and 0 <= metrics["val/d_acc_p"] <= 1 and metrics["val/d_loss"] > 0


# ---------------------------------------------------------------- 8. a diverged search, a typo in evaluate.py
def test_diverged_search(toy, tmp_path, monkeypatch):
    msg = dsls_error(monkeypatch, "predict", "--config", "configs/toy/search.yaml", f"--run_dir={tmp_path}",
                     f"--model.ckpt={toy['adv']}", "--model.samplers.langevin.eps0=1e6", "--model.num_samples=8",
                     "--model.batch_size=8", "--model.fidelity=[]", f"--model.out_dir={tmp_path / 'out'}")
    assert "search diverged" in msg and "Lower the step size" in msg


@pytest.mark.parametrize("override, says", [
    ("--model.samplers.langevin.epz0=1", "sampler 'langevin' has no setting 'epz0'; its settings: eps0,"),
    ("--model.samplers.langevin.eps0=1e6", "search diverged"),
])
def test_evaluate_script(override, says, toy, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--ckpt", toy["adv"], "--out", str(tmp_path / "ev"), override,
                                      "--model.num_samples=8", "--model.fidelity=[]",
                                      "--trainer.enable_progress_bar=false"])
    monkeypatch.delenv("DSLS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "experiments" / "evaluate.py"), run_name="__main__")
    assert e.value.code.startswith("error: ") and "\n" not in e.value.code and says in e.value.code


# ---------------------------------------------------------------- the rule itself
def test_user_error_is_found_in_the_chain():
    def wrapped(inner: BaseException, suppress: bool = False) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as e:
                if suppress:
                    raise ValueError("wrapper") from None
                raise ValueError("Does not validate against any of the Union subtypes") from e
        except ValueError as outer:
            return outer

    found = user_error(wrapped(ConfigError("the fix")))
    assert isinstance(found, ConfigError) and str(found) == "the fix"
    assert user_error(wrapped(RuntimeError("a bug"))) is None  # not a user error: its traceback stays
    assert user_error(wrapped(ConfigError("hidden"), suppress=True)) is None  # `from None` hid it on purpose


@pytest.mark.slow  # two fresh interpreters importing torch and Lightning: ~15 s each on a busy machine
def test_real_command_prints_one_line_and_traceback_only_with_dsls_debug(tmp_path):
    def start(name: str, **env) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "dsls.cli", "fit", "--config", "configs/toy/adversarial.yaml",
               f"--model.autoencoder_ckpt={tmp_path / 'nope.ckpt'}", f"--run_dir={tmp_path / name}",
               "--trainer.logger=false"]
        env = {**{k: v for k, v in os.environ.items() if k != "DSLS_DEBUG"}, **env}
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # both at once: their start-up (the imports) is most of their time
    procs = {"plain": start("plain"), "debug": start("debug", DSLS_DEBUG="1")}
    plain, debug = (p.communicate(timeout=300)[1] for p in procs.values())  # their stderr
    assert procs["plain"].returncode == 1 and "Traceback" not in plain, plain[-2000:]
    assert plain.strip().splitlines()[-1].startswith(f"error: --model.autoencoder_ckpt={tmp_path / 'nope.ckpt'}")
    assert procs["debug"].returncode != 0 and "Traceback" in debug and "PhaseCheckpointError" in debug
    assert not any(line.startswith("error:") for line in debug.splitlines())


# ---------------------------------------------------------------- 9. what used to end in a traceback (issue 16)
def run_evaluate(monkeypatch, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *args, "--model.num_samples=8", "--model.fidelity=[]",
                                      "--trainer.enable_progress_bar=false"])
    monkeypatch.delenv("DSLS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "experiments" / "evaluate.py"), run_name="__main__")
    assert e.value.code.startswith("error: ") and "\n" not in e.value.code, e.value.code
    return e.value.code


def test_evaluate_refuses_random_bytes_as_a_checkpoint(tmp_path, monkeypatch):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(random.Random(1).randbytes(4096))
    msg = run_evaluate(monkeypatch, "--ckpt", str(junk), "--out", str(tmp_path / "ev"))
    assert f"--ckpt={junk} is not a readable checkpoint" in msg and "search.ckpt" in msg


def read_only(monkeypatch, folder: Path) -> None:
    """Make `folder` refuse new files, as a read-only mount does (chmod does not stop root, who runs CI)."""
    import errno
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_read_only_run_folder_is_one_line_before_any_work(toy, tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    read_only(monkeypatch, tmp_path / "run")
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/toy/reconstruction.yaml", *TOY,
                     f"--run_dir={tmp_path / 'run'}")
    assert "--run_dir=" in msg and "Read-only file system" in msg and "pass a writable folder" in msg
    assert not any((tmp_path / "run").iterdir())
    # evaluate.py into a read-only run: refused before the search, not at its first save
    msg = run_evaluate(monkeypatch, "--ckpt", toy["adv"], "--out", str(tmp_path / "run" / "eval"))
    assert msg.startswith(f"error: --out={tmp_path / 'run' / 'eval'}: cannot write into {tmp_path / 'run'}")


def test_a_wrong_type_in_a_config_file_is_one_line_naming_the_key(tmp_path, monkeypatch, capsys):
    cfg = Path("configs/toy/reconstruction.yaml").read_text().replace("batch_size: 256", "batch_size: lots")
    assert "lots" in cfg
    (tmp_path / "edited.yaml").write_text(cfg)
    monkeypatch.setattr(sys, "argv", ["dsls", "fit", "--config", str(tmp_path / "edited.yaml")])
    with pytest.raises(SystemExit) as e:
        console_main()
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err[-1] == "error: data.batch_size: expected int, got 'lots'" and len(err) <= 2, err
