"""LSUN scenes from the official lmdb folders, read with torchvision's ``LSUNClass``."""
from __future__ import annotations

import hashlib
import os
import pickle
import string
import tempfile

from torchvision import transforms as T
from torchvision.datasets import VisionDataset
from torchvision.datasets.lsun import LSUNClass

from dsls.data.images import CenterCropSquare, ImageDataModule, TransformedSubset

from dsls.errors import MissingDataError
from dsls.errors import ConfigError

LAYOUT = ("<data_dir>/{category}_train_lmdb/data.mdb "
          "(and optionally <data_dir>/{category}_val_lmdb/data.mdb, the test set)")
HOW = ("download with https://github.com/fyu/lsun (`python download.py -c {category}`) and unzip "
       "{category}_train_lmdb.zip and {category}_val_lmdb.zip into <data_dir>")


_ENVS: dict = {}


def _open_lmdb(path: str):
    """One read-only handle per lmdb per process, shared: py-lmdb refuses to open an environment twice in one
    process (e.g. for a second DataModule). Forked workers reuse the inherited handle, which py-lmdb allows for
    a read-only, lock-free environment; spawned workers open their own. Options as in torchvision's LSUNClass."""
    import lmdb

    if path not in _ENVS:
        _ENVS[path] = lmdb.open(path, max_readers=1, readonly=True, lock=False, readahead=False, meminit=False)
    return _ENVS[path]


class _LSUNClass(LSUNClass):
    """torchvision's LSUNClass (its ``__getitem__`` decodes the stored images) with its constructor redone:

    * the key list is cached as torchvision does (a pickle named ``_cache_<letters of the lmdb path>``, plus a
      path hash against collisions) but in ``cache_dir``: torchvision writes it to the current directory;
    * a cache whose length disagrees with the lmdb (an older lmdb at the same path) is rebuilt;
    * the lmdb handle comes from :func:`_open_lmdb` and is dropped when pickled (spawn workers reopen it);
    * items are (image, 0) instead of (image, None), which the default collate cannot batch.
    """

    def __init__(self, root: str, cache_dir: str):
        VisionDataset.__init__(self, root)
        self.env = _open_lmdb(root)
        with self.env.begin(write=False) as txn:
            self.length = txn.stat()["entries"]
        tag = "".join(c for c in root if c in string.ascii_letters) + "_" + hashlib.sha1(root.encode()).hexdigest()[:8]
        cache = os.path.join(cache_dir, f"_cache_{tag}")
        self.keys = None
        if os.path.isfile(cache):
            with open(cache, "rb") as f:
                self.keys = pickle.load(f)
        if self.keys is None or len(self.keys) != self.length:
            with self.env.begin(write=False) as txn:
                self.keys = list(txn.cursor().iternext(keys=True, values=False))
            tmp = f"{cache}.tmp{os.getpid()}"  # write then rename: ranks never read half a cache
            with open(tmp, "wb") as f:
                pickle.dump(self.keys, f)
            os.replace(tmp, cache)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "env": None}

    def __getitem__(self, index: int):
        if self.env is None:
            self.env = _open_lmdb(self.root)
        return super().__getitem__(index)[0], 0


class LSUNDataModule(ImageDataModule):
    """One LSUN category (default ``church_outdoor``) at ``image_size`` (default 256), labels all 0.

    Preprocessing follows score_sde: center-crop to the short side, then ``Resize(image_size, antialias=True)``;
    a horizontal flip on train only when ``random_flip``.

    Split: the official ``<category>_train_lmdb`` in lmdb key order; its last ``val_size`` (1,000) keys are
    val and the rest train. The official ``<category>_val_lmdb`` (300 images) is test when present; without
    it ``test_dataloader`` raises. A missing train lmdb raises :class:`MissingDataError`.

    Key cache: torchvision's LSUNClass pickles the key list to ``_cache_<letters of the lmdb path>`` in the
    current directory. Here it goes to ``cache_dir`` (default ``<data_dir>/.cache``, or ``<tmp>/dsls-lsun-cache``
    when ``data_dir`` is read-only); nothing is written to cwd. Delete it if you replace an lmdb by another with
    the same number of images.
    """

    dataset_name = "lsun"
    channels = 3
    num_classes = None

    def __init__(self, data_dir: str = "data/lsun", category: str = "church_outdoor", image_size: int = 256,
                 batch_size: int = 128, num_workers: int = 4, pin_memory: bool = True, seed: int = 0,
                 split_seed: int = 0, random_flip: bool = False, val_size: int = 1000, cache_dir: str | None = None):
        super().__init__(data_dir, image_size, batch_size, num_workers, pin_memory, seed, split_seed, random_flip)

    def lmdb_path(self, split: str) -> str:
        # Absolute, so the key-cache name and the lmdb registry do not depend on the working directory.
        return os.path.join(os.path.abspath(self.data_dir), f"{self.hparams.category}_{split}_lmdb")

    def _cache_dir(self) -> str:
        for d in (self.hparams.cache_dir or os.path.join(self.data_dir, ".cache"),
                  os.path.join(tempfile.gettempdir(), "dsls-lsun-cache")):
            try:
                os.makedirs(d, exist_ok=True)
                if os.access(d, os.W_OK):
                    return d
            except OSError:
                pass  # read-only data set: fall back to the temp dir
        raise OSError("no writable directory for the LSUN key cache; set --data.cache_dir")

    def build_datasets(self):
        cat, train_path, val_path = self.hparams.category, self.lmdb_path("train"), self.lmdb_path("val")
        if not os.path.isfile(os.path.join(train_path, "data.mdb")):
            raise MissingDataError(f"LSUN {cat}", train_path, LAYOUT.format(category=cat),
                                   HOW.format(category=cat))
        cache = self._cache_dir()
        full = _LSUNClass(train_path, cache)
        n_val = self.hparams.val_size
        if not 0 < n_val < len(full):
            raise ConfigError(f"--data.val_size={n_val} must be in (0, {len(full)}) for {train_path}")
        train_idx, val_idx = range(len(full) - n_val), range(len(full) - n_val, len(full))
        resize = [CenterCropSquare(), T.Resize(self.image_size, antialias=True)]
        train_tf, eval_tf = self.transform(True, resize), self.transform(False, resize)
        test = None
        if os.path.isfile(os.path.join(val_path, "data.mdb")):
            test_db = _LSUNClass(val_path, cache)
            test = TransformedSubset(test_db, range(len(test_db)), eval_tf)
        return TransformedSubset(full, train_idx, train_tf), TransformedSubset(full, val_idx, eval_tf), test
