"""Chaining the phases of one configs/<dataset> folder in one process, and routing command-line overrides to them.

Overrides go to every phase that accepts them: --trainer.* to all, --data.* to the fit phases, --model.X to the
phases whose module has a parameter X (--model.samplers.langevin.eps0 reaches the search only). Prefix one with a
phase to target that phase alone (--adversarial.model.mode=joint). Before anything trains, an override that reaches no
phase is an error, and every phase's arguments go through that phase's own CLI parser. Each phase hands the next the
checkpoint it wrote. experiments/run_pipeline.py is the command.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import io
import json
import os
import re
import time
from pathlib import Path

import yaml

from dsls.phases.base import ConfigError

PHASES = [("reconstruction", "fit"), ("adversarial", "fit"), ("search", "predict")]
GUIDED_PHASES = PHASES[:2] + [("latent_classifier", "fit"), PHASES[2]]  # --classifier: a class-guided search
ALL_PHASES = GUIDED_PHASES + [("pixel_ncsn", "fit")]  # the pixel-space baseline: dsls.ablation trains it too
NEEDS = {"adversarial": ("--model.autoencoder_ckpt", "reconstruction"),
         "latent_classifier": ("--model.autoencoder_ckpt", "adversarial"),  # joint mode's E, D's σ_max
         "search": ("--model.ckpt", "adversarial")}
OVERWRITTEN = ".overwritten-"  # <run>/.overwritten-<time>/: where --overwrite moves a previous run's files


class PipelineError(ConfigError):
    """Bad input to the pipeline (an override, a run folder, a run that trains nothing); the message says the fix.
    A ConfigError, so every command prints it as one `error:` line (dsls.cli.USER_ERRORS)."""


class OverrideError(PipelineError):
    """An override that would reach no phase, or that a phase's parser refuses; the message says what to write."""


def sampler_flag_hint(key: str, prefix: str = "--model.") -> str | None:
    """For a --model.X that is a sampler's setting (eps0, steps_per_level, ...): where it goes now."""
    from dsls.samplers import SAMPLERS, setting_names

    owners = [n for n in SAMPLERS if key in setting_names(n)]
    if not owners:
        return None
    return (f"{prefix}{key} is a sampler setting: write {prefix}samplers.{owners[0]}.{key}=... "
            f"(samplers with this setting: {', '.join(owners)})")


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
    if section in ("trainer", "seed_everything", "run_dir", "checkpoint"):
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


def last_ckpt(run_dir: str, phase: str) -> str:  # in a fresh run folder; the chained path comes from the Trainer
    return os.path.join(run_dir, phase, "checkpoints", "last.ckpt")


def number_or(value):
    """YAML 1.1 reads 1e4 / 5e-4 (no dot) as strings; the CLI reads them as numbers, and so do we."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        return float(value)
    return value


def parse_overrides(items: list[str], prefix: str) -> dict:
    """--<prefix>.a.b=value items → {"a": {"b": value}}, values read as YAML (so {} and [1, 2] work)."""
    out: dict = {}
    for item in items:
        if not item.startswith(f"--{prefix}.") or "=" not in item:
            continue
        key, value = item[len(prefix) + 3:].split("=", 1)
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--{prefix}.{key}: {p!r} was already set to a value, not a mapping")
        node[leaf] = number_or(yaml.safe_load(value))
    return out


def deep_merge(base: dict, over: dict) -> dict:
    """base with over's values; mappings merge key by key (as the CLI does), and a null in base that receives a
    mapping is treated as an empty one (`--model.samplers.pc.snr=0.1` turns on a sampler the config left null)."""
    out = dict(base)
    for k, v in over.items():
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict | None):  # so {} keeps what is there, as the CLI does
            out[k] = deep_merge(old or {}, v)
        else:
            out[k] = v
    return out


def phase_command(phase: str, subcommand: str, cfg_path: Path, routed: list[str], run_dir: str, ckpts: dict,
                  guided: bool, resume_from: str | None = None) -> list[str]:
    """The `dsls` arguments of one phase. ckpts: phase → the checkpoint it wrote in this run (a phase not run yet:
    where it will land, for the parse-only pass)."""
    ckpt = lambda p: ckpts.get(p) or last_ckpt(run_dir, p)  # noqa: E731
    before = []  # before the user's overrides, which may replace them (e.g. name one class)
    if phase == "search" and guided:  # guide with the classifier just trained
        before += [f"--model.classifier_ckpt={ckpt('latent_classifier')}", "--model.labels=balanced"]
    if resume_from:
        before.append(f"--ckpt_path={resume_from}")  # a preempted phase continues where it stopped
    after = [f"--run_dir={run_dir}"]  # the user cannot set these (check_routes)
    if phase in NEEDS:
        after.append(f"{NEEDS[phase][0]}={ckpt(NEEDS[phase][1])}")
    return [subcommand, "--config", str(cfg_path), *before, *routed, *after]


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


def check_parse(phase: str, config: dict, command, routed: list[str]) -> None:
    """Parse one phase's command (command(overrides) → its arguments) with its own parser; on an error, find the
    override that breaks it."""
    cause = _parse_error(command(routed))
    if cause is None:
        return
    culprit = next((arg for i, arg in enumerate(routed) if _parse_error(command(routed[:i + 1])) is not None),
                   None)  # error path only: one parse per override up to the bad one
    key = (culprit or "").lstrip("-").split("=", 1)[0]
    near = _near(key, {phase: config}) if culprit and ("not accepted" in cause or "unrecognized" in cause) else []
    raise OverrideError(f"the {phase} phase refuses {culprit or command([])[2]}: {cause}"
                        + (f"; did you mean {' or '.join(near)}?" if near else ""))


def move_aside(run_dir: str, entries: list[str], why: str) -> None:
    """Move run_dir's `entries` into <run_dir>/.overwritten-<time>/: out of the way, not deleted."""
    aside = Path(run_dir, OVERWRITTEN + time.strftime("%Y%m%d-%H%M%S"))
    while aside.exists():
        aside = aside.with_name(aside.name + "+")
    aside.mkdir()
    for entry in entries:
        os.rename(os.path.join(run_dir, entry), aside / entry)
    print(f"{why}: moved {', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''} to {aside}", flush=True)


