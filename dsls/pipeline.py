"""Chaining the phases of one configs/<dataset> folder in one process: each phase hands the next the checkpoint it
wrote, into one run folder that this run holds (dsls.run_folder), and every override is checked against every phase
before phase 1 trains (dsls.overrides). experiments/run_pipeline.py is the command."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from dsls.checkpoints import done_checkpoint, write_done
from dsls.errors import OverrideError, PipelineError  # noqa: F401  (importable here, as before)
from dsls.interrupts import continued_by, pipeline_resume_command
from dsls.nested import deep_merge, parse_overrides  # noqa: F401  (importable here, as before)
from dsls.overrides import (ALL_PHASES, GUIDED_PHASES, NEEDS, PHASES, check_phase, check_routes,  # noqa: F401
                            join_values, phase_args)
from dsls.phases.base import pending_checkpoints
from dsls.run_folder import LOCK, default_run_dir, is_rank_zero, note_unapplied, releases_locks, say, take_lock

OVERWRITTEN = ".overwritten-"  # <run>/.overwritten-<time>/: where --overwrite moves a previous run's files


def last_ckpt(run_dir: str, phase: str) -> str:  # in a fresh run folder; the chained path comes from the Trainer
    return os.path.join(run_dir, phase, "checkpoints", "last.ckpt")


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


def move_aside(run_dir: str, entries: list[str], why: str) -> None:
    """Move run_dir's `entries` into <run_dir>/.overwritten-<time>/: out of the way, not deleted. Rank 0's job."""
    if not is_rank_zero():
        return
    aside = Path(run_dir, OVERWRITTEN + time.strftime("%Y%m%d-%H%M%S"))
    while aside.exists():
        aside = aside.with_name(aside.name + "+")
    aside.mkdir()
    for entry in entries:
        os.rename(os.path.join(run_dir, entry), aside / entry)
    print(f"{why}: moved {', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''} to {aside}", flush=True)


def claim_run_dir(run_dir: str, resume: bool, overwrite: bool) -> None:
    """A run folder that holds files is continued (resume) or moved aside whole (overwrite), never mixed into: a new
    fit beside old checkpoints writes last-v1.ckpt, and the next phase would read the old last.ckpt. Rank 0 claims it:
    another DDP rank starts once rank 0's first phase runs, when the folder holds that phase's files."""
    old = sorted(e for e in os.listdir(run_dir) if not e.startswith((OVERWRITTEN, LOCK))) if os.path.isdir(
        run_dir) else []
    if not old or resume or not is_rank_zero():
        return
    if not overwrite:
        raise PipelineError(f"{run_dir} already holds a run ({', '.join(old[:4])}{', ...' if len(old) > 4 else ''}): "
                            f"add --resume to continue it, or --overwrite to start over (the old files move to "
                            f"{run_dir}/{OVERWRITTEN}<time>/)")
    move_aside(run_dir, old, "--overwrite")


def finished_ckpt(run_dir: str, phase: str) -> str | None:
    """The checkpoint a finished fit phase wrote (its DONE stamp), or None if it did not finish."""
    return done_checkpoint(run_dir, phase, "put it back, or start over with --overwrite", PipelineError)


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


@releases_locks  # the run folder's lock (dsls.run_folder): taken before claim_run_dir, released on return or error
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
    run_dir = run_dir or default_run_dir(lambda: os.path.join("runs", config_dir.name, time.strftime("%Y%m%d-%H%M%S")))
    guided = ("latent_classifier", "fit") in phases
    routed = {p: phase_args(p, configs[p], overrides) for p in configs}
    with pending_checkpoints(last_ckpt(run_dir, p) for p, _ in every):  # all of them, before phase 1 trains
        for phase, sub in every:
            check_phase(phase, configs[phase], lambda r, p=phase, s=sub: phase_command(
                p, s, config_dir / f"{p}.yaml", r, run_dir, {}, guided), routed[phase])
    take_lock(run_dir)  # one run per folder: a second pipeline into it is refused, naming this one
    claim_run_dir(run_dir, resume, overwrite)
    done = {p: finished_ckpt(run_dir, p) for p, sub in phases if sub == "fit"} if resume else {}
    note_unapplied(done, routed)  # --resume: the overrides that finished phases do not get
    for phase, needed in [(p, NEEDS[p][1]) for p in done if p in NEEDS]:
        if done[phase] and needed in done and not done[needed]:  # it would rerun under a finished phase built on it
            raise PipelineError(f"{run_dir}: the {phase} phase finished, but the {needed} phase it was built on did "
                                f"not: start over with --overwrite")
    ckpts, timings = {}, {}
    for phase, subcommand in phases:
        if done.get(phase):
            ckpts[phase] = done[phase]
            continue
        if subcommand == "predict" and (old := [e for e in sorted(os.listdir(run_dir))
                                                if Path(run_dir, e).is_file() and e != LOCK]):
            move_aside(run_dir, old, "the search runs again")  # --resume: an earlier search's files (in the run folder)
        resume_from = last_ckpt(run_dir, phase) if resume and subcommand == "fit" else None
        resume_from = resume_from if resume_from and os.path.isfile(resume_from) else None
        args = phase_command(phase, subcommand, config_dir / f"{phase}.yaml", routed[phase], run_dir, ckpts, guided,
                             resume_from)
        t0 = time.time()
        say(f"\n=== phase {phase}: dsls {' '.join(args)}")  # rank 0 only: under DDP every rank runs this loop
        with continued_by(pipeline_resume_command(str(config_dir), run_dir, resume)):  # SIGTERM, a full disk
            cli = main(args)
        timings[phase] = time.time() - t0
        if subcommand == "fit":  # DONE: this phase finished and wrote the checkpoint recorded in it
            ckpts[phase] = written_ckpt(cli, run_dir, phase, resume_from)
            if is_rank_zero():
                write_done(run_dir, phase, ckpts[phase], cli.trainer.global_step, timings[phase])
    results_path = Path(run_dir, "results.json")
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    return {"run_dir": run_dir, "results": results, "seconds": timings, "checkpoints": ckpts}
