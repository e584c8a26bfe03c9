"""One run per folder (dsls.run_folder): a second writer is refused naming the holder, a stale lock is taken over,
only rank 0 writes; a diverged phase is never stamped DONE; a second fit keeps the first's figures; --resume says which
overrides it did not apply."""
import json
import os
import runpy
import socket
import subprocess
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dsls.cli import main
from dsls.errors import ConfigError
from dsls.errors import DivergedError
from dsls.errors import RunFolderBusy
from dsls.pipeline import run_pipeline
from dsls.run_folder import LOCK, is_rank_zero, lock_scope, take_lock
from test_pipeline import TINY, copy_of  # tiny_run: conftest's session run of TINY

HERE = os.path.dirname(os.path.abspath(__file__))
FIT = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
       "--data.train_size=512", "--trainer.max_steps=4", "--trainer.limit_val_batches=0"]


def write_lock(folder, pid, host=None, command="python experiments/run_pipeline.py --run-dir elsewhere") -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK)
    with open(path, "w") as f:
        json.dump({"host": host or socket.gethostname(), "pid": pid, "command": command,
                   "since": "2030-01-02 03:04:05"}, f)
    return path


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


# -- the lock ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, zero", [({}, True), ({"LOCAL_RANK": "0"}, True), ({"LOCAL_RANK": "1"}, False),
                                       ({"RANK": "3", "LOCAL_RANK": "0"}, False), ({"SLURM_PROCID": "2"}, False),
                                       ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False)])
def test_rank_zero_is_read_from_the_launchers_environment(monkeypatch, env, zero):
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_rank_zero() is zero


def test_a_second_pipeline_into_a_folder_is_refused_naming_the_holder(tmp_path, monkeypatch):
    """The first pipeline is simulated by its live lock (this process's PID, not taken through dsls.run_folder)."""
    run = tmp_path / "run"
    lock = write_lock(run, os.getpid())
    before = open(lock).read()
    monkeypatch.setattr(sys, "argv", ["run_pipeline.py", "--config-dir", "configs/toy", f"--run-dir={run}", *TINY])
    with pytest.raises(SystemExit) as e:
        runpy.run_path("experiments/run_pipeline.py", run_name="__main__")  # the command, as a user runs it
    line = str(e.value)
    assert line.startswith("error: ") and "\n" not in line, line
    for says in (str(run), f"pid {os.getpid()} on this host", "since 2030-01-02 03:04:05",
                 "experiments/run_pipeline.py --run-dir elsewhere", "wait for it to end"):
        assert says in line, (says, line)
    assert os.listdir(run) == [LOCK] and open(lock).read() == before  # nothing trained, the holder's lock kept


@pytest.mark.parametrize("subcommand", ["fit", "predict"])
def test_dsls_fit_and_predict_are_refused_too(tmp_path, subcommand, toy_adv_ckpt):
    run = tmp_path / "run"
    write_lock(run, os.getpid())
    args = (["fit", "--config", "configs/toy/reconstruction.yaml", *FIT] if subcommand == "fit" else
            ["predict", "--config", "configs/toy/search.yaml", f"--model.ckpt={toy_adv_ckpt}",
             "--trainer.logger=false"])
    with pytest.raises(RunFolderBusy, match=f"{run} is in use by another run \\(pid {os.getpid()} on this host"):
        main([*args, f"--run_dir={run}"])
    assert os.listdir(run) == [LOCK]


def test_a_lock_from_another_host_is_refused_with_the_removal_hint(tmp_path):
    path = write_lock(tmp_path, 1, host="gpu-node-07")  # PID 1 exists here, but means nothing for another host
    with pytest.raises(RunFolderBusy) as e, lock_scope():
        take_lock(str(tmp_path))
    assert "on host gpu-node-07" in str(e.value)
    assert str(e.value).endswith(f"if you are sure that run is gone, rm {path}")
    assert os.path.isfile(path)