def claim_run_dir(run_dir: str, resume: bool, overwrite: bool) -> None:
    """A run folder that holds files is continued (resume) or moved aside whole (overwrite), never mixed into: a new
    fit beside old checkpoints writes last-v1.ckpt, and the next phase would read the old last.ckpt."""
    old = sorted(e for e in os.listdir(run_dir) if not e.startswith(OVERWRITTEN)) if os.path.isdir(run_dir) else []
    if not old or resume:
        return
    if not overwrite:
        raise PipelineError(f"{run_dir} already holds a run ({', '.join(old[:4])}{', ...' if len(old) > 4 else ''}): "
                            f"add --resume to continue it, or --overwrite to start over (the old files move to "
                            f"{run_dir}/{OVERWRITTEN}<time>/)")
    move_aside(run_dir, old, "--overwrite")


def finished_ckpt(run_dir: str, phase: str) -> str | None:
    """The checkpoint a finished fit phase wrote (its DONE stamp), or None if it did not finish."""
    done = Path(run_dir, phase, "DONE")
    if not done.is_file():
        return None
    try:
        ckpt = os.path.join(run_dir, phase, json.loads(done.read_text())["checkpoint"])  # relative to the phase
    except (ValueError, KeyError, TypeError):  # a stamp from before the checkpoint was recorded
        ckpt = last_ckpt(run_dir, phase)
    if not os.path.isfile(ckpt):
        raise PipelineError(f"{done} says the {phase} phase finished, but its checkpoint {ckpt} is missing: put it "
                            f"back, or start over with --overwrite")
    return ckpt


def written_ckpt(cli, run_dir: str, phase: str, resume_from: str | None) -> str:
    """The checkpoint this fit wrote, read from its Trainer (Lightning names it last-v1.ckpt if last.ckpt exists);
    an error if no training step ran, so that no DONE stamp hides an untrained phase."""
    trainer, callback = cli.trainer, cli.trainer.checkpoint_callback
    path = (callback.last_model_path if callback else "") or resume_from  # resumed at max_steps: nothing new saved
    if trainer.global_step == 0:
        hp = dict(getattr(cli.datamodule, "hparams", {}) or {})
        size = hp.get("train_size", len(getattr(cli.datamodule, "train_set", None) or ()) or None)
        if size and hp.get("batch_size") and size < hp["batch_size"]:
            what = f"--data.train_size={size}" if "train_size" in hp else f"the training set ({size} examples)"
            raise PipelineError(f"{what} is smaller than --data.batch_size={hp['batch_size']}: no training step ran "
                                f"in the {phase} phase (a partial batch is dropped); lower the batch size")
        raise PipelineError(f"no training step ran in the {phase} phase: check --trainer.max_steps, "
                            f"--trainer.limit_train_batches and the training set's size")
    if not path or not os.path.isfile(path):
        raise PipelineError(f"the {phase} phase wrote no last checkpoint for the next phase: keep "
                            f"--checkpoint.save_last=true")
    phase_dir = os.path.join(run_dir, phase)
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(phase_dir))
    return os.path.join(phase_dir, rel) if not rel.startswith("..") else path  # spelt from --run-dir, as before


