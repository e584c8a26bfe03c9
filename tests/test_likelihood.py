"""ode_log_prob against closed forms: a Gaussian mixture's log q_σmin is known exactly at every σ."""
import math

import torch

from dsls.likelihood import ode_log_prob
from dsls.noise import SigmaLadder
from dsls.score import GaussianMixture, LogRatio, OracleDiscriminator, Score, noised_prior

LADDER = SigmaLadder(sigma_max=10.0, sigma_min=0.05, num_levels=10)


def oracle(gm: GaussianMixture) -> Score:
    return Score([LogRatio(OracleDiscriminator(gm)), noised_prior])


def mixture_2d() -> GaussianMixture:
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return GaussianMixture(t([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]]), t([0.09, 0.04, 0.0625]), t([0.2, 0.3, 0.5]))


def mixture_32d() -> GaussianMixture:
    """Four isotropic components in d = 32, variances 0.1 to 0.4."""
    g = torch.Generator().manual_seed(0)
    means = 1.5 * torch.randn(4, 32, generator=g, dtype=torch.float64)
    return GaussianMixture(means, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))


def test_exact_divergence_matches_closed_form_in_2d():
    gm = mixture_2d()
    g = torch.Generator().manual_seed(1)
    z = gm.sample(200, generator=g) + LADDER.sigma_min * torch.randn(200, 2, generator=g, dtype=torch.float64)
    z = torch.cat([z, 3 * torch.randn(20, 2, generator=g, dtype=torch.float64)])  # and some points in the tails
    lp, nfe = ode_log_prob(oracle(gm), z, LADDER, terminal_log_prob=lambda x: gm.log_prob(x, LADDER.sigma_max),
                           exact_divergence=True, rtol=1e-6, atol=1e-6)
    want = gm.log_prob(z, LADDER.sigma_min)
    assert lp.shape == (220,) and lp.dtype == torch.float64 and nfe > 0
    err = (lp - want).abs().max().item()
    assert err < 5e-3, f"max |error| {err:.2e} nats per row"  # measured ≈ 4e-4


def test_default_terminal_is_the_noised_prior():
    """Without terminal_log_prob the flow ends at p_σmax = N(0, (1+σ_max²)I): close to q_σmax (not equal: the
    mixture's mean is off the origin), and exactly what passing the ladder's terminal density gives."""
    gm = mixture_2d()
    z = gm.sample(100, generator=torch.Generator().manual_seed(2))
    lp, nfe = ode_log_prob(oracle(gm), z, LADDER)
    again, _ = ode_log_prob(oracle(gm), z, LADDER, terminal_log_prob=LADDER.terminal_log_prob)
    assert torch.isfinite(lp).all() and nfe > 0
    assert torch.equal(lp, again)
    assert (lp - gm.log_prob(z, LADDER.sigma_min)).abs().max() < 1.0  # measured ≈ 0.3 nats at σ_max = 10


def test_hutchinson_batch_mean_matches_closed_form_in_32d():
    """d = 32 > 16: the default is Hutchinson's estimate with one Rademacher probe per solve. Single rows are off by
    ≈1.6 nats (std), but the estimate is unbiased: over 400 rows the batch mean's standard error is ≈0.35 % of
    |mean| (measured over 8 probe seeds: 0.03–0.6 % off), so 2 % is ≈5 standard errors."""
    gm = mixture_32d()
    z = gm.sample(400, generator=torch.Generator().manual_seed(3))
    lp, nfe = ode_log_prob(oracle(gm), z, LADDER, terminal_log_prob=lambda x: gm.log_prob(x, LADDER.sigma_max),
                           generator=torch.Generator().manual_seed(0))
    want = gm.log_prob(z, LADDER.sigma_min)
    assert lp.shape == (400,) and torch.isfinite(lp).all() and nfe > 0
    rel = abs((lp.mean() - want.mean()) / want.mean()).item()
    assert rel < 0.02, f"batch mean {lp.mean():.3f} vs closed form {want.mean():.3f} ({100 * rel:.2f} %)"


def test_hutchinson_is_the_default_above_16_dims():
    """Above d = 16 the estimate depends on the probe (so it is the stochastic one), and one generator seed repeats
    it exactly; exact_divergence=True does not depend on it."""
    gm = mixture_32d()
    z = gm.sample(16, generator=torch.Generator().manual_seed(5))

    def run(seed, **kw):
        return ode_log_prob(oracle(gm), z, LADDER, generator=torch.Generator().manual_seed(seed), **kw)[0]

    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))
    small = SigmaLadder(1.0, 0.5, 2)  # exact divergence costs 32 backward passes per step: a short solve
    exact = [ode_log_prob(oracle(gm), z[:4], small, exact_divergence=True,
                          generator=torch.Generator().manual_seed(s))[0] for s in (0, 1)]
    assert torch.equal(*exact)


def test_hutchinson_is_exact_for_a_linear_score():
    """q = N(0, s²I): s(z, σ) = −z/(s²+σ²) is linear, so vᵀ(∂s/∂z)v = −d/(s²+σ²) for every Rademacher v: the
    Hutchinson estimate is exact row by row, and log q_σmin matches in closed form."""
    d, s2 = 24, 0.5
    z = torch.randn(16, d, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    score = Score([lambda x, sig: -0.5 * (x.flatten(1) ** 2).sum(1) / (s2 + sig**2)])
    lp, _ = ode_log_prob(score, z, LADDER, rtol=1e-6, atol=1e-6, generator=torch.Generator().manual_seed(0),
                         terminal_log_prob=lambda x: gaussian(x, s2 + LADDER.sigma_max**2))
    want = gaussian(z, s2 + LADDER.sigma_min**2)
    assert (lp - want).abs().max() < 1e-3


def gaussian(x, var):
    return -0.5 * (x**2).sum(1) / var - 0.5 * x.shape[1] * math.log(2 * math.pi * var)


def test_a_plain_user_written_score_function_works():
    """docs/python.md: any differentiable score_fn(z, sigma), here a Gaussian's, written by hand (no create_graph)."""
    mean, var = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64), 0.25

    def score_fn(z, sigma):  # the exact score of q_σ = N(mean, (var + σ²) I)
        return -(z - mean) / (var + sigma**2)

    def log_q(z, sigma):
        v = var + sigma**2
        return -0.5 * ((z - mean) ** 2).sum(1) / v - 0.5 * z.shape[1] * math.log(2 * math.pi * v)

    g = torch.Generator().manual_seed(2)
    z = mean + math.sqrt(var) * torch.randn(50, 3, generator=g, dtype=torch.float64)
    lp, _ = ode_log_prob(score_fn, z, LADDER, terminal_log_prob=lambda x: log_q(x, LADDER.sigma_max), rtol=1e-7,
                         atol=1e-7)
    assert (lp - log_q(z, LADDER.sigma_min)).abs().max().item() < 1e-4
    detached = lambda z, sigma: score_fn(z, sigma).detach()  # noqa: E731
    try:
        ode_log_prob(detached, z, LADDER)
    except TypeError as e:
        assert "no graph back to z" in str(e)
    else:
        raise AssertionError("a score with no graph must be refused")
