"""What every sampler shares: the registry, the output, per-sample randomness and the divergence checks.

A sampler is a frozen dataclass of its own settings (their one default each) with one method,
`sample(score_fn, n0, ladder, rng, track=0) -> SamplerOutput`: a pure function of the score, the standard-normal
start noise n0 (B, ...), the σ ladder and the per-sample random streams `rng`.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch

from dsls.errors import ConfigError
from dsls.noise import SigmaLadder
from dsls.errors import SearchDiverged  # noqa: F401  (defined there; importable here)

ScoreFn = Callable[..., torch.Tensor]  # score_fn(z, σ) -> s(z, σ), e.g. a dsls.score.Score
SAMPLERS: dict[str, type["Sampler"]] = {}


def register(name: str):
    """Class decorator: registers a Sampler subclass under `name` (its results key and its config key)."""

    def deco(cls):
        cls.name = name
        SAMPLERS[name] = cls
        return cls

    return deco


@dataclass
class SamplerOutput:
    z0: torch.Tensor  # the initial latent
    z: torch.Tensor  # the final latent
    nfe: int = 0  # score evaluations per sample, counted
    trajectory: list[torch.Tensor] = field(default_factory=list)  # z[:track] after each level


@dataclass(frozen=True)
class Sampler:
    """A sampler's settings (the dataclass fields of a subclass) and its one update rule, `sample`."""

    name: ClassVar[str] = ""

    def sample(self, score_fn: ScoreFn, n0: torch.Tensor, ladder: SigmaLadder, rng: "PerSampleRNG",
               track: int = 0) -> SamplerOutput:
        raise NotImplementedError

    def settings(self) -> dict:
        return dataclasses.asdict(self)


def setting_names(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SAMPLERS[name])]


def make_sampler(name: str, settings: dict | Sampler | None = None) -> Sampler:
    """A registered sampler with its settings; an unknown name or setting is a ConfigError that lists the valid ones."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; registered samplers: {', '.join(SAMPLERS)}")
    if isinstance(settings, SAMPLERS[name]):
        return settings
    if settings is not None and not isinstance(settings, dict):
        raise ConfigError(f"sampler {name!r}: settings must be a mapping, e.g. {{eps0: 1.0e-4}}; got {settings!r}")
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(setting_names(name)))
    if unknown:
        valid = ", ".join(setting_names(name)) or "none"
        raise ConfigError(f"sampler {name!r} has no setting {', '.join(map(repr, unknown))}; its settings: {valid}")
    return SAMPLERS[name](**settings)


def check_positive(sampler: Sampler, **values) -> None:
    """Settings that must be > 0, checked in __post_init__: a zero step size would write 'valid' unsearched samples."""
    for key, v in values.items():
        if not v > 0:
            raise ConfigError(f"sampler {sampler.name!r}: {key} must be > 0, got {v} "
                              f"(--model.samplers.{sampler.name}.{key})")


def sample_seed(seed: int, index: int, stream: str) -> int:
    """A 63-bit seed for sample `index` and one named stream ('start', or a sampler's name): nothing else enters."""
    digest = hashlib.sha256(f"{seed}/{stream}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def pad_rows(indices: Sequence[int], multiple: int = 8) -> list[int]:
    """The indices, padded with copies of the last to a multiple of `multiple` rows. Run every batch at such a row
    count and drop the copies after: BLAS kernels sum in another order for some small or ragged row counts, which
    would make a sample depend on the batch it fell in (measured on CPU: 1-2 ulp, then amplified by the search)."""
    indices = [int(i) for i in indices]
    return indices + indices[-1:] * (-len(indices) % multiple)


class PerSampleRNG:
    """One generator per sample, as EDM's StackedRandomGenerator: sample i's draws depend only on its own seed, never
    on the batch it was put in. Draws happen on the CPU (the same numbers on any device) and move to `device`."""

    def __init__(self, seeds: Sequence[int], device=None):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.device = device

    @classmethod
    def for_indices(cls, seed: int, indices: Sequence[int], stream: str, device=None) -> "PerSampleRNG":
        return cls([sample_seed(seed, int(i), stream) for i in indices], device)

    def randn(self, k: int, shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
        """k standard-normal draws per sample, (k, B, *shape): draw a level's noise in one call per sample."""
        draws = [torch.randn(k, *shape, generator=g, dtype=dtype) for g in self.generators]
        return torch.stack(draws, 1).to(self.device)


def sample_indices(model, sampler: Sampler, score_fn: ScoreFn, ladder: SigmaLadder, seed: int,
                   indices: Sequence[int], track: int = 0,
                   terms: Callable[[list[int]], Sequence] | None = None) -> tuple[SamplerOutput, torch.Tensor]:
    """The samples numbered `indices` of one search, as (latents, decoded x), cut back to len(indices) rows.
    Sample i starts from (seed, i) and draws its noise from (seed, i, sampler name) alone; the batch runs padded by
    pad_rows, decoding included. model: a dsls.score.SamplingModel (latent_shape, decode, device).
    terms(rows): the conditional score terms of these padded rows (guidance, measurements), added to score_fn."""
    n, rows = len(indices), pad_rows(indices)
    if terms is not None:
        score_fn = score_fn.plus(*terms(rows))
    n0 = PerSampleRNG.for_indices(seed, rows, "start", model.device).randn(1, model.latent_shape)[0]
    rng = PerSampleRNG.for_indices(seed, rows, sampler.name, model.device)
    try:
        out = sampler.sample(score_fn, n0, ladder, rng, track=min(track, n))
    except SearchDiverged as e:  # counted on the rows of `indices`, not on pad_rows' copies of the last
        raise e.of_rows(n) from None
    with torch.no_grad():
        x = model.decode(out.z)[:n]
    return SamplerOutput(z0=out.z0[:n], z=out.z[:n], nfe=out.nfe, trajectory=out.trajectory), x


def check_finite(z: torch.Tensor, where: str) -> None:
    if not torch.isfinite(z).all():
        raise SearchDiverged((~torch.isfinite(z)).flatten(1).any(1).cpu(), where)


def check_level(flags: list[torch.Tensor], z: torch.Tensor, level: int, sigma: float) -> None:
    """flags[t]: 'z has a NaN/Inf after step t', kept on the device so a GPU syncs once per level, not per step.
    NaN/Inf never heal, so the first flagged step is where the search diverged."""
    if flags and torch.stack(flags).any():
        step = int(torch.stack(flags).nonzero()[0])
        check_finite(z, f"at level {level} (sigma={sigma:.4g}), step {step}")


def denoise(score_fn: ScoreFn, z: torch.Tensor, sigma: float) -> torch.Tensor:
    """Tweedie's last step z + σ²·s(z, σ): the posterior mean, which removes the residual σ noise."""
    z = z + sigma**2 * score_fn(z, sigma)
    check_finite(z, f"in the final denoise step (sigma={sigma:.4g})")
    return z


@register("none")
@dataclass(frozen=True)
class NoSearch(Sampler):
    """Plain AAE sampling: z = n0 ~ N(0, I), decoded as it is (the baseline)."""

    def sample(self, score_fn, n0, ladder, rng, track=0) -> SamplerOutput:
        return SamplerOutput(z0=n0, z=n0.clone(), nfe=0)
