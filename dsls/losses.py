"""Each training loss once: D's density-ratio BCE, denoising score matching (D's regulariser, the pixel baseline) and
the latent classifier's noisy cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ratio_bce(logit_q: torch.Tensor, logit_p: torch.Tensor) -> torch.Tensor:
    """BCE(D(z̃_q) → 1) + BCE(D(z̃_p) → 0). Its optimum is logit D = log q_σ − log p_σ."""
    return F.softplus(-logit_q).mean() + F.softplus(logit_p).mean()


def dsm(score: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Denoising score matching, σ²-weighted (NCSN): the batch mean of ‖σ·s(x + σε, σ) + ε‖².

    `score` is s evaluated at the noised point x + σ·noise. Its minimiser over s is ∇ log q_σ. reduction is over the
    data dimensions: 'sum' (a latent code: the squared norm) or 'mean' (images: a per-pixel scale that does not grow
    with the resolution).
    """
    err = (sigma.view(-1, *([1] * (score.dim() - 1))) * score + noise).pow(2).flatten(1)
    if reduction == "sum":
        return err.sum(1).mean()
    if reduction == "mean":
        return err.mean(1).mean()
    raise ValueError(f"unknown reduction {reduction!r}; use 'sum' or 'mean'")


def noisy_cross_entropy(classifier, z: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor,
                        noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent classifier's loss: cross-entropy of C(y | z + σε, σ), as guided diffusion trains its classifier on
    noised inputs. Returns (loss, logits)."""
    logits = classifier(z + sigma.view(-1, *([1] * (z.dim() - 1))) * noise, sigma)
    return F.cross_entropy(logits, y), logits
