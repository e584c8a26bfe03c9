"""The 10-class digit data sets (sklearn digits 8×8, MNIST 28×28) as tensors, split exactly as their DataModules
split them: the metric classifier trains on "train" and is scored on "heldout" (digits: val; MNIST: the official
t10k test split), which it never sees."""
from __future__ import annotations

import os
import struct

import torch

from dsls.data.digits import DigitsDataModule
from dsls.data.mnist import MNISTDataModule

HELDOUT = {"digits": "val", "mnist": "test"}  # the held-out split the classifier never trains on


def _check_name(dataset_name: str) -> None:
    if dataset_name not in HELDOUT:
        raise ValueError(f"no digit classifier for {dataset_name!r}; valid names are: {', '.join(sorted(HELDOUT))}")


def _mnist_val_size(data_dir: str) -> int:
    """The DataModule's default 5,000 val images, or a tenth of the train file when it is smaller (tiny test
    copies of MNIST); the held-out set is the test split either way."""
    dm = MNISTDataModule(data_dir=data_dir, download=False, num_workers=0)
    dm.prepare_data()  # decompresses .gz-only files, raises MissingDataError when absent
    with open(os.path.join(dm.raw_folder, "train-images-idx3-ubyte"), "rb") as f:
        n = struct.unpack(">I", f.read(8)[4:])[0]
    return min(5000, n // 10)


def _stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) tensors of a dataset of (image tensor, label). A TransformedSubset over torchvision's MNIST at 28×28
    is read straight from its uint8 array with ToTensor + Normalize(0.5, 0.5) arithmetic (checked against item 0);
    anything else goes item by item."""
    base = getattr(ds, "dataset", None)
    if hasattr(base, "data") and tuple(base.data.shape[1:]) == (28, 28) and len(ds) > 0:
        idx = torch.as_tensor(ds.indices)
        x = (base.data[idx].float().div(255).sub(0.5).div(0.5)).unsqueeze(1)
        y = torch.as_tensor(base.targets)[idx].long()
        if torch.equal(x[0], ds[0][0]):
            return x, y
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs).float(), torch.as_tensor(ys).long()


def load_splits(dataset_name: str, data_dir: str = "data") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train", "val"[, "test"], "heldout"} → (x float (N, 1, H, W) in [-1, 1], y int64), split by the DataModule."""
    _check_name(dataset_name)
    if dataset_name == "digits":
        dm = DigitsDataModule()
        dm.setup()
        splits = {"train": dm.train_set.tensors, "val": dm.val_set.tensors}
    else:
        dm = MNISTDataModule(data_dir=data_dir, download=False, num_workers=0, val_size=_mnist_val_size(data_dir))
        dm.setup()
        splits = {"train": _stack(dm.train_set), "val": _stack(dm.val_set), "test": _stack(dm.test_set)}
    splits["heldout"] = splits[HELDOUT[dataset_name]]
    return splits


def real_images(dataset_name: str, split: str = "heldout", data_dir: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """Real images (N, 1, H, W) float in [-1, 1] and their labels; "heldout" is the split the classifier never saw."""
    splits = load_splits(dataset_name, data_dir)
    if split not in splits:
        raise ValueError(f"{dataset_name} has no split {split!r}; valid: {', '.join(splits)}")
    return splits[split]
