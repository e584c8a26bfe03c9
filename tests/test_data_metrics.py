"""Toy mode metrics against closed forms, and the toy2d / digits DataModules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsls.data import DigitsDataModule, Toy2DDataModule
from dsls.metrics.toy import MIXTURES, mixture_spec, toy_metrics


def mixture_samples(name: str, n: int = 2500, seed: int = 0) -> np.ndarray:
    means, std = mixture_spec(name)
    rng = np.random.default_rng(seed)
    return means[rng.integers(len(means), size=n)] + std * rng.standard_normal((n, 2))


# ---------------------------------------------------------------- toy metrics
def test_mixture_specs():
    means, std = mixture_spec("grid25")
    assert means.shape == (25, 2) and std == 0.05
    assert sorted(set(means[:, 0])) == [-4, -2, 0, 2, 4] == sorted(set(means[:, 1]))
    means, std = mixture_spec("ring8")
    assert means.shape == (8, 2) and std == 0.02
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 2.0)
    np.testing.assert_allclose(means[1], [math.sqrt(2), math.sqrt(2)])
    with pytest.raises(ValueError, match="grid25.*ring8"):
        mixture_spec("nope")


@pytest.mark.parametrize("name", ["grid25", "ring8"])
def test_exact_samples_cover_everything(name):
    x = mixture_samples(name)
    for arr in (x, torch.from_numpy(x).float()):  # numpy and torch inputs
        m = toy_metrics(arr, name)
        assert m["modes"] == len(MIXTURES[name][0])
        assert m["hq_fraction"] >= 0.98  # 2-D Gaussian: P(r ≤ 3σ) = 1 − e^{−4.5} ≈ 0.989
        assert 0 <= m["rev_kl"] < 0.02
        assert m["num_samples"] == 2500
        assert isinstance(m["modes"], int) and isinstance(m["hq_fraction"], float)


def test_one_mode_gives_log_k():
    means, std = mixture_spec("grid25")
    x = means[7] + std * np.random.default_rng(1).standard_normal((500, 2)) * 0.5
    m = toy_metrics(x, "grid25")
    assert m["modes"] == 1 and m["hq_fraction"] == 1.0
    assert m["rev_kl"] == pytest.approx(math.log(25), abs=1e-9)


def test_no_hq_samples():
    x = np.full((100, 2), 1.0)  # between grid25 modes: distance √2 ≫ 0.15
    m = toy_metrics(x, "grid25")
    assert m == {"modes": 0, "hq_fraction": 0.0, "rev_kl": None, "num_samples": 100}
    assert toy_metrics(np.full((10, 2), 50.0), "ring8")["rev_kl"] is None


def test_hand_computed_ring8():
    means, std = mixture_spec("ring8")
    x = np.stack([
        means[0], means[0] + [2.9 * std, 0], means[0] - [0, 2.5 * std],  # 3 HQ in mode 0 (within 3σ)
        means[3] + [0, 1.0 * std],                                        # 1 HQ in mode 3
        means[5] + [3.1 * std, 0],                                        # just outside 3σ: not HQ
        [0.0, 0.0],                                                        # centre: not HQ
    ])
    m = toy_metrics(x, "ring8")
    assert m["modes"] == 2
    assert m["hq_fraction"] == pytest.approx(4 / 6)
    # KL(p ‖ U_8) with p = (3/4, 1/4, 0, …): Σ p log(8p); empty bins contribute 0.
    assert m["rev_kl"] == pytest.approx(0.75 * math.log(6) + 0.25 * math.log(2), rel=1e-12)


# ---------------------------------------------------------------- toy2d DataModule
def _toy(**kw) -> Toy2DDataModule:
    dm = Toy2DDataModule(**{"train_size": 1000, "val_size": 300, "batch_size": 128, **kw})
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("name", ["grid25", "ring8", "swissroll"])
def test_toy2d_shapes_and_sizes(name):
    dm = _toy(name=name)
    assert dm.dataset_name == name and dm.data_shape == (2,)
    assert len(dm.train_set) == 1000 and len(dm.val_set) == 300
    train = list(dm.train_dataloader())
    assert len(train) == 1000 // 128  # drop_last
    assert all(isinstance(b, torch.Tensor) and b.shape == (128, 2) and b.dtype == torch.float32 for b in train)
    val = torch.cat(list(dm.val_dataloader()))
    assert val.shape == (300, 2) and torch.equal(val, dm.val_set.x)  # val is unshuffled and complete
    assert val.abs().max() < 5.0
    if name != "swissroll":  # draws from the mixture score as such
        m = toy_metrics(val, name)
        assert m["hq_fraction"] > 0.95 and m["modes"] == len(MIXTURES[name][0])


def test_toy2d_seeds():
    a, b, c = _toy(seed=3), _toy(seed=3), _toy(seed=4)
    assert torch.equal(a.train_set.x, b.train_set.x) and torch.equal(a.val_set.x, b.val_set.x)
    assert torch.equal(next(iter(a.train_dataloader())), next(iter(b.train_dataloader())))
    assert not torch.equal(a.train_set.x, c.train_set.x)
    assert not torch.equal(a.train_set.x[:300], a.val_set.x)  # train and val are different draws


def test_toy2d_swissroll_extent():
    x = _toy(name="swissroll", train_size=5000).train_set.x
    r = x.norm(dim=1)
    assert 3.5 < r.max() < 4.5 and 1.0 < r.min() < 1.6  # radii from 4/3 to 4, plus noise


def test_swissroll_metrics_tell_the_roll_from_a_blob_and_one_arc():
    from dsls.data.toy2d import sample_toy2d
    from dsls.metrics.toy import SWISSROLL_SEGMENTS

    roll = sample_toy2d("swissroll", 4000, np.random.default_rng(0))
    exact = toy_metrics(roll, "swissroll")
    assert exact["hq_fraction"] > 0.99 and exact["modes"] == SWISSROLL_SEGMENTS and exact["rev_kl"] < 0.01
    blob = toy_metrics(2 * np.random.default_rng(1).standard_normal((4000, 2)), "swissroll")
    assert blob["hq_fraction"] < 0.2
    inner = roll[np.linalg.norm(roll, axis=1) < 2.0]  # the innermost turn only (radius 1.33 to 2)
    one_end = toy_metrics(inner, "swissroll")
    assert one_end["hq_fraction"] > 0.99 and one_end["modes"] < SWISSROLL_SEGMENTS / 2 and one_end["rev_kl"] > 1.0


def test_toy2d_unknown_name():
    with pytest.raises(ValueError, match="swissroll"):
        Toy2DDataModule(name="moons")


# ---------------------------------------------------------------- digits DataModule
def _digits(**kw) -> DigitsDataModule:
    dm = DigitsDataModule(**kw)
    dm.setup("fit")
    return dm


def test_digits_batches():
    dm = _digits(batch_size=64)
    assert dm.dataset_name == "digits" and dm.data_shape == (1, 8, 8) and dm.num_classes == 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs = torch.cat([b[0] for b in dm.val_dataloader()])
    allx = torch.cat([dm.train_set.tensors[0], xs])
    assert allx.min() == -1.0 and allx.max() == 1.0  # [0, 16] → [-1, 1], both ends occur
    assert set(dm.val_set.tensors[1].tolist()) == set(range(10))


def test_digits_split():
    a, b, c = _digits(), _digits(), _digits(split_seed=1)
    assert len(a.train_idx) + len(a.val_idx) == 1797 and len(a.val_idx) == 360
    assert not set(a.train_idx) & set(a.val_idx)
    np.testing.assert_array_equal(a.val_idx, b.val_idx)
    assert torch.equal(a.val_set.tensors[0], b.val_set.tensors[0])
    assert not np.array_equal(a.val_idx, c.val_idx)
    # Stratified: each class's val share is within one image of 20 %.
    ys = a.train_set.tensors[1].bincount(minlength=10) + a.val_set.tensors[1].bincount(minlength=10)
    assert ((a.val_set.tensors[1].bincount(minlength=10) - 0.2 * ys).abs() <= 1).all()
