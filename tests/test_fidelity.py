"""Fidelity metrics through torch-fidelity, offline: FID/IS against independent numpy/scipy computations on the
same features, KID and precision/recall ranges, the reference cache, the missing-weights error, to_uint8, and the
FidelityMetrics callback on a tiny CPU fit."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.utils.data import TensorDataset

from dsls.errors import MissingWeightsError
from dsls.metrics import fidelity as fid_mod
from dsls.metrics.extractors import OfflineFeatures, register_offline_extractor
from dsls.metrics.fidelity import fidelity_metrics, register_module_extractor, to_uint8

OFFLINE = register_offline_extractor("dsls-offline")


def images(n: int, seed: int, shift: float = 0.0, channels: int = 3) -> torch.Tensor:
    """Float (n, C, 16, 16) in [-1, 1], a smooth random pattern plus a brightness shift."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 4, 4, generator=g) * 2 - 1
    x = nn.functional.interpolate(low, size=16, mode="bilinear", align_corners=False) + shift
    return x.clamp(-1, 1)


def offline(x, **kw):
    kw = {"feature_extractor": OFFLINE, "cuda": False, **kw}
    return fidelity_metrics(x, kw.pop("reference"), kw.pop("reference_name"), **kw)


def test_to_uint8_values_and_grayscale():
    x = torch.tensor([-1.0, 0.0, 1.0, -0.5]).view(1, 1, 2, 2)
    u = to_uint8(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 2, 2)
    # -1 → 0, 1 → 255, 0 → 127.5 → 128 (round half to even; 128 is even), -0.5 → 63.75 → 64
    assert u[0, 0].flatten().tolist() == [0, 128, 255, 64]
    assert torch.equal(u[:, 0], u[:, 1]) and torch.equal(u[:, 0], u[:, 2])
    assert torch.equal(to_uint8(x.numpy()), u)  # ndarray input
    assert torch.equal(to_uint8(torch.full((1, 3, 1, 1), 3.0)), torch.full((1, 3, 1, 1), 255, dtype=torch.uint8))
    with pytest.raises(ValueError, match="C in"):
        to_uint8(torch.zeros(1, 2, 4, 4))


def test_fid_matches_scipy_on_the_same_features(tmp_path):
    x, ref = images(200, 0, shift=0.3), images(180, 1)
    res = offline(x, reference=TensorDataset(ref, torch.zeros(180)), reference_name="fid-check", metrics=("fid",),
                  cache_root=str(tmp_path))
    net = OfflineFeatures()  # same seed → same weights as the registered one
    with torch.no_grad():
        f1, f2 = (net(to_uint8(a))["penultimate"].double().numpy() for a in (x, ref))
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert expected > 0.01
    assert res["fid"] == pytest.approx(expected, rel=1e-3)  # relative tolerance 1e-3
    assert res["num_samples"] == 200 and res["reference"] == "fid-check" and res["feature_extractor"] == OFFLINE


class KnownProbabilities(nn.Module):
    """logits_unbiased = log P[k] where k is the image's first pixel (uint8 0 / 128 / 255 → row 0 / 1 / 2)."""

    P = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)

    def forward(self, x):
        k = (x[:, 0, 0, 0].long() * 3) // 256
        return {"logits_unbiased": self.P.log()[k]}


def test_inception_score_closed_form():
    register_module_extractor("test-known-p", KnownProbabilities(), features=("logits_unbiased",))
    counts = [50, 30, 20]
    x = torch.cat([torch.full((c, 1, 4, 4), v) for c, v in zip(counts, (-1.0, 0.0, 1.0))])
    res = fidelity_metrics(x, None, "none", metrics=("isc",), feature_extractor="test-known-p", cuda=False,
                           isc_splits=1)
    P, w = KnownProbabilities.P.numpy(), np.array(counts) / sum(counts)
    marginal = w @ P
    expected = math.exp(float(w @ (P * np.log(P / marginal)).sum(1)))  # exp E_x KL(p(y|x) ‖ p(y))
    assert res["is_mean"] == pytest.approx(expected, abs=1e-4) and res["is_std"] == 0.0
    assert set(res) == {"is_mean", "is_std", "num_samples", "reference", "feature_extractor"}


def test_kid_and_precision_recall(tmp_path):
    x, ref = images(120, 2, shift=0.2), TensorDataset(images(100, 3), torch.zeros(100))
    res = offline(x, reference=ref, reference_name="kid-prc", metrics=("fid", "kid", "prc"), kid_subset_size=1000,
                  cache_root=str(tmp_path))  # subset size clamped to 100
    assert all(math.isfinite(res[k]) for k in ("fid", "kid_mean", "kid_std", "precision", "recall"))
    assert res["kid_std"] >= 0 and 0 <= res["precision"] <= 1 and 0 <= res["recall"] <= 1
    same = images(100, 4)
    ident = offline(same, reference=TensorDataset(same), reference_name="identical", metrics=("fid", "kid", "prc"),
                    kid_subset_size=50, cache_root=str(tmp_path))
    assert abs(ident["fid"]) < 1e-3 and ident["precision"] == 1.0 and ident["recall"] == 1.0
    # KID's unbiased estimator is not exactly 0 on identical sets (its cross term keeps the diagonal): only small
    assert abs(ident["kid_mean"]) < 0.1 * res["kid_mean"]


