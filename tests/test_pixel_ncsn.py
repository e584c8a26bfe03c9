"""The pixel-space NCSN baseline: DSM learns the right score, trains on images, samples through the search phase."""
import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from dsls.data import DigitsDataModule
from dsls.errors import PhaseCheckpointError
from dsls.losses import dsm
from dsls.phases.pixel_ncsn import PixelNCSNModule
from dsls.phases.search import LatentSearchModule


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dsm_loss_is_minimised_by_the_true_score(reduction):
    """x ~ N(μ, s²I): the σ-noised score is −(x − μ)/(s² + σ²); the loss must be lowest there, not at a scaled copy."""
    g = torch.Generator().manual_seed(0)
    mu, s = torch.tensor([1.0, -1.0]), 0.5
    x, noise = mu + s * torch.randn(200000, 2, generator=g), torch.randn(200000, 2, generator=g)
    for level in (0.1, 1.0, 3.0):
        sigma = torch.full((len(x),), level)
        y = x + sigma[:, None] * noise  # dsm takes the score at the noised point
        loss = {c: dsm(-c * (y - mu) / (s**2 + level**2), sigma, noise, reduction=reduction).item()
                for c in (0.8, 1.0, 1.2)}
        assert loss[1.0] < loss[0.8] and loss[1.0] < loss[1.2], (level, loss)


def test_dsm_reductions():
    score, noise, sigma = torch.ones(4, 3, 2, 2), torch.zeros(4, 3, 2, 2), torch.full((4,), 2.0)
    assert dsm(score, sigma, noise, reduction="sum").item() == pytest.approx(4 * 12)  # ‖σ·s‖² = 4 per element
    assert dsm(score, sigma, noise, reduction="mean").item() == pytest.approx(4)
    with pytest.raises(ValueError, match="reduction"):
        dsm(score, sigma, noise, reduction="max")


def test_dsm_training_learns_the_analytic_gaussian_score(tiny_trainer):
    torch.manual_seed(0)
    mu, s = torch.tensor([1.0, -1.0]), 0.5
    data = mu + s * torch.randn(8192, 2)
    dm = L.LightningDataModule.from_datasets(train_dataset=TensorDataset(data), batch_size=256)
    model = PixelNCSNModule(data_shape=[2], arch="mlp", net={"hidden": 64, "depth": 2}, sigma_max=3.0, sigma_min=0.1,
                            lr=3e-3, ema_decay=0)
    tiny_trainer(max_steps=1500).fit(model, datamodule=dm)  # a quality assertion: more than tiny steps
    g = torch.Generator().manual_seed(1)
    # DSM's target noise dwarfs the score signal at the smallest σ (its error there shrinks slowly with steps);
    # in the bulk of the ladder a short run is already close
    for sigma in (0.5, 1.0):
        x = mu + (s**2 + sigma**2) ** 0.5 * torch.randn(2000, 2, generator=g)  # where q_σ has its mass
        true = -(x - mu) / (s**2 + sigma**2)
        rel = ((model.score_fn()(x, sigma) - true).norm(dim=1).pow(2).mean() / true.norm(dim=1).pow(2).mean()).sqrt()
        assert rel < 0.2, f"σ={sigma}: relative score error {rel:.3f}"


@pytest.fixture(scope="module")
def pixel_ckpt(tiny_trainer, tmp_path_factory):
    # its own model: the pixel baseline has no latent phases, so conftest's checkpoints do not serve
    model = PixelNCSNModule(data_shape=[1, 8, 8], arch="unet", net={"base": 8, "channel_mult": [1, 2], "blocks": 1},
                            ema_decay=0.9)
    t = tiny_trainer()  # 5 steps
    t.fit(model, datamodule=DigitsDataModule(batch_size=32))
    path = str(tmp_path_factory.mktemp("pixel") / "pixel.ckpt")
    t.save_checkpoint(path)
    return path, model


def test_pixel_baseline_trains_and_samples_through_the_search_phase(pixel_ckpt, tiny_trainer, tmp_path):
    path, model = pixel_ckpt
    assert model.sigma_max.item() > 1  # auto σ_max: the largest pairwise distance of 8×8 digits
    ema, live = model.ema.module.state_dict(), model.score_net.state_dict()
    assert any(not torch.equal(ema[k], live[k]) for k in live)  # sampling uses the EMA weights
    search = LatentSearchModule(ckpt=path, samplers={"none": {}, "langevin": {"steps_per_level": 2}}, num_samples=20,
                                batch_size=10, num_levels=3, out_dir=str(tmp_path))
    tiny_trainer(inference_mode=False).predict(search)
    x = np.load(tmp_path / "samples-pixel_langevin.npz")["x"]
    assert x.shape == (20, 1, 8, 8) and np.isfinite(x).all()
    assert set(search.results) == {"pixel_langevin"}  # 'none' on pixels would be noise images: dropped
    entry = search.results["pixel_langevin"]
    assert entry["nfe"] == 3 * 2 + 1 and entry["seconds_per_sample"] > 0
    assert np.isfinite(entry["classifier_fid"])  # digits are scored by the classifier, pixels or not


def test_cifar_pixel_config_is_the_benchmarked_size():
    init = yaml.safe_load(open("configs/cifar10/pixel_ncsn.yaml"))["model"]["init_args"]
    model = PixelNCSNModule(**{**init, "sigma_max": 50.0})
    assert sum(p.numel() for p in model.score_net.parameters()) >= 3.5e6
    assert model.score_fn()(torch.zeros(2, 3, 32, 32), 1.0).shape == (2, 3, 32, 32)


def test_search_names_both_accepted_phases(pixel_ckpt, tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"dsls_phase": "reconstruction"}, bad)
    with pytest.raises(PhaseCheckpointError, match=r"reconstruction \(phase 1\).*needs an adversarial.*or a pixel_ncsn"):
        LatentSearchModule(ckpt=str(bad))
