"""What a LatentModel (dsls.model) holds besides its autoencoder: the latent prior whose score it searches with, and
an optional latent classifier for class guidance. Both are plain nn.Modules, so `.to(device)` moves them.

A prior gives its score as terms of a dsls.score.Score: log-density terms, differentiated together, and `direct` score
terms. Phase 2's D is one kind of prior (DiscriminatorPrior: log-density terms only); the latent_score phase's network
another (ScorePrior: a direct term); discriminator guidance adds a D's log-density term to such a network
(GuidedScorePrior). The LatentModel asks its prior for its terms without knowing which kind it holds.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dsls.errors import TaskError
from dsls.noise import as_sigma
from dsls.score import DirectScore, LogDensity, LogRatio, noised_prior

DG_SCALE = 1.0  # the discriminator-guidance weight w when none is given

class LatentPrior(nn.Module):
    """The base of the latent priors: a score as Score terms, and a logit where the prior has one."""

    kind = "prior"

    def score_terms(self) -> tuple[Sequence[LogDensity], Sequence[DirectScore]]:
        """(log-density terms, direct score terms) whose sum is s(z, σ) = ∇z log q_σ(z)."""
        raise NotImplementedError

    def logit(self, z: torch.Tensor, sigma) -> torch.Tensor:
        """A prior without a density-ratio logit (e.g. a score network) cannot give one: say so, and what to use."""
        raise TaskError(f"this model's latent prior ({self.kind}) has no logit: only a discriminator prior gives "
                        "logit D(z, σ); use model.score(z, sigma) or model.log_prob(z) instead")


class DiscriminatorPrior(LatentPrior):
    """Phase 2's D. At its optimum logit D(z, σ) = log q_σ(z) − log p_σ(z), so the latent score is
    s(z, σ) = ∇z [logit D(z, σ) + log p_σ(z)], with p_σ = N(0, (1+σ²)I) (dsls.score)."""

    kind = "discriminator"

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def score_terms(self) -> tuple[Sequence[LogDensity], Sequence[DirectScore]]:
        return [LogRatio(self.discriminator), noised_prior], []

    def logit(self, z: torch.Tensor, sigma) -> torch.Tensor:
        return self.discriminator(z, as_sigma(sigma, z))


class ScorePrior(LatentPrior):
    """A noise-conditional score network s_θ(z, σ) ≈ ∇z log q_σ(z) (the latent_score phase's EMA net): the score is
    its output, a `direct` term; it has no logit."""

    kind = "score network"

    def __init__(self, score_net: nn.Module):
        super().__init__()
        self.score_net = score_net

    def score_terms(self) -> tuple[Sequence[LogDensity], Sequence[DirectScore]]:
        return [], [self.score_net]


class GuidedScorePrior(LatentPrior):
    """Discriminator guidance in latent space (Kim et al. 2023): a score network corrected by a noise-conditional
    D_g(z, σ) trained on noised codes against noised samples of that network, s(z, σ) = s_θ(z, σ) + w · ∇z logit
    D_g(z, σ). At D_g's optimum logit D_g = log q_σ − log p_θ,σ, so w = 1 corrects s_θ to q's score. `scale` (w) is a
    plain attribute: `model.prior.scale = 2.0` changes it."""

    kind = "score network with discriminator guidance"

    def __init__(self, score_net: nn.Module, discriminator: nn.Module, scale: float = DG_SCALE):
        super().__init__()
        self.score_net, self.discriminator, self.scale = score_net, discriminator, float(scale)

    def guidance(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """w · logit D_g(z, σ) per row: the log-density term whose gradient corrects s_θ (w read at each call)."""
        return self.scale * self.discriminator(z, sigma)

    def score_terms(self) -> tuple[Sequence[LogDensity], Sequence[DirectScore]]:
        return [self.guidance], [self.score_net]

    def logit(self, z: torch.Tensor, sigma) -> torch.Tensor:
        """logit D_g(z, σ) (without w) ≈ log q_σ(z) − log p_θ,σ(z)."""
        return self.discriminator(z, as_sigma(sigma, z))


class LatentClassifier(nn.Module):
    """C(y | z, σ): a noise-conditional net with one logit per class, trained on noised codes of the same autoencoder
    (dsls.phases.latent_classifier). forward gives log C(· | z, σ), (B, K), the guidance term's log-probability.
    sigma_range: the σ's it was trained on, to warn when a search goes beyond them."""

    def __init__(self, net: nn.Module, num_classes: int, sigma_range: tuple[float, float]):
        super().__init__()
        self.net, self.num_classes, self.sigma_range = net, int(num_classes), tuple(sigma_range)

    def forward(self, z: torch.Tensor, sigma) -> torch.Tensor:
        return torch.log_softmax(self.net(z, as_sigma(sigma, z)), dim=-1)
