"""Saves that are never left half-written: a checkpoint, the search's files and the tasks' outputs go to a temporary
file in their own folder, fsynced, then renamed. A full disk keeps the previous file, leaves no temporary file, and
ends in one `error:` line."""
import builtins
import errno
import io
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch

from dsls.checkpoints import atomic_write, save_json, save_npz, save_torch

from dsls.cli import main, one_line_errors
from dsls.errors import SaveError
from dsls.runs import merge_results, save_samples, save_search_ckpt


class FullDisk:
    """`folder` as a file system of its own that is full after its first file, as a small tmpfs holding the run is.
    A rename into it from another folder fails with EXDEV (another device: Lightning then copies its temporary file
    from /tmp into the folder), and once its first file is written, every write into a file in it writes half of its
    bytes and fails with ENOSPC. Writes go through Python's open(); copies too (no sendfile)."""

    def __init__(self, folder, monkeypatch, elsewhere, full: bool = False):
        self.folder, self.full = os.path.abspath(folder), full
        real_open, real_rename = builtins.open, os.rename
        os.makedirs(elsewhere, exist_ok=True)

        def open_(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            return _Quota(f, self) if set(mode) & set("wax+") and self.holds(file) else f

        def rename(src, dst, *args, **kwargs):
            if self.holds(dst) and not self.holds(src):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, dst)
            return real_rename(src, dst, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))  # /tmp: another file system
        monkeypatch.setattr(shutil, "_USE_CP_SENDFILE", False)  # copies write through the file object

    def holds(self, path) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.dirname(os.path.abspath(path)) == self.folder


class _Quota:
    """A file in a FullDisk: its writes fail once the disk is full; closing the first file fills the disk."""

    def __init__(self, f, disk: FullDisk):
        self._f, self._disk = f, disk

    def write(self, data) -> int:
        if self._disk.full:
            data = memoryview(data).cast("B")
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(data)

    def close(self) -> None:
        self._f.close()
        self._disk.full = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


# 512 points in batches of 64: last.ckpt at step 2 (the disk has room) and step 4 (it is full)
TINY_FIT = ["fit", "--config", "configs/toy/reconstruction.yaml", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu",
            "--trainer.limit_val_batches=0", "--trainer.max_steps=4", "--data.train_size=512", "--data.batch_size=64",
            "--model.hidden=16", "--model.depth=1", "--checkpoint.every_n_train_steps=2"]


def test_full_disk_keeps_the_previous_last_ckpt(tmp_path, monkeypatch):
    """A fit whose second last.ckpt meets a full disk: the step-2 one stays whole, and the error is one line. With
    Lightning's own save the copy from /tmp truncated last.ckpt and the OSError ended in a long traceback."""
    folder = tmp_path / "run" / "reconstruction" / "checkpoints"
    folder.mkdir(parents=True)
    FullDisk(folder, monkeypatch, tmp_path / "elsewhere")
    try:
        with one_line_errors():
            main([*TINY_FIT, f"--run_dir={tmp_path / 'run'}"])
    except BaseException as e:  # noqa: BLE001 (the test looks at what the user would see)
        err = e
    else:
        pytest.fail("the save into a full disk did not fail")
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["last.ckpt"], "a temporary file was left behind"
    ckpt = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)  # intact: the step-2 one
    assert ckpt["global_step"] == 2
    assert isinstance(err, SystemExit), f"not one line: {type(err).__name__}: {err}"
    line = str(err.code)
    assert line.startswith("error: no space left on device while saving ") and "\n" not in line, line
    assert "(the previous last.ckpt is intact)" in line and line.endswith("--ckpt_path=last"), line


def test_first_save_of_a_fit_into_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    """No previous last.ckpt: none is left behind, and the line says to run the command again (nothing to resume)."""
    folder = tmp_path / "run" / "reconstruction" / "checkpoints"
    folder.mkdir(parents=True)
    FullDisk(folder, monkeypatch, tmp_path / "elsewhere", full=True)
    with pytest.raises(SystemExit) as e, one_line_errors():
        main([*TINY_FIT, f"--run_dir={tmp_path / 'run'}"])
    monkeypatch.undo()
    assert os.listdir(folder) == []
    assert "(no last.ckpt was left behind): free space on its disk, then run it again: dsls fit" in str(e.value.code)


# --- the search's files and the tasks' outputs (dsls.runs, dsls.checkpoints) -----------------------------------------

def _samples(value: float) -> dict:
    return {"x": np.full((4, 2), value), "z0": np.zeros((4, 2)), "z": np.zeros((4, 2))}


WRITERS = {  # name: (write the first version, write the second, read it back)
    "samples-*.npz": (lambda d, v: save_samples(str(d), "langevin", _samples(v)),
                      lambda d: float(np.load(d / "samples-langevin.npz")["x"][0, 0])),
    "results.json": (lambda d, v: merge_results(str(d / "results.json"), {"langevin": {"fid": v}}),
                     lambda d: json.loads((d / "results.json").read_text())["langevin"]["fid"]),
    "search.ckpt": (lambda d, v: save_search_ckpt(str(d), "grid25", {"seed": v}),
                    lambda d: torch.load(d / "search.ckpt", weights_only=True)["hyper_parameters"]["seed"]),
    "tasks' npz": (lambda d, v: save_npz(d / "inverse-inpaint.npz", x=np.full(3, v)),
                   lambda d: float(np.load(d / "inverse-inpaint.npz")["x"][0])),
    "tasks' json": (lambda d, v: save_json(d / "likelihood.json", {"codes": v}, indent=2),
                    lambda d: json.loads((d / "likelihood.json").read_text())["codes"]),
}


@pytest.mark.parametrize("name", WRITERS)
def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, name):
    write, read = WRITERS[name]
    write(tmp_path, 1.0)
    before = sorted(os.listdir(tmp_path))
    FullDisk(tmp_path, monkeypatch, tmp_path.parent / f"{tmp_path.name}-elsewhere", full=True)
    with pytest.raises(SaveError) as e:
        write(tmp_path, 2.0)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before, "a temporary file was left behind"
    assert read(tmp_path) == 1.0
    line = str(e.value)
    assert line.startswith("no space left on device while saving ") and "is intact" in line and "\n" not in line
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path):
    """Ctrl-C (or any error) in the middle of a write: the temporary file goes, the previous file stays."""
    save_json(tmp_path / "results.json", {"a": 1})

    def interrupted(f):
        f.write(b"{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "results.json", interrupted)
    assert os.listdir(tmp_path) == ["results.json"] and json.loads((tmp_path / "results.json").read_text()) == {"a": 1}


def test_the_writers_write_what_plain_calls_would(tmp_path):
    """The same bytes as np.savez / json.dump / torch.save to the path, and permissions as a plain open gives."""
    save_npz(tmp_path / "a.npz", x=np.arange(3))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["x"], np.arange(3))
    save_json(tmp_path / "a.json", {"k": [1, 2]}, indent=2)
    assert (tmp_path / "a.json").read_text() == json.dumps({"k": [1, 2]}, indent=2)
    save_torch({"t": torch.ones(2)}, tmp_path / "a.ckpt")
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=True)["t"], torch.ones(2))
    (tmp_path / "plain").write_text("")
    modes = {os.stat(tmp_path / n).st_mode for n in ("a.npz", "a.json", "a.ckpt", "plain")}
    assert len(modes) == 1, modes
