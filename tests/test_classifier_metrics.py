"""Classifier-FID and mode metrics (dsls.metrics.classifier) on sklearn digits and on a tiny MNIST in IDX format."""
from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import scipy.linalg
import torch

import dsls.metrics.classifier as clf
import dsls.metrics.digit_classifier as trained
from dsls.data import DigitsDataModule
from dsls.metrics.fidelity import to_uint8

KEYS = {"classifier_fid", "classifier_precision", "classifier_recall", "class_kl", "mean_confidence", "num_samples",
        "reference", "reference_size", "classifier_accuracy"}


def numpy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Independent Fréchet distance: float64 Gaussian fits and scipy's sqrtm."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, mu2, c1, c2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))


def kl_uniform(counts) -> float:
    p = np.asarray(counts, np.float64)
    p = p[p > 0] / p.sum()
    return float((p * np.log(p * 10)).sum())


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Train the digits classifier once into a fresh cache (training calls counted; its time belongs in benchmarks)."""
    root = tmp_path_factory.mktemp("dsls-cache")
    calls = []
    real_train = trained.train_classifier

    def counting_train(*args, **kwargs):
        calls.append(args[0])
        return real_train(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trained, "train_classifier", counting_train)
        model = clf.load_classifier("digits", cache_dir=str(root / "classifiers"))
    x, y = clf.real_images("digits")
    return {"model": model, "calls": calls, "root": root,
            "cache_dir": str(root / "classifiers"), "x": x, "y": y}


def test_digits_classifier_accuracy(digits):
    model, x, y = digits["model"], digits["x"], digits["y"]
    assert digits["calls"] == ["digits"]
    assert model.info["accuracy"] >= 0.90
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(model.info["accuracy"])
    # The held-out set is exactly the DataModule's val split; the classifier trained on its train split only.
    dm = DigitsDataModule()
    dm.setup()
    assert torch.equal(x, dm.val_set.tensors[0]) and torch.equal(y, dm.val_set.tensors[1]) and len(x) == 360
    assert len(clf.real_images("digits", split="train")[0]) == 1437
    assert x.shape[1:] == (1, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert model.features(x[:4]).shape[0] == 4 and model(x[:4]).shape == (4, 10)


def test_cache_loads_without_training(digits, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded, not retrained")

    monkeypatch.setattr(clf, "train_classifier", no_training)
    monkeypatch.setenv("DSLS_CACHE", str(digits["root"]))  # default dir: $DSLS_CACHE/classifiers
    assert clf.cache_path("digits") == str(digits["root"] / "classifiers" / "digits-classifier.pt")
    again = clf.load_classifier("digits")
    with torch.no_grad():
        assert torch.equal(again(digits["x"]), digits["model"](digits["x"]))
    assert again.info["accuracy"] == digits["model"].info["accuracy"]
    assert again.info["version"] == trained.VERSION and again.info["seed"] == 0
    assert tuple(again.info["data_shape"]) == (1, 8, 8)


def test_training_is_deterministic_from_seed():
    runs = [clf.train_classifier("digits", epochs=1, seed=s)[0].state_dict() for s in (3, 3, 4)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_real_heldout_against_itself(digits):
    m = clf.classifier_metrics(digits["x"], "digits", cache_dir=digits["cache_dir"])
    assert set(m) == KEYS
    assert m["classifier_fid"] < 1e-3
    assert m["classifier_precision"] == 1.0 and m["classifier_recall"] == 1.0  # the same set: every ball holds itself
    expected = kl_uniform(np.bincount(digits["y"].numpy(), minlength=10))  # stratified split: nearly uniform
    assert expected < 1e-3 and m["class_kl"] < 0.01 and abs(m["class_kl"] - expected) < 0.01
    assert m["mean_confidence"] > 0.8
    assert (m["num_samples"], m["reference"], m["reference_size"]) == (360, "digits-heldout", 360)
    assert m["classifier_accuracy"] == digits["model"].info["accuracy"]


def test_degenerate_generators(digits):
    x, cache = digits["x"], digits["cache_dir"]
    other_real = clf.real_images("digits", split="train")[0][:360]
    baseline = clf.classifier_metrics(other_real, "digits", cache_dir=cache)
    one = clf.classifier_metrics(x[:1].repeat(200, 1, 1, 1), "digits", cache_dir=cache)
    zeros = clf.classifier_metrics(np.zeros((200, 1, 8, 8), np.float32), "digits", cache_dir=cache)
    assert baseline["class_kl"] < 0.05
    for m in (one, zeros):
        assert m["classifier_fid"] > 10 * baseline["classifier_fid"]
        assert m["class_kl"] == pytest.approx(math.log(10), abs=1e-12)  # every sample in one class
        assert m["num_samples"] == 200


def test_precision_and_recall_in_the_classifier_features(digits):
    """The real train split covers the held-out images (precision and recall about 0.9); 200 copies of one held-out
    image look real (precision 1) and cover almost nothing (recall near 0)."""
    x, cache = digits["x"], digits["cache_dir"]
    real = clf.classifier_metrics(clf.real_images("digits", split="train")[0], "digits", cache_dir=cache)
    one = clf.classifier_metrics(x[:1].repeat(200, 1, 1, 1), "digits", cache_dir=cache)
    for m in (real, one):
        assert 0.0 <= m["classifier_precision"] <= 1.0 and 0.0 <= m["classifier_recall"] <= 1.0
    assert real["classifier_precision"] > 0.8 and real["classifier_recall"] > 0.8
    assert one["classifier_precision"] == 1.0  # a held-out image is inside its own ball
    assert one["classifier_recall"] < 0.05 and real["classifier_recall"] > one["classifier_recall"] + 0.7
    few = clf.classifier_metrics(x[:3], "digits", cache_dir=cache)  # no k-NN ball with k = 3 in 3 samples
    assert few["classifier_precision"] is None and few["classifier_recall"] is None


def test_class_kl_by_hand(digits):
    assert clf.class_kl(np.array([0] * 5 + [1] * 3 + [2] * 2)) == pytest.approx(
        0.5 * math.log(5) + 0.3 * math.log(3) + 0.2 * math.log(2))
    assert clf.class_kl(np.arange(10).repeat(7)) == pytest.approx(0.0, abs=1e-12)
    # End to end: 6 real images the classifier calls "3" and 2 it calls "7" → histogram (6, 2) over 10 classes.
    x, model = digits["x"], digits["model"]
    with torch.no_grad():
        pred = model(x).argmax(1)
    pick = torch.cat([torch.nonzero(pred == 3)[:6, 0], torch.nonzero(pred == 7)[:2, 0]])
    m = clf.classifier_metrics(x[pick], "digits", cache_dir=digits["cache_dir"])
    assert m["class_kl"] == pytest.approx(0.75 * math.log(7.5) + 0.25 * math.log(2.5))


def test_fid_matches_independent_numpy(digits):
    x_real, model = digits["x"], digits["model"]
    g = torch.Generator().manual_seed(0)
    train = clf.real_images("digits", split="train")[0]
    samples = (train[torch.randperm(len(train), generator=g)[:400]] + 0.3 * torch.randn(400, 1, 8, 8, generator=g))
    samples = samples.clamp(-1, 1)
    m = clf.classifier_metrics(samples, "digits", cache_dir=digits["cache_dir"])
    extractor = clf.ClassifierExtractor(model)  # the same features torch-fidelity sees: via the uint8 images
    feats = [extractor(to_uint8(s))["penultimate"].double().numpy() for s in (samples, x_real)]
    with torch.no_grad():  # the uint8 round trip moves pixels by ≤ 0.5/127.5 and features by well under 1 %
        direct = model.features(x_real)
        assert (torch.from_numpy(feats[1]).float() - direct).norm() < 0.01 * direct.norm()
    expected = numpy_fid(*feats)
    assert expected > 1.0
    assert abs(m["classifier_fid"] - expected) <= 1e-3 * max(1.0, expected)
    with pytest.raises(TypeError):
        clf.classifier_metrics(to_uint8(samples)[:, :1], "digits", cache_dir=digits["cache_dir"])
    with pytest.raises(ValueError):
        clf.classifier_metrics(torch.zeros(10, 1, 28, 28), "digits", cache_dir=digits["cache_dir"])


# ---------------------------------------------------------------- MNIST: tiny IDX files, 28×28 end to end
def write_idx_gz(path, arr: np.ndarray) -> None:
    """Big-endian IDX: magic 0x0803 (2051) for uint8 images (N, 28, 28), 0x0801 (2049) for uint8 labels (N,)."""
    header = struct.pack(">I", 0x800 + arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def digit_patterns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a bright horizontal bar at row 2 + 2k (jittered by a pixel) on a noisy dark background."""
    labels = rng.integers(0, 10, n)
    imgs = rng.integers(0, 40, (n, 28, 28))
    for i, k in enumerate(labels):
        r = 2 + 2 * k + rng.integers(-1, 2)
        imgs[i, r:r + 2, 4:24] = 230
    return imgs.astype(np.uint8), labels.astype(np.uint8)