def run_pipeline(config_dir: str, overrides: list[str], run_dir: str | None = None, resume: bool = False,
                 phases: list[tuple[str, str]] = PHASES, overwrite: bool = False,
                 check_also: list[tuple[str, str]] = ()) -> dict:
    """Run `phases` in order into one run folder; each takes the checkpoint that the phase it NEEDS wrote.
    resume: skip phases whose DONE stamp exists, and continue a preempted fit from its last.ckpt. overwrite: move
    the files of a run already in run_dir aside first; without either, a run_dir that holds files is an error.
    check_also: phases the caller runs itself (the ablation's search), whose overrides are validated here too.
    Every override is validated against every phase before anything is written."""
    from dsls.cli import main

    config_dir = Path(config_dir)
    every = [*phases, *check_also]
    missing = [f"{config_dir}/{p}.yaml" for p, _ in every if not (config_dir / f"{p}.yaml").is_file()]
    if missing:  # before any training: e.g. --classifier on a data set without labels
        raise OverrideError(f"{', '.join(missing)} does not exist" + (
            ": --classifier needs a labelled data set with a latent_classifier.yaml (toy, digits, mnist, cifar10)"
            if any(m.endswith("latent_classifier.yaml") for m in missing) else ""))
    if resume and overwrite:
        raise PipelineError("--resume continues the run in --run-dir and --overwrite starts it over: give one")
    if resume and not run_dir:
        raise PipelineError("--resume needs --run-dir <the run folder to continue>")
    overrides = join_values(overrides)
    configs = {p: yaml.safe_load((config_dir / f"{p}.yaml").read_text()) for p, _ in every}
    check_routes(config_dir, configs, overrides)
    run_dir = run_dir or os.path.join("runs", config_dir.name, time.strftime("%Y%m%d-%H%M%S"))
    guided = ("latent_classifier", "fit") in phases
    routed = {p: phase_args(p, configs[p], overrides) for p in configs}
    for phase, sub in every:  # all of them, before phase 1 trains
        check_parse(phase, configs[phase], lambda r, p=phase, s=sub: phase_command(
            p, s, config_dir / f"{p}.yaml", r, run_dir, {}, guided), routed[phase])
    claim_run_dir(run_dir, resume, overwrite)
    done = {p: finished_ckpt(run_dir, p) for p, sub in phases if sub == "fit"} if resume else {}
    for phase, needed in [(p, NEEDS[p][1]) for p in done if p in NEEDS]:
        if done[phase] and needed in done and not done[needed]:  # it would rerun under a finished phase built on it
            raise PipelineError(f"{run_dir}: the {phase} phase finished, but the {needed} phase it was built on did "
                                f"not: start over with --overwrite")
    ckpts, timings = {}, {}
    for phase, subcommand in phases:
        if done.get(phase):
            ckpts[phase] = done[phase]
            continue
        if subcommand == "predict" and (old := [e for e in sorted(os.listdir(run_dir)) if Path(run_dir, e).is_file()]):
            move_aside(run_dir, old, "the search runs again")  # --resume: an earlier search's files (in the run folder)
        resume_from = last_ckpt(run_dir, phase) if resume and subcommand == "fit" else None
        resume_from = resume_from if resume_from and os.path.isfile(resume_from) else None
        args = phase_command(phase, subcommand, config_dir / f"{phase}.yaml", routed[phase], run_dir, ckpts, guided,
                             resume_from)
        t0 = time.time()
        print(f"\n=== phase {phase}: dsls {' '.join(args)}", flush=True)
        cli = main(args)
        timings[phase] = time.time() - t0
        if subcommand == "fit":  # DONE: this phase finished and wrote the checkpoint recorded in it
            ckpts[phase] = written_ckpt(cli, run_dir, phase, resume_from)
            rel = os.path.relpath(ckpts[phase], os.path.join(run_dir, phase))  # so the run folder may move
            Path(run_dir, phase, "DONE").write_text(json.dumps({
                "checkpoint": os.path.abspath(ckpts[phase]) if rel.startswith("..") else rel,
                "global_step": cli.trainer.global_step, "seconds": round(timings[phase])}) + "\n")
    results_path = Path(run_dir, "results.json")
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    return {"run_dir": run_dir, "results": results, "seconds": timings, "checkpoints": ckpts}
