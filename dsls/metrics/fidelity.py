"""Image fidelity metrics (FID, IS, KID, precision/recall) through torch-fidelity.

Samples arrive as float images in data space, (N, C, H, W) in [-1, 1]; `to_uint8` is the one place they
become the uint8 RGB images torch-fidelity expects. Reference features and FID statistics are cached on
disk under a name built from the data set and split, so each reference is run through the extractor once.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from typing import Mapping, Sequence
from urllib.error import URLError
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from dsls.progress import progress
from dsls.errors import MissingWeightsError  # noqa: F401  (defined there; importable here)

INCEPTION = "inception-v3-compat"
DEFAULT_CACHE_ROOT = os.path.join("~", ".cache", "dsls", "fidelity")  # or $DSLS_CACHE/fidelity when that is set
# torch-fidelity's key → ours (results.json / logged names).
_KEYS = {"frechet_inception_distance": "fid", "inception_score_mean": "is_mean", "inception_score_std": "is_std",
         "kernel_inception_distance_mean": "kid_mean", "kernel_inception_distance_std": "kid_std",
         "precision": "precision", "recall": "recall"}
_BINARY = ("fid", "kid", "prc")  # metrics that compare against the reference


def to_uint8(x) -> torch.Tensor:
    """Float (N, C, H, W) in [-1, 1], C in {1, 3} → uint8 (N, 3, H, W): ``((x + 1) * 127.5).round().clamp(0, 255)``.

    -1 → 0, 1 → 255, 0 → 127.5 → 128 (``round`` is round-half-to-even, and 127.5 goes to 128).
    Grayscale is repeated to 3 channels. This is the only float → uint8 conversion in dsls and it happens exactly
    once: callers pass float samples in data space, never pre-quantised ones. A uint8 input is taken as already
    converted (only the channels are repeated).
    """
    x = torch.as_tensor(x)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, C, H, W) with C in {{1, 3}}, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        x = ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


class Uint8Images(Dataset):
    """uint8 (3, H, W) images for torch-fidelity, from a tensor/array of samples or from one of our data sets
    (items ``(x, y)`` or ``x``, x float (C, H, W) in [-1, 1]); every image goes through `to_uint8`.
    desc: a progress bar of one pass over the images (torch-fidelity reads them in this process: save_cpu_ram),
    so it shows only when features are extracted, not when they come from the cache."""

    def __init__(self, data, desc: str | None = None):
        if isinstance(data, (torch.Tensor, np.ndarray)):
            self.images, self.dataset = to_uint8(data).cpu(), None  # converted once, all at once
        else:
            self.images, self.dataset = None, data
        self.desc, self.bar = desc, None

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.dataset)

    def _tick(self) -> None:
        if self.bar is None:
            self.bar = progress(desc=self.desc, total=len(self), unit="img")
        self.bar.update()
        if self.bar.n >= len(self):
            self.bar.close()
            self.bar = None

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.desc is not None:
            self._tick()
        if self.images is not None:
            return self.images[i]
        item = self.dataset[i]
        x = item[0] if isinstance(item, (tuple, list)) else item
        return to_uint8(torch.as_tensor(x)[None])[0]


# -- extractors built from any nn.Module --------------------------------------------------------------------
_MODULES: dict[str, tuple[nn.Module, tuple[str, ...], dict[str, str]]] = {}
DEFAULT_LAYERS = {"fid": "penultimate", "kid": "penultimate", "prc": "penultimate", "isc": "logits_unbiased"}


class _ModuleExtractor(FeatureExtractorBase):
    """torch-fidelity extractor that looks its module up in `_MODULES` by name at construction: one class per
    name stays registered, so registering the name again (torch-fidelity refuses duplicates) swaps the module."""

    dsls_name: str = ""

    def __init__(self, name: str, features_list, **kwargs):
        super().__init__(name, features_list)
        self.module = _MODULES[self.dsls_name][0]

    @classmethod
    def get_provided_features_list(cls):
        return _MODULES[cls.dsls_name][1]

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        layers = _MODULES[cls.dsls_name][2]
        if metric not in layers:
            raise ValueError(f"extractor {cls.dsls_name!r} has no layer for {metric}: register it with layers=... "
                             f"or pass feature_layer_{metric}=...")
        return layers[metric]

    @staticmethod
    def can_be_compiled():
        return False

    def forward(self, x: torch.Tensor):
        out = self.module(x)
        return tuple(out[f].float().flatten(1) for f in self.features_list)


def register_module_extractor(name: str, module: nn.Module, features: Sequence[str] = ("penultimate", "logits_unbiased"),
                              layers: Mapping[str, str] | None = None) -> str:
    """Register ``module`` with torch-fidelity as feature extractor ``name`` (use it as ``feature_extractor=name``).

    Contract: ``module(x)`` takes a uint8 (B, 3, H, W) batch and returns ``{feature: (B, F) float tensor}`` for
    every name in ``features``. Default layers: fid/kid/prc use "penultimate", isc "logits_unbiased" (logits, not
    probabilities); ``layers`` overrides them per metric. Registering the same name again replaces the module.
    The module is put in eval mode, frozen and moved with ``cuda`` only during `fidelity_metrics`, then restored.
    E.g. classifier-FID: wrap a trained digit classifier so it returns its penultimate activations and logits.
    """
    layers = {m: l for m, l in {**DEFAULT_LAYERS, **(layers or {})}.items() if l in features}
    cls = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if cls is not None and not (isinstance(cls, type) and issubclass(cls, _ModuleExtractor)):
        raise ValueError(f"feature extractor {name!r} is torch-fidelity's own; pick another name")
    _MODULES[name] = (module, tuple(features), layers)
    if cls is None:
        torch_fidelity.register_feature_extractor(name, type(f"ModuleExtractor_{name}", (_ModuleExtractor,),
                                                              {"dsls_name": name}))
    return name


def _fingerprint(module: nn.Module) -> str:
    """Short hash of the module's class and state, so a reference cache is never reused for other weights."""
    h = hashlib.sha1(type(module).__qualname__.encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:10]


