"""The algorithm against closed forms: the score from an exact discriminator, and every sampler on a known mixture."""
import math

import numpy as np
import pytest
import torch

from dsls.noise import SigmaLadder
from dsls.samplers import SAMPLERS, PerSampleRNG, SamplerSettings, build_samplers, make_sampler
from dsls.samplers.langevin import Langevin
from dsls.score import GaussianMixture, LogRatio, OracleDiscriminator, Score, latent_score, noised_prior, prior_score

MEANS = np.array([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]])
STDS = np.array([0.3, 0.2, 0.25])
WEIGHTS = np.array([0.2, 0.3, 0.5])


def run_sampler(name, score_fn, n0, ladder, rng, track=0, **settings):
    return make_sampler(name, settings).sample(score_fn, n0, ladder, rng, track=track)


def mixture(dtype=torch.float64):
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return GaussianMixture(t(MEANS), t(STDS**2), t(WEIGHTS))


def oracle_score(dtype=torch.float64) -> Score:
    """The score a perfect discriminator gives: ∇ [logit D + log p_σ] = ∇ log q_σ."""
    return Score([LogRatio(OracleDiscriminator(mixture(dtype))), noised_prior])


def rng(n: int, stream: str, seed: int = 0) -> PerSampleRNG:
    return PerSampleRNG.for_indices(seed, range(n), stream)


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
    want = analytic_score(z.numpy(), sigma)
    np.testing.assert_allclose(latent_score(D, z, sigma).numpy(), want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(oracle_score()(z, sigma).numpy(), want, atol=1e-4, rtol=1e-4)
    # create_graph=True (the likelihood's path) gives the same score, still differentiable
    zg = z.clone().requires_grad_(True)
    s = oracle_score()(zg, sigma, create_graph=True)
    assert s.requires_grad
    np.testing.assert_allclose(s.detach().numpy(), want, atol=1e-4, rtol=1e-4)


def test_prior_term_is_noised_prior_score():
    z = torch.randn(8, 3)
    assert torch.allclose(prior_score(z, 2.0), -z / 5.0)
    assert torch.allclose(Score([noised_prior])(z, 2.0), -z / 5.0)
    # without the prior term the score is the density-ratio gradient only
    D = OracleDiscriminator(mixture(torch.float32))
    z = torch.randn(16, 2)
    diff = latent_score(D, z, 0.5) - latent_score(D, z, 0.5, include_prior=False)
    assert torch.allclose(diff, -z / 1.25, atol=1e-6)


def test_score_keeps_no_graph():
    D = OracleDiscriminator(mixture(torch.float32))
    s = latent_score(D, torch.randn(4, 2), 0.3)
    assert not s.requires_grad and s.grad_fn is None
    z = torch.randn(4, 2, requires_grad=True)
    s = oracle_score(torch.float32)(z, 0.3)
    assert not s.requires_grad and s.grad_fn is None and z.grad is None


# One ladder for every sampler: σ_max = 20 keeps the start p_σmax close to q_σmax (the mixture is off-centre), so the
# deterministic ODE inherits little start mismatch. Measured on 16000 samples, the component-weight bias (sampler,
# not sampling noise) is ≈0.025 for langevin, ≈0.02 for pc, ≈0.01 for ode; with 4000 samples a weight's sampling
# noise is ≈0.008 (1σ). Tolerances: weights within 0.05 (absolute), component means within 0.05, mean per-axis
# std within 25 % of the true std (a too-hot or too-cold sampler, e.g. a corrector step that is far too large,
# is off by ≥ 35 %).
MIXTURE_CASES = {
    "langevin": ("langevin", dict(eps0=5e-5, steps_per_level=30), 14 * 30 + 1),
    # predictor + one corrector step per level at the default snr: 100 levels, NFE = 99·(1 + 1) + denoise
    "pc": ("pc", dict(levels=100, corrector_steps=1), 99 * 2 + 1),
    "pc-predictor-only": ("pc", dict(levels=100, corrector_steps=0), 99 + 1),
    "ode": ("ode", {}, None),  # adaptive (dopri5): NFE checked > 0 only
    # EDM's fixed-step Heun on 40 σ's: 2 evaluations per step + denoise (18 steps, the toy config's, is too coarse
    # for σ_max = 20: the component means land ≈0.05 off)
    "ode-heun2": ("ode", dict(method="heun2", steps=40), 39 * 2 + 1),
}


@pytest.mark.parametrize("case", list(MIXTURE_CASES))
def test_sampler_matches_mixture(case):
    name, settings, nfe = MIXTURE_CASES[case]
    ladder = SigmaLadder(sigma_max=20.0, sigma_min=0.01, num_levels=14)
    n = 4000
    n0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = run_sampler(name, oracle_score(), n0, ladder, rng(n, name, seed=2), **settings)
    z = out.z.numpy()
    assert np.isfinite(z).all()
    k = np.argmin(((z[:, None] - MEANS[None]) ** 2).sum(-1), 1)  # nearest component
    weights = np.bincount(k, minlength=3) / len(z)
    means = np.stack([z[k == j].mean(0) for j in range(3)])
    stds = np.array([z[k == j].std(0).mean() for j in range(3)])
    report = f"{case}: weights {weights.round(3)}, means {means.round(3).tolist()}, stds {stds.round(3)}"
    assert np.abs(weights - WEIGHTS).max() < 0.05, report
    assert np.abs(means - MEANS).max() < 0.05, report
    assert (np.abs(stds - STDS) < 0.25 * STDS).all(), report
    assert out.nfe == nfe if nfe is not None else out.nfe > 0


def test_ode_is_deterministic():
    """The probability-flow ODE draws nothing: the start noise alone fixes the sample, whatever the random streams."""
    ladder = SigmaLadder(5.0, 0.05, 5)
    n0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = run_sampler("ode", oracle_score(), n0, ladder, rng(64, "ode", seed=0))
    b = run_sampler("ode", oracle_score(), n0.clone(), ladder, rng(64, "other", seed=123))
    assert torch.equal(a.z, b.z) and torch.equal(a.z0, b.z0) and a.nfe == b.nfe > 0
    c = run_sampler("ode", oracle_score(), n0 + 1e-3, ladder, rng(64, "ode", seed=0))
    assert not torch.equal(a.z, c.z)  # …and it does depend on the start


def test_stochastic_samplers_depend_on_their_stream_only():
    ladder = SigmaLadder(5.0, 0.05, 4)
    n0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("langevin", "pc"):
        a, b, c = (run_sampler(name, oracle_score(), n0, ladder, rng(16, name, seed=s), steps_per_level=2)
                   if name == "langevin" else run_sampler(name, oracle_score(), n0, ladder, rng(16, name, seed=s))
                   for s in (0, 0, 1))
        assert torch.equal(a.z, b.z) and not torch.equal(a.z, c.z), name


def test_per_sample_rng_ignores_the_batch():
    """Sample i's draws depend on (seed, i, stream) only: not on its batch-mates nor on where it sits in a batch."""
    full = PerSampleRNG.for_indices(7, range(10), "langevin").randn(3, (2,))
    part = PerSampleRNG.for_indices(7, [8, 3], "langevin").randn(3, (2,))
    assert full.shape == (3, 10, 2)
    assert torch.equal(part[:, 0], full[:, 8]) and torch.equal(part[:, 1], full[:, 3])
    other = PerSampleRNG.for_indices(7, range(10), "pc").randn(3, (2,))
    assert not torch.equal(other, full)


def test_sampler_registry_and_none():
    assert {"none", "langevin", "pc", "ode"} <= set(SAMPLERS)
    n0 = torch.randn(5, 2)
    out = run_sampler("none", None, n0, SigmaLadder(1, 0.1, 3), rng(5, "none"))
    assert torch.equal(out.z, n0) and out.nfe == 0


def test_unknown_sampler_or_setting_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown sampler 'nope'.*registered samplers: none, langevin, pc, ode"):
        make_sampler("nope")
    with pytest.raises(ValueError, match=r"unknown sampler 'nope'.*registered"):
        build_samplers({"langevin": {}, "nope": {}})
    with pytest.raises(ValueError, match=r"unknown sampler 'nope'"):
        build_samplers(["nope"])
    valid = r"eps0, steps_per_level, denoise, init"
    with pytest.raises(ValueError, match=rf"sampler 'langevin' has no setting 'epsx'; its settings: {valid}"):
        make_sampler("langevin", {"epsx": 1e-3})
    with pytest.raises(ValueError, match=rf"sampler 'langevin' has no setting 'epsx'; its settings: {valid}"):
        build_samplers({"langevin": {"epsx": 1e-3}})
    with pytest.raises(ValueError, match=r"sampler 'none' has no setting 'eps0'; its settings: none"):
        make_sampler("none", {"eps0": 1e-3})
    with pytest.raises(ValueError, match=r"'langevin'.*eps0 must be > 0"):
        make_sampler("langevin", {"eps0": 0.0})
    with pytest.raises(ValueError, match="no sampler selected"):
        build_samplers({"langevin": None})


def test_build_samplers_accepts_every_spec_form():
    want = {"none": make_sampler("none"), "langevin": Langevin(eps0=1e-3)}
    assert build_samplers({"none": {}, "langevin": {"eps0": 1e-3}}) == want
    assert build_samplers(SamplerSettings(none=make_sampler("none"), langevin=Langevin(eps0=1e-3))) == want
    assert build_samplers({"none": {}, "langevin": {"eps0": 1e-3}, "pc": None}) == want  # null: not run
    assert build_samplers(["none", "langevin"]) == {"none": make_sampler("none"), "langevin": Langevin()}
    assert list(build_samplers(["langevin", "none"])) == ["langevin", "none"]  # the order given
    for unnamed in (None, {}, SamplerSettings()):  # a config that names no sampler runs the default pair
        assert build_samplers(unnamed) == {"none": make_sampler("none"), "langevin": Langevin()}
    assert Langevin(eps0=1e-3).settings() == {"eps0": 1e-3, "steps_per_level": 10, "denoise": True, "init": "wide"}


def test_langevin_reports_where_it_diverged():
    ladder = SigmaLadder(1.0, 0.1, 4)
    bad = lambda z, s: torch.full_like(z, math.inf) if s < 0.5 else -z  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"level 1 \(sigma=0\.4642\), step 0"):
        run_sampler("langevin", bad, torch.randn(3, 2), ladder, rng(3, "langevin"), eps0=1e-3, steps_per_level=3)


