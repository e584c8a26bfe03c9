"""What a cluster user touches: W&B sweep commands, checkpoint evaluation, bf16, and the missing-data stop."""
import json
import os
import runpy
import sys

import lightning as L
import numpy as np
import pytest
import yaml

from dsls import pipeline
from dsls.cli import main
from dsls.errors import PhaseCheckpointError
from dsls.errors import TaskError
from dsls.tasks.evaluate import evaluate


@pytest.fixture(scope="module")
def ckpts(toy_ae_ckpt, toy_adv_ckpt):
    return {"ae": toy_ae_ckpt, "adv": toy_adv_ckpt}  # conftest's tiny toy phases 1 and 2


class DryRunTrainer(L.Trainer):
    """Records what the CLI built instead of running it: the test is about parsing the agent's command."""

    calls: list = []

    def fit(self, model, datamodule=None, **kw):
        DryRunTrainer.calls.append(("fit", model, datamodule))

    def predict(self, model, datamodule=None, **kw):
        DryRunTrainer.calls.append(("predict", model, datamodule))


def agent_command(sweep: dict, program_path: str) -> list[str]:
    """Expand a sweep's command the way `wandb agent` does: one --name=value per parameter."""
    args = []
    for name, spec in sweep["parameters"].items():
        value = spec["value"] if "value" in spec else spec["values"][-1] if "values" in spec else spec["min"]
        args.append(f"--{name}={value}")
    macros = {"${env}": "/usr/bin/env", "${interpreter}": sys.executable, "${program}": program_path}
    out = []
    for tok in sweep["command"]:
        out.extend(args) if tok == "${args}" else out.append(macros.get(tok, tok))
    return out


@pytest.mark.parametrize("name,ckpt_key,param", [("cifar10_search", "adv", "model.ckpt"),
                                                 ("cifar10_adversarial", "ae", "model.autoencoder_ckpt")])
def test_sweep_command_parses_with_the_cli(name, ckpt_key, param, ckpts, tmp_path):
    sweep = yaml.safe_load(open(f"configs/sweeps/{name}.yaml"))
    assert sweep["command"][:3] == ["${env}", "${interpreter}", "${program}"] and sweep["command"][-1] == "${args}"
    assert sweep["command"][4] == "--config" and os.path.isfile(sweep["command"][5])  # overrides come after it
    assert os.path.isfile(sweep["program"]) and sweep["metric"]["name"]
    sweep["parameters"][param] = {"value": ckpts[ckpt_key]}  # the placeholder a user replaces
    cmd = agent_command(sweep, sweep["program"])
    assert cmd[3] in ("fit", "predict") and any(a.startswith("--model.") for a in cmd[6:])
    DryRunTrainer.calls = []
    main(cmd[3:] + ["--trainer.logger=false", f"--run_dir={tmp_path}"], trainer_class=DryRunTrainer)
    (sub, model, _), = DryRunTrainer.calls
    assert sub == cmd[3]
    for arg in cmd[6:]:  # every swept value reached the module (model.samplers.langevin.eps0: a nested setting)
        key, value = arg[2:].split("=", 1)
        if key.startswith("model."):
            node = model.hparams
            for part in key.split(".")[1:]:
                node = node[part]
            assert str(node) == value, key
    if name == "cifar10_search":  # one swept Langevin setting keeps the config's other samplers and settings
        config = yaml.safe_load(open(sweep["command"][5]))["model"]["init_args"]["samplers"]
        samplers = model.hparams["samplers"]
        assert set(samplers) == {n for n, v in config.items() if v is not None} and "none" in samplers
        assert samplers["langevin"]["denoise"] is True


