"""From a path on disk to the parts of a trained model: which checkpoint a run folder or a search.ckpt stands for, and
the frozen modules a phase-2, latent-score or latent-classifier checkpoint holds. dsls.model assembles a LatentModel
from them.

Checkpoints are read as tensors and plain data only (dsls.checkpoints.load_phase_checkpoint: nothing in a file runs)
and rebuilt by the phase module that wrote them, so a checkpoint of any earlier dsls that the phase still accepts
loads here too (tests/data/run-v0.1.0 is one).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dsls.checkpoints import done_checkpoint
from dsls.errors import PhaseCheckpointError, TaskError
from dsls.phases.base import frozen_from_checkpoint, load_phase_checkpoint
from dsls.priors import DiscriminatorPrior, GuidedScorePrior, LatentClassifier, LatentPrior, ScorePrior

LADDER_KEYS = ("sigma_max", "sigma_min", "num_levels")  # a search's overrides of D's σ ladder
LATENT_PHASES = ("adversarial", "latent_score")  # the checkpoints of a latent prior: phase 2's D, a score network


@dataclass
class Source:
    """What a path stands for: the latent prior's checkpoint (phase 2 or latent_score), the latent classifier to
    attach (or None), the ladder overrides and discriminator-guidance weight of a search.ckpt, and the prior's
    checkpoint itself when it was read already (`loaded`)."""

    ckpt: str
    classifier: Optional[str] = None
    ladder: dict = field(default_factory=dict)
    loaded: Optional[dict] = None
    dg_scale: Optional[float] = None


def _from_run_folder(run: str) -> Source:
    ckpt = done_checkpoint(run, "adversarial")
    if ckpt is None:
        last = os.path.join(run, "adversarial", "checkpoints", "last.ckpt")
        hint = (f"phase 2 has not finished (no adversarial/DONE stamp): to use it as it is, pass {last}"
                if os.path.isfile(last) else "it holds no finished phase 2 (adversarial/DONE)")
        raise PhaseCheckpointError(f"path={run} is a folder, but not a run folder dsls.load can read: {hint}; or "
                                   "pass a phase-2 checkpoint or a search.ckpt")
    classifier = done_checkpoint(run, "latent_classifier")
    if classifier is None and os.path.isdir(os.path.join(run, "latent_classifier")):
        warnings.warn(f"{run}/latent_classifier has no DONE stamp (the phase did not finish): no classifier attached; "
                      "attach one with model.with_classifier(<its checkpoint>)", stacklevel=3)
    return Source(ckpt, classifier)


def _recorded(search_ckpt: str, recorded: Optional[str]) -> Optional[str]:
    """A path a search.ckpt recorded or, where that is not a file (the run folder moved, or the path was relative to
    another working directory), the same <phase>/checkpoints/<file> beside the search.ckpt or one folder above it."""
    if not recorded or os.path.isfile(recorded):
        return recorded
    tail = Path(recorded).parts[-3:]
    for folder in (Path(search_ckpt).parent, Path(search_ckpt).parent.parent):
        if folder.joinpath(*tail).is_file():
            return str(folder.joinpath(*tail))
    return recorded  # missing: load_phase_checkpoint names it


def resolve(path, flag: str = "path") -> Source:
    """The Source of a run folder (its phase 2 and its latent classifier, from their DONE stamps), a search.ckpt (the
    checkpoint, classifier, σ-ladder overrides and DG weight of that search), a phase-2 or a latent_score
    checkpoint."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _from_run_folder(path)
    ck = load_phase_checkpoint(path, (*LATENT_PHASES, "search"), flag=flag)
    if ck["dsls_phase"] in LATENT_PHASES:
        return Source(path, loaded=ck)
    hp = ck.get("hyper_parameters") or {}
    ladder = {k: hp[k] for k in LADDER_KEYS if hp.get(k) is not None}
    return Source(_recorded(path, hp.get("ckpt")), _recorded(path, hp.get("classifier_ckpt")), ladder,
                  dg_scale=hp.get("dg_scale"))


