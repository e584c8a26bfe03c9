"""Routing command-line overrides to the phases of one configs/<dataset> folder, and checking them before anything
trains.

Overrides go to every phase that accepts them: --trainer.* to all, --data.* to the fit phases, --model.X to the
phases whose module has a parameter X (--model.samplers.langevin.eps0 reaches the search only). Prefix one with a
phase to target that phase alone (--adversarial.model.mode=joint; --search.config=FILE adds a config file). An
override that reaches no phase is an error with the close matches, and every phase's command goes through that
phase's own CLI parser and constructors (dsls.cli.ParseOnlyCLI). dsls.pipeline runs the phases.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import io
from pathlib import Path

import yaml

from dsls.errors import OverrideError, exception_chain, first_line
from dsls.samplers import sampler_flag_hint

PHASES = [("reconstruction", "fit"), ("adversarial", "fit"), ("search", "predict")]
GUIDED_PHASES = PHASES[:2] + [("latent_classifier", "fit"), PHASES[2]]  # --classifier: a class-guided search
ALL_PHASES = GUIDED_PHASES + [("pixel_ncsn", "fit"),  # the pixel-space baseline: dsls.ablation trains it too
                              ("latent_score", "fit")]  # the latent DSM score network, a peer of D (dsls.ablation)
NEEDS = {"adversarial": ("--model.autoencoder_ckpt", "reconstruction"),
         "latent_classifier": ("--model.autoencoder_ckpt", "adversarial"),  # joint mode's E, D's σ_max
         "search": ("--model.ckpt", "adversarial"),
         "latent_score": ("--model.autoencoder_ckpt", "reconstruction")}
def _class(class_path: str) -> type:
    module_path, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module_path), name)


def module_class(config: dict) -> type:  # the LightningModule class a phase config names
    return _class(config["model"]["class_path"])


def _params(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]


def _accepts(config: dict, arg: str) -> bool:
    key = arg.lstrip("-").split("=", 1)[0]
    section, _, rest = key.partition(".")
    if section in ("trainer", "seed_everything", "run_dir", "checkpoint", "config"):  # --<phase>.config: one phase
        return True
    if section == "ckpt_path":  # resuming is for the fit phases; predict's --ckpt_path means something else
        return "data" in config
    if section not in config:
        return False
    if section == "model" and rest:
        return rest.split(".")[0] in _params(module_class(config))
    return True


def _split_phase(arg: str) -> tuple[str | None, str]:
    """--<phase>.x=v → (phase, --x=v); anything else → (None, arg)."""
    phase = next((p for p, _ in ALL_PHASES if arg.startswith(f"--{p}.")), None)
    return (phase, "--" + arg[len(phase) + 3:]) if phase else (None, arg)


def phase_args(phase: str, config: dict, overrides: list[str]) -> list[str]:
    """The overrides that reach `phase` (config: its parsed yaml), with any --<phase>. prefix removed."""
    out = []
    for arg in overrides:
        target, routed = _split_phase(arg)
        if target == phase or (target is None and _accepts(config, arg)):
            out.append(routed)
    return out


def join_values(overrides: list[str]) -> list[str]:
    """'--key value' → '--key=value', as the CLI reads it (routing needs one token per override)."""
    out: list[str] = []
    for token in overrides:
        if token.startswith("--"):
            out.append(token)
        elif out and "=" not in out[-1]:
            out[-1] += "=" + token
        else:
            raise OverrideError(f"{token!r} is not an override: write --section.name=value, and quote a value with "
                                f"spaces ('--model.samplers={{langevin: null}}')")
    return out


def argument_names(config: dict) -> set[str]:
    """The settings a phase takes (section.name, from the classes' signatures): the candidates a typo is matched to."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dsls.samplers import SAMPLERS, setting_names

    names = {"run_dir", "seed_everything", *(f"trainer.{p}" for p in _params(Trainer)),
             *(f"checkpoint.{p}" for p in _params(ModelCheckpoint))}
    model = _params(module_class(config))
    names |= {f"model.{p}" for p in model}
    if "samplers" in model:
        names |= {f"model.samplers.{s}.{k}" for s in SAMPLERS for k in setting_names(s)}
    if "data" in config:
        names |= {"ckpt_path", *(f"data.{p}" for p in _params(_class(config["data"]["class_path"])))}
    return names


def _near(key: str, configs: dict) -> list[str]:
    """Close matches for a misspelt key: a phase prefix, else the settings of the phases in `configs` (the same
    last name first: --model.eps0 → --model.samplers.langevin.eps0)."""
    head, _, rest = key.partition(".")
    phase = difflib.get_close_matches(head, [p for p, _ in ALL_PHASES], n=1, cutoff=0.7)
    if phase and rest and head not in ("model", "data", "trainer", "checkpoint"):
        p = phase[0]
        if p in configs and not _accepts(configs[p], "--" + rest):
            return [f"--{p}.{n[2:]}" for n in _near(rest, {p: configs[p]})] or [f"--{p}.{rest}"]
        return [f"--{p}.{rest}"]
    names = sorted(set().union(*(argument_names(c) for c in configs.values())))
    same_leaf = [n for n in names if n != key and n.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    return ["--" + n for n in (same_leaf or difflib.get_close_matches(key, names, n=3, cutoff=0.6))[:3]]


def check_routes(config_dir: Path, configs: dict, overrides: list[str]) -> None:
    """Every override must reach a phase of this run (configs: phase → yaml), and none may set what the pipeline
    sets itself; otherwise an OverrideError that says where it could go."""
    others = {p: yaml.safe_load((config_dir / f"{p}.yaml").read_text()) for p, _ in ALL_PHASES
              if p not in configs and (config_dir / f"{p}.yaml").is_file()}
    for arg in overrides:
        phase, routed = _split_phase(arg)
        key = routed[2:].split("=", 1)[0]
        if phase is not None and phase not in configs:
            raise OverrideError(f"{arg}: this run has no {phase} phase (it runs {', '.join(configs)})" + (
                "; --classifier adds it" if phase == "latent_classifier" else ""))
        if phase is None and key == "config":
            raise OverrideError(f"{arg}: a config file belongs to one phase: write --<phase>.config=FILE (e.g. "
                                f"--search.config=my-samplers.yaml), which adds to configs/<dataset>/<phase>.yaml")
        reached = [phase] if phase else [p for p, c in configs.items() if _accepts(c, arg)]
        reached = [p for p in reached if _accepts(configs[p], routed)]
        for p in reached:
            if key == "run_dir":
                raise OverrideError(f"{arg}: give the run folder as --run-dir (the pipeline passes it to each phase)")
            if p in NEEDS and key == NEEDS[p][0][2:]:
                raise OverrideError(f"{arg}: the pipeline sets it to the checkpoint this run's {NEEDS[p][1]} phase "
                                    f"writes; to chain another checkpoint, run the {p} phase by hand "
                                    f"(dsls {dict(ALL_PHASES)[p]} --config {config_dir}/{p}.yaml {NEEDS[p][0]}=...)")
        if reached:
            continue
        hint = sampler_flag_hint(key[len("model."):].split(".")[0], f"--{phase}.model." if phase else "--model.") \
            if key.startswith("model.") else None
        if hint:
            raise OverrideError(hint)
        near = (_near(key, configs) if phase is None
                else [f"--{phase}.{n[2:]}" for n in _near(key, {phase: configs[phase]})])
        elsewhere = [p for p, c in others.items() if phase is None and _accepts(c, arg)]
        where = (f" reaches no phase of this run ({', '.join(configs)})" if phase is None
                 else f": the {phase} phase has no setting {key}")
        raise OverrideError(
            f"{arg}{where}"
            + (f"; the {', '.join(elsewhere)} phase takes it, which this run does not run"
               + ("; --classifier adds it" if "latent_classifier" in elsewhere else "") if elsewhere
               else f"; did you mean {' or '.join(near)}?" if near else "")
            + ("; the phases take trainer.*, model.*, data.*, checkpoint.*, seed_everything, and one phase's "
               "setting is --<phase>.<section>.<name>=value (e.g. --adversarial.model.mode=joint)" if not near else ""))


def _parse_error(args: list[str]) -> str | None:
    """None if the phase's own CLI parser takes `args`, else the innermost cause it reports (jsonargparse nests a
    'Union subtypes' report per class_path level). Only the arguments are checked: nothing is built, seeded or run,
    and the run folder's state is not looked at yet (the checkpoints of later phases do not exist yet)."""
    from dsls.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(args, parse_only=True)
            return None
        except SystemExit as e:
            if not e.code:
                return None
    noise = ("Parser key", "Does not validate", "Subtypes:", "Errors:", "Given value", "- Problem with given class",
             "- Expected a <class 'NoneType'>")
    lines = [ln.strip() for ln in err.getvalue().rsplit("error: ", 1)[-1].splitlines() if ln.strip()]
    return next((ln.lstrip("- ") for ln in reversed(lines) if not ln.startswith(noise)), " ".join(lines))


def _innermost(e: BaseException) -> str:
    """The first line of the innermost ValueError/TypeError in e's chain: what the constructor said, not
    jsonargparse's report around it (the Union's alternatives and the whole given value)."""
    inner = [x for x in exception_chain(e) if isinstance(x, (ValueError, TypeError))]
    return first_line(inner[-1] if inner else e)


def check_phase(phase: str, config: dict, command, routed: list[str]) -> None:
    """Parse one phase's command (command(overrides) → its arguments) with its own parser and build its data module
    and model (dsls.cli.ParseOnlyCLI); a parse error names the override that breaks it, and anything a constructor
    refuses (a sampler's value, a sample count, a data setting) is an OverrideError naming the phase."""
    try:
        cause = _parse_error(command(routed))
    except (ValueError, TypeError) as e:  # ConfigError, TaskError, PhaseCheckpointError and the constructors' own
        raise OverrideError(f"the {phase} phase refuses its settings: {_innermost(e)}") from e
    if cause is None:
        return
    culprit = next((arg for i, arg in enumerate(routed) if _parse_error(command(routed[:i + 1])) is not None),
                   None)  # error path only: one parse per override up to the bad one
    key = (culprit or "").lstrip("-").split("=", 1)[0]
    near = _near(key, {phase: config}) if culprit and ("not accepted" in cause or "unrecognized" in cause) \
        and "did you mean" not in cause else []
    raise OverrideError(f"the {phase} phase refuses {culprit or command([])[2]}: {cause}"
                        + (f"; did you mean {' or '.join(near)}?" if near else ""))
