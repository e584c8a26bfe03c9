"""The three phase modules on CPU: fast_dev_run, the post-hoc freeze, joint mode, checkpoint errors, the CLI."""
import json

import lightning as L
import numpy as np
import pytest
import torch

from dsls.data import DigitsDataModule, Toy2DDataModule
from dsls.errors import PhaseCheckpointError
from dsls.phases.adversarial import AdversarialModule
from dsls.phases.reconstruction import ReconstructionModule
from dsls.phases.search import LatentSearchModule


def toy_data():
    return Toy2DDataModule("grid25", train_size=1024, val_size=256, batch_size=128, seed=0)


@pytest.fixture(scope="module")
def ckpts(toy_ae_ckpt, toy_adv_ckpt):
    return {"ae": toy_ae_ckpt, "adv": toy_adv_ckpt}  # conftest's tiny toy phases 1 and 2


def ae_state(module) -> dict:
    return {k: v.clone() for k, v in module.autoencoder.state_dict().items()}


def weights(net: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.named_parameters()}  # parameters only: BatchNorm stats move anyway


def assert_one_finite_step(t: L.Trainer, net: torch.nn.Module, before: dict, logged: tuple) -> None:
    """fast_dev_run: exactly one optimizer step and one validation batch ran, and left finite weights and losses."""
    assert t.global_step == 1 and t.fit_loop.epoch_loop.val_loop.batch_progress.total.completed == 1
    after = weights(net)
    assert any(not torch.equal(v, after[k]) for k, v in before.items())  # the step did update the weights
    assert all(torch.isfinite(v).all() for v in after.values())
    for key in logged:
        assert torch.isfinite(t.callback_metrics[key]), key


@pytest.mark.parametrize("dm", [toy_data, lambda: DigitsDataModule(batch_size=32)])
def test_reconstruction_fast_dev_run(dm, tiny_trainer):
    data = dm()
    shape = [2] if isinstance(data, Toy2DDataModule) else [1, 8, 8]
    model = ReconstructionModule(data_shape=shape, latent_dim=4, hidden=32, depth=2, tanh_output=len(shape) > 1)
    before = weights(model)
    t = tiny_trainer(fast_dev_run=True)
    t.fit(model, datamodule=data)
    assert_one_finite_step(t, model, before, ("train/recon", "val/recon"))


def test_reconstruction_rejects_wrong_data_shape(tiny_trainer):
    with pytest.raises(ValueError, match=r"--model.data_shape=\[1, 8, 8\]"):
        tiny_trainer(fast_dev_run=True).fit(ReconstructionModule(data_shape=[2]), datamodule=DigitsDataModule())


def test_posthoc_leaves_autoencoder_untouched(ckpts, tiny_trainer):
    model = AdversarialModule(autoencoder_ckpt=ckpts["ae"], mode="posthoc", d_hidden=32, d_depth=2)
    before, d_before = ae_state(model), model.discriminator.out.weight.clone()
    tiny_trainer(max_steps=15).fit(model, datamodule=toy_data())
    after = model.autoencoder.state_dict()
    for k, v in before.items():  # weights and BatchNorm running statistics alike
        assert torch.equal(v, after[k]), k
    assert not torch.equal(d_before, model.discriminator.out.weight)  # while D did learn
    assert model.sigma_max.item() > model.hparams.sigma_min  # auto σ_max was chosen from the codes


def test_joint_mode_trains_encoder(ckpts, tiny_trainer):
    model = AdversarialModule(autoencoder_ckpt=ckpts["ae"], mode="joint", d_hidden=32, d_depth=2)
    before = ae_state(model)
    tiny_trainer(max_steps=5).fit(model, datamodule=toy_data())
    changed = [k for k, v in model.autoencoder.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)


def test_adversarial_fast_dev_run_with_score_matching(ckpts, tiny_trainer):
    model = AdversarialModule(autoencoder_ckpt=ckpts["ae"], d_hidden=32, d_depth=2, score_matching_weight=1.0,
                              spectral_norm=True)
    before = weights(model.discriminator)
    t = tiny_trainer(fast_dev_run=True)
    t.fit(model, datamodule=toy_data())
    assert_one_finite_step(t, model.discriminator, before, ("train/d_loss", "train/dsm", "val/d_loss", "val/dsm"))


def test_bf16_mixed_precision_step(ckpts, tiny_trainer):
    """precision=bf16-mixed: D (and the DSM term through it) runs in bfloat16, its weights stay float32, and the
    step's losses are finite."""
    model = AdversarialModule(autoencoder_ckpt=ckpts["ae"], d_hidden=16, d_depth=1, score_matching_weight=1.0)
    dtypes = set()
    model.discriminator.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    before = weights(model.discriminator)
    t = tiny_trainer(fast_dev_run=True, precision="bf16-mixed")
    t.fit(model, datamodule=toy_data())
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert_one_finite_step(t, model.discriminator, before, ("train/d_loss", "train/dsm", "val/d_loss"))


def test_search_predict_writes_contract(ckpts, tiny_trainer, tmp_path):
    model = LatentSearchModule(ckpt=ckpts["adv"], num_samples=100, batch_size=40, out_dir=str(tmp_path),
                               samplers={"none": {}, "langevin": {"steps_per_level": 2}})
    preds = tiny_trainer(inference_mode=False).predict(model)
    assert sum(len(p["langevin"]) for p in preds) == 100
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res) == {"none", "langevin"}
    for name, entry in res.items():
        assert {"modes", "hq_fraction", "rev_kl", "seconds_per_sample", "nfe", "seed", "settings", "ladder"} <= \
            set(entry)
        npz = np.load(tmp_path / f"samples-{name}.npz")
        assert {"x", "z0", "z"} <= set(npz.files)
        assert npz["x"].shape == (100, 2) and npz["x"].dtype == np.float32 and npz["z"].shape == (100, 2)
    assert (tmp_path / "samples.png").stat().st_size > 1000
    none = np.load(tmp_path / "samples-none.npz")
    assert np.array_equal(none["z0"], none["z"])  # no search: the prior draw is decoded as is