def load_phase_module(ckpt: Optional[str], flag: str = "--model.ckpt",
                      phases=("adversarial", "pixel_ncsn", "latent_score"), loaded: Optional[dict] = None):
    """The frozen phase module a search samples from: phase 2 (D + autoencoder), the latent_score peer (s_θ +
    autoencoder) or the pixel_ncsn baseline, as its phase rebuilds it. Non-finite weights fail here, naming the phase
    to train again, not in the search's steps."""
    from dsls.phases.adversarial import AdversarialModule
    from dsls.phases.finite import check_finite_weights
    from dsls.phases.latent_score import LatentScoreModule
    from dsls.phases.pixel_ncsn import PixelNCSNModule

    ck = loaded if loaded is not None else load_phase_checkpoint(ckpt, phases, flag=flag)
    if ck["dsls_phase"] == "pixel_ncsn":
        module = frozen_from_checkpoint(PixelNCSNModule, ck)
    elif ck["dsls_phase"] == "latent_score":
        module = frozen_from_checkpoint(LatentScoreModule, ck, autoencoder_ckpt=None)
    else:
        module = frozen_from_checkpoint(AdversarialModule, ck, autoencoder_ckpt=None)
    check_finite_weights(module, f"in {flag}={ckpt}", loaded=True)
    return module


def latent_prior(module) -> LatentPrior:
    """The latent prior of a frozen phase-2 or latent_score module: a latent_score module's EMA net (ScorePrior),
    phase 2's D corrected against a score network's samples (discriminator guidance: GuidedScorePrior, when the module
    holds that network as `fake_score_net`), or plain DS-LS's D (DiscriminatorPrior)."""
    if module.phase == "latent_score":
        return ScorePrior(module.sampling_net)
    if getattr(module, "fake_score_net", None) is not None:
        return GuidedScorePrior(module.fake_score_net, module.discriminator)
    return DiscriminatorPrior(module.discriminator)


def latent_parts(module, ladder: Optional[dict] = None, dg_scale: Optional[float] = None) -> dict:
    """The parts of a LatentModel in a frozen phase-2 or latent_score module: autoencoder, prior (latent_prior), ladder
    (with the overrides in `ladder`), dataset_name, datamodule_hparams. dg_scale: the discriminator-guidance weight w
    (None: dsls.priors.DG_SCALE); a TaskError on a model without discriminator guidance."""
    overrides = [(ladder or {}).get(k) for k in LADDER_KEYS]
    prior = latent_prior(module)
    if dg_scale is not None:
        if not isinstance(prior, GuidedScorePrior):
            raise TaskError(f"--model.dg_scale={dg_scale} weighs discriminator guidance, but this {module.phase} "
                            f"checkpoint has none (its prior is a {prior.kind}): drop --model.dg_scale, or pass a "
                            "phase-2 checkpoint whose D was trained against a latent_score model's samples")
        prior.scale = float(dg_scale)
    return {"autoencoder": module.autoencoder, "prior": prior,
            "ladder": module.ladder.with_overrides(*overrides), "dataset_name": module.dataset_name,
            "datamodule_hparams": module.datamodule_hparams}


def read_phase_2(source: Source, flag: str = "path") -> dict:
    """The parts of a LatentModel (latent_parts) from a Source's phase-2 or latent_score checkpoint."""
    module = load_phase_module(source.ckpt, flag, LATENT_PHASES, source.loaded)
    return latent_parts(module, source.ladder, source.dg_scale)


def read_classifier(path, flag: str = "classifier"):
    """(LatentClassifier, the autoencoder it was trained on) of a latent_classifier checkpoint."""
    from dsls.phases.latent_classifier import load_latent_classifier

    module = load_latent_classifier(os.fspath(path), flag=flag)
    ladder = module.ladder
    clf = LatentClassifier(module.classifier, module.hparams.num_classes, (ladder.sigma_min, ladder.sigma_max))
    return clf, module.autoencoder