def test_evaluate_writes_the_three_outputs(ckpts, tmp_path):
    out = evaluate(ckpts["adv"], str(tmp_path / "a"), ["--model.num_samples=40", "--model.batch_size=20",
                                                       "--model.samplers.langevin.steps_per_level=2"])
    for d in ("a",):
        assert {"samples-none.npz", "samples-langevin.npz", "results.json", "samples.png", "search.ckpt"} <= \
            set(os.listdir(tmp_path / d))
    assert set(out["results"]) == {"none", "langevin"}
    # a phase-3 checkpoint reruns the same search: same samples
    evaluate(str(tmp_path / "a" / "search.ckpt"), str(tmp_path / "b"), [])
    a, b = (np.load(tmp_path / d / "samples-langevin.npz")["x"] for d in "ab")
    np.testing.assert_array_equal(a, b)
    res = json.load(open(tmp_path / "b" / "results.json"))
    assert res["langevin"]["num_samples"] == 40 and res["langevin"]["settings"]["steps_per_level"] == 2
    # a nested override merges into the saved settings: langevin keeps steps_per_level=2, 'none' still runs
    out = evaluate(str(tmp_path / "a" / "search.ckpt"), str(tmp_path / "d"), ["--model.samplers.langevin.eps0=1e-4"])
    assert set(out["results"]) == {"none", "langevin"}
    assert out["results"]["langevin"]["settings"] == {**res["langevin"]["settings"], "eps0": 1e-4}
    with pytest.raises(PhaseCheckpointError,
                       match=r"is a reconstruction \(phase 1\) checkpoint, but this needs an adversarial"):
        evaluate(ckpts["ae"], str(tmp_path / "c"), [])
    with pytest.raises(TaskError, match=r"--model\.samplers\.langevin\.eps0"):  # the old flag says where it went
        evaluate(ckpts["adv"], str(tmp_path / "c"), ["--model.eps0=1e-3"])


def test_train_cifar_without_data_stops_with_the_layout(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["run_pipeline.py", "--config-dir", "configs/cifar10", f"--run-dir={tmp_path}/r",
                                      f"--data.data_dir={tmp_path}/nodata", "--data.download=false",
                                      "--trainer.logger=false", "--trainer.max_steps=2", "--data.num_workers=0"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path("experiments/run_pipeline.py", run_name="__main__")  # the command itself, as a user runs it
    msg = str(e.value)
    assert msg.startswith("error: CIFAR-10 data not found") and "cifar-10-batches-py" in msg and "download" in msg


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True  # preemption: the same command, cut short


def test_cli_resume_with_ckpt_path_last(tmp_path):
    import torch

    run = tmp_path / "run"
    base = ["fit", "--config", "configs/toy/reconstruction.yaml", "--trainer.logger=false", "--trainer.max_steps=-1",
            "--trainer.max_epochs=2", "--trainer.limit_val_batches=0", "--data.train_size=512",
            "--data.batch_size=128", "--model.hidden=8", f"--run_dir={run}"]
    main(base + [f"--trainer.callbacks+={__name__}.StopAfterFirstEpoch"])
    assert torch.load(run / "reconstruction/checkpoints/last.ckpt", weights_only=False)["global_step"] == 4
    cli = main(base + ["--ckpt_path=last"])
    assert cli.trainer.global_step == 8  # 4 steps restored + 4 new, not 8 new
    assert torch.load(run / "reconstruction/checkpoints/last.ckpt", weights_only=False)["global_step"] == 8


@pytest.mark.slow
def test_pipeline_resume_skips_finished_phases_and_resumes_the_preempted_one(tmp_path):
    import torch

    run = str(tmp_path / "run")
    small = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--data.train_size=1024",
             "--trainer.val_check_interval=10", "--model.hidden=16", "--model.d_hidden=16",
             "--reconstruction.trainer.max_steps=20", "--model.num_samples=50"]
    pipeline.run_pipeline("configs/toy", small + ["--adversarial.trainer.max_steps=10"], run_dir=run)
    ae = os.path.join(run, "reconstruction/checkpoints/last.ckpt")
    stamp = os.path.getmtime(ae)
    os.remove(os.path.join(run, "adversarial/DONE"))  # as if phase 2 had been preempted after 10 steps
    out = pipeline.run_pipeline("configs/toy", small + ["--adversarial.trainer.max_steps=20"], run_dir=run,
                                resume=True)
    assert os.path.getmtime(ae) == stamp and "reconstruction" not in out["seconds"]
    adv = torch.load(os.path.join(run, "adversarial/checkpoints/last.ckpt"), weights_only=False)
    config = yaml.safe_load(open("configs/toy/search.yaml"))["model"]["init_args"]["samplers"]
    assert adv["global_step"] == 20 and set(out["results"]) == {n for n, v in config.items() if v is not None}