def test_trajectory_is_tracked_per_level():
    ladder = SigmaLadder(5.0, 0.05, 4)
    n0 = torch.randn(10, 2, dtype=torch.float64)
    out = run_sampler("langevin", oracle_score(), n0, ladder, rng(10, "langevin"), track=3, steps_per_level=2)
    assert len(out.trajectory) == 1 + 4 + 1 and all(t.shape == (3, 2) for t in out.trajectory)  # start, levels, denoise
    assert torch.equal(out.trajectory[-1], out.z[:3])


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
    n0 = torch.randn(4, 2)
    assert torch.allclose(lad.initial_latent(n0, "wide"), n0 * math.sqrt(101))
    assert torch.equal(lad.initial_latent(n0, "prior"), n0)
    assert torch.allclose(lad.terminal_log_prob(n0), Score([noised_prior]).log_density(n0, 10.0))


def test_pc_corrector_reaches_the_noised_target():
    """On q = N(0, s²I): one predictor step from σ_max = 5 leaves z far too wide (variance ≈ 24.8), so only the
    corrector's Langevin steps at σ_min can bring it to q_σmin = N(0, (s² + σ_min²)I), variance 0.5 here."""
    s2, sigma_min = 0.25, 0.5
    score = lambda z, sigma: -z / (s2 + sigma**2)  # noqa: E731  (the exact score of q_σ)
    ladder = SigmaLadder(5.0, sigma_min, 2)
    n0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    var = {c: run_sampler("pc", score, n0, ladder, rng(4000, "pc"), corrector_steps=c, snr=0.12,
                          denoise=False).z.var().item() for c in (0, 600)}
    assert var[0] > 10  # the predictor alone: nowhere near
    # ε = 2·(0.12·0.5)² = 0.0072: the excess decays by (1 − ε/0.5)² per step (to 3e-8 after 600), the step's own
    # bias is ≈ ε/(2·0.5) = 0.7 %, and 8,000 values estimate a variance to ≈ 1.6 %
    assert abs(var[600] - (s2 + sigma_min**2)) < 0.05 * (s2 + sigma_min**2), var
