"""The metric classifier of the digit data sets: trained once on the TRAIN split (deterministically from a seed),
then cached, keyed by a version tag, the seed and a fingerprint of the held-out images, so later calls never retrain
and a changed data set is never scored with a stale classifier."""
from __future__ import annotations

import hashlib
import os

import torch
import torch.nn.functional as F
from torch import nn

from dsls.checkpoints import save_torch
from dsls.data.digit_splits import load_splits
from dsls.nets.digit_classifier import DigitClassifier
from dsls.progress import progress

VERSION = "digitcnn-v1"  # bump when the net or the recipe changes: cached classifiers are then retrained
EPOCHS = {"digits": 40, "mnist": 3}  # digits ~6 s, full MNIST ~3.5 min on one CPU thread (once: cached)
MAX_SHIFT = {"digits": 1, "mnist": 2}  # training augmentation: random shifts of up to this many pixels


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """Identifies the held-out set, so a cached classifier is only reused on the data it was evaluated on."""
    h = hashlib.sha1(str(tuple(x.shape)).encode())
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def random_shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Shift each image by an independent random (dy, dx) ∈ [-max_shift, max_shift]², filling with background −1."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), value=-1.0).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    dy, dx = torch.randint(0, 2 * p + 1, (2, b), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features, logits) of ``x``, in eval mode and in batches."""
    model.eval()
    feats = torch.cat([model.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return feats, model.head(feats)


def train_classifier(dataset_name: str, data_dir: str = "data", epochs: int | None = None, seed: int = 0,
                     batch_size: int = 64, lr: float = 3e-3, max_shift: int | None = None,
                     splits: dict | None = None) -> tuple[DigitClassifier, float]:
    """Train on the TRAIN split only (Adam, cosine LR, random shifts), deterministically from ``seed``
    without touching the global RNG; return the model (eval mode) and its held-out accuracy."""
    splits = splits or load_splits(dataset_name, data_dir)
    x, y = splits["train"]
    epochs = EPOCHS[dataset_name] if epochs is None else epochs
    max_shift = MAX_SHIFT[dataset_name] if max_shift is None else max_shift
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier()
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(x) // batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    model.train()
    bar = progress(desc=f"{dataset_name} classifier (once, then cached)", total=epochs * steps_per_epoch, unit="step")
    with bar, torch.inference_mode(False), torch.enable_grad():  # callers may be inside Trainer.predict/test
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                loss = F.cross_entropy(model(random_shift(x[idx], max_shift, g)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
    xh, yh = splits["heldout"]
    acc = (_predict(model, xh)[1].argmax(1) == yh).float().mean().item()
    return model.eval(), acc


def cache_path(dataset_name: str, cache_dir: str | None = None) -> str:
    """``<cache_dir>/<dataset>-classifier.pt``; default dir $DSLS_CACHE/classifiers or ~/.cache/dsls/classifiers."""
    if cache_dir is None:
        root = os.environ.get("DSLS_CACHE")
        cache_dir = os.path.join(root, "classifiers") if root else os.path.expanduser("~/.cache/dsls/classifiers")
    return os.path.join(cache_dir, f"{dataset_name}-classifier.pt")


def load_classifier(dataset_name: str, data_dir: str = "data", cache_dir: str | None = None, seed: int = 0,
                    splits: dict | None = None) -> DigitClassifier:
    """The trained classifier, from the cache when its version, seed and held-out fingerprint match, else trained
    now and cached (written to a temp file, then renamed, so readers never see half a file). The model's
    ``info`` dict holds accuracy, data shape, seed, version and fingerprint."""
    splits = splits or load_splits(dataset_name, data_dir)
    xh, yh = splits["heldout"]
    want = {"version": VERSION, "seed": seed, "data_shape": tuple(xh.shape[1:]), "fingerprint": _fingerprint(xh, yh)}
    path = cache_path(dataset_name, cache_dir)
    model = DigitClassifier()
    if os.path.isfile(path):
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if all(blob.get(k) == v for k, v in want.items()):
            model.load_state_dict(blob["state_dict"])
            model.info = {k: v for k, v in blob.items() if k != "state_dict"}
            return model.eval()
    model, acc = train_classifier(dataset_name, data_dir, seed=seed, splits=splits)
    model.info = {**want, "accuracy": acc, "dataset": dataset_name}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch({**model.info, "state_dict": model.state_dict()}, path)  # atomic: readers never see half a file
    return model
