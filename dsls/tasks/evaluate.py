"""Generation and the likelihood task: run a checkpoint's search (dsls.tasks.settings rebuilds it), and rate its
latents by their likelihood (dsls.tasks.likelihood), reusing the samples of the same search when they are there.
dsls.tasks.registry dispatches every task; experiments/evaluate.py is the command.
"""
from __future__ import annotations

import os
from pathlib import Path

from dsls.checkpoints import load_phase_checkpoint
from dsls.errors import TaskError
from dsls.samplers import build_samplers
from dsls.tasks.likelihood import NUM_CODES, evaluate_likelihood
from dsls.tasks.settings import _search_module, resolve_task, search_settings  # noqa: F401  (importable here)


def run_search(hp: dict, trainer_kw: dict) -> dict:
    """One search into hp['out_dir']; returns its results.json entries."""
    import lightning as L

    from dsls.callbacks.progress import StepProgressBar

    model = _search_module()(**hp)
    kw = dict(trainer_kw)
    if kw.get("enable_progress_bar") is not False and "callbacks" not in kw:  # compact lines when piped, as dsls's
        kw["callbacks"] = [StepProgressBar()]
    L.Trainer(**kw).predict(model, return_predictions=False)
    return model.results


def sampler_names(hp: dict) -> list[str]:
    return [name for name, settings in hp["samplers"].items() if settings is not None]


SAME_SEARCH_KEYS = ("num_samples", "seed", "sigma_max", "sigma_min", "num_levels", "classifier_ckpt", "labels",
                    "guidance_scale")


def check_same_search(hp: dict) -> None:
    """Samples in out_dir are reused only if its search.ckpt says they came from this checkpoint and these settings."""
    path = os.path.join(hp["out_dir"], "search.ckpt")
    saved = load_phase_checkpoint(path, "search", flag=f"the reused samples' {path}")["hyper_parameters"] \
        if os.path.isfile(path) else {}
    settings = lambda h: {n: s.settings() for n, s in build_samplers(h.get("samplers")).items()}  # noqa: E731
    differs = [k for k in SAME_SEARCH_KEYS if k != "samplers" and saved.get(k) != hp.get(k)]
    if saved and settings(saved) != settings(hp):
        differs.append("samplers")
    if not saved.get("ckpt") or Path(saved["ckpt"]).resolve() != Path(hp["ckpt"]).resolve():
        differs.insert(0, "ckpt")
    if differs:
        raise TaskError(f"{hp['out_dir']} holds samples of another search (its search.ckpt differs in "
                        f"{', '.join(differs)}): pass --ckpt {path} to rate them, or another --out-dir")


def evaluate(ckpt: str, out_dir: str | None = None, overrides: list[str] = (), likelihood: bool = False,
             likelihood_n: int = NUM_CODES) -> dict:
    """Run the checkpoint's search into out_dir (default <run>/eval-<time>). likelihood: also write likelihood.json;
    the search is then skipped when out_dir already holds every sampler's samples from the same search."""
    hp, trainer_kw, device = resolve_task(ckpt, out_dir, overrides)
    if likelihood:  # before any sampling: a pixel-space model has no latents to rate
        load_phase_checkpoint(hp["ckpt"], "adversarial", flag="--ckpt")
    names = sampler_names(hp)
    have = all(os.path.isfile(os.path.join(hp["out_dir"], f"samples-{n}.npz")) for n in names)
    out = {"out_dir": hp["out_dir"], "results": None}
    if likelihood and have:
        check_same_search(hp)
        print(f"using the samples in {hp['out_dir']} (samples-{{{','.join(names)}}}.npz)", flush=True)
    else:
        out["results"] = run_search(hp, trainer_kw)
    if likelihood:
        out["likelihood"] = evaluate_likelihood(hp, hp["out_dir"], names, n=likelihood_n, device=device)
    return out
