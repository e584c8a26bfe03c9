"""k-NN precision and recall (dsls.metrics.prc, Kynkäänniemi et al. 2019) on point sets whose answer is known, and
against an independent brute-force count; the classifier metrics' precision/recall and the search's floor row are in
tests/test_classifier_metrics.py."""
import numpy as np
import pytest

from dsls.metrics.prc import inside_manifold, knn_precision_recall, knn_radii


def modes(n_per_mode: int, centres: np.ndarray, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([c + scale * rng.standard_normal((n_per_mode, centres.shape[1])) for c in centres])


ANGLES = np.arange(8) * np.pi / 4
CENTRES = 10.0 * np.stack([np.cos(ANGLES), np.sin(ANGLES)], 1)  # 8 modes on a ring, 7.7 apart: 7.7 σ with scale 1


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    """The definition, written out with a full distance matrix: an independent check of the chunked version."""
    def radii(a):
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0: the point itself

    d = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # (fake, real)
    return {"precision": float((d <= radii(real)[None]).any(1).mean()),
            "recall": float((d.T <= radii(fake)[None]).any(1).mean())}


def test_identical_sets_score_one():
    x = modes(50, CENTRES, 1.0, seed=0)
    assert knn_precision_recall(x, x.copy()) == {"precision": 1.0, "recall": 1.0}


def test_disjoint_sets_score_near_zero():
    real = modes(50, CENTRES, 1.0, seed=0)
    fake = modes(50, CENTRES + 100.0, 1.0, seed=1)
    m = knn_precision_recall(real, fake)
    assert m["precision"] < 0.01 and m["recall"] < 0.01


def test_two_samples_of_one_distribution_score_high():
    m = knn_precision_recall(modes(200, CENTRES, 1.0, seed=0), modes(200, CENTRES, 1.0, seed=1))
    assert m["precision"] > 0.8 and m["recall"] > 0.8


def test_collapse_onto_one_mode_keeps_precision_and_loses_recall():
    real = modes(100, CENTRES, 1.0, seed=0)
    collapsed = modes(400, CENTRES[:1], 1.0, seed=1)  # every fake in mode 0 of 8: recall about 1/8
    m = knn_precision_recall(real, collapsed)
    assert m["precision"] >= 0.9
    assert m["recall"] <= 0.3
    swapped = knn_precision_recall(collapsed, real)  # the roles swapped: a generator that spreads too wide
    assert swapped["precision"] <= 0.3 and swapped["recall"] >= 0.9


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_the_definition(k):
    real = modes(30, CENTRES[:3], 2.0, seed=0)
    fake = modes(25, CENTRES[1:4], 2.0, seed=1)
    m = knn_precision_recall(real, fake, k=k)
    assert m == pytest.approx(brute_force(real, fake, k), abs=1e-12)
    assert 0.1 < m["precision"] < 0.9 and 0.1 < m["recall"] < 0.9  # a case where the boundaries matter


def test_radii_exclude_the_point_itself():
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    np.testing.assert_allclose(knn_radii(x, k=1), [1.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(knn_radii(x, k=2), [3.0, 2.0, 3.0, 5.0])
    assert inside_manifold(np.array([[4.9], [9.1]]), x, knn_radii(x, k=1)).tolist() == [True, False]


@pytest.mark.parametrize("real, fake, k", [
    (np.zeros((5, 2)), np.zeros((5, 3)), 3),   # widths differ
    (np.zeros((3, 2)), np.zeros((5, 2)), 3),   # no more than k rows
    (np.zeros((5, 2)), np.zeros((5, 2)), 0),   # k < 1
    (np.zeros(5), np.zeros(5), 1),             # not (N, F)
    (np.full((5, 2), np.nan), np.zeros((5, 2)), 1),
])
def test_bad_input_is_refused(real, fake, k):
    with pytest.raises(ValueError):
        knn_precision_recall(real, fake, k=k)
