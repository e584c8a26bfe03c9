"""Every task a trained model runs from the command line, in one registry (as the samplers are): a task is a function
of (ckpt, out_dir, overrides) plus keyword-only options, registered with a report of what it wrote.
experiments/evaluate.py dispatches `--task NAME` through run_task, with no chain of ifs: the options a task reads are
its function's keyword parameters, and an option given to a task that does not read it is an error, never dropped.

    run_task("inpaint", "runs/digits/<run>/adversarial/checkpoints/last.ckpt", num=16, mask="random")
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Callable, Optional

from dsls.errors import TaskError
from dsls.tasks.anomaly import anomaly_report, anomaly_task
from dsls.tasks.evaluate import evaluate
from dsls.tasks.interpolate import run_interpolation
from dsls.tasks.inverse import format_inverse, run_inverse
from dsls.tasks.likelihood import format_likelihood
from dsls.tasks.settings import resolve_task, task_model


@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[..., dict]  # run(ckpt, out_dir, overrides, **options) -> {"out_dir", ...}
    options: tuple[str, ...]  # its keyword-only parameters
    report: Callable[[dict], str]  # what the command prints of the result


TASKS: dict[str, Task] = {}


def register(name: str, report: Callable[[dict], str]):
    """Function decorator: registers a task under `name`; its keyword-only parameters are the options it reads."""

    def deco(fn):
        params = inspect.signature(fn).parameters.values()
        TASKS[name] = Task(name, fn, tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY), report)
        return fn

    return deco


def run_task(task: str, ckpt: str, out_dir: Optional[str] = None, overrides=(), **options) -> dict:
    """Run one registered task on a checkpoint into out_dir (default <run>/eval-<time>). options: the task's (None =
    its default); one it does not read is a TaskError naming those it does. The result has a "report" line block."""
    if task not in TASKS:
        raise TaskError(f"unknown --task {task!r}; valid: {', '.join(TASKS)}")
    spec = TASKS[task]
    given = {k: v for k, v in options.items() if v is not None}
    unused = sorted(set(given) - set(spec.options))
    if unused:
        raise TaskError(f"--task {task} does not use {', '.join(unused)}; it reads {', '.join(spec.options)}")
    out = {**spec.run(ckpt, out_dir, list(overrides), **given), "task": task}
    return {**out, "report": spec.report(out)}


def _given(**kw) -> dict:
    """The options that were given: a None leaves the default to the function that owns it."""
    return {k: v for k, v in kw.items() if v is not None}


def _search_report(out: dict) -> str:
    lines = [f"wrote {out['out_dir']}/{{samples-*.npz, results.json, samples.png, search.ckpt}}"] \
        if out.get("results") is not None else []
    if "likelihood" in out:
        lines += ["", format_likelihood(out["likelihood"]), "", f"wrote {out['out_dir']}/likelihood.json"]
    return "\n".join(lines)


@register("generate", _search_report)
def generate(ckpt, out_dir, overrides, *, classifier_ckpt=None, labels=None, scale=None) -> dict:
    """The checkpoint's search; with labels, class-guided by classifier_ckpt at scale w (the search's settings)."""
    guided = _given(classifier_ckpt=classifier_ckpt, labels=labels, guidance_scale=scale)
    return evaluate(ckpt, out_dir, [*overrides, *(f"--model.{k}={v}" for k, v in guided.items())])


@register("likelihood", _search_report)
def likelihood(ckpt, out_dir, overrides, *, likelihood_n=None) -> dict:
    """The search, then log q_σmin of held-out codes, prior draws and each sampler's latents (likelihood.json)."""
    return evaluate(ckpt, out_dir, overrides, likelihood=True, **_given(likelihood_n=likelihood_n))


def _inverse(task: str, ckpt, out_dir, overrides, num, **kw) -> dict:
    hp, _, device = resolve_task(ckpt, out_dir, overrides)
    model, ladder, metric_options = task_model(hp, device)
    sampler = kw.pop("sampler", None) or "langevin"
    settings = (hp.get("samplers") or {}).get(sampler) or {}  # its settings from the search's config
    entry = run_inverse(model, task, hp["out_dir"], **_given(n=num), options=metric_options, sampler_name=sampler,
                        settings=settings, seed=hp["seed"], ladder=ladder, **_given(**kw))
    return {"out_dir": hp["out_dir"], "entry": entry}


def _inverse_report(out: dict) -> str:
    task = out["task"]
    return (f"{format_inverse(task, out['entry'])}\n\nwrote {out['out_dir']}/{{inverse-{task}.npz, "
            f"inverse-{task}.png, results.json}}")


@register("inpaint", _inverse_report)
def inpaint(ckpt, out_dir, overrides, *, num=None, sampler=None, scale=None, mask=None, fraction=None) -> dict:
    """Latent DPS on `num` held-out images with a missing box (mask='box') or random pixels (mask='random')."""
    return _inverse("inpaint", ckpt, out_dir, overrides, num, sampler=sampler, scale=scale, mask=mask,
                    fraction=fraction)


@register("colorize", _inverse_report)
def colorize(ckpt, out_dir, overrides, *, num=None, sampler=None, scale=None) -> dict:
    """Latent DPS from the luma of `num` held-out colour images."""
    return _inverse("colorize", ckpt, out_dir, overrides, num, sampler=sampler, scale=scale)


def _interpolate_report(out: dict) -> str:
    return (json.dumps({k: out["entry"][k] for k in ("linear", "dsls")}, indent=1)
            + f"\n\nwrote {out['out_dir']}/{{interpolate.npz, interpolate.png, results.json}}")


@register("interpolate", _interpolate_report)
def interpolate(ckpt, out_dir, overrides, *, num=None, steps=None, sigma_top=None) -> dict:
    """Linear vs DS-LS paths between `num` pairs of held-out points, `steps` frames each."""
    hp, _, device = resolve_task(ckpt, out_dir, overrides)
    model, ladder, _ = task_model(hp, device)
    entry = run_interpolation(model, hp["out_dir"], ladder=ladder, **_given(pairs=num, steps=steps,
                                                                          sigma_top=sigma_top))
    return {"out_dir": hp["out_dir"], "entry": entry}


@register("anomaly", anomaly_report)
def anomaly(ckpt, out_dir, overrides, *, num=None, anomaly_classes=None, ood_data=None, scores=None,
            default_score=None) -> dict:
    """Score test images as normal or anomalous (dsls.tasks.anomaly): the run's held-out classes, anomaly_classes,
    or another data set's test images (ood_data); AUROC and AUPRC per score, anomaly.npz/json/png."""
    return anomaly_task(ckpt, out_dir, overrides, **_given(num=num, anomaly_classes=anomaly_classes,
                                                           ood_data=ood_data, scores=scores,
                                                           default_score=default_score))
