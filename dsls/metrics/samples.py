"""Which metrics a data set's samples get, and the real data they are measured against:
toy → modes / hq_fraction / rev_kl; digits and MNIST (28 px) → classifier-FID; the tinted digits → the digits'
classifier-FID of their shape and colour_accuracy (dsls.metrics.tinted); other images → torch-fidelity. The
classifier metrics add k-NN precision and recall in the classifier's feature space (dsls.metrics.prc).
heldout_images gives the real images a metric compares against: the search reconstructs them for its floor row."""
from __future__ import annotations

from typing import Optional

import numpy as np


CLASSIFIER_DATA = ("digits", "tinted_digits")  # data sets with an offline metric classifier (MNIST: at 28 px only)


def metric_kind(dataset_name: Optional[str], options: dict) -> Optional[str]:
    """Which metrics a data set gets: 'toy', 'classifier' (digits, tinted digits, MNIST at 28 px), 'fidelity' (other
    images, Inception) or None (options['fidelity'] = [] skips the image metrics)."""
    from dsls.data.toy2d import NAMES

    data = options.get("datamodule") or {}
    if dataset_name in NAMES:
        return "toy"
    if not options.get("fidelity"):
        return None
    if dataset_name in CLASSIFIER_DATA or (dataset_name == "mnist" and data.get("image_size", 28) == 28):
        return "classifier"
    if dataset_name != "mnist" and data.get("_class_path"):
        return "fidelity"
    return None


def metric_options(datamodule: Optional[dict], data_dir: Optional[str], fidelity, split: str,
                   feature_extractor_weights_path: Optional[str]) -> dict:
    """The options sample_metrics takes, from a search's settings: the data module the model was trained with
    (data_dir replaces its folder when given), the fidelity metrics, the reference split and the Inception file."""
    data = dict(datamodule or {})
    if data_dir:
        data["data_dir"] = data_dir
    return {"datamodule": data, "fidelity": list(fidelity or []), "split": split,
            "feature_extractor_weights_path": feature_extractor_weights_path}


def sample_metrics(x: np.ndarray, dataset_name: Optional[str], options: Optional[dict] = None) -> dict:
    """The data set's metrics of samples x (data space): see LatentSearchModule's docstring."""
    options = options or {}
    data = options.get("datamodule") or {}
    kind = metric_kind(dataset_name, options)
    if kind == "toy":
        from dsls.metrics.toy import toy_metrics

        return toy_metrics(x, dataset_name)
    if kind == "classifier" and dataset_name == "tinted_digits":
        from dsls.metrics.tinted import tinted_metrics

        return tinted_metrics(x, data_dir=data.get("data_dir", "data"))
    if kind == "classifier":
        from dsls.metrics.classifier import classifier_metrics

        return classifier_metrics(x, dataset_name, data_dir=data.get("data_dir", "data"))
    if kind == "fidelity":
        from dsls.metrics.fidelity import fidelity_metrics

        split = options.get("split", "train")
        reference, name = reference_dataset(data, split)
        return fidelity_metrics(x, reference, name, metrics=tuple(options["fidelity"]),
                                feature_extractor_weights_path=options.get("feature_extractor_weights_path"))
    if x.ndim == 4 and options.get("fidelity"):  # no real data to compare against
        print(f"note: no image metrics for {dataset_name!r}: the checkpoint does not record its data module "
              "(train it through the `dsls` CLI), or pass --model.fidelity=[] to silence this")
    return {}


def heldout_images(dataset_name: Optional[str], options: dict, n: int):
    """Up to n of the real images the data set's metric compares samples against, float (n, C, H, W) in [-1, 1]:
    digits and MNIST the held-out split (dsls.data.digit_splits), the tinted digits their val split (whose shapes
    are the digits' held-out split), other images the reference split (options['split']), taken evenly spaced
    through it. None for data without an image metric (toy, or fidelity = [])."""
    import torch

    kind = metric_kind(dataset_name, options)
    data = options.get("datamodule") or {}
    if kind == "classifier" and dataset_name == "tinted_digits":
        from dsls.data.digits import TintedDigitsDataModule

        dm = TintedDigitsDataModule()  # the default split, as the metric's own reference (the digits' val split)
        dm.setup()
        return dm.val_set.tensors[0][:n].float()
    if kind == "classifier":
        from dsls.data.digit_splits import real_images

        return real_images(dataset_name, "heldout", data.get("data_dir", "data"))[0][:n].float()
    if kind == "fidelity":
        from dsls.data.loaders import unpack

        reference, _ = reference_dataset(data, options.get("split", "train"))
        rows = np.linspace(0, len(reference) - 1, min(n, len(reference))).round().astype(int)
        return torch.stack([unpack(reference[int(i)]) for i in rows]).float()
    return None


def classifier_classes(x, dataset_name: str, data_dir: str = "data") -> np.ndarray:
    """The metric classifier's class of each sample of a 'classifier' data set (tinted digits: of its shape)."""
    if dataset_name == "tinted_digits":
        from dsls.metrics.tinted import digit_classes

        return digit_classes(x, data_dir)
    import torch

    from dsls.metrics.digit_classifier import _predict, load_classifier

    return _predict(load_classifier(dataset_name, data_dir), torch.as_tensor(x).float())[1].argmax(1).numpy()


def reference_dataset(datamodule_hparams: dict, split: str):
    """The real `split` (train | val | test) of the data module a checkpoint was trained with, without random flips,
    and its cache name: data set, split and a hash of the settings that change the images (size, category, ...)."""
    import hashlib

    from dsls.data.rebuild import build_datamodule

    hp = {k: v for k, v in datamodule_hparams.items() if not k.startswith("_")}
    if "random_flip" in hp:
        hp["random_flip"] = False  # as build_datamodule reads it; part of the cache name below
    cls_name = datamodule_hparams["_class_path"].rsplit(".", 1)[1]
    dm = build_datamodule(datamodule_hparams)
    ds = getattr(dm, f"{split}_set", None)
    if ds is None:
        raise ValueError(f"{cls_name} has no {split!r} split; set --model.fid_reference_split to train, val or test")
    looks = {k: v for k, v in sorted(hp.items()) if k not in ("batch_size", "num_workers", "pin_memory", "seed")}
    tag = hashlib.sha1(repr((datamodule_hparams["_class_path"], looks)).encode()).hexdigest()[:8]
    return ds, f"{getattr(dm, 'dataset_name', cls_name)}-{split}-{tag}"
