"""Every shipped config parses with the CLI's own parser (types, keys, class paths), without building anything; and
every W&B sweep parameter is an override that parser accepts and applies."""
import glob
import os

import pytest
import yaml

from dsls.cli import DSLSCLI, main
from dsls.samplers import SAMPLERS, build_samplers

SUBCOMMAND = {"reconstruction": "fit", "adversarial": "fit", "pixel_ncsn": "fit", "search": "predict",
              "latent_classifier": "fit", "latent_score": "fit"}
ALL = sorted(p for p in glob.glob("configs/*/*.yaml") if not p.startswith("configs/sweeps/"))
CONFIGS = [p for p in ALL if os.path.splitext(os.path.basename(p))[0] in SUBCOMMAND]
PROFILES = [p for p in ALL if p not in CONFIGS]  # e.g. configs/mnist/cpu.yaml: per-phase settings (dsls.profiles)
SWEEPS = sorted(glob.glob("configs/sweeps/*.yaml"))
REQUIRED = ("reconstruction", "adversarial", "pixel_ncsn", "latent_score", "search")  # latent_classifier: labelled sets


@pytest.fixture
def parse_only(monkeypatch):
    """main(args) that parses (and runs DSLSCLI's own config hook) but instantiates and runs nothing: no
    checkpoints, data or weights are needed. Returns the subcommand's parsed config."""
    monkeypatch.setattr(DSLSCLI, "instantiate_classes", lambda self: None)
    monkeypatch.setattr(DSLSCLI, "_run_subcommand", lambda self, subcommand: None)

    def parse(args: list[str]):
        cli = main(args)
        return cli.config[cli.subcommand]

    return parse


def test_every_dataset_ships_every_phase():
    assert len(CONFIGS) >= 4 * 5
    for folder in sorted({os.path.dirname(p) for p in CONFIGS}):
        assert {f"{folder}/{phase}.yaml" for phase in REQUIRED} <= set(CONFIGS), folder


@pytest.mark.parametrize("path", CONFIGS)
def test_config_parses_with_the_cli(path, parse_only, tmp_path):
    phase = os.path.splitext(os.path.basename(path))[0]
    cfg = parse_only([SUBCOMMAND[phase], "--config", path, f"--run_dir={tmp_path}"])
    module = cfg.model.class_path
    assert module.startswith("dsls.phases.") and module.split(".")[2] == phase, module  # the file names its phase
    if phase != "search":
        assert cfg.data is not None and cfg.data.class_path.startswith("dsls.data."), cfg.data
    else:  # the samplers a search config names are registered, with valid settings
        samplers = {name: None if s is None else dict(s) for name, s in vars(cfg.model.init_args.samplers).items()}
        chosen = build_samplers(samplers)
        assert set(chosen) <= set(SAMPLERS) and {"none", "langevin"} <= set(chosen), chosen


