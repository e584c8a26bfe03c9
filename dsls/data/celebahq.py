"""CelebA-HQ from a folder or a .zip of images (no download: the data set has to be built by hand)."""
from __future__ import annotations

import os
import zipfile
from pathlib import PurePosixPath

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from dsls.data.images import ImageDataModule, TransformedSubset, split_indices

from dsls.errors import MissingDataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
LAYOUT = ("<data_dir>/**/*.{png,jpg,jpeg,webp} (a folder, searched recursively), or data_dir = a .zip of such "
          "images, e.g. stylegan2-ada-pytorch dataset_tool.py output (PNGs in subfolders + dataset.json; "
          "labels are ignored)")
HOW = ("no automatic download. Build the images with https://github.com/tkarras/progressive_growing_of_gans "
       "(dataset_tool.py create_celebahq), optionally pack them with "
       "https://github.com/NVlabs/stylegan2-ada-pytorch dataset_tool.py "
       "(--source=<pngs> --dest=celebahq256.zip --width=256 --height=256), and point --data.data_dir at it")


def _is_image(name: str) -> bool:
    # Skip hidden files/folders (.DS_Store, __MACOSX/._x.png are junk that zip tools add).
    parts = PurePosixPath(name.replace(os.sep, "/")).parts
    return name.lower().endswith(IMAGE_EXTS) and not any(p.startswith((".", "__MACOSX")) for p in parts)


class ImageFiles(Dataset):
    """All images under a folder or inside a .zip, sorted by relative path; items are (RGB PIL image, 0).

    The ZipFile is opened lazily and reopened in each new process: a handle shared across a fork would share
    one file offset between DataLoader workers, and a ZipFile cannot be pickled for spawn workers.
    """

    def __init__(self, source: str):
        self.source = source
        self.is_zip = os.path.isfile(source) and zipfile.is_zipfile(source)
        if self.is_zip:
            with zipfile.ZipFile(source) as zf:
                names = zf.namelist()
        else:
            names = [os.path.relpath(os.path.join(d, f), source) for d, _, fs in os.walk(source) for f in fs]
        self.files = sorted(n for n in names if _is_image(n))
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None}

    def _open(self, name: str):
        if not self.is_zip:
            return open(os.path.join(self.source, name), "rb")
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip, self._zip_pid = zipfile.ZipFile(self.source), os.getpid()
        return self._zip.open(name)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with self._open(self.files[i]) as f:
            return Image.open(f).convert("RGB"), 0  # convert() decodes fully before the file closes


class CelebAHQDataModule(ImageDataModule):
    """CelebA-HQ (or any unlabelled image folder/zip) resized to ``image_size`` (64/128/256; default 256).

    Images: every PNG/JPEG/WebP under ``data_dir`` (recursively) or inside ``data_dir`` when it is a .zip,
    sorted by path. Preprocessing: ``Resize(image_size, antialias=True)`` on the short side, then
    ``CenterCrop(image_size)``; a horizontal flip on train only when ``random_flip``. Labels are all 0.

    Split: the sorted list is permuted with ``torch.randperm`` under ``Generator().manual_seed(split_seed)``;
    the first ``test_size`` (1,000) are test, the next ``val_size`` (1,000) val, the rest (28,000 of the
    30,000 CelebA-HQ images) train, each sorted by path. A missing or image-less source raises
    :class:`MissingDataError`.
    """

    dataset_name = "celebahq"
    channels = 3
    num_classes = None

    def __init__(self, data_dir: str = "data/celebahq", image_size: int = 256, batch_size: int = 128,
                 num_workers: int = 4, pin_memory: bool = True, seed: int = 0, split_seed: int = 0,
                 random_flip: bool = False, val_size: int = 1000, test_size: int = 1000):
        super().__init__(data_dir, image_size, batch_size, num_workers, pin_memory, seed, split_seed, random_flip)

    def build_datasets(self):
        files = ImageFiles(self.data_dir) if os.path.exists(self.data_dir) else None
        if files is None or len(files) == 0:
            what = "no images in" if files is not None else "nothing at"
            raise MissingDataError("CelebA-HQ", f"{self.data_dir} ({what} it)", LAYOUT, HOW)
        hp = self.hparams
        test_idx, val_idx, train_idx = split_indices(len(files), [hp.test_size, hp.val_size], hp.split_seed)
        resize = [T.Resize(self.image_size, antialias=True), T.CenterCrop(self.image_size)]
        train_tf, eval_tf = self.transform(True, resize), self.transform(False, resize)
        return (TransformedSubset(files, train_idx, train_tf), TransformedSubset(files, val_idx, eval_tf),
                TransformedSubset(files, test_idx, eval_tf))
