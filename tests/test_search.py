"""The search phase's contract with its samplers: per-sample seeds (the same sample whatever the batch size or the
other samplers), every registered sampler under Trainer.predict, clear errors, and CLI overrides of one setting."""
import dataclasses
import json

import lightning as L
import numpy as np
import pytest
import yaml

from dsls.phases.search import LatentSearchModule
from dsls.samplers import SAMPLERS, make_sampler

from conftest import make_tiny_trainer  # the tiny_trainer fixture's factory, for the search helper
from contract import assert_same_samples, assert_seed_matters  # tests/contract.py: the reproducibility contract

# Small settings per sampler, so that each runs in a second on the toy checkpoint. A sampler registered later and not
# named here runs with its defaults.
QUICK = {"none": {}, "langevin": {"steps_per_level": 1}, "pc": {"levels": 3}, "ode": {"rtol": 1e-3, "atol": 1e-3}}


def search(ckpt, out_dir, **kw) -> LatentSearchModule:
    model = LatentSearchModule(ckpt=ckpt, out_dir=str(out_dir), **kw)
    make_tiny_trainer(inference_mode=False).predict(model, return_predictions=False)
    return model


def load(out_dir, name: str) -> dict:
    with np.load(out_dir / f"samples-{name}.npz") as f:
        return {k: f[k] for k in f.files}


BATCH_SAMPLERS = {"none": {}, "langevin": {"steps_per_level": 2}, "pc": {"levels": 4},
                  "ode": {"method": "heun2", "steps": 4}}  # ode on a fixed grid: an adaptive one picks per batch
BATCH_KW = dict(num_samples=500, samplers=BATCH_SAMPLERS, num_levels=4)


@pytest.fixture(scope="module")
def one_batch(toy_adv_ckpt, tmp_path_factory):
    """The 500 samples in one batch (b500), and with another seed (seed1): the reference of every batch size."""
    d = tmp_path_factory.mktemp("one-batch")
    search(toy_adv_ckpt, d / "b500", batch_size=500, **BATCH_KW)
    search(toy_adv_ckpt, d / "seed1", batch_size=500, seed=1, **BATCH_KW)
    return d


@pytest.mark.parametrize("batch_size", [50, 7, 499])  # 7 and 499 leave ragged last batches (3 rows, 1 row)
def test_samples_do_not_depend_on_the_batch_size(toy_adv_ckpt, one_batch, tmp_path, batch_size):
    search(toy_adv_ckpt, tmp_path / "small", batch_size=batch_size, **BATCH_KW)
    for name in BATCH_SAMPLERS:
        a, b = load(tmp_path / "small", name), load(one_batch / "b500", name)
        assert a["x"].shape == (500, 2)
        assert_same_samples(a, b, f"{name}, batch {batch_size} vs 500")
        assert_seed_matters(b, load(one_batch / "seed1", name), f"{name}, seed 0 vs 1")
    lang = load(tmp_path / "small", "langevin")
    assert not np.array_equal(lang["z"], lang["z0"])  # the search did move the latents


def test_samples_do_not_depend_on_the_other_samplers(toy_adv_ckpt, tmp_path):
    kw = dict(num_samples=60, batch_size=30, num_levels=3)
    search(toy_adv_ckpt, tmp_path / "one", samplers=["langevin"], **kw)
    search(toy_adv_ckpt, tmp_path / "two", samplers=["none", "langevin"], **kw)
    assert_same_samples(load(tmp_path / "one", "langevin"), load(tmp_path / "two", "langevin"),
                        "langevin alone vs after none")