def test_missing_inception_weights_stop_the_search_before_sampling(ckpts, tiny_trainer, tmp_path, monkeypatch):
    import dsls.metrics.fidelity as fid_mod
    from dsls.errors import MissingWeightsError

    ck = torch.load(ckpts["adv"], weights_only=False)  # pretend it was trained on CIFAR-10 (FID via Inception)
    ck["dsls_dataset"] = "cifar10"
    ck["datamodule_hyper_parameters"] = {"_class_path": "dsls.data.cifar10.CIFAR10DataModule", "data_dir": "nowhere"}
    torch.save(ck, tmp_path / "cifar.ckpt")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # no Inception weights cached, and no network:
    monkeypatch.setattr(fid_mod, "_reachable", lambda *a, **k: False)
    kw = dict(ckpt=str(tmp_path / "cifar.ckpt"), num_samples=20, batch_size=20,
              samplers={"none": {}, "langevin": {"steps_per_level": 1}})
    with pytest.raises(MissingWeightsError, match="feature_extractor_weights_path"):
        tiny_trainer(inference_mode=False).predict(LatentSearchModule(**kw, out_dir=str(tmp_path / "a")))
    assert not (tmp_path / "a").exists()  # stopped before any sampling, not after
    tiny_trainer(inference_mode=False).predict(LatentSearchModule(**kw, fidelity=[], out_dir=str(tmp_path / "b")))
    entry = json.loads((tmp_path / "b/results.json").read_text())["langevin"]
    assert set(entry) == {"seconds_per_sample", "num_samples", "nfe", "seed", "settings", "ladder"}  # no metrics


def test_search_is_reproducible_and_test_step_agrees(ckpts, tiny_trainer, tmp_path):
    kw = dict(ckpt=ckpts["adv"], num_samples=50, batch_size=50, samplers={"langevin": {"steps_per_level": 2}})
    tiny_trainer(inference_mode=False).predict(LatentSearchModule(**kw, out_dir=str(tmp_path / "a")))
    tiny_trainer(inference_mode=False).test(LatentSearchModule(**kw, out_dir=str(tmp_path / "b")))
    a, b = (np.load(tmp_path / p / "samples-langevin.npz") for p in "ab")
    for key in ("x", "z", "z0"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_wrong_phase_checkpoint_errors(ckpts, tmp_path):
    with pytest.raises(PhaseCheckpointError, match=r"is an adversarial \(phase 2\) checkpoint.*needs a reconstruction"):
        AdversarialModule(autoencoder_ckpt=ckpts["adv"])
    with pytest.raises(PhaseCheckpointError, match=r"--model.ckpt=.*is a reconstruction \(phase 1\).*needs an adversarial"):
        LatentSearchModule(ckpt=ckpts["ae"])
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(PhaseCheckpointError, match="not a dsls checkpoint"):
        LatentSearchModule(ckpt=str(tmp_path / "foreign.ckpt"))
    with pytest.raises(PhaseCheckpointError, match=r"checkpoint_path=.*is a reconstruction.*needs an adversarial"):
        AdversarialModule.load_from_checkpoint(ckpts["ae"])
    assert AdversarialModule.load_from_checkpoint(ckpts["adv"]).sigma_max.item() > 0  # stands alone


def test_missing_checkpoint_errors(tmp_path):
    with pytest.raises(PhaseCheckpointError, match=r"--model.autoencoder_ckpt=.*does not exist"):
        AdversarialModule(autoencoder_ckpt=str(tmp_path / "nope.ckpt"))
    with pytest.raises(PhaseCheckpointError, match=r"--model.ckpt is required"):
        LatentSearchModule(ckpt=None)


def test_cli_fit_saves_config_beside_checkpoints(tmp_path):
    from dsls.cli import main

    run = tmp_path / "run"
    main(["fit", "--config", "configs/toy/reconstruction.yaml", "--trainer.max_steps=3", "--trainer.logger=false",
          "--trainer.limit_val_batches=0", "--data.train_size=512", "--model.hidden=16", f"--run_dir={run}"])
    assert (run / "reconstruction" / "checkpoints" / "last.ckpt").is_file()
    cfg = (run / "reconstruction" / "config.yaml").read_text()
    assert "hidden: 16" in cfg and "ReconstructionModule" in cfg
    ckpt = torch.load(run / "reconstruction" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["dsls_phase"] == "reconstruction" and ckpt["dsls_dataset"] == "grid25"


def test_cli_default_logger_is_offline_wandb(tmp_path, monkeypatch):
    from dsls.cli import main

    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc → no key
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = tmp_path / "run"
    cli = main(["fit", "--config", "configs/toy/reconstruction.yaml", "--trainer.max_steps=2",
                "--trainer.limit_val_batches=0", "--data.train_size=512", "--model.hidden=8", f"--run_dir={run}"])
    from lightning.pytorch.loggers import WandbLogger

    assert isinstance(cli.trainer.logger, WandbLogger)
    cli.trainer.logger.experiment.finish()
    assert list((run / "wandb").glob("offline-run-*")), list(run.rglob("*"))[:20]
