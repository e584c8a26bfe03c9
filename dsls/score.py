"""Latent score from the discriminator's logit, plus an exact mixture oracle to check it against.

At D's optimum, logit D(z, σ) = log q_σ(z) − log p_σ(z) with p_σ = N(0, (1+σ²)I), so
    s(z, σ) = ∇z log q_σ(z) = ∇z logit D(z, σ) + ∇z log p_σ(z) = ∇z logit D(z, σ) − z/(1+σ²).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

LogitFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def as_sigma(sigma, z: torch.Tensor) -> torch.Tensor:
    """Broadcast a float or (B,) σ to shape (B,) on z's device and dtype."""
    s = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
    return s.expand(z.shape[0]) if s.dim() == 0 else s


def prior_score(z: torch.Tensor, sigma) -> torch.Tensor:
    """∇z log p_σ(z) for p_σ = N(0, (1+σ²)I)."""
    s = as_sigma(sigma, z).view(-1, *([1] * (z.dim() - 1)))
    return -z / (1 + s**2)


def logit_grad(logit_fn: LogitFn, z: torch.Tensor, sigma) -> torch.Tensor:
    """∇z Σ logit(z, σ), computed on a detached copy: no graph survives the call.
    Works under Trainer.predict's inference mode too (the copy is a normal tensor)."""
    with torch.inference_mode(False), torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(logit_fn(z, as_sigma(sigma, z)).sum(), z)
    return grad


def latent_score(logit_fn: LogitFn, z: torch.Tensor, sigma, include_prior: bool = True) -> torch.Tensor:
    """s(z, σ) = ∇z logit D(z, σ) − z/(1+σ²); include_prior=False gives the density-ratio gradient only."""
    grad = logit_grad(logit_fn, z, sigma)
    return grad + prior_score(z, sigma) if include_prior else grad


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


def gaussian_log_prob(z: torch.Tensor, var) -> torch.Tensor:
    """log N(z; 0, var·I) per row, var a float or (B,)."""
    v = as_sigma(var, z)
    d = z[0].numel()
    return -0.5 * (z.flatten(1) ** 2).sum(1) / v - 0.5 * d * torch.log(2 * math.pi * v)


class OracleDiscriminator(nn.Module):
    """A 'discriminator' whose logit is the exact optimum log q_σ − log p_σ for a known mixture q."""

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.mixture.log_prob(z, sigma) - gaussian_log_prob(z, 1 + as_sigma(sigma, z) ** 2)
