"""Every setting is checked before the first training step: the pipeline parses each phase's command and builds its
data module and model (the checkpoints of earlier phases pending), so what any constructor refuses stops the run
before phase 1 writes anything. And a config source that names an unknown sampler, or an abbreviated flag, is
refused rather than read as something else."""
import sys

import pytest
import yaml

from dsls.arguments import check_sampler_names
from dsls.cli import main
from dsls.errors import CheckpointPending, ConfigError
from dsls.errors import OverrideError
from dsls.phases.base import load_phase_checkpoint, pending_checkpoints
from dsls.pipeline import run_pipeline

TINY = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--data.train_size=512",
        "--trainer.max_steps=12", "--model.num_samples=20", "--model.batch_size=20"]


@pytest.fixture(scope="module")
def typo_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "samplers.yaml"
    path.write_text(yaml.safe_dump({"model": {"init_args": {"samplers": {"lagevin": {}}}}}))
    return str(path)


@pytest.mark.parametrize("flags, says", [
    # the search (phase 3): samplers' settings, sample counts, ODE methods
    (["--model.samplers.langevin.eps0=-1"], ["search phase", "eps0 must be > 0"]),
    (["--search.model.num_samples=0"], ["search phase", "--model.num_samples and --model.batch_size must be >= 1"]),
    (["--model.samplers.ode={method: rk99}"], ["search phase", "unknown method 'rk99'"]),
    (["--model.samplers.pc={levels: 1}"], ["search phase", "levels >= 2"]),
    (["--search.model.classifier_ckpt=c.ckpt"], ["search phase", "--model.labels=balanced"]),
    # phase 2's module
    (["--adversarial.model.mode=jiont"], ["adversarial phase", "'posthoc' or 'joint'"]),
    (["--adversarial.model.refit_from=warm", "--adversarial.model.mode=joint"], ["'joint' or 'scratch'"]),
    (["--adversarial.model.d_steps_per_ae_step=0"], ["adversarial phase", "must be >= 1"]),
    # the data modules of phases 1 and 2
    (["--data.name=grid52"], ["reconstruction phase", "unknown toy data set 'grid52'"]),
    (["--adversarial.data.batch_size=0"], ["adversarial phase", "--data.batch_size=0 must be >= 1"]),
    # an abbreviated flag is not expanded
    (["--adversarial.trainer.max_step=100"], ["adversarial phase", "--trainer.max_steps"]),
])
def test_a_constructor_level_error_of_any_phase_stops_the_pipeline_before_phase_1(flags, says, tmp_path):
    with pytest.raises(OverrideError) as e:
        run_pipeline("configs/toy", TINY + flags, run_dir=str(tmp_path / "run"))
    for text in says:
        assert text in str(e.value), (text, str(e.value))
    assert not (tmp_path / "run").exists()  # no phase folder, no checkpoint


def test_an_unknown_sampler_in_a_second_config_file_stops_the_pipeline(typo_config, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown sampler 'lagevin' \(did you mean 'langevin'\?\)"):
        run_pipeline("configs/toy", TINY + [f"--search.config={typo_config}"], run_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(OverrideError, match=r"write --<phase>.config=FILE"):  # a config file names its phase
        run_pipeline("configs/toy", TINY + [f"--config={typo_config}"], run_dir=str(tmp_path / "run"))


@pytest.mark.parametrize("args", [
    ["--config", "configs/toy/search.yaml", "--config", "TYPO"],
    ["--config=configs/toy/search.yaml", "--model.samplers={none: {}, lagevin: {}}"],
    ["--config", "configs/toy/search.yaml", "--model.init_args.samplers={lagevin: {eps0: 1.0}}"],
    ["--config", "configs/toy/search.yaml", "--model={init_args: {samplers: {lagevin: {}}}}"],
])
def test_every_config_source_is_checked_for_unknown_sampler_names(args, typo_config):
    args = [typo_config if a == "TYPO" else a for a in args]
    with pytest.raises(ConfigError, match="unknown sampler 'lagevin'"):
        check_sampler_names(["predict", *args])
    check_sampler_names(["predict", "--config", "configs/toy/search.yaml", "--model.samplers={pc: null}"])


def test_only_pending_checkpoints_are_excused():
    with pending_checkpoints(["runs/x/adversarial/checkpoints/last.ckpt"]):
        with pytest.raises(CheckpointPending):
            load_phase_checkpoint("runs/x/adversarial/checkpoints/last.ckpt", "adversarial")
        with pytest.raises(ConfigError.__mro__[1]):  # any other missing file is still an error (ValueError)
            load_phase_checkpoint("runs/x/other.ckpt", "adversarial")
    with pytest.raises(ValueError, match="does not exist"):  # and outside the block, so is this one
        load_phase_checkpoint("runs/x/adversarial/checkpoints/last.ckpt", "adversarial")


def test_dsls_refuses_abbreviated_flags_and_names_the_full_one(tmp_path, monkeypatch, capsys):
    """`dsls fit` in-process (its console entry point; a fresh interpreter would cost ~10 s of imports)."""
    from dsls.cli import console_main

    monkeypatch.setattr(sys, "argv", ["dsls", "fit", "--config", "configs/toy/reconstruction.yaml",
                                      "--trainer.max_step=3", f"--run_dir={tmp_path}"])
    with pytest.raises(SystemExit) as e:
        console_main()
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: unrecognized arguments: --trainer.max_step=3") and "--trainer.max_steps" in last
    assert not any(tmp_path.iterdir())


def test_parse_only_builds_the_model_and_data_module(tmp_path):
    """ParseOnlyCLI runs the constructors' checks (here the data module's) without a run folder or a Trainer."""
    with pytest.raises(ValueError, match="unknown toy data set"):
        main(["fit", "--config", "configs/toy/reconstruction.yaml", "--data.name=nope", f"--run_dir={tmp_path}/r"],
             parse_only=True)
    cli = main(["fit", "--config", "configs/toy/reconstruction.yaml", f"--run_dir={tmp_path}/r"], parse_only=True)
    assert not hasattr(cli, "trainer") and not (tmp_path / "r").exists()
