"""Shared pieces of the image DataModules: the missing- and corrupt-data errors, the [-1, 1] transforms, class
selection on index subsets and the base class."""
from __future__ import annotations

from typing import Callable, Sequence

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from dsls.data.classes import keep_mask, kept_classes
from dsls.data.loaders import make_loader
from dsls.errors import ConfigError
from dsls.errors import CorruptDataError, MissingDataError  # noqa: F401  (defined there; importable here)


class CenterCropSquare:
    """Center-crop a PIL image to its short side (a class, not a lambda, so transforms pickle for spawn workers)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return TF.center_crop(img, [min(img.size)] * 2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def to_signed_tensor(channels: int) -> list[Callable]:
    """PIL image → float32 (C, H, W) in [-1, 1]: ToTensor gives [0, 1], Normalize(0.5, 0.5) maps it to [-1, 1]."""
    return [T.ToTensor(), T.Normalize([0.5] * channels, [0.5] * channels)]


class TransformedSubset(Dataset):
    """``dataset[indices[i]]`` with ``transform`` applied to the image: one underlying dataset (one copy of the
    pixels) can serve train and val with different transforms."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Callable):
        self.dataset, self.indices, self.transform = dataset, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        img, y = self.dataset[self.indices[i]]
        return self.transform(img), y


def split_indices(n: int, sizes: Sequence[int], seed: int) -> list[list[int]]:
    """Permute range(n) with ``torch.randperm`` under ``Generator().manual_seed(seed)``; the first ``sizes[0]``
    go to the first part, the next ``sizes[1]`` to the second, …, and the rest to a last part. Each part is
    sorted, so a given (n, sizes, seed) always gives the same sets in the same order. The held-out sizes are
    ``[val_size]`` or ``[test_size, val_size]``, which is how the error names them."""
    if sum(sizes) >= n:
        flags = ("--data.test_size", "--data.val_size")[-len(sizes):]
        given = " + ".join(f"{f}={s}" for f, s in zip(flags, sizes))
        raise ConfigError(f"{given} leaves no training images: the data set has {n}; keep the total below {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    bounds = [0, *torch.tensor(list(sizes)).cumsum(0).tolist(), n]
    return [sorted(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def subset_labels(ds: TransformedSubset) -> torch.Tensor:
    """The labels of a TransformedSubset's rows, read from its dataset's ``targets`` (torchvision's MNIST and CIFAR10,
    dsls.data.imagefolder.ImageFiles) without loading any image."""
    return torch.as_tensor(ds.dataset.targets)[torch.as_tensor(ds.indices, dtype=torch.long)]


def split_classes(ds: TransformedSubset, kept: Sequence[int] | None,
                  transform: Callable | None = None) -> tuple[TransformedSubset, TransformedSubset | None]:
    """(the rows of `ds` whose class is kept, the other rows with `transform` (default: ds's own)); with no selection
    (`kept` None), (ds, None)."""
    if kept is None:
        return ds, None
    mask = keep_mask(subset_labels(ds), kept).tolist()
    rows = [[i for i, k in zip(ds.indices, mask) if k == keep] for keep in (True, False)]
    return (TransformedSubset(ds.dataset, rows[0], ds.transform),
            TransformedSubset(ds.dataset, rows[1], transform or ds.transform))


class ImageDataModule(L.LightningDataModule):
    """Base class: subclasses set ``dataset_name`` / ``channels`` / ``num_classes`` and implement
    :meth:`build_datasets`. Batches are ``(x, y)``: x float32 (B, C, image_size, image_size) in [-1, 1],
    y int64 (B,) (all 0 for unlabelled data). The train loader shuffles (``dsls.data.loaders.make_loader``: a
    permutation seeded from ``seed`` and the epoch) and drops the last partial batch; val/test keep order and
    every image. ``split_seed`` fixes the split independently of ``seed``, so changing the shuffle seed keeps
    the same val/test images.

    Labelled subclasses take ``classes`` / ``exclude_classes`` (dsls.data.classes): train and val then hold only the
    kept classes, ``excluded_train_set`` the train split's other images (with the val transform: no flip), and test
    every class.
    """

    dataset_name = "images"
    channels = 3
    num_classes: int | None = None

    def __init__(self, data_dir: str, image_size: int, batch_size: int = 128, num_workers: int = 4,
                 pin_memory: bool = True, seed: int = 0, split_seed: int = 0, random_flip: bool = False):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"--data.batch_size={batch_size} must be >= 1")
        self.save_hyperparameters()  # also picks up the subclass's own init args
        self.data_dir, self.image_size = str(data_dir), int(image_size)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.excluded_train_set: Dataset | None = None

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def transform(self, train: bool, resize: Sequence[Callable] = ()) -> T.Compose:
        """``resize`` steps, then a horizontal flip on train when ``random_flip``, then the [-1, 1] scaling."""
        flip = [T.RandomHorizontalFlip()] if train and self.hparams.random_flip else []
        return T.Compose([*resize, *flip, *to_signed_tensor(self.channels)])

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        """Return (train, val, test) datasets of (image tensor, int label); raise MissingDataError if absent."""
        raise NotImplementedError

    @property
    def class_names(self) -> Sequence | None:
        """The classes the labels 0 .. K−1 stand for, in label order; None for unlabelled data."""
        return range(self.num_classes) if self.num_classes else None

    def kept_classes(self) -> list[int] | None:
        """The class indices train and val keep (``--data.classes`` / ``--data.exclude_classes``), None for all;
        a bad selection is a ConfigError naming the valid classes."""
        classes, exclude = self.hparams.get("classes"), self.hparams.get("exclude_classes")
        names = self.class_names
        if names is None:
            if classes is not None or exclude is not None:
                raise ConfigError(f"{self.dataset_name} has no labels, so --data.classes and --data.exclude_classes "
                                  "do not apply: leave them unset")
            return None
        return kept_classes(classes, exclude, names, self.dataset_name)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            train, val, self.test_set = self.build_datasets()
            kept = self.kept_classes()
            self.train_set, self.excluded_train_set = split_classes(train, kept, val.transform)
            self.val_set = split_classes(val, kept)[0]

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        # The project's shared loader: train shuffle is a function of (seed, epoch), so resumed runs match.
        hp = self.hparams  # pinning without CUDA only earns a warning from DataLoader
        pin = hp.pin_memory and torch.cuda.is_available()
        return make_loader(ds, hp.batch_size, train, hp.seed, hp.num_workers, pin)

    def train_views(self) -> list[Dataset]:
        """The training set once per augmented view, without randomness: as it is, and mirrored when the train
        transform flips at random. A frozen encoder's code cache (phase 2) holds the codes of each view."""
        steps = self.train_set.transform.transforms
        plain = [t for t in steps if not isinstance(t, T.RandomHorizontalFlip)]
        views = [plain] + ([[T.RandomHorizontalFlip(p=1.0) if isinstance(t, T.RandomHorizontalFlip) else t
                             for t in steps]] if len(plain) < len(steps) else [])
        ts = self.train_set
        return [TransformedSubset(ts.dataset, ts.indices, T.Compose(v)) for v in views]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise RuntimeError(f"{self.dataset_name}: no test split on disk (see the DataModule's docstring)")
        return self._loader(self.test_set, train=False)