def test_an_unreadable_lock_is_refused_with_the_removal_hint(tmp_path):
    (tmp_path / LOCK).write_text("{not json")
    with pytest.raises(RunFolderBusy, match=f"unreadable lock .*rm {tmp_path / LOCK}$"), lock_scope():
        take_lock(str(tmp_path))


def test_a_stale_lock_from_a_dead_pid_is_taken_over_and_removed_at_the_end(tmp_path, capsys):
    run = tmp_path / "run"
    pid = dead_pid()
    write_lock(run, pid)
    main(["fit", "--config", "configs/toy/reconstruction.yaml", *FIT, f"--run_dir={run}"])
    notes = [ln for ln in capsys.readouterr().out.splitlines() if "took over" in ln]
    assert len(notes) == 1 and f"pid {pid} on this host" in notes[0] and notes[0].startswith("note: ")
    assert (run / "reconstruction/checkpoints/last.ckpt").is_file()  # the fit ran
    assert not (run / LOCK).exists()  # and let go of the folder


def test_a_run_that_stops_before_writing_leaves_no_folder_behind(tmp_path):
    with pytest.raises(ValueError, match="unknown toy data set"):  # refused after the lock was taken
        main(["fit", "--config", "configs/toy/reconstruction.yaml", *FIT, "--data.name=nope",
              f"--run_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    import errno

    import dsls.run_folder

    def read_only(*args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(dsls.run_folder, "_create", read_only)
    with pytest.raises(ConfigError, match=f"cannot write into the run folder {tmp_path} \\(Read-only file system\\): "
                                          "pass a writable folder$"), lock_scope():
        take_lock(str(tmp_path))


def test_the_lock_is_reentrant_in_one_process_and_released_on_an_exception(tmp_path):
    path = tmp_path / LOCK
    with pytest.raises(KeyError), lock_scope():
        take_lock(str(tmp_path))
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with lock_scope():  # a phase run by the pipeline, in its process
            take_lock(str(tmp_path))
        assert path.is_file()  # the inner scope's end keeps the outer's hold
        raise KeyError("boom")
    assert not path.exists()


def test_other_ranks_neither_take_nor_check_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    foreign = write_lock(tmp_path / "held", os.getpid())
    with lock_scope():
        take_lock(str(tmp_path / "held"))  # not refused
        take_lock(str(tmp_path / "free"))  # not taken
    assert os.path.isfile(foreign) and not (tmp_path / "free" / LOCK).exists()


# -- a diverged phase -------------------------------------------------------------------------------------------------
def test_a_diverged_discriminator_is_not_stamped_done(tmp_path):
    """The issue's case: --adversarial.model.lr_d=1e4 trained D into NaNs and the pipeline stamped it DONE."""
    run = tmp_path / "run"
    with pytest.raises(DivergedError) as e:
        run_pipeline("configs/toy", [*TINY, "--adversarial.model.lr_d=1e4"], run_dir=str(run))
    msg = str(e.value)
    assert msg.startswith("the adversarial phase's weights became non-finite (") and "of " in msg, msg
    assert "--model.lr_d (now 10000)" in msg and "--model.lr_ae" in msg, msg
    assert (run / "reconstruction/DONE").is_file() and not (run / "adversarial/DONE").exists()
    assert not list(run.glob("adversarial/checkpoints/*.ckpt")) and not (run / "search.ckpt").exists()
    assert not (run / LOCK).exists()


class PoisonAt(L.Callback):
    """Sets one weight to NaN after training step `step`."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


def test_a_non_finite_save_fails_and_keeps_the_previous_last_ckpt(tiny_trainer, tmp_path):
    from dsls.data import Toy2DDataModule
    from dsls.phases.reconstruction import ReconstructionModule

    ckpts = tmp_path / "checkpoints"
    trainer = tiny_trainer(max_steps=6, enable_checkpointing=True, default_root_dir=str(tmp_path),
                           callbacks=[PoisonAt(3), ModelCheckpoint(ckpts, save_last=True, save_top_k=0,
                                                                   every_n_train_steps=2)])
    with pytest.raises(DivergedError, match=r"the reconstruction phase's weights became non-finite \(\d+ of \d+ "
                                            r"tensors\) by step 4: lower --model.lr \(now 0.003\)"):
        trainer.fit(ReconstructionModule(latent_dim=2, hidden=16, depth=1, lr=3e-3),
                    datamodule=Toy2DDataModule(train_size=1024, batch_size=128))
    assert os.listdir(ckpts) == ["last.ckpt"]  # nothing half-written beside it
    ck = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["global_step"] == 2 and all(torch.isfinite(v).all() for v in ck["state_dict"].values()
                                          if v.is_floating_point() and v.numel())


def test_the_search_refuses_a_checkpoint_with_non_finite_weights(toy_adv_ckpt, tmp_path):
    """A phase-2 checkpoint stamped before this check existed: the search names it, not its step size."""
    from dsls.phases.search import LatentSearchModule

    ck = torch.load(toy_adv_ckpt, map_location="cpu", weights_only=False)
    name = next(k for k in ck["state_dict"] if k.startswith("discriminator.") and k.endswith("weight"))
    ck["state_dict"][name] = torch.full_like(ck["state_dict"][name], float("nan"))
    torch.save(ck, tmp_path / "nan.ckpt")
    with pytest.raises(DivergedError, match=r"adversarial phase's weights became non-finite \(1 of \d+ tensors\) "
                                            r"in --model.ckpt=.*nan.ckpt: train it again with a lower --model.lr_d"):
        LatentSearchModule(ckpt=str(tmp_path / "nan.ckpt"), num_samples=4, batch_size=4)


def test_a_diverged_search_counts_samples_not_padded_rows():
    """3 samples run as 8 rows (pad_rows): the message counted the copies (2,504 latents for 2,500 samples)."""
    from dsls.noise import SigmaLadder
    from dsls.samplers import make_sampler, pad_rows, sample_indices

    class Stub:
        device, latent_shape = torch.device("cpu"), (2,)

        def decode(self, z):
            return z

    assert len(pad_rows([0, 1, 2])) == 8
    with pytest.raises(FloatingPointError,
                       match=r"search diverged: the latents of 3 of the 3 samples in a batch became NaN/Inf"):
        sample_indices(Stub(), make_sampler("langevin"), lambda z, s: torch.full_like(z, float("inf")),
                       SigmaLadder(1.0, 0.1, 3), 0, [0, 1, 2])


# -- nothing overwritten ----------------------------------------------------------------------------------------------
def test_a_second_fit_keeps_the_first_fits_figures_and_a_resumed_one_replaces_its_own(tmp_path):
    """As Lightning's last-v1.ckpt: the second fit's figures are *-v1; resuming last-v1.ckpt continues that run."""
    run = tmp_path / "run"
    fit = ["fit", "--config", "configs/toy/reconstruction.yaml", *FIT, f"--run_dir={run}"]
    phase = run / "reconstruction"
    main(fit)
    first = (phase / "reconstructions.png").read_bytes()
    main([*fit, "--model.lr=1e-2"])
    assert (phase / "checkpoints/last-v1.ckpt").is_file() and (phase / "reconstructions-v1.png").is_file()
    assert (phase / "reconstructions.png").read_bytes() == first
    second = (phase / "reconstructions-v1.png").stat().st_mtime_ns
    main([*fit, "--model.lr=1e-2", "--trainer.max_steps=6", f"--ckpt_path={phase / 'checkpoints/last-v1.ckpt'}"])
    assert (phase / "reconstructions-v1.png").stat().st_mtime_ns != second  # the run it continues: replaced
    assert (phase / "reconstructions.png").read_bytes() == first
    assert not list(phase.glob("*-v2*")) and not list(phase.glob("checkpoints/*-v2*"))


def test_a_second_fit_of_phase_2_keeps_sigma_accuracy_png_and_json(tiny_trainer, toy_ae_ckpt, tmp_path):
    from dsls.callbacks.grids import SampleFigures
    from dsls.data import Toy2DDataModule
    from dsls.phases.adversarial import AdversarialModule

    made = []
    for levels in (4, 6):
        t = tiny_trainer(max_steps=3, default_root_dir=str(tmp_path / "p2"), callbacks=[SampleFigures(num=8)])
        t.fit(AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, d_hidden=16, d_depth=1, num_levels=levels),
              datamodule=Toy2DDataModule(train_size=512, val_size=200, batch_size=128))
        made.append({p.name: p.read_bytes() for p in (tmp_path / "p2").iterdir() if p.is_file()})
    assert set(made[0]) == {"sigma_accuracy.png", "sigma_accuracy.json"}
    assert set(made[1]) == set(made[0]) | {"sigma_accuracy-v1.png", "sigma_accuracy-v1.json"}
    assert all(made[1][k] == v for k, v in made[0].items())  # the first fit's files, untouched
    assert len(json.loads(made[1]["sigma_accuracy-v1.json"])["sigmas"]) == 6


# -- --resume ---------------------------------------------------------------------------------------------------------
def test_resume_names_the_overrides_it_did_not_apply(tiny_run, tmp_path, capsys):
    run = copy_of(tiny_run, tmp_path)
    capsys.readouterr()
    run_pipeline("configs/toy", [*TINY, "--reconstruction.model.lr=1e-2", "--model.lr_d=1e-3"], run_dir=str(run),
                 resume=True)
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note: --resume")]
    assert len(notes) == 2, notes  # one per finished phase; the search ran, with its overrides
    rec, adv = notes
    assert "the reconstruction phase had finished" in rec and "--model.lr=1e-2" in rec and "lr_d" not in rec
    assert "the adversarial phase had finished" in adv and "--model.lr_d=1e-3" in adv and "--model.lr=" not in adv
    assert all("--trainer.max_steps=12" in n and "--overwrite" in n for n in notes)


# -- DDP --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_under_ddp_only_rank_0_prints_stamps_and_locks(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, os.path.join(HERE, "ddp_pipeline_script.py"), "--config-dir", "configs/toy",
                          f"--run-dir={run}", *TINY, "--data.train_size=2048", "--trainer.strategy=ddp",
                          "--trainer.devices=2", "--trainer.accelerator=cpu"],  # 2048: a full batch per rank
                         capture_output=True, text=True, timeout=600, cwd=os.path.dirname(HERE))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for phase in ("reconstruction", "adversarial", "search"):
        assert out.stdout.count(f"=== phase {phase}:") == 1, out.stdout
    assert out.stdout.count("run folder: ") == 1 and out.stdout.count("phase seconds: ") == 1
    for phase in ("reconstruction", "adversarial"):
        assert json.loads((run / phase / "DONE").read_text())["checkpoint"] == "checkpoints/last.ckpt"
    assert not list(run.glob("**/last-v*.ckpt")) and not list(run.glob(".overwritten-*"))
    assert (run / "results.json").is_file() and not (run / LOCK).exists()


def test_every_rank_gets_rank_0s_default_run_folder(monkeypatch):
    """Without --run-dir, rank 0 names the folder (a timestamp) and the ranks it launches read that name: a timestamp
    of their own could be a second later, another folder (the pipeline under DDP then failed on rank 1)."""
    from dsls.run_folder import RUN_DIR_ENV, default_run_dir

    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", RUN_DIR_ENV):
        monkeypatch.delenv(key, raising=False)
    assert default_run_dir(lambda: "runs/toy/first") == "runs/toy/first"
    assert default_run_dir(lambda: "runs/toy/second") == "runs/toy/second"  # rank 0 always names a new one
    monkeypatch.setenv("LOCAL_RANK", "1")  # a launched rank: the name rank 0 left, not its own
    assert default_run_dir(lambda: "runs/toy/later") == "runs/toy/second"