def test_mnist_end_to_end(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 50)):
        imgs, labels = digit_patterns(n, rng)
        write_idx_gz(raw / f"{split}-images-idx3-ubyte.gz", imgs)
        write_idx_gz(raw / f"{split}-labels-idx1-ubyte.gz", labels)
    data_dir, cache = str(tmp_path / "data"), str(tmp_path / "cache")
    x, y = clf.real_images("mnist", data_dir=data_dir)
    assert x.shape == (50, 1, 28, 28) and torch.equal(y, torch.from_numpy(labels).long())
    torch.testing.assert_close(x[:, 0], torch.from_numpy(imgs / 127.5 - 1).float())
    assert len(clf.real_images("mnist", split="train", data_dir=data_dir)[0]) == 180  # 20 val of 200
    samples = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m = clf.classifier_metrics(samples, "mnist", data_dir=data_dir, cache_dir=cache)
    assert set(m) == KEYS and (m["num_samples"], m["reference"], m["reference_size"]) == (64, "mnist-heldout", 50)
    assert all(math.isfinite(m[k]) for k in ("classifier_fid", "class_kl", "mean_confidence", "classifier_accuracy"))
    assert 0 <= m["class_kl"] <= math.log(10) + 1e-9 and 0.1 <= m["mean_confidence"] <= 1
    assert (tmp_path / "cache" / "mnist-classifier.pt").is_file()
    assert clf.classifier_metrics(x, "mnist", data_dir=data_dir, cache_dir=cache)["classifier_fid"] < 1e-3


