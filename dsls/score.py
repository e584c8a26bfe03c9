"""The search's drift: a sum of log-density terms of z, differentiated in one autograd pass.

At D's optimum, logit D(z, σ) = log q_σ(z) − log p_σ(z) with p_σ = N(0, (1+σ²)I), so
    s(z, σ) = ∇z [logit D(z, σ) + log p_σ(z)] = ∇z logit D(z, σ) − z/(1+σ²) = ∇z log q_σ(z).
Guidance and measurement terms (dsls.guidance) add further log-densities to the same sum. A model that gives its
score directly (the pixel-space NCSN) adds a `direct` term instead. `SamplingModel` is what a search samples from.
Also here: an exact Gaussian-mixture oracle, to tell sampler error from D's error.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from dsls.noise import SigmaLadder, as_sigma, noised_prior_log_prob

LogDensity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z (B, ...), σ (B,)) → (B,)
DirectScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z, σ (B,)) → a score shaped like z


class LogRatio(nn.Module):
    """D's logit as a log-density term: log q_σ − log p_σ at D's optimum."""

    def __init__(self, discriminator: Callable):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.discriminator(z, sigma)


def noised_prior(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The prior term log p_σ(z); with LogRatio it makes log q_σ."""
    return noised_prior_log_prob(z, sigma)


class Score:
    """s(z, σ) = ∇z Σ_k log_terms[k](z, σ) + Σ_j direct[j](z, σ).

    The log-density terms are summed first and differentiated once. By default the gradient is taken on a detached
    copy and no graph survives the call (the samplers). create_graph=True differentiates z itself and keeps the graph,
    so the result can be differentiated again (the likelihood's divergence); z must then require grad.
    """

    def __init__(self, log_terms: Sequence[LogDensity] = (), direct: Sequence[DirectScore] = ()):
        if not log_terms and not direct:
            raise ValueError("a Score needs at least one term")
        self.log_terms, self.direct = tuple(log_terms), tuple(direct)

    def plus(self, *log_terms: LogDensity) -> "Score":
        """The same score with more log-density terms (guidance, measurements)."""
        return Score(self.log_terms + tuple(log_terms), self.direct)

    def log_density(self, z: torch.Tensor, sigma) -> torch.Tensor:
        """Σ_k log_terms[k](z, σ) per row (B,): the function whose gradient is the score (without direct terms)."""
        sigma = as_sigma(sigma, z)
        return sum(term(z, sigma) for term in self.log_terms)

    def __call__(self, z: torch.Tensor, sigma, create_graph: bool = False) -> torch.Tensor:
        with torch.inference_mode(False):  # Trainer.predict may run in inference mode
            x = z if create_graph else z.detach().clone()
            sig = as_sigma(sigma, x)
            out = torch.zeros_like(x)
            if self.log_terms:
                with torch.enable_grad():
                    x_in = x if create_graph else x.requires_grad_(True)
                    (out,) = torch.autograd.grad(self.log_density(x_in, sig).sum(), x_in, create_graph=create_graph)
            with torch.set_grad_enabled(create_graph):  # a direct score needs no graph unless asked for one
                for term in self.direct:
                    out = out + term(x, sig)
        return out if create_graph else out.detach()


def latent_score(logit_fn: LogDensity, z: torch.Tensor, sigma, include_prior: bool = True) -> torch.Tensor:
    """s(z, σ) = ∇z logit D(z, σ) − z/(1+σ²); include_prior=False gives the density-ratio gradient only."""
    return Score([LogRatio(logit_fn), noised_prior] if include_prior else [LogRatio(logit_fn)])(z, sigma)


def prior_score(z: torch.Tensor, sigma) -> torch.Tensor:
    """∇z log p_σ(z) = −z/(1+σ²), in closed form."""
    s = as_sigma(sigma, z).view(-1, *([1] * (z.dim() - 1)))
    return -z / (1 + s**2)


@runtime_checkable
class SamplingModel(Protocol):
    """What a search samples from: a phase-2 AdversarialModule (latent search) or a PixelNCSNModule (pixel space)."""

    phase: str
    dataset_name: Optional[str]
    datamodule_hparams: Optional[dict]  # how to rebuild its real data (reference metrics, held-out codes)
    device: torch.device

    @property
    def ladder(self) -> SigmaLadder: ...

    @property
    def latent_shape(self) -> tuple[int, ...]: ...

    def score_fn(self) -> Score:
        """The model's own score s(z, σ); searches add their terms with Score.plus."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent → data space."""


class GaussianMixture(nn.Module):
    """q = Σ_k w_k N(μ_k, C_k). Gives exact log q_σ = log (q ∗ N(0, σ²I)) for oracle checks."""

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor | None = None):
        super().__init__()
        k, d = means.shape
        covs = torch.as_tensor(covs, dtype=means.dtype)
        if covs.dim() == 1:  # one isotropic variance per component
            covs = covs.view(k, 1, 1) * torch.eye(d, dtype=means.dtype)
        weights = torch.full((k,), 1.0 / k, dtype=means.dtype) if weights is None else weights / weights.sum()
        self.register_buffer("means", means)
        self.register_buffer("covs", covs)
        self.register_buffer("log_weights", weights.log())

    @classmethod
    def fit(cls, codes: torch.Tensor, n_components: int, seed: int = 0) -> "GaussianMixture":
        """Fit a full-covariance mixture to codes with scikit-learn (the oracle for a learned D)."""
        from sklearn.mixture import GaussianMixture as SkGMM

        gm = SkGMM(n_components, covariance_type="full", random_state=seed, reg_covar=1e-6).fit(codes.cpu().numpy())
        f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        return cls(f(gm.means_), f(gm.covariances_), f(gm.weights_))

    def log_prob(self, z: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log q_σ(z), z of shape (B, d), σ a float or (B,)."""
        s2 = as_sigma(sigma, z).view(-1, 1, 1, 1) ** 2
        eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        cov = self.covs.unsqueeze(0) + s2 * eye  # (B, K, d, d)
        chol = torch.linalg.cholesky(cov)
        diff = (z.unsqueeze(1) - self.means).unsqueeze(-1)  # (B, K, d, 1)
        sol = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        d = z.shape[1]
        comp = -0.5 * (sol**2).sum(-1) - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi)
        return torch.logsumexp(comp + self.log_weights, dim=1)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        return self.means[k] + (torch.linalg.cholesky(self.covs)[k] @ eps.unsqueeze(-1)).squeeze(-1)


class OracleDiscriminator(nn.Module):
    """A 'discriminator' whose logit is the exact optimum log q_σ − log p_σ for a known mixture q."""

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.mixture.log_prob(z, sigma) - noised_prior_log_prob(z, sigma)
