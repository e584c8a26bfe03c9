"""scikit-learn's 8×8 handwritten digits (bundled with sklearn, so no download is ever needed)."""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from dsls.data.loaders import make_loader
from dsls.errors import ConfigError


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images as float32 (N, 1, 8, 8) in [-1, 1] (pixel/8 − 1, from sklearn's [0, 16]) and int64 labels."""
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    return x, y


class DigitsDataModule(L.LightningDataModule):
    """The 1797 sklearn digits, split once into train / val.

    The split is stratified by class and fixed by ``split_seed`` (sklearn's ``train_test_split`` with
    ``stratify=labels``, ``random_state=split_seed``): the val set holds ceil(val_fraction · 1797) images,
    which for the default 0.2 is 360 val / 1437 train, with every class in (nearly) the same proportion
    in both. Index lists are sorted, so the same ``split_seed`` gives identical sets and order.
    Batches are ``(x, y)``: x float32 (B, 1, 8, 8) in [-1, 1], y int64 (B,). The train loader shuffles
    (seeded from ``split_seed`` and the epoch) and drops the last partial batch; the val loader keeps order and every image.
    """

    dataset_name = "digits"
    data_shape = (1, 8, 8)
    num_classes = 10

    def __init__(self, batch_size: int = 128, val_fraction: float = 0.2, split_seed: int = 0, num_workers: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"--data.batch_size={batch_size} must be >= 1")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.train_idx: np.ndarray | None = None
        self.val_idx: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits_tensors()
        train_idx, val_idx = train_test_split(np.arange(len(y)), test_size=self.hparams.val_fraction,
                                              stratify=y.numpy(), random_state=self.hparams.split_seed)
        self.train_idx, self.val_idx = np.sort(train_idx), np.sort(val_idx)
        self.train_set = TensorDataset(x[self.train_idx], y[self.train_idx])
        self.val_set = TensorDataset(x[self.val_idx], y[self.val_idx])

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.train_set, hp.batch_size, True, hp.split_seed, hp.num_workers)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.hparams.batch_size, False, num_workers=self.hparams.num_workers)


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
    this a tiny offline colorization test set. Same split and loaders as ``DigitsDataModule``; batches are
    ``(x, y)`` with x float32 (B, 3, 8, 8) in [-1, 1] and y int64 (B,)."""

    dataset_name = "tinted_digits"
    data_shape = (3, 8, 8)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        super().setup(stage)
        for name in ("train_set", "val_set"):
            x, y = getattr(self, name).tensors
            setattr(self, name, TensorDataset(tint(x, y), y))
