"""MNIST (torchvision's reader and downloader) as 1-channel images in [-1, 1]."""
from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import zlib

from torchvision import transforms as T
from torchvision.datasets import MNIST

from dsls.data.images import ImageDataModule, TransformedSubset, split_indices
from dsls.errors import CorruptDataError, MissingDataError, first_line

RAW_FILES = [f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
LAYOUT = "<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)"
HOW = "pass --data.download=true (MNISTDataModule(download=True)) to fetch it with torchvision"
REFETCH = "delete it and rerun with --data.download=true to fetch it again"


def idx_problem(path: str, ndim: int) -> str | None:
    """What is wrong with an uncompressed uint8 IDX file of `ndim` dimensions (MNIST's format), or None: the header
    names the shape, so a cut-off file shows in its size (torchvision would fail on it with a reshape error)."""
    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim or head[:4] != bytes([0, 0, 0x08, ndim]):
        return f"not a {ndim}-d uint8 IDX file"
    want = len(head) + math.prod(struct.unpack(f">{ndim}I", head[4:]))
    size = os.path.getsize(path)
    return None if size == want else f"{size} bytes, its header says {want}"


class MNISTDataModule(ImageDataModule):
    """MNIST from ``<data_dir>/MNIST/raw`` (torchvision's layout).

    Split: the official 60,000 training images are permuted with ``torch.randperm`` under
    ``Generator().manual_seed(split_seed)``; the first ``val_size`` (5,000) are val, the other 55,000 train
    (each sorted by original index). Test is the official 10,000 ``t10k`` images. No augmentation; images are
    resized (antialiased) only when ``image_size`` ≠ 28. ``classes`` / ``exclude_classes`` (digits 0..9) select the
    classes of train and val after the split; test keeps every class (ImageDataModule).

    ``download=True`` fetches the files in ``prepare_data`` (only there, so only on one process under DDP).
    With ``download=False`` an existing folder is read; files present only as ``.gz`` are decompressed next to
    themselves first (torchvision reads the uncompressed files and keeps both after its own download).
    Missing files, or a failed download (no network), raise :class:`MissingDataError`; a cut-off or damaged file
    (.gz or uncompressed) raises :class:`CorruptDataError` naming it.
    """

    dataset_name = "mnist"
    channels = 1
    num_classes = 10

    def __init__(self, data_dir: str = "data", image_size: int = 28, batch_size: int = 128, num_workers: int = 4,
                 pin_memory: bool = True, seed: int = 0, split_seed: int = 0, download: bool = True,
                 val_size: int = 5000, classes: list[int] | None = None, exclude_classes: list[int] | None = None):
        super().__init__(data_dir, image_size, batch_size, num_workers, pin_memory, seed, split_seed)
        self.kept_classes()  # a bad class selection stops here, before anything trains

    @property
    def raw_folder(self) -> str:
        return os.path.join(self.data_dir, "MNIST", "raw")

    def _missing(self, reason: str = "") -> MissingDataError:
        return MissingDataError("MNIST", self.raw_folder, LAYOUT, reason + HOW)

    def prepare_data(self) -> None:
        self._decompress()  # first: torchvision would re-download when only the .gz files are there
        if self.hparams.download:
            try:
                for train in (True, False):
                    MNIST(self.data_dir, train=train, download=True)
            except (RuntimeError, OSError) as e:  # URLError is an OSError
                first = first_line(e)
                raise MissingDataError("MNIST", self.raw_folder, LAYOUT, f"the download failed ({first}); check the "
                                       "network, or copy the files above from a machine that has them and pass "
                                       "--data.download=false") from None

    def _decompress(self) -> None:
        for name in RAW_FILES:
            path = os.path.join(self.raw_folder, name)
            if not os.path.isfile(path) and os.path.isfile(path + ".gz"):
                tmp = f"{path}.tmp{os.getpid()}"  # write then rename: concurrent ranks never see half a file
                try:
                    with gzip.open(path + ".gz", "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except BaseException as e:
                    if os.path.exists(tmp):
                        os.remove(tmp)  # leave no half file behind
                    if isinstance(e, (EOFError, gzip.BadGzipFile, zlib.error)):  # a cut-off or damaged .gz
                        raise CorruptDataError("MNIST", path + ".gz", first_line(e), REFETCH) from e
                    raise
                os.replace(tmp, path)

    def build_datasets(self):
        self._decompress()
        if not all(os.path.isfile(os.path.join(self.raw_folder, f)) for f in RAW_FILES):
            raise self._missing()
        for name in RAW_FILES:
            path = os.path.join(self.raw_folder, name)
            problem = idx_problem(path, ndim=3 if "-idx3-" in name else 1)
            if problem:
                raise CorruptDataError("MNIST", path, problem, REFETCH)
        full, test = MNIST(self.data_dir, train=True), MNIST(self.data_dir, train=False)
        val_idx, train_idx = split_indices(len(full), [self.hparams.val_size], self.hparams.split_seed)
        resize = [] if self.image_size == 28 else [T.Resize(self.image_size, antialias=True)]
        tf = self.transform(train=False, resize=resize)
        return (TransformedSubset(full, train_idx, tf), TransformedSubset(full, val_idx, tf),
                TransformedSubset(test, range(len(test)), tf))