def test_start_latent_depends_only_on_seed_and_index(toy_adv_ckpt, tmp_path):
    m = search(toy_adv_ckpt, tmp_path / "a", num_samples=30, batch_size=7, samplers={"none": {}}, seed=3)
    search(toy_adv_ckpt, tmp_path / "b", num_samples=50, batch_size=50, seed=3,
           samplers={"none": {}, "langevin": QUICK["langevin"]})
    search(toy_adv_ckpt, tmp_path / "c", num_samples=30, batch_size=30, samplers={"none": {}}, seed=4)
    a, b, c = (load(tmp_path / d, "none") for d in "abc")
    np.testing.assert_array_equal(a["z0"], b["z0"][:30])  # sample i is sample i, whatever N and the batches
    assert not np.array_equal(a["z0"], c["z0"])  # and the seed matters
    # every sampler starts from the same standard-normal n0 (langevin's 'wide' start is it scaled by √(1 + σ_max²))
    lang = load(tmp_path / "b", "langevin")
    np.testing.assert_allclose(lang["z0"], b["z0"] * np.sqrt(1 + m.ladder.sigma_max**2), rtol=1e-6)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_registered_sampler_runs_through_predict(name, toy_adv_ckpt, tmp_path):
    settings = QUICK.get(name, {})
    model = search(toy_adv_ckpt, tmp_path, num_samples=20, batch_size=10, num_levels=3, seed=5,
                   samplers={name: settings})
    npz = load(tmp_path, name)
    assert npz["x"].shape == (20, 2) and np.isfinite(npz["x"]).all() and npz["z"].shape == (20, 2)
    assert len(np.unique(npz["z0"], axis=0)) == 20
    entry = json.loads((tmp_path / "results.json").read_text())[name]
    assert entry["num_samples"] == 20 and entry["seed"] == 5
    assert entry["nfe"] == 0 if name == "none" else entry["nfe"] > 0
    assert entry["settings"] == make_sampler(name, settings).settings()
    assert entry["ladder"] == model.ladder.state_dict() and entry["ladder"]["num_levels"] == 3
    if name == "langevin":
        assert entry["nfe"] == 3 * 1 + 1  # levels × steps + denoise


def test_unknown_sampler_or_setting_through_the_module(toy_adv_ckpt):
    with pytest.raises(ValueError, match=r"unknown sampler 'nope'.*registered samplers: none, langevin"):
        LatentSearchModule(ckpt=toy_adv_ckpt, samplers={"none": {}, "nope": {}})
    with pytest.raises(ValueError, match=r"unknown sampler 'nope'"):
        LatentSearchModule(ckpt=toy_adv_ckpt, samplers=["nope"])
    with pytest.raises(ValueError, match=r"sampler 'langevin' has no setting 'epsx'; its settings: eps0, steps_per"):
        LatentSearchModule(ckpt=toy_adv_ckpt, samplers={"langevin": {"epsx": 1e-3}})
    with pytest.raises(TypeError):  # the pre-registry top-level settings are gone, not silently ignored
        LatentSearchModule(ckpt=toy_adv_ckpt, steps_per_level=2)


class NoRunTrainer(L.Trainer):
    """The CLI builds the module and the trainer; this trainer then does nothing: the test is about the overrides."""

    def predict(self, *args, **kwargs):
        return None


def test_cli_override_of_one_setting_reaches_the_sampler(toy_adv_ckpt, tmp_path, capsys):
    """A W&B sweep agent passes one --name=value per swept setting: it must change that setting and keep the rest
    (the sampler's other settings, and the other samplers of the config with theirs)."""
    from dsls.cli import main

    base = ["predict", "--config", "configs/toy/search.yaml", f"--model.ckpt={toy_adv_ckpt}", f"--run_dir={tmp_path}"]
    plain = main(base, trainer_class=NoRunTrainer).model.samplers
    configured = yaml.safe_load(open("configs/toy/search.yaml"))["model"]["init_args"]["samplers"]
    assert list(plain) == list(configured) and "langevin" in plain
    cli = main(base + ["--model.samplers.langevin.steps_per_level=3", "--model.samplers.langevin.eps0=0.00123"],
               trainer_class=NoRunTrainer)
    samplers = cli.model.samplers
    assert samplers["langevin"].eps0 == 0.00123 and samplers["langevin"].steps_per_level == 3
    assert samplers["langevin"] == dataclasses.replace(plain["langevin"], eps0=0.00123, steps_per_level=3)
    assert {n: s for n, s in samplers.items() if n != "langevin"} == {n: s for n, s in plain.items() if n != "langevin"}
    assert cli.model.hparams["samplers"]["langevin"]["eps0"] == 0.00123  # what search.ckpt records
    for bad in ("--model.samplers.langevin.epsx=1", "--model.samplers.nope={}"):
        with pytest.raises(SystemExit):
            main(base + [bad], trainer_class=NoRunTrainer)
        assert bad[2:].split("=")[0].split(".")[-1] in capsys.readouterr().err, bad