class Counting(OfflineFeatures):
    """OfflineFeatures that counts the images it has seen."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return super().forward(x)


def test_reference_features_are_cached(tmp_path):
    net = Counting()
    register_module_extractor("test-counting", net)
    x, ref = images(40, 5), TensorDataset(images(60, 6), torch.zeros(60))
    kw = dict(feature_extractor="test-counting", cuda=False, cache_root=str(tmp_path), kid_subset_size=20)
    first = fidelity_metrics(x, ref, "digits-val", **kw)
    assert net.seen == 40 + 60
    second = fidelity_metrics(x, ref, "digits-val", **kw)
    assert net.seen == 40 + 60 + 40  # the reference was not run again
    assert first == second
    cached = sorted(p.name for p in tmp_path.glob("digits-val-n60-*"))
    assert any(n.endswith("-test-counting-stat-fid-penultimate.pt") for n in cached), cached
    assert any(n.endswith("-test-counting-features-penultimate.pt") for n in cached), cached
    other = Counting(seed=1)  # same name, new weights: registering again works and the old cache is not reused
    register_module_extractor("test-counting", other)
    fidelity_metrics(x, ref, "digits-val", **kw)
    assert other.seen == 40 + 60 and net.seen == 140
    assert net.training and other.training  # the module's mode is given back


def test_missing_inception_weights_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(fid_mod, "_reachable", lambda *a, **k: False)  # offline, as here: never touch the network

    def no_download(*args, **kwargs):  # fast = before torch-fidelity starts a download that can hang
        raise AssertionError("torch-fidelity ran: it would have tried to download the weights")

    monkeypatch.setattr(fid_mod.torch_fidelity, "calculate_metrics", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    x, ref = images(10, 7), TensorDataset(images(10, 8))
    with pytest.raises(MissingWeightsError, match="feature_extractor_weights_path") as err:
        fidelity_metrics(x, ref, "whatever", cuda=False, cache_root=str(tmp_path))
    assert isinstance(err.value, FileNotFoundError) and fid_mod._inception_url() in str(err.value)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        fidelity_metrics(x, ref, "whatever", cuda=False, feature_extractor_weights_path=str(tmp_path / "nope.pth"))


def test_callback_logs_fidelity_on_a_tiny_fit(tiny_trainer, tmp_path):
    from dsls.callbacks.fidelity import FidelityMetrics
    from dsls.data import DigitsDataModule
    from dsls.phases.adversarial import AdversarialModule
    from dsls.phases.reconstruction import ReconstructionModule

    kw = dict(max_epochs=1, limit_train_batches=3, limit_val_batches=1)  # 3 steps, then one validation batch
    t = tiny_trainer(**kw)
    t.fit(ReconstructionModule(data_shape=[1, 8, 8], latent_dim=4, hidden=16, depth=1, tanh_output=True),
          datamodule=DigitsDataModule(batch_size=32))
    t.save_checkpoint(tmp_path / "ae.ckpt")
    cb = FidelityMetrics(reference_name="digits-val", feature_extractor=OFFLINE, num_samples=64, batch_size=40,
                         kid_subset_size=32, samplers={"none": {}, "langevin": {"steps_per_level": 2}},
                         cache_root=str(tmp_path / "cache"))
    model = AdversarialModule(autoencoder_ckpt=str(tmp_path / "ae.ckpt"), d_hidden=16, d_depth=1, num_levels=3)
    t = tiny_trainer(**kw, callbacks=[cb])
    t.fit(model, datamodule=DigitsDataModule(batch_size=32))
    for sampler in ("none", "langevin"):
        for metric in ("fid", "is_mean", "kid_mean", "precision", "recall"):
            v = t.callback_metrics[f"fidelity/{sampler}/{metric}"]
            assert torch.isfinite(v), (sampler, metric)
    assert list((tmp_path / "cache").glob("digits-val-n360-*-stat-fid-penultimate.pt"))


def test_callback_samples_do_not_depend_on_the_split():
    """Sample i's noise comes from (seed, i, sampler): any split of the indices over ranks and batches gives the
    same samples, and every sampler starts from the search phase's start noise."""
    from dsls.callbacks.fidelity import FidelityMetrics
    from dsls.phases.adversarial import AdversarialModule
    from dsls.samplers import PerSampleRNG

    torch.manual_seed(0)
    model = AdversarialModule(autoencoder={"data_shape": [2], "latent_dim": 2, "hidden": 16, "depth": 1},
                              sigma_max=3.0, d_hidden=16, d_depth=1, num_levels=3).eval()
    cb = FidelityMetrics(reference_name="x", feature_extractor=OFFLINE, batch_size=3,
                         samplers={"none": {}, "langevin": {"steps_per_level": 2}})
    whole = cb._sample(model, "langevin", range(0, 8))
    cb.batch_size = 2
    split = torch.cat([cb._sample(model, "langevin", range(0, 5)), cb._sample(model, "langevin", range(5, 8))])
    torch.testing.assert_close(whole, split)
    assert len(torch.unique(whole, dim=0)) == 8
    n0 = PerSampleRNG.for_indices(0, range(8), "start").randn(1, (2,))[0]  # the search phase's start noise
    with torch.no_grad():
        torch.testing.assert_close(cb._sample(model, "none", range(0, 8)), model.decode(n0))
    with pytest.raises(ValueError, match="no setting 'eps'"):
        FidelityMetrics(reference_name="x", samplers={"langevin": {"eps": 1.0}})


def test_callback_checks_inception_weights_at_setup(tmp_path, monkeypatch):
    from dsls.callbacks.fidelity import FidelityMetrics

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(fid_mod, "_reachable", lambda *a, **k: False)
    with pytest.raises(MissingWeightsError, match="feature_extractor_weights_path"):  # at setup, not validation 5
        FidelityMetrics(reference_name="cifar10-val").setup(None, None, "fit")
    FidelityMetrics(reference_name="digits-val", feature_extractor="dsls-offline").setup(None, None, "fit")
