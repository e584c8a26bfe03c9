"""One W&B run per phase, grouped by the run folder, offline without a key; and a run that prints none of the known
warnings (dsls.quiet and the fixes in dsls.cli). Two tiny phases in this process, as the pipeline runs them."""
import struct
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

TINY = ["--trainer.max_steps=2", "--trainer.log_every_n_steps=1", "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu",
        "--data.train_size=512"]
# what the runs printed before: Lightning, jsonargparse, torch and W&B messages that say nothing about the run
KNOWN = ["args parameter is intended", "skip_none", "was deprecated in v4.49", "LeafSpec", "will reuse this run",
         "anonymous setting", "git root", "Tip: For seamless cloud", "module(s) in eval mode"]


def wandb_records(path: Path):
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log: 32 KiB blocks of chunks with a
    7-byte header crc32/length/type, after W&B's 7-byte file header); W&B 0.31 has no Python reader of its own."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, chunks = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B", path
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a FULL record, or the LAST chunk of one
            record = pb.Record()
            record.ParseFromString(chunks)
            yield record
            chunks = b""


def summarise(folder: Path) -> dict:
    """group, job_type, name, exit code and the logged metric names of one offline-run-* folder."""
    out = {"metrics": set(), "exit_code": None}
    for r in wandb_records(next(folder.glob("*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(group=r.run.run_group, job_type=r.run.job_type, name=r.run.display_name)
        elif kind == "history":
            out["metrics"] |= {item.key or "/".join(item.nested_key) for item in r.history.item}
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def summaries(folders, wait: float = 60.0) -> list[dict]:
    """summarise each folder, once W&B's service (another process, writing on its own time) has written the run and
    exit records: a busy machine can leave a .wandb file short for a moment after finish() returns."""
    deadline = time.monotonic() + wait
    while True:
        out = [summarise(f) for f in folders]
        if all("job_type" in s and s["exit_code"] is not None for s in out) or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def test_each_phase_has_its_own_wandb_run_in_the_run_group_and_prints_no_known_warning(tmp_path, monkeypatch, capfd,
                                                                                      caplog):
    import dsls.quiet
    from dsls.cli import main

    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "JSONARGPARSE_DEPRECATION_WARNINGS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key, so offline
    monkeypatch.setattr(sys, "argv", ["run_pipeline.py", "--config-dir", "configs/toy"])  # as the pipeline's
    run = tmp_path / "runs" / "demo"  # not there yet: W&B must not warn about its git root
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dsls.quiet.install()  # on top of "always", as at import
        main(["fit", "--config", "configs/toy/reconstruction.yaml", "--model.hidden=8", f"--run_dir={run}", *TINY])
        ae = run / "reconstruction" / "checkpoints" / "last.ckpt"
        main(["fit", "--config", "configs/toy/adversarial.yaml", f"--model.autoencoder_ckpt={ae}", "--model.d_hidden=8",
              f"--run_dir={run}", *TINY])
    printed = capfd.readouterr()
    shown = [str(w.message) for w in caught] + [printed.out, printed.err, caplog.text]
    assert not [k for k in KNOWN if any(k in s for s in shown)], shown

    folders = sorted((run / "wandb").glob("offline-run-*"))
    runs = {s.get("job_type"): s for s in summaries(folders)}
    assert len(folders) == 2 and set(runs) == {"reconstruction", "adversarial"}, runs
    for phase, r in runs.items():
        assert r["group"] == "demo" and r["name"] == f"demo-{phase}" and r["exit_code"] == 0, r
    assert any(m.startswith("train/recon") for m in runs["reconstruction"]["metrics"]), runs
    assert any(m.startswith("train/d_") for m in runs["adversarial"]["metrics"]), runs  # its own run, not phase 1's
    assert not any(m.startswith("train/d_") for m in runs["reconstruction"]["metrics"]), runs


def test_search_configs_log_and_the_sweep_optimises_a_search_metric():
    """The searches log to W&B by default (trainer.logger unset or true), and the search sweep's metric is a key the
    search logs, search/<sampler>/<metric>, for a sampler and a metric that the search computes."""
    from dsls.metrics import fidelity

    for path in Path("configs").glob("*/search.yaml"):
        assert yaml.safe_load(path.read_text())["trainer"].get("logger", True) is True, path
    sweep = yaml.safe_load(Path("configs/sweeps/cifar10_search.yaml").read_text())
    prefix, sampler, metric = sweep["metric"]["name"].split("/")
    search = yaml.safe_load(Path("configs/cifar10/search.yaml").read_text())["model"]["init_args"]
    assert prefix == "search" and sampler in search["samplers"], sweep["metric"]
    assert metric in fidelity._KEYS.values(), sweep["metric"]  # the names fidelity_metrics reports


@pytest.fixture(autouse=True)
def _no_wandb_run_left():
    yield
    import wandb

    assert wandb.run is None, "a phase left its W&B run open"
