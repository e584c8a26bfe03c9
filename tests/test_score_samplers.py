"""The algorithm against closed forms: the score from an exact discriminator, and annealed Langevin on a mixture."""
import math

import numpy as np
import pytest
import torch

from dsls.noise import SigmaLadder
from dsls.samplers import SAMPLERS, run_sampler
from dsls.score import GaussianMixture, OracleDiscriminator, latent_score, prior_score

MEANS = np.array([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]])
STDS = np.array([0.3, 0.2, 0.25])
WEIGHTS = np.array([0.2, 0.3, 0.5])


def mixture(dtype=torch.float64):
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return GaussianMixture(t(MEANS), t(STDS**2), t(WEIGHTS))


def analytic_score(z: np.ndarray, sigma: float) -> np.ndarray:
    """∇ log Σ_k w_k N(z; μ_k, (s_k² + σ²) I), written out by hand in numpy."""
    var = STDS**2 + sigma**2  # (K,)
    diff = MEANS[None] - z[:, None]  # (B, K, 2)
    logc = np.log(WEIGHTS) - np.log(2 * np.pi * var) - (diff**2).sum(-1) / (2 * var)
    r = np.exp(logc - logc.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return (r[..., None] * diff / var[None, :, None]).sum(1)


@pytest.mark.parametrize("sigma", [0.01, 0.1, 1.0, 5.0])
def test_score_of_exact_discriminator_is_analytic(sigma):
    D = OracleDiscriminator(mixture())
    z = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    got = latent_score(D, z, sigma).numpy()
    np.testing.assert_allclose(got, analytic_score(z.numpy(), sigma), atol=1e-4, rtol=1e-4)


def test_prior_term_is_noised_prior_score():
    z = torch.randn(8, 3)
    assert torch.allclose(prior_score(z, 2.0), -z / 5.0)
    # without the prior term the score is the density-ratio gradient only
    D = OracleDiscriminator(mixture(torch.float32))
    z = torch.randn(16, 2)
    diff = latent_score(D, z, 0.5) - latent_score(D, z, 0.5, include_prior=False)
    assert torch.allclose(diff, -z / 1.25, atol=1e-6)


def test_score_keeps_no_graph():
    D = OracleDiscriminator(mixture(torch.float32))
    s = latent_score(D, torch.randn(4, 2), 0.3)
    assert not s.requires_grad and s.grad_fn is None


def test_annealed_langevin_matches_mixture():
    torch.manual_seed(0)
    gm = mixture(torch.float32)
    ladder = SigmaLadder(sigma_max=6.0, sigma_min=0.01, num_levels=12)
    score = lambda z, s: latent_score(OracleDiscriminator(gm), z, s)  # noqa: E731
    n0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
    out = run_sampler("langevin", score, n0, ladder, eps0=5e-5, steps_per_level=30, denoise=True,
                      generator=torch.Generator().manual_seed(2))
    z = out.z.numpy()
    k = np.argmin(((z[:, None] - MEANS[None]) ** 2).sum(-1), 1)
    weights = np.bincount(k, minlength=3) / len(z)
    np.testing.assert_allclose(weights, WEIGHTS, atol=0.03)  # component weights within 3 points
    for j in range(3):
        zj = z[k == j]
        np.testing.assert_allclose(zj.mean(0), MEANS[j], atol=0.05)
        assert abs(zj.std(0).mean() - STDS[j]) < 0.25 * STDS[j], (j, zj.std(0))
    assert out.nfe == 12 * 30 + 1


def test_sampler_registry_and_none():
    assert {"none", "langevin"} <= set(SAMPLERS)
    n0 = torch.randn(5, 2)
    out = run_sampler("none", None, n0, SigmaLadder(1, 0.1, 3))
    assert torch.equal(out.z, n0) and out.nfe == 0
    with pytest.raises(KeyError, match="registered"):
        run_sampler("nope", None, n0, SigmaLadder(1, 0.1, 3))


def test_langevin_reports_where_it_diverged():
    ladder = SigmaLadder(1.0, 0.1, 4)
    bad = lambda z, s: torch.full_like(z, math.inf) if s < 0.5 else -z  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"level 1 \(sigma=0\.4642\), step 0"):
        run_sampler("langevin", bad, torch.randn(3, 2), ladder, eps0=1e-3, steps_per_level=3)


def test_ladder():
    lad = SigmaLadder(10.0, 0.01, 4)
    np.testing.assert_allclose(lad.sigmas.numpy(), [10, 1, 0.1, 0.01], rtol=1e-5)
    s = lad.sample(10000, "loguniform", generator=torch.Generator().manual_seed(0))
    assert s.min() >= 0.01 and s.max() <= 10 and abs(torch.log10(s).mean().item() + 0.5) < 0.05
    assert set(lad.sample(500, "levels").tolist()) <= set(lad.sigmas.tolist())
    low = lad.sample(10000, "lowbiased", generator=torch.Generator().manual_seed(0))
    assert low.min() >= 0.01 and low.max() <= 10
    frac = (torch.log10(low) < -2 + 0.75).float().mean().item()  # lowest quarter of the log-range: P(u² < 1/4) = 1/2
    assert abs(frac - 0.5) < 0.02
    with pytest.raises(ValueError, match="sigma_max > sigma_min"):
        SigmaLadder(0.01, 0.1, 3)