def test_tinted_digits_get_a_quality_figure_in_the_results_table(digits, monkeypatch):
    """The tinted digits had no image metric: now the digits' classifier-FID of their shape (the maximum over R, G,
    B is the grey digit) and colour_accuracy (the colour is the tint of the class the shape reads as)."""
    from dsls.data.digits import TintedDigitsDataModule, tint
    from dsls.metrics.samples import metric_kind, sample_metrics
    from dsls.metrics.tinted import shape_of, tint_classes
    from dsls.runs import format_table

    dm = TintedDigitsDataModule()
    dm.setup()
    x, y = dm.val_set.tensors
    torch.testing.assert_close(shape_of(x), digits["x"])  # the held-out shapes are the grey digits' held-out split
    assert (tint_classes(x) == y.numpy()).all()
    assert metric_kind("tinted_digits", {"fidelity": ["fid"]}) == "classifier"
    monkeypatch.setenv("DSLS_CACHE", str(digits["root"]))  # the classifier the fixture trained
    m = sample_metrics(x.numpy(), "tinted_digits", {"fidelity": ["fid"]})
    assert m["classifier_fid"] < 1e-3 and m["reference"].startswith("tinted_digits-heldout")
    # the data's colour is its class's: it agrees wherever the classifier reads the shape right
    assert m["colour_accuracy"] == pytest.approx(digits["model"].info["accuracy"])
    wrong = sample_metrics(tint(shape_of(x), (y + 1) % 10).numpy(), "tinted_digits", {"fidelity": ["fid"]})
    assert wrong["colour_accuracy"] < 0.1 and wrong["classifier_fid"] < 1e-3  # right shapes, wrong colours
    table = format_table({"langevin": m}).split("\n")[0]
    assert "classifier_fid" in table and "colour_accuracy" in table


