"""CIFAR-10 (torchvision's reader and downloader) as 3-channel images in [-1, 1]."""
from __future__ import annotations

import os
import pickle

from torchvision import transforms as T
from torchvision.datasets import CIFAR10

from dsls.data.images import ImageDataModule, TransformedSubset, split_indices
from dsls.errors import CorruptDataError, MissingDataError, first_line

FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
LAYOUT = "<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
HOW = f"pass --data.download=true (CIFAR10DataModule(download=True)), or extract {URL} into <data_dir>"
REFETCH = f"delete it and rerun with --data.download=true, or extract {URL} into <data_dir> again"


def batch_problem(path: str) -> str | None:
    """What is wrong with one of the python pickles (a data batch, or batches.meta), or None."""
    meta = os.path.basename(path) == "batches.meta"
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # as torchvision reads them
    except Exception as e:  # a damaged pickle fails in any of the unpickler's steps
        return f"not a readable pickle: {first_line(e)}"
    key = "label_names" if meta else "data"
    if not isinstance(entry, dict) or key not in entry:
        return f"no {key!r} entry"
    if not meta and getattr(entry["data"], "size", 1) % 3072:
        return "its 'data' is not whole 3x32x32 images"
    return None


class _PresenceCheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 with the per-file md5s set to None, so its ``check_integrity`` tests that each
    file exists instead of hashing it. Used only for ``download=False`` (a folder the user provides, possibly
    a re-packed or test copy); with ``download=True`` the stock class verifies every md5."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 from ``<data_dir>/cifar-10-batches-py`` (torchvision's layout: the official python pickles).

    Split: the official 50,000 training images are permuted with ``torch.randperm`` under
    ``Generator().manual_seed(split_seed)``; the first ``val_size`` (5,000) are val, the other 45,000 train
    (each sorted by original index). Test is the official 10,000 ``test_batch`` images. The train set gets a
    random horizontal flip when ``random_flip`` (default on); val/test are never flipped. Images are resized
    (antialiased) only when ``image_size`` ≠ 32. ``classes`` / ``exclude_classes`` (0..9, torchvision's class order:
    airplane, automobile, ..., truck) select the classes of train and val after the split; test keeps every class.

    ``download=True`` fetches and md5-checks the archive in ``prepare_data`` only. With ``download=False``
    an existing folder is read and the files are checked for presence only (see ``_PresenceCheckedCIFAR10``).
    Missing files, or a failed download (no network), raise :class:`MissingDataError`; a damaged file raises
    :class:`CorruptDataError` naming it.
    """

    dataset_name = "cifar10"
    channels = 3
    num_classes = 10

    def __init__(self, data_dir: str = "data", image_size: int = 32, batch_size: int = 128, num_workers: int = 4,
                 pin_memory: bool = True, seed: int = 0, split_seed: int = 0, random_flip: bool = True,
                 download: bool = True, val_size: int = 5000, classes: list[int] | None = None,
                 exclude_classes: list[int] | None = None):
        super().__init__(data_dir, image_size, batch_size, num_workers, pin_memory, seed, split_seed, random_flip)
        self.kept_classes()  # a bad class selection stops here, before anything trains

    @property
    def folder(self) -> str:
        return os.path.join(self.data_dir, CIFAR10.base_folder)

    def _missing(self, reason: str = "") -> MissingDataError:
        return MissingDataError("CIFAR-10", self.folder, LAYOUT, reason + HOW)

    def prepare_data(self) -> None:
        if self.hparams.download:
            try:
                CIFAR10(self.data_dir, train=True, download=True)
            except (RuntimeError, OSError) as e:  # URLError is an OSError
                first = first_line(e)
                raise MissingDataError("CIFAR-10", self.folder, LAYOUT, f"the download failed ({first}); check the "
                                       f"network, or extract {URL} into <data_dir> and pass --data.download=false") from None

    def _read(self, cls, train: bool) -> CIFAR10:
        try:
            return cls(self.data_dir, train=train)
        except Exception as e:  # torchvision's error does not say which file: find the damaged one
            names = [name for name, _ in (cls.train_list if train else cls.test_list)] + ["batches.meta"]
            for name in names:
                problem = batch_problem(os.path.join(self.folder, name))
                if problem:
                    raise CorruptDataError("CIFAR-10", os.path.join(self.folder, name), problem, REFETCH) from e
            raise

    def build_datasets(self):
        if not all(os.path.isfile(os.path.join(self.folder, f)) for f in FILES):
            raise self._missing()
        cls = CIFAR10 if self.hparams.download else _PresenceCheckedCIFAR10
        full, test = self._read(cls, train=True), self._read(cls, train=False)
        val_idx, train_idx = split_indices(len(full), [self.hparams.val_size], self.hparams.split_seed)
        resize = [] if self.image_size == 32 else [T.Resize(self.image_size, antialias=True)]
        train_tf, eval_tf = self.transform(True, resize), self.transform(False, resize)
        return (TransformedSubset(full, train_idx, train_tf), TransformedSubset(full, val_idx, eval_tf),
                TransformedSubset(test, range(len(test)), eval_tf))
