"""ImageFolderDataModule (dsls.data.imagefolder) on generated folders and zips of PNG/JPEG/WebP files of mixed sizes
and modes: labels from class folders, the train/test layout, class selection by folder name, one error naming an
unreadable file (or skipped, counted and reported), a zip giving the same tensors; and the template configs run."""
from __future__ import annotations

import io
import math
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from dsls.data import CelebAHQDataModule, ImageFolderDataModule
from dsls.data.images import subset_labels
from dsls.errors import ConfigError, CorruptDataError, MissingDataError

FAST = dict(num_workers=0, pin_memory=False, image_size=16, batch_size=4)
CLASSES = ("ant", "bee", "cat")
MODES = ("RGB", "L", "RGBA", "RGB")  # grey and transparent files come out RGB too


def write_images(folder, n: int, seed: int = 0, deep: bool = True) -> list[str]:
    """n images of mixed sizes (portrait and landscape), modes and formats under folder; their relative paths."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(18, 60, 2))
        mode, ext = MODES[i % 4], ("png", "jpg", "webp")[i % 3]
        arr = rng.integers(0, 256, (h, w, len(mode)) if mode != "L" else (h, w), dtype=np.uint8)
        img = Image.fromarray(arr, mode)
        name = f"{'deep/' if deep and i % 5 == 4 else ''}{i:03d}.{ext}"  # at any depth below a class folder
        os.makedirs(folder / os.path.dirname(name), exist_ok=True)
        (img.convert("RGB") if ext == "jpg" else img).save(folder / name)
        names.append(name)
    return names


def make_classes(root, per_class: int = 6):
    for k, c in enumerate(CLASSES):
        write_images(root / c, per_class, seed=k)
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"junk")
    return root


def zip_of(folder, path, wrap: str = "") -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                full = os.path.join(dirpath, f)
                zf.write(full, wrap + os.path.relpath(full, folder).replace(os.sep, "/"))
    return str(path)


def setup(source, **kw) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(source), **{**FAST, **kw})
    dm.setup("fit")
    return dm


def items(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def test_class_folders_are_labels(tmp_path):
    root = make_classes(tmp_path / "pets")
    dm = setup(root, val_fraction=0.2)
    assert dm.class_names == list(CLASSES) and dm.num_classes == 3 and dm.dataset_name == "pets"
    assert dm.data_shape == (3, 16, 16) and dm.test_set is None and dm.skipped_files == []
    files = dm.train_set.dataset
    assert len(files) == 18 and all(f.split("/")[0] == CLASSES[y] for f, y in zip(files.files, files.targets))
    assert (len(dm.train_set), len(dm.val_set)) == (18 - math.ceil(0.2 * 18), math.ceil(0.2 * 18))
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1.0 <= x.min() < 0 < x.max() <= 1.0
    # Each image: RGB, resized on its short side to 16, centre-cropped, in [-1, 1]; its label its folder's.
    for j in range(len(dm.val_set)):
        i = dm.val_set.indices[j]
        img = Image.open(root / files.files[i]).convert("RGB")
        want = TF.center_crop(TF.resize(img, 16, antialias=True), [16, 16])
        x, y = dm.val_set[j]
        torch.testing.assert_close(x, TF.to_tensor(want) * 2 - 1)
        assert CLASSES[y] == files.files[i].split("/")[0]
    other = setup(root, val_fraction=0.2, split_seed=1)
    assert other.val_set.indices != dm.val_set.indices
    assert setup(root, val_fraction=0.2).val_set.indices == dm.val_set.indices


def test_a_zip_gives_the_same_tensors(tmp_path):
    root = make_classes(tmp_path / "pets")
    folder = setup(root, test_fraction=0.2)
    for wrap in ("", "pets/"):  # a zip of the folder's contents, or of the folder itself (zip -r pets.zip pets)
        packed = setup(zip_of(root, tmp_path / f"pets{len(wrap)}.zip", wrap), test_fraction=0.2)
        assert packed.class_names == folder.class_names and packed.dataset_name.startswith("pets")
        for a, b in ((packed.train_set, folder.train_set), (packed.val_set, folder.val_set),
                     (packed.test_set, folder.test_set)):
            xa, ya = items(a)
            xb, yb = items(b)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    workers = ImageFolderDataModule(zip_of(root, tmp_path / "w.zip"), test_fraction=0.2, num_workers=2,
                                    pin_memory=False, image_size=16, batch_size=4)
    workers.setup()
    assert torch.equal(torch.cat([b[0] for b in workers.val_dataloader()]), items(folder.val_set)[0])


def test_an_unreadable_file_is_named_or_skipped_and_counted(tmp_path, capsys):
    root = make_classes(tmp_path / "pets")
    (root / "bee" / "broken.png").write_bytes(b"\x89PNG not really")
    good = io.BytesIO()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(good, format="PNG")
    (root / "cat" / "cut.png").write_bytes(good.getvalue()[:60])  # a PNG cut off half way
    with pytest.raises(CorruptDataError) as e:
        setup(root)
    msg = str(e.value)
    assert os.path.join(str(root), "bee", "broken.png") in msg and "1 more of the 20 files" in msg
    assert "--data.skip_bad_files=true" in msg and "\n" not in msg
    capsys.readouterr()
    dm = setup(root, skip_bad_files=True)
    assert sorted(os.path.basename(f) for f, _ in dm.skipped_files) == ["broken.png", "cut.png"]
    assert len(dm.train_set) + len(dm.val_set) == 18
    out = capsys.readouterr().out
    assert out.count("note: pets: skipped 2 of 20 image files") == 1 and "broken.png" in out and "cut.png" in out
    packed = zip_of(root, tmp_path / "pets.zip")  # in a zip: named as <member> in <zip>
    with pytest.raises(CorruptDataError, match=r"bee/broken.png in .*pets.zip"):
        setup(packed)


def test_the_error_reaches_the_user_as_one_line(tmp_path, monkeypatch):
    from test_errors import dsls_error

    root = make_classes(tmp_path / "pets")
    (root / "ant" / "broken.jpg").write_bytes(b"nope")
    msg = dsls_error(monkeypatch, "fit", "--config", "configs/imagefolder/reconstruction.yaml",
                     f"--data.data_dir={root}", "--trainer.max_steps=1", f"--run_dir={tmp_path / 'run'}")
    assert "ant/broken.jpg" in msg and "skip_bad_files" in msg


def test_train_and_test_folders_are_the_splits(tmp_path):
    root = tmp_path / "split"
    for c in ("b", "a"):
        write_images(root / "train" / c, 8, seed=ord(c))
        write_images(root / "test" / c, 3, seed=ord(c) + 100)
    dm = setup(root, val_fraction=0.25)
    files = dm.train_set.dataset
    assert dm.class_names == ["a", "b"]
    assert [files.files[i].split("/")[0] for i in dm.test_set.indices] == ["test"] * 6
    assert {files.files[i].split("/")[0] for i in dm.train_set.indices + dm.val_set.indices} == {"train"}
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 4, 6)
    assert subset_labels(dm.test_set).tolist() == [0, 0, 0, 1, 1, 1]
    _, y = items(dm.test_set)
    assert [dm.class_names[k] for k in y] == [files.files[i].split("/")[1] for i in dm.test_set.indices]
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 16, 16)
    with pytest.raises(ConfigError, match="its own test/ folder"):
        setup(root, test_fraction=0.1)
    flat = tmp_path / "flat"  # no class folders below train/ and test/: unlabelled, the same splits
    write_images(flat / "train", 10, deep=False)
    write_images(flat / "test", 4, seed=1, deep=False)
    dm = setup(flat)
    assert dm.num_classes is None and dm.class_names is None and len(dm.test_set) == 4


def test_classes_are_selected_by_folder_name(tmp_path):
    root = make_classes(tmp_path / "pets")
    full = setup(root, test_fraction=0.3)
    dm = setup(root, test_fraction=0.3, exclude_classes=["bee"])
    bee = CLASSES.index("bee")
    assert dm.hparams.exclude_classes == ["bee"]
    assert bee not in {int(v) for ds in (dm.train_set, dm.val_set) for v in subset_labels(ds)}
    assert dm.test_set.indices == full.test_set.indices and bee in subset_labels(dm.test_set).tolist()
    labels = subset_labels(full.train_set)
    assert dm.excluded_train_set.indices == [i for i, y in zip(full.train_set.indices, labels) if y == bee]
    assert setup(root, classes=["ant"]).excluded_train_set is not None
    with pytest.raises(ConfigError, match="'cow' is not a class of pets; its classes are ant, bee, cat"):
        ImageFolderDataModule(str(root), exclude_classes=["cow"])
    digits = tmp_path / "digits-png"  # folders named by numbers, selected by number
    for c in ("0", "1", "2"):
        write_images(digits / c, 4, seed=int(c))
    assert set(subset_labels(setup(digits, classes=[1, 2]).train_set).tolist()) == {1, 2}


def test_layouts_and_names(tmp_path):
    mixed = tmp_path / "mixed"
    write_images(mixed, 4, deep=False)
    write_images(mixed / "extra", 4, seed=1)
    with pytest.raises(ConfigError, match="both in itself .* and in folders .*--data.labels=false"):
        setup(mixed)
    dm = setup(mixed, labels=False)  # every image, label 0
    assert dm.num_classes is None and len(dm.train_set) + len(dm.val_set) == 8
    assert set(subset_labels(dm.train_set).tolist()) == {0}
    with pytest.raises(ConfigError, match="has no labels"):
        setup(mixed, labels=False, exclude_classes=["extra"])
    assert setup(mixed, labels=False, dataset_name="shots").dataset_name == "shots"
    with pytest.raises(ConfigError, match="built-in data set's name"):
        ImageFolderDataModule(str(mixed), dataset_name="mnist")
    shutil.copytree(mixed / "extra", tmp_path / "mnist")
    assert ImageFolderDataModule(str(tmp_path / "mnist")).dataset_name == "mnist-folder"
    with pytest.raises(MissingDataError, match="expected layout"):
        setup(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="val_fraction"):
        ImageFolderDataModule(str(mixed), val_fraction=0.6, test_fraction=0.5)


def test_celebahq_reads_through_the_same_check(tmp_path):
    write_images(tmp_path / "faces", 12)
    (tmp_path / "faces" / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(CorruptDataError, match="bad.jpg"):
        CelebAHQDataModule(str(tmp_path / "faces"), val_size=2, test_size=2, **FAST).setup()
    dm = CelebAHQDataModule(str(tmp_path / "faces"), val_size=2, test_size=2, skip_bad_files=True, **FAST)
    dm.setup()
    assert len(dm.skipped_files) == 1 and (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (8, 2, 2)


def test_the_template_configs_run_on_a_folder(tmp_path):
    """configs/imagefolder end to end (tiny): the pipeline's --data.data_dir reaches every phase, and the search
    writes samples without image metrics (the template's fidelity: [])."""
    import json

    from conftest import TINY_PIPELINE
    from dsls.pipeline import run_pipeline

    root = make_classes(tmp_path / "pets", per_class=12)
    quick = [a for a in TINY_PIPELINE if not a.startswith("--data.train_size")]
    run_pipeline("configs/imagefolder", [*quick, f"--data.data_dir={root}", "--data.batch_size=16",
                                         "--model.hidden=32", "--model.d_hidden=32"], run_dir=str(tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"none", "langevin"} <= set(results)
    x = np.load(tmp_path / "run" / "samples-langevin.npz")["x"]
    assert x.shape == (20, 3, 32, 32)
