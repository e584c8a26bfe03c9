"""k-NN precision and recall of generated samples (Kynkäänniemi et al. 2019, "Improved precision and recall metric
for assessing generative models"), on features the caller extracts (dsls.metrics.classifier: the metric classifier's
penultimate features).

A set's manifold is the union of balls around each of its feature vectors, each ball's radius the distance to that
vector's k-th nearest neighbour in the same set (itself excluded). Precision is the fraction of fakes inside the real
manifold (how many samples look real); recall the fraction of reals inside the fake manifold (how much of the data the
samples cover). A generator that collapses onto a few modes keeps its precision and loses recall.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances_chunked
from sklearn.neighbors import NearestNeighbors

PRC_K = 3  # the neighbourhood size of the paper and of torch-fidelity's prc


def knn_radii(features: np.ndarray, k: int = PRC_K) -> np.ndarray:
    """Per row the distance to its k-th nearest neighbour among the other rows (a duplicate row counts as a neighbour
    at distance 0)."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return distances[:, k]  # column 0 is the row itself (or a duplicate, also at 0)


def inside_manifold(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Per point whether it lies within radii[j] of some centre j, in chunks of sklearn's working memory (no full
    points × centres matrix)."""
    chunks = pairwise_distances_chunked(points, centres, reduce_func=lambda d, start: (d <= radii[None]).any(1))
    return np.concatenate(list(chunks))


def _features(x, name: str) -> np.ndarray:
    f = np.asarray(x, dtype=np.float64)
    if f.ndim != 2 or not np.isfinite(f).all():
        raise ValueError(f"{name} must be finite features of shape (N, F), got shape {f.shape}")
    return f


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PRC_K) -> dict:
    """{"precision", "recall"} of fake against real features, each (N, F) with N > k; plain floats in [0, 1]."""
    real, fake = _features(real, "real"), _features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} and {fake.shape[1]}")
    if k < 1 or min(len(real), len(fake)) <= k:
        raise ValueError(f"k-NN precision/recall needs k >= 1 and more than k rows in each set; got k={k}, "
                         f"{len(real)} real and {len(fake)} fake rows")
    precision = inside_manifold(fake, real, knn_radii(real, k)).mean()
    recall = inside_manifold(real, fake, knn_radii(fake, k)).mean()
    return {"precision": float(precision), "recall": float(recall)}
