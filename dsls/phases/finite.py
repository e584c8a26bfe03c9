"""A phase whose weights became NaN/Inf must fail, not finish: its checkpoint would be stamped DONE, and the next
phase (or the search) would blame itself. PhaseModule checks at every checkpoint save and at the end of a fit."""
from __future__ import annotations

import torch

from dsls.errors import DivergedError


def nonfinite_tensors(module: torch.nn.Module) -> tuple[int, int]:
    """(parameter tensors holding a NaN/Inf, parameter tensors). Parameters only: a buffer may be NaN by design (σ_max
    before a fit chooses it). One device sync for all of them."""
    params = list(module.parameters())
    if not params:
        return 0, 0
    bad = torch.stack([~torch.isfinite(p.detach()).all() for p in params])
    return int(bad.sum()), len(params)


def learning_rates(module) -> dict[str, float]:
    """The module's hyper-parameters whose name holds `lr` (lr, lr_d, lr_ae, c_lr): the settings to lower. Top-level
    only: phase 2 keeps phase 1's settings (with its lr) in a nested `autoencoder` entry."""
    hp = dict(getattr(module, "hparams", {}) or {})
    return {k: float(v) for k, v in hp.items() if "lr" in k.split("_")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_finite_weights(module, when: str, loaded: bool = False) -> None:
    """Raise DivergedError if any of the module's weights is NaN/Inf. when: e.g. 'at step 1200'. loaded: the weights
    come from a checkpoint (the fix is then to train that phase again)."""
    bad, total = nonfinite_tensors(module)
    if not bad:
        return
    lrs = learning_rates(module)
    word = "it had" if loaded else "now"
    fix = " or ".join(f"--model.{k} ({word} {v:g})" for k, v in lrs.items()) or "its learning rate"
    phase = getattr(module, "phase", "") or type(module).__name__
    raise DivergedError(f"the {phase} phase's weights became non-finite ({bad} of {total} tensors) {when}: "
                        f"{'train it again with a lower' if loaded else 'lower'} {fix}")
