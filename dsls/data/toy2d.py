"""Toy 2-D data: the grid25 / ring8 Gaussian mixtures (whose modes the toy metrics count), and a 2-D swiss roll.

All points are drawn once in ``setup()`` from numpy generators seeded by ``seed``; train and val are
independent draws (child seeds of one ``SeedSequence(seed)``), so a given seed always gives the same data.
Batches are plain float32 tensors of shape (B, 2), not tuples.
"""
from __future__ import annotations

import itertools

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dsls.data.classes import keep_mask, kept_classes
from dsls.data.loaders import make_loader
from dsls.errors import ConfigError

#: Swiss roll: t ~ U[1.5π, 4.5π], (x, y) = (t cos t, t sin t) as in sklearn's make_swiss_roll (its x and z
#: coordinates), scaled by 4 / (4.5π) so the outer arm reaches radius 4 (the grid25 extent), plus N(0, 0.05²)
#: noise added after scaling.
SWISSROLL_SCALE = 4.0 / (4.5 * np.pi)
SWISSROLL_NOISE = 0.05

#: name → (means (K, 2), std). Both mixtures have equal weights.
MIXTURES: dict[str, tuple[np.ndarray, float]] = {
    # 5×5 grid at {-4, -2, 0, 2, 4}².
    "grid25": (np.array(list(itertools.product(range(-4, 5, 2), repeat=2)), dtype=np.float64), 0.05),
    # 8 means on the circle of radius 2, at angles 2πk/8.
    "ring8": (
        2.0 * np.stack([np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)], axis=1),
        0.02,
    ),
}


def mixture_spec(name: str) -> tuple[np.ndarray, float]:
    """Return a copy of the mixture's means (K, 2) and its per-component std."""
    if name not in MIXTURES:
        raise ValueError(f"unknown toy mixture {name!r}; valid names are: {', '.join(sorted(MIXTURES))}")
    means, std = MIXTURES[name]
    return means.copy(), std


NAMES = (*MIXTURES, "swissroll")


def sample_toy2d(name: str, n: int, rng: np.random.Generator, with_labels: bool = False):
    """Draw ``n`` points (float32, (n, 2)) of data set ``name`` with ``rng``; with_labels also returns each point's
    mixture component (int64, (n,)), the same points either way."""
    if name == "swissroll":
        if with_labels:
            raise ValueError("swissroll has no labels (only the mixtures grid25 and ring8 do)")
        t = 1.5 * np.pi * (1 + 2 * rng.random(n))
        x = SWISSROLL_SCALE * np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
        return (x + SWISSROLL_NOISE * rng.standard_normal((n, 2))).astype(np.float32)
    if name not in MIXTURES:
        raise ValueError(f"unknown toy data set {name!r}; valid names are: {', '.join(NAMES)}")
    # Equal-weight mixture: a uniformly chosen mean plus isotropic Gaussian noise of the mixture's std.
    means, std = mixture_spec(name)
    k = rng.integers(len(means), size=n)
    x = (means[k] + std * rng.standard_normal((n, 2))).astype(np.float32)
    return (x, k.astype(np.int64)) if with_labels else x


class _Points(Dataset):
    """Rows of an (N, 2) tensor, or (point, label) pairs when labels are given; the default collate stacks them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i] if self.y is None else (self.x[i], self.y[i])


class Toy2DDataModule(L.LightningDataModule):
    """grid25 | ring8 | swissroll: ``train_size`` + ``val_size`` (+ ``test_size``) points drawn from ``seed``.

    The mixtures' modes are their classes (0 .. K−1, in MIXTURES' order), whether or not batches carry them
    (``labels``). ``classes`` / ``exclude_classes`` (dsls.data.classes) drop the points of other modes from the train
    and val draws, which then hold fewer points; the test draw keeps every mode, and ``excluded_train_set`` holds the
    train draw's points of the dropped modes. ``test_size`` 0 (the default): no test split. The three draws use child
    seeds 0, 1, 2 of ``SeedSequence(seed)``, so adding a test split leaves train and val as they were.
    """

    def __init__(
        self,
        name: str = "grid25",
        train_size: int = 50000,
        val_size: int = 2500,
        batch_size: int = 512,
        seed: int = 0,
        num_workers: int = 0,
        labels: bool = False,
        test_size: int = 0,
        classes: list[int] | None = None,
        exclude_classes: list[int] | None = None,
    ):
        """labels: batches are (x, mode index) instead of x, for the latent classifier (mixtures only)."""
        super().__init__()
        if name not in NAMES:
            raise ValueError(f"unknown toy data set {name!r}; valid names are: {', '.join(NAMES)}")
        if batch_size < 1:
            raise ConfigError(f"--data.batch_size={batch_size} must be >= 1")
        if test_size < 0:
            raise ConfigError(f"--data.test_size={test_size} must be >= 0 (0: no test split)")
        if labels and name not in MIXTURES:
            raise ValueError(f"--data.labels=true needs a mixture with modes to label ({', '.join(MIXTURES)}), "
                             f"not {name!r}")
        self.save_hyperparameters()
        self.dataset_name = name  # read by the phases (checkpoint tag, toy metrics lookup)
        self.kept_classes()  # a bad class selection stops here, before anything trains
        self.train_set: _Points | None = None
        self.val_set: _Points | None = None
        self.test_set: _Points | None = None
        self.excluded_train_set: _Points | None = None

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def num_classes(self) -> int | None:
        return len(mixture_spec(self.hparams.name)[0]) if self.hparams.labels else None

    def kept_classes(self) -> list[int] | None:
        """The modes train and val keep, None for all (dsls.data.classes.kept_classes)."""
        hp = self.hparams
        if hp.name not in MIXTURES:
            if hp.classes is not None or hp.exclude_classes is not None:
                raise ConfigError(f"{hp.name} has no modes to select: --data.classes and --data.exclude_classes need "
                                  f"a mixture ({', '.join(MIXTURES)})")
            return None
        return kept_classes(hp.classes, hp.exclude_classes, range(len(mixture_spec(hp.name)[0])), hp.name)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        train_ss, val_ss, test_ss = np.random.SeedSequence(hp.seed).spawn(3)
        kept = self.kept_classes()
        self.train_set, self.excluded_train_set = self._points(hp.train_size, train_ss, kept)
        self.val_set = self._points(hp.val_size, val_ss, kept)[0]
        self.test_set = self._points(hp.test_size, test_ss, None)[0] if hp.test_size else None

    def _points(self, n: int, seed_seq, kept: list[int] | None) -> tuple[_Points, _Points | None]:
        """n points drawn from seed_seq: (those of the kept modes, those of the others or None when all are kept)."""
        hp = self.hparams
        if not hp.labels and kept is None:
            return _Points(torch.from_numpy(sample_toy2d(hp.name, n, np.random.default_rng(seed_seq)))), None
        x, y = map(torch.from_numpy, sample_toy2d(hp.name, n, np.random.default_rng(seed_seq), with_labels=True))
        keep = keep_mask(y, kept)
        parts = [_Points(x[m], y[m] if hp.labels else None) for m in (keep, ~keep)]
        return parts[0], (None if kept is None else parts[1])

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.hparams.batch_size, True, self.hparams.seed, self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.hparams.batch_size, False, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ConfigError(f"{self.dataset_name} has no test split: set --data.test_size (e.g. 2500)")
        return make_loader(self.test_set, self.hparams.batch_size, False, num_workers=self.hparams.num_workers)
