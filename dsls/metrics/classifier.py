"""Classifier-FID and mode metrics for the 10-class digit data sets (sklearn digits 8×8, MNIST 28×28).

Inception features need downloaded weights and mean little on tiny grey digits, so a small CNN trained on the
data set's own TRAIN split (exactly as our DataModules split it) serves as an offline feature extractor:
``classifier_fid`` is the Fréchet distance between Gaussian fits of its penultimate features on the samples and
on the held-out real images (digits: the DataModule's val split; MNIST: the official t10k test split), and its
argmax predictions give the mode metrics ``class_kl`` (KL(class histogram ‖ uniform), 0·log 0 = 0, so it
lies in [0, log 10]) and ``mean_confidence``.

The FID goes through torch-fidelity (``dsls.metrics.fidelity``) with the classifier registered as a feature
extractor, so samples pass the project's single float → uint8 conversion (``to_uint8``) on the way; the mode
metrics read the float samples directly. The trained classifier is cached once per data set, keyed by a version
tag, the seed and a fingerprint of the held-out images, so later calls never retrain and a changed data set is
never scored with a stale classifier.
"""
from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dsls.data.digits import DigitsDataModule
from dsls.data.mnist import MNISTDataModule
from dsls.metrics.fidelity import fidelity_metrics, register_module_extractor
from dsls.progress import progress

VERSION = "digitcnn-v1"  # bump when the net or the recipe changes: cached classifiers are then retrained
NUM_CLASSES = 10
HELDOUT = {"digits": "val", "mnist": "test"}  # the held-out split the classifier never trains on
EPOCHS = {"digits": 40, "mnist": 3}  # digits ~6 s, full MNIST ~3.5 min on one CPU thread (once: cached)
MAX_SHIFT = {"digits": 1, "mnist": 2}  # training augmentation: random shifts of up to this many pixels


class DigitClassifier(nn.Module):
    """Three 3×3 convs (two of them stride 2) → 2×2 average pool → SiLU penultimate layer → 10 logits.

    Works for any side ≥ 4 (8 for digits, 28 for MNIST). Input: float (B, 1, H, W) in [-1, 1]. SiLU (not
    ReLU) on the penultimate layer avoids dead features, so feature covariances stay well conditioned for FID.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * width, feature_dim), nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim): what classifier-FID compares."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ClassifierExtractor(nn.Module):
    """torch-fidelity adapter: uint8 (B, 3, H, W) (gray repeated, ``(x + 1) · 127.5`` rounded) → channel 0 back to
    [-1, 1] → the classifier → ``{"penultimate": (B, F), "logits_unbiased": (B, 10)}``."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x[:, :1].float() / 127.5 - 1.0
        feats = self.classifier.features(x)
        return {"penultimate": feats, "logits_unbiased": self.classifier.head(feats)}


# ---------------------------------------------------------------- data: the DataModules' own splits
def _check_name(dataset_name: str) -> None:
    if dataset_name not in HELDOUT:
        raise ValueError(f"no digit classifier for {dataset_name!r}; valid names are: {', '.join(sorted(HELDOUT))}")


