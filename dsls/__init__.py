"""DS-LS: discriminator score-based search in latent space.

Importing dsls first sets OMP_WAIT_POLICY=PASSIVE unless the user set it: OpenMP threads that busy-wait between
parallel regions slow torch about 10x on a machine whose cores are busy (a 200-step toy fit: 82 s instead of 30). The
OpenMP runtime reads it once, when torch loads, so every entry point (the `dsls` command, experiments/*.py) imports
dsls before torch. Where torch came first (a notebook's `import torch` cell) it is too late: dsls warns, once.
"""
import os
import sys
import warnings

LATE_OMP_WARNING = (
    "dsls was imported after torch, so OpenMP's threads may busy-wait (OMP_WAIT_POLICY is read once, when torch "
    "loads): CPU work, e.g. a likelihood, can run ~10x slower on a machine whose cores are busy. Import dsls before "
    "torch, or set OMP_WAIT_POLICY=PASSIVE in the environment before starting Python (a notebook: restart the "
    "kernel).")

if "torch" in sys.modules and "OMP_WAIT_POLICY" not in os.environ:  # a policy the user set is theirs to keep
    warnings.warn(LATE_OMP_WARNING, RuntimeWarning)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str):
    """`dsls.load` and `dsls.LatentModel`, imported on first use: `import dsls` (and `import dsls.noise`) stay free of
    Lightning, which the loader needs (it rebuilds checkpoints with their phase modules)."""
    if name in ("load", "LatentModel"):
        from dsls import model

        return getattr(model, name)
    raise AttributeError(f"module 'dsls' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "load", "LatentModel"])  # tab completion lists the lazy names too
