"""Image DataModules on tiny files written in each data set's real on-disk format (no network)."""
from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import zipfile

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, MNIST

from dsls.data import (CelebAHQDataModule, CIFAR10DataModule, DigitsDataModule, LSUNDataModule, MNISTDataModule,
                        TintedDigitsDataModule)

from dsls.data.digits import TINTS
from dsls.errors import MissingDataError

RNG = np.random.default_rng(0)
FAST = dict(num_workers=0, pin_memory=False)


def check_batches(loader, shape, n_total, drop_last):
    xs, ys = zip(*loader)
    for x, y in zip(xs, ys):
        assert x.dtype == torch.float32 and x.shape[1:] == shape and y.dtype == torch.int64
        assert len(x) == loader.batch_size or not drop_last
        assert -1.0 <= x.min() < 0 < x.max() <= 1.0  # random pixels reach both signs
    n = sum(len(x) for x in xs)
    assert n == (n_total // loader.batch_size * loader.batch_size if drop_last else n_total)
    return torch.cat(xs), torch.cat(ys)


def encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------- MNIST: gzipped big-endian IDX files
def write_idx_gz(path, arr: np.ndarray):
    header = struct.pack(">I", 0x800 + arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    assert struct.unpack(">I", header[:4])[0] == (2051 if arr.ndim == 3 else 2049)  # the magic numbers
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def make_mnist(root, n_train=120, n_test=20):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        data[split] = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8), RNG.integers(0, 10, n, dtype=np.uint8)
        write_idx_gz(raw / f"{split}-images-idx3-ubyte.gz", data[split][0])
        write_idx_gz(raw / f"{split}-labels-idx1-ubyte.gz", data[split][1])
    return data


def test_mnist(tmp_path, monkeypatch):
    data = make_mnist(tmp_path)
    monkeypatch.setattr(MNIST, "mirrors", [f"file://{tmp_path}/no-such-mirror/"])  # any fetch would fail
    MNISTDataModule(str(tmp_path), download=True, **FAST).prepare_data()  # .gz present: decompressed, not fetched
    dm = MNISTDataModule(str(tmp_path), download=False, val_size=20, batch_size=16, **FAST)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.data_shape == (1, 28, 28) and dm.num_classes == 10 and dm.dataset_name == "mnist"
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (100, 20, 20)
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    check_batches(dm.train_dataloader(), (1, 28, 28), 100, drop_last=True)
    check_batches(dm.val_dataloader(), (1, 28, 28), 20, drop_last=False)
    x, y = check_batches(dm.test_dataloader(), (1, 28, 28), 20, drop_last=False)
    imgs, labels = data["t10k"]  # test keeps file order; pixel p ↦ p/127.5 − 1
    torch.testing.assert_close(x[:, 0], torch.from_numpy(imgs / 127.5 - 1).float())
    assert y.tolist() == labels.tolist()
    # Same seed → same shuffle; a resized variant reads the same files.
    assert torch.equal(next(iter(dm.train_dataloader()))[0], next(iter(dm.train_dataloader()))[0])
    small = MNISTDataModule(str(tmp_path), image_size=16, download=False, val_size=20, batch_size=8, **FAST)
    small.setup()
    assert next(iter(small.val_dataloader()))[0].shape == (8, 1, 16, 16) and small.data_shape == (1, 16, 16)


def test_mnist_failed_download_is_missing_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", [f"file://{tmp_path}/no-such-mirror/"])
    dm = MNISTDataModule(str(tmp_path), download=True, **FAST)
    with pytest.raises(MissingDataError, match="download failed") as e:
        dm.prepare_data()
    assert "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)" in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


# ---------------------------------------------------------------- CIFAR-10: Python-2 pickles
class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), as cPickle did for the real batches: they
    load as str keys under torchvision's encoding='latin1' and as b'data' keys under encoding='bytes'."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n))
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def make_cifar(root, per_batch=12, n_test=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        batch = {b"batch_label": name.encode(), b"labels": RNG.integers(0, 10, n).tolist(),
                 b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            Py2Pickler(f, protocol=2).dump(batch)
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
                             b"ship", b"truck"], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        Py2Pickler(f, protocol=2).dump(meta)
    return folder


def test_cifar10(tmp_path):
    folder = make_cifar(tmp_path)
    with open(folder / "data_batch_1", "rb") as f:  # same keys as the real files read with encoding='bytes'
        assert set(pickle.load(f, encoding="bytes")) == {b"batch_label", b"labels", b"data", b"filenames"}
    with pytest.raises(RuntimeError, match="corrupted"):  # stock torchvision checks the real files' md5s
        CIFAR10(str(tmp_path), train=True)
    dm = CIFAR10DataModule(str(tmp_path), download=False, val_size=10, batch_size=8, **FAST)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.data_shape == (3, 32, 32) and dm.num_classes == 10
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (50, 10, 10)
    assert dm.train_set.dataset.classes[0] == "airplane"
    check_batches(dm.train_dataloader(), (3, 32, 32), 50, drop_last=True)
    check_batches(dm.val_dataloader(), (3, 32, 32), 10, drop_last=False)
    x, _ = check_batches(dm.test_dataloader(), (3, 32, 32), 10, drop_last=False)
    with open(folder / "test_batch", "rb") as f:  # test keeps file order; CHW row layout; no flip on test
        raw = pickle.load(f, encoding="latin1")["data"].reshape(-1, 3, 32, 32)
    torch.testing.assert_close(x, torch.from_numpy(raw / 127.5 - 1).float())


# ---------------------------------------------------------------- LSUN: lmdb of encoded images
def make_lmdb(path, n, fmt):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:  # keys: 40-hex-digit ids as in the real lmdbs; values: encoded images
        for i in range(n):
            img = RNG.integers(0, 256, (24 + 4 * (i % 3), 40, 3), dtype=np.uint8)  # landscape, varied sizes
            txn.put(f"{i:040x}".encode(), encode(img, fmt))
    env.close()


def test_lsun(tmp_path, monkeypatch):
    make_lmdb(tmp_path / "church_outdoor_train_lmdb", 12, "WEBP")
    make_lmdb(tmp_path / "church_outdoor_val_lmdb", 3, "JPEG")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    dm = LSUNDataModule(str(tmp_path), image_size=16, val_size=4, batch_size=4, **FAST)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (8, 4, 3)
    assert list(dm.val_set.indices) == [8, 9, 10, 11]  # the last val_size keys
    check_batches(dm.train_dataloader(), (3, 16, 16), 8, drop_last=True)
    check_batches(dm.val_dataloader(), (3, 16, 16), 4, drop_last=False)
    _, y = check_batches(dm.test_dataloader(), (3, 16, 16), 3, drop_last=False)
    assert y.tolist() == [0, 0, 0] and dm.data_shape == (3, 16, 16)
    assert list((tmp_path / "cwd").iterdir()) == []  # torchvision's key cache stayed out of cwd
    assert len(list((tmp_path / ".cache").glob("_cache_*"))) == 2
    # Cached keys are reused; workers reopen the lmdb in their own process.
    dm2 = LSUNDataModule(str(tmp_path), image_size=16, val_size=4, batch_size=4, num_workers=2, pin_memory=False)
    dm2.setup()
    x = torch.cat([b[0] for b in dm2.val_dataloader()])
    torch.testing.assert_close(x, torch.cat([b[0] for b in dm.val_dataloader()]))
    assert list((tmp_path / "cwd").iterdir()) == []


# ---------------------------------------------------------------- CelebA-HQ: folder or stylegan2-ada zip
def random_images(n):
    return [RNG.integers(0, 256, (40, 32, 3), dtype=np.uint8) for _ in range(n)]  # portrait, like faces


def test_celebahq_folder(tmp_path):
    for i, img in enumerate(random_images(30)):
        sub = tmp_path / "imgs" / f"{i // 10:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"{i:05d}.{'png' if i % 2 else 'jpg'}")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    dm = CelebAHQDataModule(str(tmp_path / "imgs"), image_size=16, val_size=5, test_size=5, batch_size=8, **FAST)
    dm.setup()
    files = dm.train_set.dataset.files
    assert len(files) == 30 and files == sorted(files) and files[0] == "00/00000.jpg"
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (20, 5, 5)
    assert len(set(dm.train_set.indices) | set(dm.val_set.indices) | set(dm.test_set.indices)) == 30
    check_batches(dm.train_dataloader(), (3, 16, 16), 20, drop_last=True)
    check_batches(dm.val_dataloader(), (3, 16, 16), 5, drop_last=False)
    check_batches(dm.test_dataloader(), (3, 16, 16), 5, drop_last=False)
    assert CelebAHQDataModule(str(tmp_path)).data_shape == (3, 256, 256)


def test_celebahq_zip_with_workers(tmp_path):
    path = tmp_path / "celebahq.zip"  # stylegan2-ada-pytorch dataset_tool.py layout
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, img in enumerate(random_images(24)):
            zf.writestr(f"{i // 10:05d}/img{i:08d}.png", encode(img, "PNG"))
        zf.writestr("dataset.json", json.dumps({"labels": None}))
    dm = CelebAHQDataModule(str(path), image_size=32, val_size=4, test_size=4, batch_size=4,
                            num_workers=2, pin_memory=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (16, 4, 4)
    check_batches(dm.train_dataloader(), (3, 32, 32), 16, drop_last=True)
    x, y = check_batches(dm.val_dataloader(), (3, 32, 32), 4, drop_last=False)
    assert y.tolist() == [0] * 4
    dm0 = CelebAHQDataModule(str(path), image_size=32, val_size=4, test_size=4, batch_size=4, **FAST)
    dm0.setup()
    torch.testing.assert_close(x, next(iter(dm0.val_dataloader()))[0])  # workers read the same bytes


# ---------------------------------------------------------------- missing data
@pytest.mark.parametrize("make, layout", [
    (lambda d: MNISTDataModule(d, download=False, **FAST), "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}"),
    (lambda d: CIFAR10DataModule(d, download=False, **FAST), "cifar-10-batches-py/{data_batch_1..5, test_batch"),
    (lambda d: CelebAHQDataModule(d, **FAST), "stylegan2-ada-pytorch dataset_tool.py"),
    (lambda d: CelebAHQDataModule(d + "/nope.zip", **FAST), "progressive_growing_of_gans"),
    (lambda d: LSUNDataModule(d, category="bedroom", **FAST), "<data_dir>/bedroom_train_lmdb"),
])
def test_missing_data(tmp_path, make, layout):
    dm = make(str(tmp_path))
    with pytest.raises(MissingDataError) as e:
        dm.prepare_data()
        dm.setup()
    assert isinstance(e.value, FileNotFoundError) and layout in str(e.value)
    assert "To get it:" in str(e.value) and e.value.__cause__ is None
    assert str(pickle.loads(pickle.dumps(e.value))) == str(e.value)  # survives the trip between DDP ranks


def test_fid_reference_is_unflipped_and_named_by_its_settings(tmp_path):
    """The search's FID reference: the checkpoint's data module rebuilt without random flips, cached under a
    name that changes with anything that changes the images (here the size)."""
    from dsls.metrics.samples import reference_dataset

    make_cifar(tmp_path)
    hp = {"_class_path": "dsls.data.cifar10.CIFAR10DataModule", "data_dir": str(tmp_path), "download": False,
          "val_size": 10, "random_flip": True, "image_size": 32, "num_workers": 0, "batch_size": 7}
    ds, name = reference_dataset(hp, "train")
    assert len(ds) == 50 and name.startswith("cifar10-train-")
    torch.manual_seed(0)
    first = torch.stack([ds[i][0] for i in range(8)])
    torch.manual_seed(1)
    assert torch.equal(first, torch.stack([ds[i][0] for i in range(8)]))  # no random flip in the reference
    assert reference_dataset({**hp, "batch_size": 64}, "train")[1] == name  # loader settings don't matter
    assert reference_dataset({**hp, "image_size": 16}, "train")[1] != name
    with pytest.raises(ValueError, match="fid_reference_split"):
        reference_dataset(hp, "nope")


# ---------------------------------------------------------------- tinted digits: sklearn's, coloured by class
def test_tinted_digits_colour_is_the_class_tint():
    dm, gray = TintedDigitsDataModule(batch_size=64), DigitsDataModule(batch_size=64)
    dm.setup()
    gray.setup()
    assert dm.data_shape == (3, 8, 8) and dm.dataset_name == "tinted_digits" and len(TINTS.unique(dim=0)) == 10
    assert len((TINTS @ torch.tensor([0.299, 0.587, 0.114])).unique()) > 1  # lumas differ: colour is not gray level
    check_batches(dm.train_dataloader(), (3, 8, 8), 1437, drop_last=True)
    x, y = check_batches(dm.val_dataloader(), (3, 8, 8), 360, drop_last=False)
    assert torch.equal(y, torch.cat([b[1] for b in gray.val_dataloader()]))  # same split and order
    xg = torch.cat([b[0] for b in gray.val_dataloader()])
    assert torch.all(x[(xg == -1).expand_as(x)] == -1)  # the background stays black
    rgb = ((x + 1) / 2).permute(0, 2, 3, 1)  # (N, 8, 8, 3) in [0, 1]
    lit = rgb.amax(-1) > 0
    chroma = rgb[lit] / rgb[lit].amax(-1, keepdim=True)  # each lit pixel's colour, brightness divided out
    want = (TINTS / TINTS.amax(-1, keepdim=True))[y.view(-1, 1, 1).expand(-1, 8, 8)[lit]]
    torch.testing.assert_close(chroma, want)
    torch.testing.assert_close(rgb.amax(-1) / TINTS.amax(-1)[y].view(-1, 1, 1), (xg[:, 0] + 1) / 2)  # the intensity
