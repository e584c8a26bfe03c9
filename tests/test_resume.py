"""Resume: a run stopped at any step, mid-epoch too, and resumed from its checkpoint ends with the same weights, bit for
bit, as one that never stopped: the data order (the train loader's place in the epoch), optimizer, LR schedule and the
noise RNG all continue. In-process stops here; real SIGKILLed `dsls fit` subprocesses below (slow)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from dsls.data import Toy2DDataModule
from dsls.phases.adversarial import AdversarialModule
from dsls.phases.reconstruction import ReconstructionModule

HERE = Path(__file__).resolve().parent


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ: {differ}"


class SaveAndStop(L.Callback):
    """The in-process "preemption": checkpoint where ModelCheckpoint does (after the step), then stop."""

    def __init__(self, step: int, path):
        self.step, self.path, self.done = step, path, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step and not self.done:
            trainer.save_checkpoint(self.path)
            trainer.should_stop, self.done = True, True


def data():
    return Toy2DDataModule(train_size=1024, batch_size=128, seed=3)  # 8 batches an epoch


def fit_both_ways(tiny_trainer, make_model, tmp_path, stop_at: int):
    """20 steps straight, and stopped at `stop_at` then resumed: a model of its own, built under one seed for both
    runs, since exactness needs the same initial weights."""
    L.seed_everything(0)
    straight = make_model()
    tiny_trainer(max_steps=20).fit(straight, datamodule=data())

    L.seed_everything(0)
    ckpt = tmp_path / "stopped.ckpt"
    tiny_trainer(max_steps=20, callbacks=[SaveAndStop(stop_at, ckpt)]).fit(make_model(), datamodule=data())

    torch.manual_seed(12345)  # a fresh process would start from another RNG state: the checkpoint must restore it
    resumed = make_model()
    tiny_trainer(max_steps=20).fit(resumed, datamodule=data(), ckpt_path=str(ckpt))
    return straight.state_dict(), resumed.state_dict()


@pytest.mark.parametrize("stop_at", [8, 11], ids=["epoch-end", "mid-epoch"])
def test_resume_reconstruction(tiny_trainer, tmp_path, stop_at):
    assert_same(*fit_both_ways(tiny_trainer, lambda: ReconstructionModule(latent_dim=2, hidden=32, depth=2), tmp_path,
                               stop_at))


@pytest.mark.parametrize("mode, refit_from", [("posthoc", "joint"), ("joint", "joint"), ("joint", "scratch")])
def test_resume_adversarial_mid_epoch(tiny_trainer, toy_ae_ckpt, tmp_path, mode, refit_from):
    """joint: stopped at step 11, inside the D refit (the last half of 20 steps), which resumes with the same cached
    codes and, from scratch, without a second fresh start."""
    refit = {"refit_from": refit_from} if mode == "joint" else {}
    make = lambda: AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, mode=mode, d_hidden=16, d_depth=2,  # noqa: E731
                                     score_matching_weight=1.0, **refit)
    assert_same(*fit_both_ways(tiny_trainer, make, tmp_path, stop_at=11))


def test_phase1_resumes_with_a_larger_max_steps(tiny_trainer, tmp_path):
    """The one-cycle schedule reads its length at every fit: resuming with more steps stretches it (a schedule fixed
    at the first fit stopped with `Tried to step 8 times`)."""
    L.seed_everything(0)
    t = tiny_trainer(max_steps=6)
    t.fit(ReconstructionModule(latent_dim=2, hidden=16, depth=1), datamodule=data())
    t.save_checkpoint(tmp_path / "six.ckpt")
    longer = ReconstructionModule(latent_dim=2, hidden=16, depth=1)
    t = tiny_trainer(max_steps=12)
    lrs = []
    t.callbacks.append(L.pytorch.callbacks.LambdaCallback(
        on_train_batch_start=lambda tr, *_: lrs.append(tr.optimizers[0].param_groups[0]["lr"])))
    t.fit(longer, datamodule=data(), ckpt_path=str(tmp_path / "six.ckpt"))
    assert t.global_step == 12
    assert lrs[1] > 3e-3 / 4  # step 7 of 12: a third of the peak, not the end of the 6-step cycle (1.2e-8)
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(3e-3 / 25e4)  # the cycle ends at the new max_steps


# --- real preemption: `dsls fit` subprocesses that SIGKILL themselves mid-epoch --------------------------------------

# 640 points in batches of 64: 10 batches an epoch. A checkpoint every 5 steps; the kill right after step 15's
# (mid-epoch), the end at step 25 (mid-epoch too).
TINY = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu", "--trainer.limit_val_batches=0", "--trainer.max_steps=25",
        "--data.train_size=640", "--data.batch_size=64", "--checkpoint.every_n_train_steps=5"]
KILL_AT = 15
KILL = f'--trainer.callbacks+={{"class_path": "resume_script.KillAtStep", "init_args": {{"step": {KILL_AT}}}}}'


def start_fit(phase: str, run_dir, *extra) -> subprocess.Popen:
    """`dsls fit` (the console script's code, python -m dsls.cli) on the toy config of `phase`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "dsls.cli", "fit", "--config", f"configs/toy/{phase}.yaml", f"--run_dir={run_dir}",
           *TINY, *extra]
    return subprocess.Popen(cmd, cwd=HERE.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def last_ckpt(run_dir, phase: str) -> Path:
    return Path(run_dir) / phase / "checkpoints" / "last.ckpt"


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def preempt(phase: str, tmp: Path, *model_args, runs: int = 1) -> tuple[dict, list[Path]]:
    """An uninterrupted run beside `runs` runs killed after the step-15 checkpoint: (the first's final state_dict,
    the killed runs' folders). Each resume gets its own killed run: a copied run folder would not do, its new
    ModelCheckpoint folder makes the resumed run write last-v1.ckpt beside the copied last.ckpt."""
    straight = start_fit(phase, tmp / "straight", *model_args)
    killed = [tmp / f"killed{i}" for i in range(runs)]
    procs = [start_fit(phase, d, *model_args, KILL) for d in killed]
    rc, out = finish(straight)
    assert rc == 0, out[-3000:]
    for d, p in zip(killed, procs):
        rc, out = finish(p)
        assert rc == -signal.SIGKILL, out[-3000:]
        ckpt = load(last_ckpt(d, phase))
        assert ckpt["global_step"] == KILL_AT and ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == \
            [{"epoch": 1, "batches": 5}]  # really mid-epoch: 5 of epoch 1's 10 batches taken
    final = load(last_ckpt(tmp / "straight", phase))
    assert final["global_step"] == 25
    return final["state_dict"], killed


def resume(phase: str, run_dir: Path, ckpt_path: str) -> dict:
    """Resume the killed run in its folder as a user would: no --model.* flags, they come from the checkpoint."""
    rc, out = finish(start_fit(phase, run_dir, f"--ckpt_path={ckpt_path}"))
    assert rc == 0, out[-3000:]
    final = load(last_ckpt(run_dir, phase))
    assert final["global_step"] == 25
    return final["state_dict"]


@pytest.fixture(scope="module")
def adversarial_preempted(toy_ae_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preempted-adversarial")
    return preempt("adversarial", tmp, f"--model.autoencoder_ckpt={toy_ae_ckpt}", "--model.d_hidden=32",
                   "--model.d_depth=2", runs=2)


@pytest.mark.slow
def test_adversarial_sigkilled_mid_epoch_resumes_exactly(adversarial_preempted):
    straight, (killed, _) = adversarial_preempted
    assert_same(straight, resume("adversarial", killed, str(last_ckpt(killed, "adversarial"))))


@pytest.mark.slow
def test_readme_one_phase_resume(adversarial_preempted):
    """docs/command-line.md: `dsls fit --config configs/toy/adversarial.yaml --run_dir <run> --ckpt_path last`, nothing else: the
    autoencoder comes from the checkpoint, not --model.autoencoder_ckpt."""
    straight, (_, killed) = adversarial_preempted
    assert_same(straight, resume("adversarial", killed, "last"))


@pytest.mark.slow
def test_reconstruction_sigkilled_mid_epoch_resumes_exactly(tmp_path):
    straight, (killed,) = preempt("reconstruction", tmp_path, "--model.hidden=32", "--model.depth=2")
    assert_same(straight, resume("reconstruction", killed, str(last_ckpt(killed, "reconstruction"))))
