"""Every shipped config instantiates for real through the `dsls` CLI (model, data module, Trainer and its callbacks;
no data is read) and its model runs a forward pass on a tiny fake batch of the config's data shape. The phases that
need a checkpoint get one written Trainer-free from the same data set's own configs (random weights, dsls tags).
test_configs.py parses the same configs without building anything."""
import glob
import os

import pytest
import torch

from dsls.cli import DSLSCLI, main

SUBCOMMAND = {"reconstruction": "fit", "adversarial": "fit", "pixel_ncsn": "fit", "latent_classifier": "fit",
              "latent_score": "fit", "search": "predict"}
CONFIGS = sorted(p for p in glob.glob("configs/*/*.yaml")  # phase configs; profiles (cpu.yaml): test_codes_and_refit
                 if not p.startswith("configs/sweeps/") and os.path.splitext(os.path.basename(p))[0] in SUBCOMMAND)
LARGE = {"celebahq256", "lsun_church"}  # 256 px: a forward pass takes seconds on a CPU


def build(config: str, run_dir, *flags: str):
    """The CLI's own instantiation (model, data, Trainer), without running the subcommand."""
    phase = os.path.splitext(os.path.basename(config))[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DSLSCLI, "_run_subcommand", lambda self, subcommand: None)
        return main([SUBCOMMAND[phase], "--config", config, f"--run_dir={run_dir}", "--trainer.logger=false",
                     "--trainer.accelerator=cpu", *flags])


def save_checkpoint(model, path) -> str:
    """What Trainer.save_checkpoint writes that dsls reads: hyper-parameters, weights and the phase's own tags."""
    ckpt = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """checkpoints(dataset) -> {"reconstruction": path, "adversarial": path}, made once per data set."""
    made = {}

    def get(dataset: str) -> dict:
        if dataset not in made:
            d = tmp_path_factory.mktemp(dataset)
            cli = build(f"configs/{dataset}/reconstruction.yaml", d)
            cli.model.dataset_name = cli.datamodule.dataset_name  # Lightning sets it in setup(); fit never runs
            ae = save_checkpoint(cli.model, d / "ae.ckpt")
            adv = build(f"configs/{dataset}/adversarial.yaml", d, f"--model.autoencoder_ckpt={ae}").model
            if adv.sigma_max.isnan():  # auto σ_max is chosen from the codes when fit starts
                adv.sigma_max.fill_(1.0)
            made[dataset] = {"reconstruction": ae, "adversarial": save_checkpoint(adv, d / "adv.ckpt")}
        return made[dataset]

    return get


def forward(phase: str, model, x: torch.Tensor) -> torch.Tensor:
    """One pass through the phase's networks, with a check of each output's shape."""
    sigma = torch.full((len(x),), 0.5)
    if phase == "reconstruction":
        out = model.autoencoder.decode(model.autoencoder.encode(x))
        assert out.shape == x.shape
    elif phase == "pixel_ncsn":
        out = model.score_fn()(x, sigma)
        assert out.shape == x.shape
    elif phase in ("adversarial", "latent_score"):
        z = model.autoencoder.encode(x)
        out = model.score_fn()(z, sigma)
        assert out.shape == z.shape
    elif phase == "latent_classifier":
        out = model.log_prob(model.autoencoder.encode(x), sigma)
        assert out.shape == (len(x), model.hparams.num_classes)
    else:  # search: the loaded phase-2 model's score, then the decoder
        z = torch.randn(len(x), *model.model.latent_shape)
        assert model.model.score(z, sigma).shape == z.shape
        out = model.model.decode(z)
        assert out.shape == x.shape
    return out


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.split("/")[1] in LARGE else p
                                  for p in CONFIGS])
def test_config_instantiates_and_runs_a_forward_pass(path, checkpoints, tmp_path):
    dataset, phase = path.split("/")[1], os.path.splitext(os.path.basename(path))[0]
    flags = {"adversarial": ["--model.autoencoder_ckpt={reconstruction}"],
             "latent_score": ["--model.autoencoder_ckpt={reconstruction}"],
             "latent_classifier": ["--model.autoencoder_ckpt={adversarial}"],  # what the pipeline passes
             "search": ["--model.ckpt={adversarial}"]}.get(phase, [])
    ckpts = checkpoints(dataset) if flags else {}
    cli = build(path, tmp_path, *(f.format(**ckpts) for f in flags))
    model, trainer = cli.model, cli.trainer
    assert type(model).__module__ == f"dsls.phases.{phase}" and trainer is not None
    if phase == "search":
        assert cli.datamodule is None and model.samplers  # the search draws its own sample indices
        shape = model.model.autoencoder.data_shape
    else:
        shape = tuple(cli.datamodule.data_shape)
        if phase in ("reconstruction", "pixel_ncsn"):
            assert tuple(model.hparams.data_shape) == shape  # the model is built for the data it is given
        else:
            assert model.autoencoder.data_shape == shape
    model.eval()  # BatchNorm: its running statistics, not a batch of 2
    out = forward(phase, model, torch.rand(2, *shape) * 2 - 1)
    assert torch.isfinite(out).all()
