"""CelebA-HQ from a folder or a .zip of images (no download: the data set has to be built by hand): a case of
dsls.data.imagefolder's reader, without labels and with its split given in image counts."""
from __future__ import annotations

import os

from dsls.data.imagefolder import IMAGE_EXTS, ImageFiles, readable, resize_crop  # noqa: F401  (importable here)
from dsls.data.images import ImageDataModule, TransformedSubset, split_indices
from dsls.errors import MissingDataError

LAYOUT = ("<data_dir>/**/*.{png,jpg,jpeg,webp} (a folder, searched recursively), or data_dir = a .zip of such "
          "images, e.g. stylegan2-ada-pytorch dataset_tool.py output (PNGs in subfolders + dataset.json; "
          "labels are ignored)")
HOW = ("no automatic download. Build the images with https://github.com/tkarras/progressive_growing_of_gans "
       "(dataset_tool.py create_celebahq), optionally pack them with "
       "https://github.com/NVlabs/stylegan2-ada-pytorch dataset_tool.py "
       "(--source=<pngs> --dest=celebahq256.zip --width=256 --height=256), and point --data.data_dir at it")


class CelebAHQDataModule(ImageDataModule):
    """CelebA-HQ (or any unlabelled image folder/zip) resized to ``image_size`` (64/128/256; default 256).

    Images: every PNG/JPEG/WebP under ``data_dir`` (recursively) or inside ``data_dir`` when it is a .zip,
    sorted by path, each checked once in ``setup`` (dsls.data.imagefolder.readable: an unreadable file is a
    CorruptDataError naming it, or, with ``skip_bad_files``, left out and reported). Preprocessing:
    ``Resize(image_size, antialias=True)`` on the short side, then ``CenterCrop(image_size)``; a horizontal flip on
    train only when ``random_flip``. Labels are all 0. For labelled folders, fractions and class selection see
    dsls.data.imagefolder.ImageFolderDataModule.

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
                 random_flip: bool = False, val_size: int = 1000, test_size: int = 1000,
                 skip_bad_files: bool = False):
        super().__init__(data_dir, image_size, batch_size, num_workers, pin_memory, seed, split_seed, random_flip)
        self.skipped_files: list[tuple[str, str]] = []

    def build_datasets(self):
        hp = self.hparams
        files = ImageFiles(self.data_dir) if os.path.exists(self.data_dir) else None
        if files is not None:
            files, self.skipped_files = readable(files, hp.skip_bad_files, "CelebA-HQ")
        if files is None or len(files) == 0:
            what = "no readable images in" if files is not None else "nothing at"
            raise MissingDataError("CelebA-HQ", f"{self.data_dir} ({what} it)", LAYOUT, HOW)
        test_idx, val_idx, train_idx = split_indices(len(files), [hp.test_size, hp.val_size], hp.split_seed)
        train_tf, eval_tf = (self.transform(train, resize_crop(self.image_size)) for train in (True, False))
        return (TransformedSubset(files, train_idx, train_tf), TransformedSubset(files, val_idx, eval_tf),
                TransformedSubset(files, test_idx, eval_tf))