# ---------------------------------------------------------------- the floor row of a search
def test_heldout_images_are_what_each_metric_compares_against(digits):
    """The images the floor reconstructs: the digits' held-out split, the tinted digits' (whose shapes are that
    split), for torch-fidelity data sets the reference split evenly spaced, and none for toy data."""
    from dsls.metrics.samples import heldout_images
    from dsls.metrics.tinted import shape_of

    on = {"fidelity": ["fid"]}
    assert torch.equal(heldout_images("digits", on, 100), digits["x"][:100])
    assert len(heldout_images("digits", on, 10_000)) == 360  # all of it, when fewer than asked for
    tinted = heldout_images("tinted_digits", on, 50)
    assert tinted.shape == (50, 3, 8, 8) and torch.equal(shape_of(tinted), digits["x"][:50])
    data = {"_class_path": "dsls.data.digits.DigitsDataModule"}  # as if it were an Inception data set
    spread = heldout_images("other", {**on, "datamodule": data, "split": "val"}, 4)
    assert torch.equal(spread, digits["x"][[0, 120, 239, 359]])
    assert heldout_images("grid25", on, 10) is None and heldout_images("digits", {"fidelity": []}, 10) is None


def test_digits_search_scores_the_floor(digits_tiny, digits, tmp_path, monkeypatch, capsys):
    """A digits search writes samples-floor.npz (the autoencoder's reconstructions of the held-out images, beside
    them) and results["floor"] with the classifier metrics, scored like the samples; figures and table show it; a
    second search into the folder is refused, naming it."""
    import json

    from conftest import make_tiny_trainer
    from dsls.errors import TaskError
    from dsls.model import load
    from dsls.phases.search import LatentSearchModule

    monkeypatch.setenv("DSLS_CACHE", str(digits["root"]))  # the classifier the fixture trained

    def search(**kw):
        module = LatentSearchModule(ckpt=digits_tiny["adv"], out_dir=str(tmp_path), num_samples=200, batch_size=120,
                                    **kw)
        make_tiny_trainer(inference_mode=False).predict(module, return_predictions=False)
        return module

    module = search(samplers={"none": {}})
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"none", "floor"} and set(module.results) == {"none"}  # the samplers' results stay theirs
    floor, none = results["floor"], results["none"]
    for key in ("classifier_fid", "classifier_precision", "classifier_recall"):
        assert key in floor and key in none
    assert 0 <= floor["classifier_precision"] <= 1 and 0 <= floor["classifier_recall"] <= 1
    assert floor["num_samples"] == 200 and floor["reference"] == "digits-heldout"
    with np.load(tmp_path / "samples-floor.npz") as f:
        x, real = f["x"], f["real"]
    np.testing.assert_array_equal(real, digits["x"][:200].numpy())  # the metric's own held-out images
    with torch.no_grad():
        model = load(digits_tiny["adv"])
        expected = model.decode(model.encode(digits["x"][:200])).numpy()
    np.testing.assert_allclose(x, expected, atol=1e-5)
    assert floor == {**clf.classifier_metrics(x, "digits", cache_dir=digits["cache_dir"]),
                     "source": floor["source"]}  # scored by the samples' metric
    assert floor["classifier_fid"] < none["classifier_fid"]  # reconstructions are nearer the data than prior draws
    assert "\nfloor | " in capsys.readouterr().out  # the printed table has the floor row
    assert all((tmp_path / f).is_file() for f in ("samples.png", "samples-floor.png", "floor.png"))
    with pytest.raises(TaskError, match="samples-floor.npz"):
        search(samplers={"langevin": {"steps_per_level": 1}})


def test_toy_search_has_no_floor(toy_adv_ckpt, tmp_path):
    from conftest import make_tiny_trainer
    from dsls.phases.search import LatentSearchModule

    module = LatentSearchModule(ckpt=toy_adv_ckpt, out_dir=str(tmp_path), num_samples=20, samplers={"none": {}})
    make_tiny_trainer(inference_mode=False).predict(module, return_predictions=False)
    assert (tmp_path / "samples-none.npz").is_file() and not (tmp_path / "samples-floor.npz").exists()
    assert "floor" not in (tmp_path / "results.json").read_text()