def _mnist_val_size(data_dir: str) -> int:
    """The DataModule's default 5,000 val images, or a tenth of the train file when it is smaller (tiny test
    copies of MNIST); the held-out set is the test split either way."""
    dm = MNISTDataModule(data_dir=data_dir, download=False, num_workers=0)
    dm.prepare_data()  # decompresses .gz-only files, raises MissingDataError when absent
    with open(os.path.join(dm.raw_folder, "train-images-idx3-ubyte"), "rb") as f:
        n = struct.unpack(">I", f.read(8)[4:])[0]
    return min(5000, n // 10)


def _stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) tensors of a dataset of (image tensor, label). A TransformedSubset over torchvision's MNIST at 28×28
    is read straight from its uint8 array with ToTensor + Normalize(0.5, 0.5) arithmetic (checked against item 0);
    anything else goes item by item."""
    base = getattr(ds, "dataset", None)
    if hasattr(base, "data") and tuple(base.data.shape[1:]) == (28, 28) and len(ds) > 0:
        idx = torch.as_tensor(ds.indices)
        x = (base.data[idx].float().div(255).sub(0.5).div(0.5)).unsqueeze(1)
        y = torch.as_tensor(base.targets)[idx].long()
        if torch.equal(x[0], ds[0][0]):
            return x, y
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs).float(), torch.as_tensor(ys).long()


def load_splits(dataset_name: str, data_dir: str = "data") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train", "val"[, "test"], "heldout"} → (x float (N, 1, H, W) in [-1, 1], y int64), split by the DataModule."""
    _check_name(dataset_name)
    if dataset_name == "digits":
        dm = DigitsDataModule()
        dm.setup()
        splits = {"train": dm.train_set.tensors, "val": dm.val_set.tensors}
    else:
        dm = MNISTDataModule(data_dir=data_dir, download=False, num_workers=0, val_size=_mnist_val_size(data_dir))
        dm.setup()
        splits = {"train": _stack(dm.train_set), "val": _stack(dm.val_set), "test": _stack(dm.test_set)}
    splits["heldout"] = splits[HELDOUT[dataset_name]]
    return splits


def real_images(dataset_name: str, split: str = "heldout", data_dir: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """Real images (N, 1, H, W) float in [-1, 1] and their labels; "heldout" is the split the classifier never saw."""
    splits = load_splits(dataset_name, data_dir)
    if split not in splits:
        raise ValueError(f"{dataset_name} has no split {split!r}; valid: {', '.join(splits)}")
    return splits[split]


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """Identifies the held-out set, so a cached classifier is only reused on the data it was evaluated on."""
    h = hashlib.sha1(str(tuple(x.shape)).encode())
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- training and caching
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
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({**model.info, "state_dict": model.state_dict()}, tmp)
    os.replace(tmp, path)
    return model


# ---------------------------------------------------------------- metrics
def class_kl(predictions: torch.Tensor | np.ndarray, num_classes: int = NUM_CLASSES) -> float:
    """KL(histogram of predicted classes ‖ uniform): 0 for balanced classes, log K when all fall in one class."""
    counts = np.bincount(np.asarray(predictions).ravel(), minlength=num_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()  # empty classes contribute 0·log 0 = 0
    return float(np.sum(p * np.log(p * num_classes)))


def to_float_images(samples: torch.Tensor | np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Samples as float32 (N, *shape) in [-1, 1]; uint8 input is refused (our images live in [-1, 1])."""
    x = torch.as_tensor(samples).detach().cpu()
    if not x.is_floating_point():
        raise TypeError(f"classifier metrics take float images in [-1, 1], got dtype {x.dtype}")
    if tuple(x.shape[1:]) != tuple(shape) or len(x) < 2:
        raise ValueError(f"expected samples of shape (N ≥ 2, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    return x.float()


def classifier_metrics(samples: torch.Tensor | np.ndarray, dataset_name: str, data_dir: str = "data",
                       cache_dir: str | None = None, seed: int = 0) -> dict:
    """Classifier-FID against the held-out real images, class_kl and mean_confidence of ``samples``
    (float (N, 1, H, W) in [-1, 1]), plus what was compared. Plain Python numbers (JSON-serialisable)."""
    splits = load_splits(dataset_name, data_dir)
    real, _ = splits["heldout"]
    x = to_float_images(samples, real.shape[1:])
    model = load_classifier(dataset_name, data_dir, cache_dir, seed, splits=splits)
    name = register_module_extractor(f"dsls-{dataset_name}-classifier", ClassifierExtractor(model))
    fid = fidelity_metrics(x, real, f"{dataset_name}-heldout", metrics=("fid",), feature_extractor=name,
                           cache_root=os.path.join(os.path.dirname(cache_path(dataset_name, cache_dir)), "fidelity"))
    logits = _predict(model, x)[1]
    return {
        "classifier_fid": fid["fid"],
        "class_kl": class_kl(logits.argmax(1).numpy()),
        "mean_confidence": logits.softmax(1).max(1).values.mean().item(),
        "num_samples": len(x),
        "reference": f"{dataset_name}-heldout",
        "reference_size": len(real),
        "classifier_accuracy": float(model.info["accuracy"]),
    }