INPUT = {"adversarial": "--model.autoencoder_ckpt", "latent_classifier": "--model.autoencoder_ckpt",
         "latent_score": "--model.autoencoder_ckpt", "pixel_ncsn": None, "reconstruction": None,
         "search": "--model.ckpt"}


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_its_data_module_and_model(path, tmp_path):
    """As the pipeline's check before phase 1: every shipped config's constructors take its settings (the input
    checkpoint pending, as an earlier phase of the run would write it), and nothing is written."""
    from dsls.phases.base import pending_checkpoints

    phase = os.path.splitext(os.path.basename(path))[0]
    ckpt = str(tmp_path / "earlier" / "last.ckpt")
    flags = [f"{INPUT[phase]}={ckpt}"] if INPUT[phase] else []
    with pending_checkpoints([ckpt]):
        main([SUBCOMMAND[phase], "--config", path, *flags, f"--run_dir={tmp_path}/run"], parse_only=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("path", PROFILES)
def test_profile_settings_parse_with_each_phase(path, parse_only, tmp_path):
    """A profile's settings, routed as the pipeline's --profile routes them, are accepted by each phase's parser and
    land in its config."""
    from dsls.pipeline import phase_args
    from dsls.profiles import profile_overrides

    folder, name = os.path.dirname(path), os.path.splitext(os.path.basename(path))[0]
    spec = yaml.safe_load(open(path))
    assert spec and set(spec) <= set(SUBCOMMAND), spec
    for phase in spec:
        base = f"{folder}/{phase}.yaml"
        routed = phase_args(phase, yaml.safe_load(open(base)), profile_overrides(folder, name, [phase]))
        assert routed, phase
        cfg = parse_only([SUBCOMMAND[phase], "--config", base, *routed, f"--run_dir={tmp_path}"])
        for key, value in (arg[2:].split("=", 1) for arg in routed):
            got = cfg
            for part in key.split("."):
                got = got.init_args if part not in got and "init_args" in got else got
                got = got[part]
            assert got == yaml.safe_load(value), (phase, key, got, value)


def sweep_value(spec: dict):
    """One value a W&B agent could pass for a parameter spec."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1]
    return spec["min"]


@pytest.mark.parametrize("path", SWEEPS)
def test_sweep_parameters_are_overrides_the_cli_accepts(path, parse_only, tmp_path):
    sweep = yaml.safe_load(open(path))
    cmd = sweep["command"]
    sub, config = cmd[cmd.index("--config") - 1], cmd[cmd.index("--config") + 1]
    assert sub in ("fit", "predict") and config in CONFIGS
    params = {name: sweep_value(spec) for name, spec in sweep["parameters"].items()}
    cfg = parse_only([sub, "--config", config, f"--run_dir={tmp_path}"] + [f"--{k}={v}" for k, v in params.items()])
    for name, value in params.items():
        section, key = name.split(".", 1)
        got = cfg[f"model.init_args.{key}"] if section == "model" else cfg[name]
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (name, got, value)


def test_search_sweep_tunes_sampler_settings_by_their_new_names():
    """Sampler settings live under model.samplers.<sampler>.<setting> (there is no model.eps0 any more)."""
    sweep = yaml.safe_load(open("configs/sweeps/cifar10_search.yaml"))
    names = set(sweep["parameters"])
    assert "model.samplers.langevin.eps0" in names and "model.samplers.langevin.steps_per_level" in names, names
    assert not {"model.eps0", "model.steps_per_level", "model.denoise", "model.init"} & names, names


def test_the_parser_rejects_unknown_overrides(parse_only, tmp_path, capsys):
    base = ["predict", "--config", "configs/toy/search.yaml", f"--run_dir={tmp_path}"]
    for bad in ("--model.samplers.langevin.epsx=1", "--model.samplers.nope={}", "--model.eps0=1e-3"):
        with pytest.raises(SystemExit):
            parse_only(base + [bad])
        assert bad[2:].split("=")[0].split(".")[-1] in capsys.readouterr().err, bad
    cfg = parse_only(base + ["--model.samplers.langevin.eps0=1e-3"])
    assert cfg["model.init_args.samplers.langevin.eps0"] == 1e-3
    assert cfg["model.init_args.samplers.langevin.steps_per_level"] == 10  # the rest kept


def test_a_search_config_runs_only_the_samplers_it_names(parse_only, tmp_path):
    """Naming samplers replaces the default set ({none, langevin}); it is not merged into it."""
    cfg = yaml.safe_load(open("configs/toy/search.yaml"))
    cfg["model"]["init_args"]["samplers"] = {"pc": {"snr": 0.2}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg))
    parsed = parse_only(["predict", "--config", str(path), f"--run_dir={tmp_path}"]).model.init_args.samplers
    chosen = build_samplers({n: None if s is None else dict(s) for n, s in vars(parsed).items()})
    assert list(chosen) == ["pc"] and chosen["pc"].snr == 0.2


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.endswith("/latent_classifier.yaml")])
def test_latent_classifier_noise_matches_phase_2(path, parse_only, tmp_path):
    """The classifier must know every σ the search visits: its ladder and σ sampling are phase 2's, as parsed (the
    configs name only what they change; the defaults are dsls.noise.LATENT_LADDER's, one place for both)."""
    keys = ("sigma_max", "sigma_min", "num_levels", "sigma_sampling")
    ours = parse_only(["fit", "--config", path, f"--run_dir={tmp_path}"]).model.init_args
    theirs = parse_only(["fit", "--config", path.replace("latent_classifier", "adversarial"),
                         f"--run_dir={tmp_path}"]).model.init_args
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}


def test_configs_do_not_restate_the_ladder_defaults():
    """One default per setting: a config that names a σ-ladder setting changes it."""
    from dsls.noise import LATENT_LADDER, PIXEL_LADDER

    for path in CONFIGS:
        phase = os.path.splitext(os.path.basename(path))[0]
        if phase not in ("adversarial", "latent_classifier", "latent_score", "pixel_ncsn"):
            continue
        defaults = vars(PIXEL_LADDER if phase == "pixel_ncsn" else LATENT_LADDER)
        init = yaml.safe_load(open(path))["model"]["init_args"]
        restated = {k: v for k, v in init.items() if k in defaults and v == defaults[k]}
        assert not restated, (path, restated)


def test_labelled_data_sets_ship_a_latent_classifier():
    assert {"toy", "digits", "mnist", "cifar10"} <= {p.split("/")[-2] for p in CONFIGS
                                                     if p.endswith("/latent_classifier.yaml")}
