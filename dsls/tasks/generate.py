"""Generation, optionally class-guided: the labels each sample asks for, the search's model with its classifier, and
how well the samples hit their labels.

The search (dsls.phases.search) runs it: its data loader yields per sample an index and, when guided, a label y;
the score gains w · log C(y | z, σ) (dsls.guidance.ClassGuidance). class_accuracy is measured by the data set's own
metric classifier (the classifier-FID CNN for digits and MNIST; the nearest mode for toy mixtures), never by the
latent classifier that guided the search.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from dsls.errors import PhaseCheckpointError
from dsls.model import labels_for


class GuidedGeneration:
    """The search's class guidance: labels (one class for all, or 'balanced': sample i gets class i mod K), the scale
    w, and `model`, the search's LatentModel with the latent classifier attached (it draws the guided samples:
    dsls.model.sample_batch)."""

    def __init__(self, model, labels: Union[int, str], scale: float):
        self.model, self.scale = model, float(scale)
        self.num_classes = model.classifier.num_classes
        labels_for(1, labels, self.num_classes)  # fails on labels outside the classes, before any sampling
        self.labels = labels

    @classmethod
    def load(cls, classifier_ckpt: Optional[str], model, labels, scale: float) -> "GuidedGeneration":
        """The search's model with the classifier of classifier_ckpt attached (LatentModel.with_classifier checks it
        was trained on the codes of the same autoencoder: another one's would guide to the wrong places, silently)."""
        if not classifier_ckpt:
            raise PhaseCheckpointError("--model.labels needs --model.classifier_ckpt (evaluate.py: --labels needs "
                                       "--classifier-ckpt): pass a latent_classifier checkpoint, e.g. "
                                       "runs/<dataset>/<run>/latent_classifier/checkpoints/last.ckpt")
        if getattr(model, "phase", None) != "adversarial":
            raise PhaseCheckpointError("class guidance needs a phase-2 (adversarial) model: a latent classifier "
                                       "guides latents, and a pixel-space model has none")
        return cls(model.with_classifier(classifier_ckpt, flag="--model.classifier_ckpt"), labels, scale)

    def labels_for(self, n: int) -> torch.Tensor:
        return labels_for(n, self.labels, self.num_classes)

    def summary(self, x: np.ndarray, y: np.ndarray, dataset_name: Optional[str], options: dict,
                guided: bool = True) -> dict:
        out = {"guidance_scale": self.scale, "labels": self.labels} if guided else {"guided": False}
        acc = class_accuracy(x, y, dataset_name, options)
        if acc is not None:
            out["class_accuracy"] = acc
        return out


def predicted_classes(x: np.ndarray, dataset_name: Optional[str], options: dict) -> Optional[np.ndarray]:
    """The data set's own label of each sample: nearest mode (toy mixtures, −1 when not within 3 std of one) or the
    metric classifier's argmax (digits, MNIST; tinted digits: of their shape); None when the data set has no offline
    classifier."""
    from dsls.metrics.samples import metric_kind
    from dsls.metrics.toy import MIXTURES, mixture_spec

    if dataset_name in MIXTURES:
        means, std = mixture_spec(dataset_name)
        d = np.linalg.norm(np.asarray(x)[:, None, :] - means[None], axis=-1)
        k = d.argmin(1)
        return np.where(d.min(1) <= 3 * std, k, -1)
    if metric_kind(dataset_name, {**options, "fidelity": ["fid"]}) == "classifier":
        from dsls.metrics.samples import classifier_classes

        return classifier_classes(x, dataset_name, (options.get("datamodule") or {}).get("data_dir", "data"))
    return None


def class_accuracy(x: np.ndarray, y: np.ndarray, dataset_name: Optional[str], options: dict) -> Optional[float]:
    """Fraction of samples whose class (by predicted_classes) is the one they asked for."""
    pred = predicted_classes(x, dataset_name, options)
    if pred is None:
        print(f"note: no offline metric classifier for {dataset_name!r}: class_accuracy is not measured")
        return None
    return float((pred == np.asarray(y)).mean())
