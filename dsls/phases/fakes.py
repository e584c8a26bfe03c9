"""Discriminator guidance's fakes: the latent score network s_θ whose samples phase 2's D_g learns to tell from the
codes, read from a latent_score checkpoint, and those samples.

DG (Kim et al., ICML 2023) trains its discriminator on real data against samples of the score model it corrects. Here
both live in the autoencoder's latent space: the fakes are s_θ's samples by the probability-flow ODE (heun2 on 18 σ's,
EDM's choice) on s_θ's own ladder, drawn once per fit, as many as there are training codes. They come from a fixed seed
and per-sample random streams (dsls.samplers), so a resumed fit draws the same fakes again: nothing is kept on disk.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from dsls.checkpoints import load_phase_checkpoint
from dsls.errors import ConfigError
from dsls.nets.autoencoder import same_weights
from dsls.noise import SigmaLadder
from dsls.phases.latent_score import latent_score_net
from dsls.samplers import make_sampler, sample_indices
from dsls.score import Score

FAKES_SAMPLER = ("ode", {"method": "heun2", "steps": 18})  # how the fakes are drawn
FAKES_SEED = 918_273  # not the search's default seed 0: a DG search does not start from the fakes D_g was trained on
FAKES_BATCH = 4096  # rows per ODE solve
NET_KEYS = {"hidden": "s_hidden", "depth": "s_depth", "embed_dim": "s_embed_dim", "sigma_min": "sigma_min",
            "num_levels": "num_levels"}  # fake_net's keys: a latent_score checkpoint's settings
EMA_PREFIX = "ema.module."  # a latent_score checkpoint's sampling weights (its EMA), in its state_dict


def read_fake_checkpoint(path: str) -> tuple[dict, dict, dict]:
    """(fake_net, its EMA weights, the autoencoder's weights) of a latent_score checkpoint. fake_net: what rebuilds
    s_θ and its ladder (latent_dim, hidden, depth, embed_dim, sigma_max, sigma_min, num_levels), saved in phase 2's
    hyper-parameters so that a phase-2 checkpoint stands alone."""
    ck = load_phase_checkpoint(path, "latent_score", flag="--model.fake_ckpt")
    hp, state = ck["hyper_parameters"], ck["state_dict"]
    fake_net = {"latent_dim": int(hp["autoencoder"]["latent_dim"]), **{k: hp[key] for k, key in NET_KEYS.items()},
                "sigma_max": float(state["sigma_max"])}
    weights = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    autoencoder = {k[len("autoencoder."):]: v for k, v in state.items() if k.startswith("autoencoder.")}
    return fake_net, weights, autoencoder


def check_same_autoencoder(fake_autoencoder: dict, autoencoder: torch.nn.Module, fake_ckpt: str,
                           autoencoder_ckpt: Optional[str]) -> None:
    """The fakes are codes of s_θ's autoencoder: it must be the one whose codes D_g sees (every weight and buffer)."""
    if not same_weights(autoencoder.state_dict(), fake_autoencoder):
        raise ConfigError(f"--model.fake_ckpt={fake_ckpt} was trained on another autoencoder than "
                          f"--model.autoencoder_ckpt={autoencoder_ckpt}: its fakes are codes of another latent space; "
                          "train the latent_score phase on the same phase-1 checkpoint, or pass that checkpoint")


def fake_score_net(fake_net: dict, weights: Optional[dict] = None) -> torch.nn.Module:
    """s_θ as dsls.phases.latent_score builds it, with `weights` (its EMA's) when given, frozen."""
    net = latent_score_net(fake_net["latent_dim"], fake_net["hidden"], fake_net["depth"], fake_net["embed_dim"])
    if weights is not None:
        net.load_state_dict(weights)
    return net.requires_grad_(False).eval()


def fake_ladder(fake_net: dict) -> SigmaLadder:
    """The ladder s_θ was trained on, which its samples are drawn on."""
    return SigmaLadder(fake_net["sigma_max"], fake_net["sigma_min"], fake_net["num_levels"])


class _Latents:
    """What sample_indices needs of a model, for samples kept as latents: their shape, the device, no decoder."""

    def __init__(self, latent_dim: int, device: torch.device):
        self.latent_shape, self.device = (latent_dim,), device

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


@torch.no_grad()
def draw_fakes(net: torch.nn.Module, fake_net: dict, n: int, device=None, batch: int = FAKES_BATCH) -> torch.Tensor:
    """n samples of s_θ (FAKES_SAMPLER on fake_ladder, seed FAKES_SEED), on the CPU: sample i depends on i alone."""
    sampler, ladder = make_sampler(*FAKES_SAMPLER), fake_ladder(fake_net)
    model, score = _Latents(fake_net["latent_dim"], torch.device(device or "cpu")), Score(direct=[net])
    rows = [sample_indices(model, sampler, score, ladder, FAKES_SEED, range(i, min(i + batch, n)))[0].z.cpu()
            for i in range(0, n, batch)]
    return torch.cat(rows)


def timed_fakes(net: torch.nn.Module, fake_net: dict, n: int, device=None) -> tuple[torch.Tensor, str]:
    """draw_fakes, with the line that says what was drawn and how long it took."""
    t0 = time.perf_counter()
    fakes = draw_fakes(net, fake_net, n, device)
    method, steps = FAKES_SAMPLER[1]["method"], FAKES_SAMPLER[1]["steps"]
    return fakes, (f"drew {n} fakes of the latent score network (ode {method}, {steps} steps, seed {FAKES_SEED}) in "
                   f"{time.perf_counter() - t0:.1f} s")
