"""Your own images: a folder or a .zip of PNG/JPEG/WebP files, with class subfolders as labels when there are any
(docs/your-own-data.md). CelebA-HQ's module (dsls.data.celebahq) reads its folder or zip with the same pieces."""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from dsls.data.cifar10 import CIFAR10DataModule
from dsls.data.digits import DigitsDataModule, TintedDigitsDataModule
from dsls.data.images import ImageDataModule, TransformedSubset, split_indices
from dsls.data.lsun import LSUNDataModule
from dsls.data.mnist import MNISTDataModule
from dsls.data.toy2d import NAMES as TOY_NAMES
from dsls.distributed import is_rank_zero
from dsls.errors import ConfigError, CorruptDataError, MissingDataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
LAYOUT = ("<data_dir>/<class>/**/*.{png,jpg,jpeg,webp} (one folder per class), or the images without class folders, "
          "or <data_dir>/{train,test}/ each holding either; or data_dir = a .zip of any of these")
HOW = "point --data.data_dir at your folder or .zip of images (docs/your-own-data.md)"
REPLACE = "remove or replace it"
SKIP_HOW = (f"{REPLACE}, or pass --data.skip_bad_files=true to leave out the files that cannot be read (they are "
            "counted and reported)")
#: the built-in data sets' names: the metrics and the task defaults read a data set by its name, so a folder of
#: images must not take one of them (CelebA-HQ's module is a case of this one and keeps its own)
BUILT_IN = {*TOY_NAMES, "celebahq"} | {m.dataset_name for m in (DigitsDataModule, TintedDigitsDataModule,
                                                                  MNISTDataModule, CIFAR10DataModule, LSUNDataModule)}


def is_image(name: str) -> bool:
    """An image by its extension, outside hidden files and folders (.DS_Store, __MACOSX/._x.png: junk zip tools add)."""
    parts = PurePosixPath(name).parts
    return name.lower().endswith(IMAGE_EXTS) and not any(p.startswith((".", "__MACOSX")) for p in parts)


def list_images(source: str) -> list[str]:
    """Every image under a folder (recursively) or inside a .zip, as sorted '/'-separated relative paths."""
    if os.path.isfile(source) and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
    else:
        names = [os.path.relpath(os.path.join(d, f), source).replace(os.sep, "/")
                 for d, _, fs in os.walk(source) for f in fs]
    return sorted(n for n in names if is_image(n))


