"""End to end on toy grid25 with small settings: the search must beat plain prior sampling; the run folder
follows the contract in docs/concepts.md ("What a run writes")."""
import json
import os
import re
import runpy
import shutil
import sys

import numpy as np
import pytest
import torch

from dsls.errors import ConfigError
from dsls.metrics.toy import toy_metrics
from dsls.pipeline import (deep_merge, join_values, last_ckpt, parse_overrides, phase_args, run_pipeline)
from dsls.errors import OverrideError, PipelineError

from conftest import TINY_PIPELINE

# Not conftest's tiny run: the search beating prior sampling is a quality claim, which needs a trained D. Measured
# hq of langevin, posthoc / joint, with 1,200 steps a phase: 0.59 / 0.67 against none's 0.02 (1,500 steps: 0.80 /
# 0.82; 1,000: 0.48 / 0.49; phase 2 at 800: 0.20 / 0.04), where the tests ask for none's + 0.3.
SMALL = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--data.train_size=20000",
         "--reconstruction.trainer.max_steps=1200", "--adversarial.trainer.max_steps=1200",
         "--model.num_samples=1000", "--model.batch_size=500"]


def config_samplers(config_dir: str) -> set:
    """The samplers a search config runs (its entries that are not null)."""
    import yaml

    samplers = yaml.safe_load(open(f"{config_dir}/search.yaml"))["model"]["init_args"]["samplers"]
    return {name for name, settings in samplers.items() if settings is not None}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    return run_pipeline("configs/toy", SMALL, run_dir=str(tmp_path_factory.mktemp("toy") / "run"))


@pytest.mark.slow
def test_search_beats_prior_sampling(toy_run):
    res = toy_run["results"]
    print(json.dumps(res, indent=1))
    assert res["langevin"]["hq_fraction"] > res["none"]["hq_fraction"] + 0.3
    assert res["langevin"]["modes"] >= res["none"]["modes"]


@pytest.mark.slow
def test_joint_mode_with_refit_searches_better_than_its_prior_samples(toy_run, tmp_path):
    """Joint (AAE) phase 2 on the same phase 1 (copied, so --resume skips it): E, G train against D, then D refits on
    the frozen codes; the search must still beat the plain AAE sample."""
    run = tmp_path / "joint"
    run.mkdir()
    shutil.copytree(os.path.join(toy_run["run_dir"], "reconstruction"), run / "reconstruction")
    out = run_pipeline("configs/toy", [*SMALL, "--adversarial.model.mode=joint"], run_dir=str(run), resume=True)
    assert set(out["seconds"]) == {"adversarial", "search"}  # phase 1 reused
    res = out["results"]
    print(json.dumps(res, indent=1))
    assert res["langevin"]["hq_fraction"] > res["none"]["hq_fraction"] + 0.3
    assert res["langevin"]["modes"] >= res["none"]["modes"]


@pytest.mark.slow
def test_run_folder_contract(toy_run):
    run = toy_run["run_dir"]
    for phase in ("reconstruction", "adversarial"):
        assert os.path.isfile(os.path.join(run, phase, "config.yaml"))
        assert os.path.isfile(os.path.join(run, phase, "checkpoints", "last.ckpt"))
    res = json.load(open(os.path.join(run, "results.json")))
    assert set(res) == config_samplers("configs/toy") and {"none", "langevin"} <= set(res)
    for name, entry in res.items():
        with np.load(os.path.join(run, f"samples-{name}.npz")) as f:
            x, z0, z = f["x"], f["z0"], f["z"]
        assert x.shape == (1000, 2) and x.dtype == np.float32 and z0.shape == z.shape == (1000, 2)
        assert entry["seconds_per_sample"] > 0 and entry["num_samples"] == 1000
        # the metrics in results.json are the metrics of the samples in the npz
        assert {k: entry[k] for k in ("modes", "hq_fraction", "rev_kl")} == \
            {k: v for k, v in toy_metrics(x, "grid25").items() if k != "num_samples"}
    assert os.path.getsize(os.path.join(run, "samples.png")) > 10_000


def test_overrides_reach_only_the_phases_that_accept_them():
    import yaml

    cfg = {p: yaml.safe_load(open(f"configs/toy/{p}.yaml")) for p in ("reconstruction", "adversarial", "search")}
    args = ["--trainer.max_steps=5", "--model.samplers.langevin.eps0=0.1", "--model.lr=1e-3", "--data.batch_size=64",
            "--adversarial.model.mode=joint", "--model.num_levels=5"]
    assert phase_args("reconstruction", cfg["reconstruction"], args) == [
        "--trainer.max_steps=5", "--model.lr=1e-3", "--data.batch_size=64"]
    assert phase_args("adversarial", cfg["adversarial"], args) == [
        "--trainer.max_steps=5", "--data.batch_size=64", "--model.mode=joint", "--model.num_levels=5"]
    assert phase_args("search", cfg["search"], args) == [
        "--trainer.max_steps=5", "--model.samplers.langevin.eps0=0.1", "--model.num_levels=5"]