class _KeepState:
    """Restore a registered module's device, train/eval flags and requires_grad after torch-fidelity used it."""

    def __init__(self, module: nn.Module | None):
        self.module = module

    def __enter__(self):
        if self.module is not None:
            self.state = {m: m.training for m in self.module.modules()}
            self.grads = [p.requires_grad for p in self.module.parameters()]
            self.device = next((t.device for t in [*self.module.parameters(), *self.module.buffers()]), None)

    def __exit__(self, *exc):
        if self.module is None:
            return
        for m, flag in self.state.items():
            m.training = flag
        for p, flag in zip(self.module.parameters(), self.grads):
            p.requires_grad_(flag)
        if self.device is not None:
            self.module.to(self.device)


# -- Inception weights: fail fast and clearly offline --------------------------------------------------------
def _inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    return URL_INCEPTION_V3


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Can a TCP connection to the URL's host be opened within ``timeout`` (DNS included)? Run in a thread,
    because name resolution has no timeout of its own and the download itself has none either."""
    ok = []

    def probe():
        try:
            socket.create_connection((urlparse(url).hostname, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _missing_weights(url: str, reason: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"The Inception feature extractor's weights could not be loaded ({reason}) and cannot be downloaded "
        f"(no network?). Download\n  {url}\non a machine with internet, copy it here, and pass its path as "
        f"feature_extractor_weights_path=... (config key feature_extractor_weights_path), or put it in "
        f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}/ where torch-fidelity looks for it.")


def check_inception_weights(weights_path: str | None) -> None:
    """Raise MissingWeightsError before torch-fidelity tries (and on a firewalled machine hangs) to download."""
    url = _inception_url()
    if weights_path is not None:
        if not os.path.isfile(weights_path):
            raise _missing_weights(url, f"feature_extractor_weights_path={weights_path!r} does not exist")
        return
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))
    if not os.path.isfile(cached) and not _reachable(url):
        raise _missing_weights(url, f"not in the torch hub cache {cached}")


# -- the metrics --------------------------------------------------------------------------------------------
def _cache_name(reference_name: str, n: int, extractor: str) -> str:
    """input2_cache_name: data set + split + size (+ module fingerprint); torch-fidelity appends the extractor."""
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{reference_name}-n{n}")
    return f"{name}-{_fingerprint(_MODULES[extractor][0])}" if extractor in _MODULES else name


def _default_cache_root() -> str:
    return os.path.join(os.environ["DSLS_CACHE"], "fidelity") if os.environ.get("DSLS_CACHE") else DEFAULT_CACHE_ROOT


def fidelity_metrics(samples, reference: Dataset | None, reference_name: str, *,
                     metrics: Sequence[str] = ("fid", "isc", "kid", "prc"), feature_extractor: str | None = None,
                     feature_extractor_weights_path: str | None = None, cache_root: str | None = None,
                     kid_subset_size: int = 1000, batch_size: int = 64, cuda: bool | None = None,
                     verbose: bool = False, **extra) -> dict:
    """FID / IS / KID / precision-recall of ``samples`` (float (N, C, H, W) in [-1, 1]) against ``reference``.

    reference: the real split as a Dataset (items x or (x, y), floats in [-1, 1]); only IS may go without.
    reference_name: e.g. "cifar10-train"; names the on-disk cache (under cache_root, default
    ~/.cache/dsls/fidelity) of the reference's features and statistics, which are computed once per data set,
    split, size and extractor. feature_extractor None = torch-fidelity's Inception for every metric (PRC too,
    on its 2048-d pool features), whose weights must be downloadable or at feature_extractor_weights_path.
    kid_subset_size is clamped to the sizes of both sets. ``extra`` goes to torch_fidelity.calculate_metrics
    (e.g. isc_splits, prc_neighborhood). Returns floats keyed fid, is_mean, is_std, kid_mean, kid_std, precision,
    recall (those computed), plus num_samples, reference and feature_extractor.
    """
    unknown = set(metrics) - {"fid", "isc", "kid", "prc"}
    if unknown or not metrics:
        raise ValueError(f"metrics must be among fid, isc, kid, prc; got {list(metrics)}")
    feature_extractor = feature_extractor or INCEPTION
    if feature_extractor == INCEPTION:
        check_inception_weights(feature_extractor_weights_path)
    binary = any(m in _BINARY for m in metrics)
    if binary and reference is None:
        raise ValueError(f"metrics {list(metrics)} compare with a reference: pass the reference data set")
    x = Uint8Images(samples, desc=f"{feature_extractor} features of the samples")
    ref = Uint8Images(reference, desc=f"{feature_extractor} features of {reference_name} (once, then cached)") \
        if binary else None
    kw = dict(input1=x, input2=ref, cuda=torch.cuda.is_available() if cuda is None else cuda, batch_size=batch_size,
              feature_extractor=feature_extractor, verbose=verbose, save_cpu_ram=True,  # no loader worker processes
              cache=True, cache_root=os.path.expanduser(cache_root or _default_cache_root()), **{m: True for m in metrics})
    if ref is not None:
        kw.update(input2_cache_name=_cache_name(reference_name, len(ref), feature_extractor),
                  kid_subset_size=max(2, min(kid_subset_size, len(x), len(ref))))
    if feature_extractor_weights_path is not None:
        kw["feature_extractor_weights_path"] = feature_extractor_weights_path
    kw.update(extra)
    with _KeepState(_MODULES.get(feature_extractor, (None,))[0]):
        try:
            raw = torch_fidelity.calculate_metrics(**kw)
        except (URLError, ConnectionError, TimeoutError) as e:  # the download failed after all
            if feature_extractor == INCEPTION:
                raise _missing_weights(_inception_url(), f"{type(e).__name__}: {e}") from e
            raise
    out = {ours: float(raw[theirs]) for theirs, ours in _KEYS.items() if theirs in raw}
    return {**out, "num_samples": len(x), "reference": reference_name, "feature_extractor": feature_extractor}
