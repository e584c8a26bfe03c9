"""Metrics: toy 2-D mode metrics (`dsls.metrics.toy`) and image fidelity through torch-fidelity
(`dsls.metrics.fidelity`, `dsls.metrics.extractors`). The fidelity names load lazily, so importing the toy
metrics does not import torch-fidelity."""
from __future__ import annotations

import importlib

_LAZY = {
    "to_uint8": "fidelity", "Uint8Images": "fidelity", "fidelity_metrics": "fidelity", "MissingWeightsError": "fidelity",
    "register_module_extractor": "fidelity", "check_inception_weights": "fidelity",
    "OfflineFeatures": "extractors", "register_offline_extractor": "extractors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"dsls.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dsls.metrics' has no attribute {name!r}")