def _reason(e: Exception) -> str:
    """What went wrong reading a file, in a few words (PIL's unidentified-image message names a file object)."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image PIL can identify"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class ImageFiles(Dataset):
    """Images of a folder or a .zip: items are (RGB PIL image, label), `files` the relative paths (default: every
    image of the source, sorted), `targets` their labels (default all 0).

    The ZipFile is opened lazily and reopened in each new process: a handle shared across a fork would share
    one file offset between DataLoader workers, and a ZipFile cannot be pickled for spawn workers.
    """

    def __init__(self, source: str, files: list[str] | None = None, targets: list[int] | None = None):
        self.source = source
        self.is_zip = os.path.isfile(source) and zipfile.is_zipfile(source)
        self.files = list_images(source) if files is None else list(files)
        self.targets = [0] * len(self.files) if targets is None else list(targets)
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None}

    def where(self, i: int) -> str:
        """File i as a user finds it: a path, or `<member> in <zip>`."""
        return f"{self.files[i]} in {self.source}" if self.is_zip else os.path.join(self.source, self.files[i])

    def _open(self, name: str):
        if not self.is_zip:
            return open(os.path.join(self.source, name), "rb")
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip, self._zip_pid = zipfile.ZipFile(self.source), os.getpid()
        return self._zip.open(name)

    def problem(self, i: int) -> str | None:
        """What is wrong with file i, or None: PIL reads its header and verifies what its format allows without
        decoding (a PNG's chunk checksums, so a cut-off PNG shows; a JPEG cut off after its header does not)."""
        try:
            with self._open(self.files[i]) as f:
                Image.open(f).verify()
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for a bad file
            return _reason(e)
        return None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            with self._open(self.files[i]) as f:
                img = Image.open(f).convert("RGB")  # convert() decodes fully before the file closes
        except Exception as e:  # a file that passed the check but does not decode: still named
            raise CorruptDataError("image", self.where(i), _reason(e), REPLACE) from e
        return img, self.targets[i]


def readable(files: ImageFiles, skip: bool, name: str) -> tuple[ImageFiles, list[tuple[str, str]]]:
    """Check every file once (ImageFiles.problem) and return (the readable ones, the (file, reason) of the others).
    Without `skip` the first unreadable file stops the run (CorruptDataError naming it, with how many more there
    are); with it they are left out and reported in one line (rank 0): nothing is dropped silently."""
    bad = [(i, p) for i in range(len(files)) if (p := files.problem(i)) is not None]
    if not bad:
        return files, []
    skipped = [(files.where(i), p) for i, p in bad]
    if not skip:
        more = f"; {len(bad) - 1} more of the {len(files)} files cannot be read either" if len(bad) > 1 else ""
        raise CorruptDataError(f"{name} image", skipped[0][0], skipped[0][1] + more, SKIP_HOW)
    if is_rank_zero():
        shown = "; ".join(f"{where} ({why})" for where, why in skipped[:5]) + ("; ..." if len(bad) > 5 else "")
        print(f"note: {name}: skipped {len(bad)} of {len(files)} image files that cannot be read "
              f"(--data.skip_bad_files=true): {shown}")
    gone = {i for i, _ in bad}
    keep = [i for i in range(len(files)) if i not in gone]
    return ImageFiles(files.source, [files.files[i] for i in keep], [files.targets[i] for i in keep]), skipped


def resize_crop(image_size: int) -> list:
    """Resize the short side to image_size (antialiased), then centre-crop a square of that size."""
    return [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]


@dataclass
class Layout:
    """A source's images by split: (file, label) pairs for train (all of them, without a test/ folder) and test (None
    without one); `class_names` in label order, [] when the images have no class folders."""

    train: list[tuple[str, int]]
    test: list[tuple[str, int]] | None = None
    class_names: list[str] = field(default_factory=list)


def _top(files: list[str]) -> tuple[set[str], list[str]]:
    """The first-level folders of relative paths, and the files that sit at the top level itself."""
    return {f.split("/", 1)[0] for f in files if "/" in f}, [f for f in files if "/" not in f]


def find_layout(files: list[str], labels: bool, source: str) -> Layout:
    """How a source's images are laid out (see ImageFolderDataModule): a single folder that holds everything (a zip
    of a folder) is looked through; top-level `train/` and `test/` alone are the splits; other first-level folders are
    classes (with `labels`). Images both at a level and in folders below it are a ConfigError. The pairs' paths are
    the files' own, relative to the source."""
    root = ""
    folders, loose = _top(files)
    if len(folders) == 1 and not loose:  # e.g. `zip -r images.zip images/`: look inside
        root = f"{next(iter(folders))}/"
        folders, loose = _top([f[len(root):] for f in files])

    def below(prefix: str) -> list[str]:  # the files under root + prefix, relative to it
        return [f[len(root + prefix):] for f in files if f.startswith(root + prefix)]

    def classes_of(prefix: str) -> dict[str, list[str]]:  # class folder ("" for none) -> its files, under prefix
        part = below(prefix)
        sub, flat = _top(part)
        if not labels or not sub:
            return {"": part}
        if flat:
            raise ConfigError(f"{source}: {root + prefix or 'the top level'} has images both in itself (e.g. "
                              f"{flat[0]}) and in folders (e.g. {sorted(sub)[0]}/): put every image in a class "
                              "folder, or pass --data.labels=false to read them all without labels")
        return {c: [f for f in part if f.startswith(c + "/")] for c in sorted(sub)}

    def pairs(by_class: dict[str, list[str]], prefix: str, names: list[str]) -> list[tuple[str, int]]:
        return [(root + prefix + f, names.index(c) if c else 0) for c, fs in by_class.items() for f in fs]

    if folders == {"train", "test"} and not loose:
        split = {s: classes_of(s + "/") for s in ("train", "test")}
        labelled = {s: "" not in by for s, by in split.items()}
        if labelled["train"] != labelled["test"]:
            with_, without = ("train", "test") if labelled["train"] else ("test", "train")
            raise ConfigError(f"{source}: {with_}/ has class folders but {without}/ has none: give both the same "
                              "class folders, or pass --data.labels=false")
        names = sorted({c for by in split.values() for c in by if c})
        return Layout(pairs(split["train"], "train/", names), pairs(split["test"], "test/", names), names)
    by_class = classes_of("")
    names = [c for c in by_class if c]
    return Layout(pairs(by_class, "", names), None, names)


def _fraction_count(fraction: float, n: int) -> int:
    """How many of n images a fraction holds out: rounded up (0.1 of 30 is 3, not the 4 that float error gives)."""
    return math.ceil(fraction * n - 1e-9)


class ImageFolderDataModule(ImageDataModule):
    """Your own images: every PNG/JPEG/WebP under ``data_dir`` (a folder, searched recursively, or a .zip), as RGB
    float32 (3, image_size, image_size) in [-1, 1]: ``Resize(image_size, antialias=True)`` on the short side, then
    ``CenterCrop(image_size)``; a horizontal flip on train only when ``random_flip``.

    Layout (:func:`find_layout`): with ``labels`` (the default), each first-level folder is a class, its images
    (at any depth) labelled by the folder's place among the sorted folder names (``class_names``); images without
    class folders are all label 0 (``num_classes`` None). A single folder holding everything (a zip of a folder) is
    looked through. When the top level holds exactly ``train/`` and ``test/``, they are the splits, each with the
    same class folders or none.

    Split: the train images (all of them, without a ``test/`` folder) are permuted with ``torch.randperm`` under
    ``Generator().manual_seed(split_seed)``; the first ceil(test_fraction · n) are test (0 by default: no test split
    unless the folder has its own), the next ceil(val_fraction · n) val, the rest train, each in file order.

    ``classes`` / ``exclude_classes`` name classes by folder name; train and val keep only the selected ones, test
    keeps every class, ``excluded_train_set`` holds the train split's other images.

    Every file is checked once in ``setup`` (``ImageFiles.problem``: a header read). An unreadable one stops the run
    with a CorruptDataError naming it; with ``skip_bad_files`` such files are left out, counted and reported (printed
    once, kept as ``skipped_files``: (file, reason) pairs). ``dataset_name`` tags checkpoints and metric caches
    (default: the folder's or zip's name, with "-folder" added to a built-in data set's name, ``BUILT_IN``, which
    a given name may not be).
    """

    channels = 3

    def __init__(self, data_dir: str = "data/my-images", image_size: int = 32, batch_size: int = 64,
                 num_workers: int = 2, pin_memory: bool = True, seed: int = 0, split_seed: int = 0,
                 random_flip: bool = False, val_fraction: float = 0.1, test_fraction: float = 0.0,
                 labels: bool = True, classes: list[str | int] | None = None,
                 exclude_classes: list[str | int] | None = None, skip_bad_files: bool = False,
                 dataset_name: str | None = None):
        super().__init__(data_dir, image_size, batch_size, num_workers, pin_memory, seed, split_seed, random_flip)
        if not 0.0 < val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 - val_fraction:
            raise ConfigError(f"--data.val_fraction={val_fraction} and --data.test_fraction={test_fraction}: need "
                              "0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1")
        self.dataset_name = self._name(dataset_name)
        self.skipped_files: list[tuple[str, str]] = []
        self._layout: Layout | None = None
        if (classes is not None or exclude_classes is not None) and os.path.exists(self.data_dir):
            self.kept_classes()  # a bad class selection stops here, before anything trains (a listing, no reads)

    def _name(self, given: str | None) -> str:
        if given is not None and given in BUILT_IN:
            raise ConfigError(f"--data.dataset_name={given} is a built-in data set's name (dsls would read it as "
                              "that data set): choose another")
        name = given or os.path.splitext(os.path.basename(os.path.normpath(self.data_dir)))[0] or "images"
        return name if name not in BUILT_IN else f"{name}-folder"

    def layout(self) -> Layout:
        """The source's images by split and class (listed once; MissingDataError when there are none)."""
        if self._layout is None:
            files = list_images(self.data_dir) if os.path.exists(self.data_dir) else None
            if not files:
                what = "no images in" if files is not None else "nothing at"
                raise MissingDataError("image folder", f"{self.data_dir} ({what} it)", LAYOUT, HOW)
            self._layout = find_layout(files, self.hparams.labels, self.data_dir)
        return self._layout

    @property
    def class_names(self) -> list[str] | None:
        """The class folders' names in label order; None without class folders."""
        return self.layout().class_names or None

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None

    def build_datasets(self):
        hp, layout = self.hparams, self.layout()
        if layout.test is not None and hp.test_fraction:
            raise ConfigError(f"--data.test_fraction={hp.test_fraction}: {self.data_dir} has its own test/ folder, "
                              "which is the test split; leave --data.test_fraction at 0")
        pairs = layout.train + (layout.test or [])
        files, self.skipped_files = readable(ImageFiles(self.data_dir, [f for f, _ in pairs], [y for _, y in pairs]),
                                             hp.skip_bad_files, self.dataset_name)
        if len(files) == 0:
            raise MissingDataError("image folder", f"{self.data_dir} (no readable images in it)", LAYOUT, HOW)
        in_test = {f for f, _ in layout.test or []}
        n = sum(1 for f in files.files if f not in in_test)  # the train files come first
        sizes = [_fraction_count(hp.test_fraction, n), _fraction_count(hp.val_fraction, n)]
        if sum(sizes) >= n:
            raise ConfigError(f"--data.val_fraction={hp.val_fraction} and --data.test_fraction={hp.test_fraction} "
                              f"leave none of the {n} training images to train on: lower them, or add images")
        test_idx, val_idx, train_idx = split_indices(n, sizes, hp.split_seed)
        if layout.test is not None:
            test_idx = list(range(n, len(files)))
        train_tf, eval_tf = (self.transform(train, resize_crop(self.image_size)) for train in (True, False))
        test = TransformedSubset(files, test_idx, eval_tf) if test_idx else None
        return TransformedSubset(files, train_idx, train_tf), TransformedSubset(files, val_idx, eval_tf), test
