"""Offline metrics for the tinted digits (RGB 8×8: each sklearn digit in its class colour, dsls.data.digits.TINTS).

Inception needs downloaded weights and the digit classifier reads grey images, but a tinted digit carries both parts
separately: every tint has a channel at full strength, so the maximum over R, G, B gives back the grey digit exactly
((x+1)/2 · max(tint) = (x+1)/2), and the colour is the per-channel sum of intensity, normalised by its largest
channel. So the tinted digits get

    the digits' classifier metrics on the shape (classifier_fid, classifier_precision and classifier_recall against
    the held-out split's shapes, which are the grey digits' val split; class_kl; mean_confidence), and
    colour_accuracy: the fraction of samples whose colour (the nearest tint) is the tint of the class their shape
    reads as: 1 for the data, about 0.1 for shape and colour drawn independently.
"""
from __future__ import annotations

import numpy as np
import torch

from dsls.data.digits import TINTS


def shape_of(x) -> torch.Tensor:
    """(N, 3, H, W) tinted digits in [-1, 1] → (N, 1, H, W) grey digits: the maximum over the channels."""
    return torch.as_tensor(np.asarray(x), dtype=torch.float32).amax(1, keepdim=True)


def tint_classes(x) -> np.ndarray:
    """Per sample the class whose tint is nearest its colour (per-channel sums of intensity (x+1)/2, divided by the
    largest)."""
    u = (torch.as_tensor(np.asarray(x), dtype=torch.float32).clamp(-1, 1) + 1) / 2
    colour = u.flatten(2).sum(-1)
    colour = colour / colour.amax(1, keepdim=True).clamp_min(1e-8)
    return torch.cdist(colour, TINTS.to(colour)).argmin(1).numpy()


def digit_classes(x, data_dir: str = "data", cache_dir: str | None = None) -> np.ndarray:
    """The class the digits' metric classifier reads in each sample's shape."""
    from dsls.metrics.digit_classifier import _predict, load_classifier

    return _predict(load_classifier("digits", data_dir, cache_dir), shape_of(x))[1].argmax(1).numpy()


def tinted_metrics(x, data_dir: str = "data", cache_dir: str | None = None) -> dict:
    """The digits' classifier metrics of the shapes (classifier-FID, precision and recall, the mode metrics), and
    colour_accuracy (see the module docstring)."""
    from dsls.metrics.classifier import classifier_metrics

    out = classifier_metrics(shape_of(x), "digits", data_dir=data_dir, cache_dir=cache_dir)
    out["colour_accuracy"] = float((tint_classes(x) == digit_classes(x, data_dir, cache_dir)).mean())
    out["reference"] = "tinted_digits-heldout (shape: max over RGB)"
    return out
