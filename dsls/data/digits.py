"""scikit-learn's 8×8 handwritten digits (bundled with sklearn, so no download is ever needed)."""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from dsls.data.classes import keep_mask, kept_classes
from dsls.data.loaders import make_loader
from dsls.errors import ConfigError


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images as float32 (N, 1, 8, 8) in [-1, 1] (pixel/8 − 1, from sklearn's [0, 16]) and int64 labels."""
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    return x, y


def digits_split(labels: np.ndarray, val_fraction: float, test_fraction: float,
                 split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(train, val, test) indices into the 1797 digits, each sorted; test None when test_fraction is 0.

    Stratified by class with sklearn's ``train_test_split(stratify=labels, random_state=split_seed)``. With
    test_fraction 0 it is one call, val = ceil(val_fraction · N) images (the split dsls has always made). Otherwise the
    test images are taken out first (ceil(test_fraction · N)), then the same number of val images as above from the
    rest: both fractions are of all N images."""
    idx = np.arange(len(labels))
    if not test_fraction:
        train, val = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=split_seed)
        return np.sort(train), np.sort(val), None
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=split_seed)
    n_val = math.ceil(val_fraction * len(labels))  # as sklearn rounds a fraction
    train, val = train_test_split(rest, test_size=n_val, stratify=labels[rest], random_state=split_seed)
    return np.sort(train), np.sort(val), np.sort(test)


class DigitsDataModule(L.LightningDataModule):
    """The 1797 sklearn digits, split once into train / val (/ test).

    The split is stratified by class and fixed by ``split_seed`` (:func:`digits_split`): the val set holds
    ceil(val_fraction · 1797) images, which for the default 0.2 is 360 val / 1437 train, with every class in (nearly)
    the same proportion in both. ``test_fraction`` > 0 first takes that share out as a test split (0, the default:
    no test split, and the same train / val as ever). Index lists are sorted, so the same ``split_seed`` gives
    identical sets and order.

    ``classes`` / ``exclude_classes`` (digits 0..9, dsls.data.classes) drop classes from train and val after the
    split; test keeps every class, and ``excluded_train_set`` holds the train split's images of the dropped ones.
    ``train_idx`` / ``val_idx`` / ``test_idx`` / ``excluded_train_idx`` are the rows of each set.

    Batches are ``(x, y)``: x float32 (B, 1, 8, 8) in [-1, 1], y int64 (B,). The train loader shuffles
    (seeded from ``split_seed`` and the epoch) and drops the last partial batch; the val and test loaders keep order
    and every image.
    """

    dataset_name = "digits"
    data_shape = (1, 8, 8)
    num_classes = 10

    def __init__(self, batch_size: int = 128, val_fraction: float = 0.2, split_seed: int = 0, num_workers: int = 0,
                 test_fraction: float = 0.0, classes: list[int] | None = None,
                 exclude_classes: list[int] | None = None):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"--data.batch_size={batch_size} must be >= 1")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"--data.val_fraction={val_fraction} must be in (0, 1)")
        if not 0.0 <= test_fraction < 1.0 - val_fraction:
            raise ConfigError(f"--data.test_fraction={test_fraction} must be in [0, {1 - val_fraction:g}): with "
                              f"--data.val_fraction={val_fraction}, some images must be left to train on")
        self.save_hyperparameters()
        self.kept_classes()  # a bad class selection stops here, before anything trains
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self.excluded_train_set: TensorDataset | None = None
        self.train_idx = self.val_idx = self.test_idx = self.excluded_train_idx = None

    def kept_classes(self) -> list[int] | None:
        """The digits train and val keep, None for all (dsls.data.classes.kept_classes)."""
        return kept_classes(self.hparams.classes, self.hparams.exclude_classes, range(self.num_classes),
                            self.dataset_name)

    def images(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The images a set holds, from the gray digits and their labels (a subclass may colour them)."""
        return x

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        x, y = load_digits_tensors()
        train_idx, val_idx, self.test_idx = digits_split(y.numpy(), hp.val_fraction, hp.test_fraction, hp.split_seed)
        kept = self.kept_classes()
        keep = keep_mask(y, kept).numpy()
        self.train_idx, self.val_idx = train_idx[keep[train_idx]], val_idx[keep[val_idx]]
        self.excluded_train_idx = None if kept is None else train_idx[~keep[train_idx]]

        def rows(idx):
            return None if idx is None else TensorDataset(self.images(x[idx], y[idx]), y[idx])

        self.train_set, self.val_set = rows(self.train_idx), rows(self.val_idx)
        self.test_set, self.excluded_train_set = rows(self.test_idx), rows(self.excluded_train_idx)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.train_set, hp.batch_size, True, hp.split_seed, hp.num_workers)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.hparams.batch_size, False, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ConfigError(f"{self.dataset_name} has no test split: set --data.test_fraction (e.g. 0.2)")
        return make_loader(self.test_set, self.hparams.batch_size, False, num_workers=self.hparams.num_workers)


# One saturated colour per class (red, green, blue, yellow, cyan, magenta, orange, violet, lime, azure): distinct hues
# and different BT.601 lumas, so the colour is a function of the digit's shape, not of its gray level.
TINTS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0],
                      [1.0, 0.0, 1.0], [1.0, 0.5, 0.0], [0.5, 0.0, 1.0], [0.5, 1.0, 0.0], [0.0, 0.5, 1.0]])


def tint(x_gray: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gray (N, 1, H, W) in [-1, 1] → RGB (N, 3, H, W) in [-1, 1]: intensity (x+1)/2 times the class tint TINTS[y]
    (the background, x = −1, stays black)."""
    u = (x_gray + 1.0) / 2.0
    return 2.0 * u * TINTS.to(x_gray)[y].view(-1, 3, 1, 1) - 1.0


class TintedDigitsDataModule(DigitsDataModule):
    """The sklearn digits, each tinted by its class colour (``TINTS``): colour is predictable from shape, which makes
    this a tiny offline colorization test set. Same split, class selection and loaders as ``DigitsDataModule``;
    batches are ``(x, y)`` with x float32 (B, 3, 8, 8) in [-1, 1] and y int64 (B,)."""

    dataset_name = "tinted_digits"
    data_shape = (3, 8, 8)

    def images(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return tint(x, y)
