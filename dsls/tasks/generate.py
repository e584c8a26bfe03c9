"""Generation, optionally class-guided: the labels each sample asks for, the guidance term of a batch, and how well
the samples hit their labels.

The search (dsls.phases.search) runs it: its data loader yields per sample an index and, when guided, a label y;
the score gains w · log C(y | z, σ) (dsls.guidance.ClassGuidance). class_accuracy is measured by the data set's own
metric classifier (the classifier-FID CNN for digits and MNIST; the nearest mode for toy mixtures), never by the
latent classifier that guided the search.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from dsls.guidance import ClassGuidance
from dsls.phases.base import PhaseCheckpointError
from dsls.tasks import TaskError


def _same_autoencoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


class GuidedGeneration:
    """Labels (one class for all, or 'balanced': sample i gets class i mod K) and a latent classifier at scale w."""

    def __init__(self, classifier, labels: Union[int, str], scale: float):
        self.classifier, self.scale = classifier, float(scale)
        self.num_classes = int(classifier.hparams.num_classes)
        valid_int = isinstance(labels, int) and not isinstance(labels, bool) and 0 <= labels < self.num_classes
        if labels != "balanced" and not valid_int:
            raise TaskError(f"labels must be 'balanced' or a class in 0..{self.num_classes - 1}, got {labels!r}")
        self.labels = labels

    @classmethod
    def load(cls, classifier_ckpt: Optional[str], model, labels, scale: float) -> "GuidedGeneration":
        """The classifier of classifier_ckpt, checked against the search's model: it must have been trained on the
        codes of the same autoencoder (another one's codes would guide towards the wrong places, silently)."""
        from dsls.phases.latent_classifier import load_latent_classifier

        if not classifier_ckpt:
            raise PhaseCheckpointError("--model.labels needs --model.classifier_ckpt (evaluate.py: --labels needs "
                                       "--classifier-ckpt): pass a latent_classifier checkpoint, e.g. "
                                       "runs/<dataset>/<run>/latent_classifier/checkpoints/last.ckpt")
        if getattr(model, "phase", None) != "adversarial":
            raise PhaseCheckpointError("class guidance needs a phase-2 (adversarial) model: a latent classifier "
                                       "guides latents, and a pixel-space model has none")
        classifier = load_latent_classifier(classifier_ckpt).to(model.device)
        if not _same_autoencoder(classifier.autoencoder, model.autoencoder):
            raise PhaseCheckpointError(f"--model.classifier_ckpt={classifier_ckpt} was trained on another "
                                       "autoencoder's codes: train it with --model.autoencoder_ckpt set to the "
                                       "phase-1 checkpoint of this phase-2 model")
        lo, hi = classifier.ladder.sigma_min, classifier.ladder.sigma_max
        if model.ladder.sigma_max > hi * 1.001 or model.ladder.sigma_min < lo * 0.999:
            print(f"note: the search's sigma range [{model.ladder.sigma_min:.4g}, {model.ladder.sigma_max:.4g}] goes "
                  f"beyond the classifier's [{lo:.4g}, {hi:.4g}]: train it from the phase-2 checkpoint "
                  "(--model.autoencoder_ckpt=<run>/adversarial/checkpoints/last.ckpt) to share D's ladder")
        return cls(classifier, labels, scale)

    def labels_for(self, n: int) -> torch.Tensor:
        idx = torch.arange(n)
        return idx % self.num_classes if self.labels == "balanced" else torch.full((n,), int(self.labels))

    def term(self, labels, device) -> ClassGuidance:
        self.classifier.to(device)
        return ClassGuidance(self.classifier.log_prob, torch.as_tensor(labels, device=device), self.scale)

    def summary(self, x: np.ndarray, y: np.ndarray, dataset_name: Optional[str], options: dict,
                guided: bool = True) -> dict:
        out = {"guidance_scale": self.scale, "labels": self.labels} if guided else {"guided": False}
        acc = class_accuracy(x, y, dataset_name, options)
        if acc is not None:
            out["class_accuracy"] = acc
        return out


def predicted_classes(x: np.ndarray, dataset_name: Optional[str], options: dict) -> Optional[np.ndarray]:
    """The data set's own label of each sample: nearest mode (toy mixtures, −1 when not within 3 std of one) or the
    metric classifier's argmax (digits, MNIST); None when the data set has no offline classifier."""
    from dsls.metrics.samples import metric_kind
    from dsls.metrics.toy import MIXTURES, mixture_spec

    if dataset_name in MIXTURES:
        means, std = mixture_spec(dataset_name)
        d = np.linalg.norm(np.asarray(x)[:, None, :] - means[None], axis=-1)
        k = d.argmin(1)
        return np.where(d.min(1) <= 3 * std, k, -1)
    if metric_kind(dataset_name, {**options, "fidelity": ["fid"]}) == "classifier":
        from dsls.metrics.classifier import _predict, load_classifier

        data_dir = (options.get("datamodule") or {}).get("data_dir", "data")
        net = load_classifier(dataset_name, data_dir)
        return _predict(net, torch.as_tensor(x).float())[1].argmax(1).numpy()
    return None


def class_accuracy(x: np.ndarray, y: np.ndarray, dataset_name: Optional[str], options: dict) -> Optional[float]:
    """Fraction of samples whose class (by predicted_classes) is the one they asked for."""
    pred = predicted_classes(x, dataset_name, options)
    if pred is None:
        print(f"note: no offline metric classifier for {dataset_name!r}: class_accuracy is not measured")
        return None
    return float((pred == np.asarray(y)).mean())
