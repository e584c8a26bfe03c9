"""The reproducibility contract (docs/reproducibility.md), in one place for every test that checks it.

Sample i's start latent z0 comes from its own generator (seed, i): it is bit-identical whatever the batch size or the
number of devices. Everything computed from it goes through BLAS, whose kernels (and so the order of a sum) depend on
the CPU generation, the row count and the device. The final latents and images are therefore the same within
REL_TOL of the array's largest magnitude, not bit for bit. Samples of another seed differ by far more than that,
which `assert_seed_matters` checks beside each use, so that the tolerance cannot hide a sampler that ignores its
noise.
"""
import numpy as np

REL_TOL = 1e-5  # of max|x|: BLAS reorderings measured at 1.5e-8 to 1.1e-6 absolute on toy samples of max|x| ≈ 5


def _scale(a: np.ndarray) -> float:
    return max(float(np.abs(a).max()), 1e-12)


def assert_same_samples(a: dict, b: dict, what: str, keys=("z0", "z", "x")) -> None:
    """a and b are the same samples under the contract: z0 bit for bit, the rest within REL_TOL · max|b|."""
    for key in keys:
        assert a[key].shape == b[key].shape, f"{what}: {key} shapes {a[key].shape} vs {b[key].shape}"
        if key == "z0":
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}: {key} differs")
            continue
        err = float(np.abs(a[key] - b[key]).max())
        assert err <= REL_TOL * _scale(b[key]), f"{what}: {key} differs by {err:.3g} > {REL_TOL} · {_scale(b[key]):.3g}"


def assert_seed_matters(a: dict, other: dict, what: str, keys=("z", "x")) -> None:
    """Another seed's samples differ by far more (1000×) than the tolerance allows."""
    for key in keys:
        err = float(np.abs(a[key] - other[key]).max())
        assert err > 1e3 * REL_TOL * _scale(a[key]), f"{what}: another seed changes {key} by only {err:.3g}"
