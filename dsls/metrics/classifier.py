"""Classifier-FID and mode metrics for the 10-class digit data sets (sklearn digits 8×8, MNIST 28×28); the net is
dsls.nets.digit_classifier, its splits dsls.data.digit_splits, its training and cache dsls.metrics.digit_classifier.

Inception features need downloaded weights and mean little on tiny grey digits, so a small CNN trained on the
data set's own TRAIN split (exactly as our DataModules split it) serves as an offline feature extractor:
``classifier_fid`` is the Fréchet distance between Gaussian fits of its penultimate features on the samples and
on the held-out real images (digits: the DataModule's val split; MNIST: the official t10k test split), and its
argmax predictions give the mode metrics ``class_kl`` (KL(class histogram ‖ uniform), 0·log 0 = 0, so it
lies in [0, log 10]) and ``mean_confidence``, and the same penultimate features give k-NN precision and recall against
the held-out images (``classifier_precision``, ``classifier_recall``: dsls.metrics.prc, k = 3).

The FID goes through torch-fidelity (``dsls.metrics.fidelity``) with the classifier registered as a feature
extractor, so samples pass the project's single float → uint8 conversion (``to_uint8``) on the way; the mode
metrics read the float samples directly; precision and recall read the features torch-fidelity sees (the
uint8 images through ``ClassifierExtractor``). The trained classifier is cached once per data set, keyed by a version
tag, the seed and a fingerprint of the held-out images, so later calls never retrain and a changed data set is
never scored with a stale classifier.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from dsls.data.digit_splits import HELDOUT, load_splits, real_images  # noqa: F401  (importable here, as before)
from dsls.metrics.digit_classifier import (_predict, cache_path, load_classifier,  # noqa: F401  (as before)
                                           train_classifier)
from dsls.metrics.fidelity import fidelity_metrics, register_module_extractor, to_uint8
from dsls.metrics.prc import PRC_K, knn_precision_recall
from dsls.nets.digit_classifier import NUM_CLASSES, DigitClassifier


class ClassifierExtractor(nn.Module):
    """torch-fidelity adapter: uint8 (B, 3, H, W) (gray repeated, ``(x + 1) · 127.5`` rounded) → channel 0 back to
    [-1, 1] → the classifier → ``{"penultimate": (B, F), "logits_unbiased": (B, 10)}``."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x[:, :1].float() / 127.5 - 1.0
        feats = self.classifier.features(x)
        return {"penultimate": feats, "logits_unbiased": self.classifier.head(feats)}


def class_kl(predictions: torch.Tensor | np.ndarray, num_classes: int = NUM_CLASSES) -> float:
    """KL(histogram of predicted classes ‖ uniform): 0 for balanced classes, log K when all fall in one class."""
    counts = np.bincount(np.asarray(predictions).ravel(), minlength=num_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()  # empty classes contribute 0·log 0 = 0
    return float(np.sum(p * np.log(p * num_classes)))


def to_float_images(samples: torch.Tensor | np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Samples as float32 (N, *shape) in [-1, 1]; uint8 input is refused (our images live in [-1, 1])."""
    x = torch.as_tensor(samples).detach().cpu()
    if not x.is_floating_point():
        raise TypeError(f"classifier metrics take float images in [-1, 1], got dtype {x.dtype}")
    if tuple(x.shape[1:]) != tuple(shape) or len(x) < 2:
        raise ValueError(f"expected samples of shape (N ≥ 2, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    return x.float()


@torch.no_grad()
def extractor_features(extractor: ClassifierExtractor, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """The penultimate features of float images x, as torch-fidelity computes them for classifier-FID (through
    `to_uint8`), in batches."""
    return torch.cat([extractor(to_uint8(b))["penultimate"] for b in x.split(batch_size)]).double().numpy()


def classifier_metrics(samples: torch.Tensor | np.ndarray, dataset_name: str, data_dir: str = "data",
                       cache_dir: str | None = None, seed: int = 0) -> dict:
    """Classifier-FID, classifier_precision and classifier_recall (k-NN, k = 3) against the held-out real images,
    class_kl and mean_confidence of ``samples`` (float (N, 1, H, W) in [-1, 1]), plus what was compared. Plain Python
    numbers (JSON-serialisable); precision and recall are None for k or fewer samples."""
    splits = load_splits(dataset_name, data_dir)
    real, _ = splits["heldout"]
    x = to_float_images(samples, real.shape[1:])
    model = load_classifier(dataset_name, data_dir, cache_dir, seed, splits=splits)
    extractor = ClassifierExtractor(model)
    name = register_module_extractor(f"dsls-{dataset_name}-classifier", extractor)
    fid = fidelity_metrics(x, real, f"{dataset_name}-heldout", metrics=("fid",), feature_extractor=name,
                           cache_root=os.path.join(os.path.dirname(cache_path(dataset_name, cache_dir)), "fidelity"))
    logits = _predict(model, x)[1]
    prc = knn_precision_recall(extractor_features(extractor, real), extractor_features(extractor, x), PRC_K) \
        if len(x) > PRC_K else {"precision": None, "recall": None}  # k-NN balls need more than k samples
    return {
        "classifier_fid": fid["fid"],
        "classifier_precision": prc["precision"],
        "classifier_recall": prc["recall"],
        "class_kl": class_kl(logits.argmax(1).numpy()),
        "mean_confidence": logits.softmax(1).max(1).values.mean().item(),
        "num_samples": len(x),
        "reference": f"{dataset_name}-heldout",
        "reference_size": len(real),
        "classifier_accuracy": float(model.info["accuracy"]),
    }