def test_cli_adds_a_sampler_with_its_defaults(toy_adv_ckpt, tmp_path):
    """'--model.samplers.<name>={}' adds a registered sampler that the config does not run."""
    from dsls.cli import main

    config = "configs/cifar10/search.yaml"  # none + langevin: pc and ode are left to add
    configured = yaml.safe_load(open(config))["model"]["init_args"]["samplers"]
    missing = [n for n in SAMPLERS if n not in configured]
    if not missing:
        pytest.skip(f"{config} already runs every registered sampler")
    name = missing[0]
    cli = main(["predict", "--config", config, f"--model.ckpt={toy_adv_ckpt}", f"--run_dir={tmp_path}",
                f"--model.samplers.{name}={{}}"], trainer_class=NoRunTrainer)
    assert list(cli.model.samplers) == [*configured, name]
    assert cli.model.samplers[name] == make_sampler(name)


def test_samples_npz_bytes_do_not_depend_on_when_they_were_written(tmp_path, monkeypatch):
    """A rerun with the same samples must give the same file, byte for byte: no time stamp or path inside."""
    import time

    from dsls.runs import save_samples

    arrays = {"x": np.arange(6.0).reshape(3, 2), "z0": np.ones((3, 2)), "z": np.zeros((3, 2))}
    paths = []
    for i, now in enumerate((0.0, 1.7e9)):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        paths.append(save_samples(str(tmp_path / str(i)), "langevin", arrays))
    assert open(paths[0], "rb").read() == open(paths[1], "rb").read()
    with np.load(paths[0]) as f:
        assert f["x"].dtype == np.float32 and np.array_equal(f["x"], arrays["x"])


def test_a_second_search_into_the_same_folder_is_refused(toy_adv_ckpt, tmp_path):
    """Nothing a user made is overwritten: the first search's files stay as they were, byte for byte."""
    from dsls.errors import TaskError

    search(toy_adv_ckpt, tmp_path, samplers={"none": {}})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(TaskError, match=r"already holds search.ckpt, samples-none.npz .*--model.out_dir"):
        search(toy_adv_ckpt, tmp_path, samplers={"none": {}}, seed=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("kw", [{"num_samples": 0}, {"batch_size": 0}])
def test_no_samples_is_an_error(toy_adv_ckpt, kw):
    from dsls.errors import TaskError

    with pytest.raises(TaskError, match="must be >= 1"):
        LatentSearchModule(ckpt=toy_adv_ckpt, **kw)


def test_cli_search_keeps_the_run_config_and_refuses_a_second_search(toy_adv_ckpt, tmp_path):
    """--model.out_dir=X writes X/config.yaml, not the run's (which evaluate.py reads); a second search into a
    folder holding one is refused before anything is written."""
    from dsls.cli import main
    from dsls.errors import TaskError

    args = ["predict", "--config", "configs/toy/search.yaml", f"--model.ckpt={toy_adv_ckpt}", f"--run_dir={tmp_path}",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--model.num_samples=16",
            "--model.batch_size=16", "--model.samplers={none: {}}"]
    main(args)
    run_config = (tmp_path / "config.yaml").read_bytes()
    main([*args, f"--model.out_dir={tmp_path / 'other'}", "--model.seed=3"])
    assert (tmp_path / "other" / "config.yaml").is_file() and (tmp_path / "config.yaml").read_bytes() == run_config
    with pytest.raises(TaskError, match="already holds an earlier search"):
        main([*args, "--model.seed=4"])
    assert (tmp_path / "config.yaml").read_bytes() == run_config