@pytest.mark.parametrize("flag, new", [("--model.eps0=1e-3", "--model.samplers.langevin.eps0="),
                                       ("--search.model.steps_per_level=3", "--search.model.samplers.langevin.steps")])
def test_an_old_sampler_flag_stops_with_the_new_one(flag, new, tmp_path):
    """A sampler setting at the module's level reaches no phase: an error naming the flag to write, before training."""
    with pytest.raises(OverrideError, match=f"write {re.escape(new)}"):
        run_pipeline("configs/toy", [flag], run_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_nested_overrides_merge_into_the_saved_settings():
    over = parse_overrides(["--model.samplers.langevin.eps0=1e-3", "--model.samplers.pc={}", "--model.seed=3",
                            "--trainer.devices=2", "--model.samplers.ode.rtol=1e-4"], "model")
    assert over == {"samplers": {"langevin": {"eps0": 1e-3}, "pc": {}, "ode": {"rtol": 1e-4}}, "seed": 3}
    saved = {"samplers": {"none": {}, "langevin": {"eps0": 5e-4, "steps_per_level": 10}, "pc": None, "ode": None},
             "seed": 0, "num_samples": 100}
    assert deep_merge(saved, over) == {
        "samplers": {"none": {}, "langevin": {"eps0": 1e-3, "steps_per_level": 10}, "pc": {}, "ode": {"rtol": 1e-4}},
        "seed": 3, "num_samples": 100}


@pytest.mark.slow
def test_digits_pipeline_image_contract(tmp_path):
    out = run_pipeline("configs/digits", ["--trainer.logger=false", "--trainer.enable_progress_bar=false",
                                          "--trainer.max_steps=60", "--trainer.val_check_interval=30",
                                          "--model.num_samples=64", "--model.batch_size=32"],
                       run_dir=str(tmp_path / "run"))
    assert set(out["results"]) == config_samplers("configs/digits") | {"floor"}  # floor: G(E(held-out images))
    for name in config_samplers("configs/digits"):
        x = np.load(tmp_path / "run" / f"samples-{name}.npz")["x"]
        assert x.shape == (64, 1, 8, 8) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
        assert out["results"][name]["seconds_per_sample"] > 0
    assert (tmp_path / "run" / "samples.png").stat().st_size > 10_000


def test_pipeline_chains_the_latent_classifier_into_a_guided_search(tmp_path):
    """--classifier: the classifier trains on phase 2's autoencoder and σ_max, and the search is guided by it."""
    import torch

    from dsls.pipeline import GUIDED_PHASES

    tiny = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--data.train_size=4096",
            "--trainer.max_steps=60", "--trainer.limit_val_batches=0", "--model.num_samples=50",
            "--model.batch_size=50", "--model.samplers={langevin: {steps_per_level: 2}}"]
    out = run_pipeline("configs/toy", tiny, run_dir=str(tmp_path / "run"), phases=GUIDED_PHASES)
    run = tmp_path / "run"
    clf = torch.load(run / "latent_classifier/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert clf["dsls_phase"] == "latent_classifier"
    adv = torch.load(run / "adversarial/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert clf["hyper_parameters"]["autoencoder_ckpt"] == str(run / "adversarial/checkpoints/last.ckpt")
    assert torch.equal(clf["state_dict"]["sigma_max"], adv["state_dict"]["sigma_max"])  # phase 2's ladder
    with np.load(run / "samples-langevin.npz") as f:
        assert f["y"].dtype == np.int64 and (f["y"] == np.arange(50) % 25).all()
    assert {"class_accuracy", "guidance_scale"} <= set(out["results"]["langevin"])
    assert (run / "guided-langevin.png").is_file()


TINY = TINY_PIPELINE  # a whole toy run in a few seconds; conftest's session `tiny_run` is one such run


def copy_of(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


def snapshot(run) -> dict:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*")}


def step(ckpt) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


def test_a_rerun_into_a_run_folder_needs_resume_or_overwrite(tiny_run, tmp_path, monkeypatch):
    """Without a flag, a new run beside an old one wrote last-v1.ckpt and chained the old last.ckpt."""
    run = copy_of(tiny_run, tmp_path)
    before = snapshot(run)
    with pytest.raises(PipelineError, match=r"already holds a run.*--resume.*--overwrite"):
        run_pipeline("configs/toy", TINY, run_dir=str(run))
    monkeypatch.setattr(sys, "argv", ["run_pipeline.py", "--config-dir", "configs/toy", f"--run-dir={run}", *TINY])
    with pytest.raises(SystemExit) as e:
        runpy.run_path("experiments/run_pipeline.py", run_name="__main__")  # the command, as a user runs it
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value) and "--overwrite" in str(e.value)
    assert snapshot(run) == before  # nothing trained, moved or written


def test_overwrite_moves_the_old_run_aside_and_chains_the_new_checkpoints(tiny_run, tmp_path):
    run = copy_of(tiny_run, tmp_path)
    out = run_pipeline("configs/toy", TINY + ["--trainer.max_steps=8"], run_dir=str(run), overwrite=True)
    (aside,) = run.glob(".overwritten-*")
    assert step(aside / "reconstruction/checkpoints/last.ckpt") == 12  # the old run, kept whole
    assert (aside / "results.json").is_file() and (aside / "search.ckpt").is_file()
    assert not [p for p in run.rglob("last-v*.ckpt") if aside not in p.parents]
    adv = torch.load(out["checkpoints"]["adversarial"], map_location="cpu", weights_only=False)
    assert out["checkpoints"]["adversarial"] == last_ckpt(str(run), "adversarial") and adv["global_step"] == 8
    assert step(adv["hyper_parameters"]["autoencoder_ckpt"]) == 8  # phase 1 of this run, not of the old one
    search = torch.load(run / "search.ckpt", map_location="cpu", weights_only=False)
    assert search["hyper_parameters"]["ckpt"] == out["checkpoints"]["adversarial"]
    assert json.loads((run / "adversarial/DONE").read_text())["checkpoint"] == "checkpoints/last.ckpt"


@pytest.mark.parametrize("flags, says", [
    (["--model.lrr=5"], ["reaches no phase", "--model.lr"]),
    (["--searh.model.eps0=1"], ["--search.model.samplers.langevin.eps0"]),
    (["--optimizer=SGD"], ["reconstruction, adversarial, search", "model.*", "--<phase>."]),
    (["--model.c_hidden=8"], ["latent_classifier", "--classifier"]),
    (["--run_dir=elsewhere"], ["--run-dir"]),
    (["--model.autoencoder_ckpt=x.ckpt"], ["the pipeline sets it"]),
    (["--data.train_sizee=5"], ["the reconstruction phase refuses --data.train_sizee=5", "--data.train_size"]),
    # a value after a space, refused by phase 3's own parser: before phase 1 trains
    (["--search.model.num_samples", "abc"], ["the search phase refuses --model.num_samples=abc", "int"]),
])
def test_an_override_that_no_phase_takes_stops_before_anything_is_written(flags, says, tmp_path):
    with pytest.raises(OverrideError) as e:
        run_pipeline("configs/toy", TINY + flags, run_dir=str(tmp_path / "run"))
    for text in says:
        assert text in str(e.value), (text, str(e.value))
    assert not (tmp_path / "run").exists()


def test_space_separated_values_join_their_flag():
    assert join_values(["--trainer.max_steps", "20", "--model.lr=1e-3", "--data.seed", "-1"]) == [
        "--trainer.max_steps=20", "--model.lr=1e-3", "--data.seed=-1"]
    with pytest.raises(OverrideError, match="quote"):  # an unquoted value with a space
        join_values(["--model.samplers={langevin:", "null}"])


def test_an_empty_training_set_stops_without_a_done_stamp(tmp_path):
    """drop_last leaves no batch: no step, no checkpoint, so no DONE either, and --resume does not skip phase 1."""
    run = tmp_path / "run"
    for resume in (False, True):
        with pytest.raises(ConfigError, match=r"\(100 examples\) is smaller than --data.batch_size=256"):
            run_pipeline("configs/toy", TINY + ["--data.train_size=100", "--data.batch_size=256"], run_dir=str(run),
                         resume=resume)
        assert not (run / "reconstruction/DONE").exists()


@pytest.mark.parametrize("remove, says", [("reconstruction/checkpoints/last.ckpt", "checkpoint .* is missing"),
                                          ("reconstruction/DONE", "the reconstruction phase it was built on did not")])
def test_resume_never_chains_a_finished_phase_it_cannot_trust(remove, says, tiny_run, tmp_path):
    run = copy_of(tiny_run, tmp_path)
    os.remove(run / remove)
    before = snapshot(run)
    with pytest.raises(PipelineError, match=f"{says}.*--overwrite"):
        run_pipeline("configs/toy", TINY, run_dir=str(run), resume=True)
    assert snapshot(run) == before


def test_resume_chains_the_checkpoints_its_done_stamps_name(tiny_run, tmp_path):
    run = copy_of(tiny_run, tmp_path)
    (run / "reconstruction/DONE").write_text("3 s\n")  # a stamp from before stamps named their checkpoint
    os.rename(run / "adversarial/checkpoints/last.ckpt", run / "adversarial/checkpoints/last-v1.ckpt")
    (run / "adversarial/DONE").write_text(json.dumps({"checkpoint": "checkpoints/last-v1.ckpt"}))
    out = run_pipeline("configs/toy", TINY, run_dir=str(run), resume=True)
    assert set(out["seconds"]) == {"search"}
    (aside,) = run.glob(".overwritten-*")  # the earlier search's files, out of the new one's way
    assert {"search.ckpt", "results.json", "samples-langevin.npz"} <= {p.name for p in aside.iterdir()}
    assert out["checkpoints"] == {"reconstruction": last_ckpt(str(run), "reconstruction"),
                                  "adversarial": str(run / "adversarial/checkpoints/last-v1.ckpt")}
    search = torch.load(run / "search.ckpt", map_location="cpu", weights_only=False)
    assert search["hyper_parameters"]["ckpt"] == out["checkpoints"]["adversarial"]
