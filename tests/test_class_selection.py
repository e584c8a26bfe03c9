"""--data.classes / --data.exclude_classes on the labelled data modules (dsls.data.classes): train and val drop the
excluded classes, test keeps every class, excluded_train_set holds exactly the train split's examples of the excluded
classes; digits' and the toy data's new test split leaves their old splits as they were; a pipeline run records the
selection where the anomaly task reads it (config.yaml, the checkpoint's data module settings)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dsls.data import CIFAR10DataModule, DigitsDataModule, MNISTDataModule, TintedDigitsDataModule, Toy2DDataModule
from dsls.data.classes import class_mask, kept_classes
from dsls.data.digits import TINTS
from dsls.data.images import subset_labels
from dsls.errors import ConfigError
from test_image_data import make_cifar, make_mnist

FAST = dict(num_workers=0, pin_memory=False)


def loader_labels(loader) -> set[int]:
    return {int(v) for _, y in loader for v in y}


# ---------------------------------------------------------------- the shared rules
def test_kept_classes_rules():
    assert kept_classes(None, None, range(10)) is None
    assert kept_classes([3, 1], None, range(10)) == [1, 3]
    assert kept_classes(None, [9], range(10)) == list(range(9))
    assert kept_classes(None, ["1"], ["0", "1", "2"]) == [0, 2]  # folder names given as numbers
    assert class_mask(torch.tensor([0, 9, 4, 9]), None, [9], 10).tolist() == [True, False, True, False]
    with pytest.raises(ConfigError, match=r"not both"):
        kept_classes([1], [2], range(10))
    with pytest.raises(ConfigError, match=r"--data.exclude_classes=\[10\]: 10 is not a class of digits; its classes "
                                          r"are 0\.\.9"):
        kept_classes(None, [10], range(10), "digits")
    with pytest.raises(ConfigError, match=r"leaves no class .* keep at least one"):
        kept_classes(None, list(range(10)), range(10))
    with pytest.raises(ConfigError, match=r"'cow' is not a class .* cat, dog"):
        kept_classes(["cow"], None, ["cat", "dog"])


@pytest.mark.parametrize("make", [
    lambda **kw: DigitsDataModule(**kw),
    lambda **kw: MNISTDataModule("nowhere", download=False, **kw),  # checked before any file is read
    lambda **kw: CIFAR10DataModule("nowhere", download=False, **kw),
    lambda **kw: Toy2DDataModule(name="ring8", **kw),
])
def test_a_bad_selection_stops_the_constructor(make):
    with pytest.raises(ConfigError, match="its classes are 0..") as e:
        make(exclude_classes=[25])
    assert "--data.exclude_classes=[25]" in str(e.value)
    with pytest.raises(ConfigError, match="not both"):
        make(classes=[1], exclude_classes=[2])


# ---------------------------------------------------------------- digits
def test_digits_test_fraction_zero_is_the_old_split():
    y = load_digits().target
    for seed in (0, 3):
        train, val = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
        dm = DigitsDataModule(split_seed=seed)
        dm.setup()
        np.testing.assert_array_equal(dm.train_idx, np.sort(train))
        np.testing.assert_array_equal(dm.val_idx, np.sort(val))
        assert dm.test_set is None and dm.excluded_train_set is None
    with pytest.raises(ConfigError, match="test_fraction"):
        dm.test_dataloader()


def test_digits_test_split_is_stratified_and_apart():
    dm = DigitsDataModule(test_fraction=0.2)
    dm.setup()
    parts = [set(dm.train_idx), set(dm.val_idx), set(dm.test_idx)]
    assert (len(dm.test_idx), len(dm.val_idx)) == (360, 360) and sum(map(len, parts)) == 1797
    assert set.union(*parts) == set(range(1797)) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    counts = torch.bincount(dm.test_set.tensors[1], minlength=10).float()
    assert ((counts - 0.2 * torch.bincount(torch.from_numpy(load_digits().target))).abs() <= 1).all()
    again = DigitsDataModule(test_fraction=0.2)
    again.setup()
    np.testing.assert_array_equal(again.test_idx, dm.test_idx)


@pytest.mark.parametrize("cls", [DigitsDataModule, TintedDigitsDataModule])
def test_digits_one_class_excluded(cls):
    full, dm = cls(test_fraction=0.2, batch_size=64), cls(test_fraction=0.2, batch_size=64, exclude_classes=[7])
    full.setup()
    dm.setup()
    assert dm.hparams.exclude_classes == [7] and dm.hparams.classes is None and dm.num_classes == 10
    assert 7 not in loader_labels(dm.train_dataloader()) | loader_labels(dm.val_dataloader())
    assert loader_labels(dm.train_dataloader()) == set(range(10)) - {7}
    assert 7 in loader_labels(dm.test_dataloader())
    for a, b in zip(dm.test_set.tensors, full.test_set.tensors):  # test keeps every class
        assert torch.equal(a, b)
    y = full.train_set.tensors[1]  # the train split's images of class 7, exactly
    for a, b in zip(dm.excluded_train_set.tensors, full.train_set.tensors):
        assert torch.equal(a, b[y == 7])
    for a, b in zip(dm.train_set.tensors, full.train_set.tensors):
        assert torch.equal(a, b[y != 7])
    np.testing.assert_array_equal(np.sort(np.r_[dm.train_idx, dm.excluded_train_idx]), full.train_idx)
    if cls is TintedDigitsDataModule:  # coloured by their own class: TINTS[7] is (0.5, 0, 1)
        x = dm.excluded_train_set.tensors[0] + 1
        assert torch.equal(TINTS[7], torch.tensor([0.5, 0.0, 1.0])) and (x[:, 1] == 0).all()
        torch.testing.assert_close(x[:, 0], 0.5 * x[:, 2])


def test_digits_classes_keeps_only_those():
    dm = DigitsDataModule(classes=[0, 1])
    dm.setup()
    assert set(dm.train_set.tensors[1].tolist()) == {0, 1} == set(dm.val_set.tensors[1].tolist())
    assert set(dm.excluded_train_set.tensors[1].tolist()) == set(range(2, 10))


# ---------------------------------------------------------------- toy mixtures: modes are classes
def _toy(**kw) -> Toy2DDataModule:
    dm = Toy2DDataModule(**{"name": "grid25", "train_size": 2000, "val_size": 500, "batch_size": 128, **kw})
    dm.setup()
    return dm


def test_toy_test_split_leaves_train_and_val_as_they_were():
    old, new = _toy(labels=True), _toy(labels=True, test_size=300)
    assert old.test_set is None and len(new.test_set) == 300
    assert torch.equal(old.train_set.x, new.train_set.x) and torch.equal(old.val_set.x, new.val_set.x)
    assert not torch.equal(new.test_set.x, new.val_set.x[:300])


@pytest.mark.parametrize("labels", [True, False])
def test_toy_one_mode_excluded(labels):
    full = _toy(labels=True, test_size=1000)
    dm = _toy(labels=labels, test_size=1000, exclude_classes=[12])
    y = full.train_set.y
    assert torch.equal(dm.train_set.x, full.train_set.x[y != 12])
    assert torch.equal(dm.excluded_train_set.x, full.train_set.x[y == 12]) and len(dm.excluded_train_set) > 0
    assert torch.equal(dm.val_set.x, full.val_set.x[full.val_set.y != 12])
    assert torch.equal(dm.test_set.x, full.test_set.x)  # every mode
    if labels:
        assert 12 not in loader_labels(dm.train_dataloader()) | loader_labels(dm.val_dataloader())
        assert 12 in loader_labels(dm.test_dataloader())
        assert (dm.excluded_train_set.y == 12).all()
    else:  # batches stay plain points
        batch = next(iter(dm.train_dataloader()))
        assert isinstance(batch, torch.Tensor) and batch.shape == (128, 2) and dm.train_set.y is None
        centre = torch.tensor([0.0, 0.0])  # mode 12 of grid25 is the centre (0, 0)
        assert torch.cat(list(dm.train_dataloader())).sub(centre).norm(dim=1).min() > 1.0


def test_toy_selection_needs_a_mixture():
    with pytest.raises(ConfigError, match="swissroll has no modes"):
        Toy2DDataModule(name="swissroll", exclude_classes=[0])


# ---------------------------------------------------------------- MNIST and CIFAR-10 on tiny real-format files
def check_image_selection(dm, full, k: int):
    """dm excludes class k; full is the same module without a selection."""
    assert k not in loader_labels(dm.train_dataloader()) | loader_labels(dm.val_dataloader())
    assert k in loader_labels(dm.test_dataloader())
    assert dm.test_set.indices == full.test_set.indices
    labels = subset_labels(full.train_set)
    assert dm.excluded_train_set.indices == [i for i, y in zip(full.train_set.indices, labels) if y == k]
    assert dm.train_set.indices == [i for i, y in zip(full.train_set.indices, labels) if y != k]
    assert (subset_labels(dm.excluded_train_set) == k).all() and len(dm.excluded_train_set) > 0
    val = subset_labels(full.val_set)
    assert dm.val_set.indices == [i for i, y in zip(full.val_set.indices, val) if y != k]


def test_mnist_one_class_excluded(tmp_path):
    data = make_mnist(tmp_path)
    k = int(data["t10k"][1][0])  # a class the tiny test split holds
    make = lambda **kw: MNISTDataModule(str(tmp_path), download=False, val_size=20, batch_size=8, **FAST, **kw)  # noqa: E731
    full, dm = make(), make(exclude_classes=[k])
    for m in (full, dm):
        m.prepare_data()
        m.setup("fit")
    check_image_selection(dm, full, k)
    assert dm.hparams.exclude_classes == [k]


def test_cifar10_one_class_excluded(tmp_path):
    make_cifar(tmp_path, per_batch=20)
    make = lambda **kw: CIFAR10DataModule(str(tmp_path), download=False, val_size=10, batch_size=8, **FAST, **kw)  # noqa: E731
    full = make()
    full.setup("fit")
    k = int(subset_labels(full.test_set)[0])
    dm = make(exclude_classes=[k])
    dm.setup("fit")
    check_image_selection(dm, full, k)
    torch.manual_seed(0)  # the excluded images come without the train set's random flip
    first = dm.excluded_train_set[0][0]
    torch.manual_seed(1)
    assert torch.equal(first, dm.excluded_train_set[0][0])


# ---------------------------------------------------------------- recorded where the anomaly task reads it
def test_a_pipeline_run_records_the_excluded_classes(tmp_path):
    import dsls
    from conftest import TINY_PIPELINE
    from dsls.pipeline import run_pipeline

    run = tmp_path / "run"
    run_pipeline("configs/toy", [*TINY_PIPELINE, "--data.train_size=1024", "--data.exclude_classes=[9]"],
                 run_dir=str(run))  # a training set without mode 9 still fills a batch of 512
    for phase in ("reconstruction", "adversarial"):
        config = yaml.safe_load((run / phase / "config.yaml").read_text())
        assert config["data"]["init_args"]["exclude_classes"] == [9], phase
        ckpt = torch.load(run / phase / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["datamodule_hyper_parameters"]["exclude_classes"] == [9], phase
    assert dsls.load(str(run)).datamodule_hparams["exclude_classes"] == [9]


def test_a_phase_on_other_examples_than_phase_1_warns(toy_ae_ckpt):
    """Phase 2 (and the peers) read phase 1's data settings from its checkpoint: another class selection warns."""
    from dsls.phases.adversarial import AdversarialModule

    model = AdversarialModule(autoencoder_ckpt=toy_ae_ckpt, d_hidden=8, d_depth=1)
    assert model._phase_1_data is not None and model._phase_1_data.get("exclude_classes") is None
    with pytest.warns(UserWarning, match=r"--data.exclude_classes=\[9\] \(phase 1: None\)"):
        model._warn_other_data({**model._phase_1_data, "exclude_classes": [9]})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model._warn_other_data(dict(model._phase_1_data))  # the same data: silent
