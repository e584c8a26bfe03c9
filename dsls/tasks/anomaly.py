"""The anomaly task (`--task anomaly`): score test images with dsls.anomaly's scores, fitted on normal validation
images only, and measure how well each separates normal images from anomalies.

Two protocols:
    classes  one class out (as published): the run was trained without some classes (--data.exclude_classes); the
             test set is the normal images of the test split plus every image of the anomaly classes from the train and
             the test split (about a third are anomalies on MNIST). anomaly_classes: the run's excluded classes unless
             given (a class the model trained on can be named too: its test-split images only, and a note says so).
    ood      one data set against another: the run's test images (of the classes it trained on) are normal, the test
             images of the data set that ood_data's config file names (its `data:` section; the same image shape;
             its validation images where it has no test split) are the anomalies.
num subsamples that test set (the search's seed, --model.seed, fixes which rows). The scores' fit sees the data
module's validation split without the anomaly classes, never a test image or an anomaly. The default score is fixed
before scoring (default_score, else DEFAULT_SCORE, or FALLBACK_SCORE for data that are not images), never chosen on
the test labels.

Writes anomaly.npz (labels: 1 = anomaly; classes: each row's class, −1 for the ood data set's; score_<name>: one
float64 array per score), anomaly.json (the fit: AnomalyFit.to_dict()), anomaly.png (dsls.figures.anomaly) and
results.json["anomaly"] (AUROC and AUPRC per score from sklearn.metrics, the base rate beside each, the default score
and each score's seconds per 1,000 images). ANCHORS and protocol_table: the published one-class-out numbers and the
table experiments/anomaly_protocol.py prints beside them.
"""
from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset, Subset

from dsls.anomaly import (DEFAULT_KINDS, DEFAULT_SCORE, check_kinds, compute_scores, fit_anomaly, logit_name,
                          logit_sigmas, score_names, unavailable)
from dsls.data.rebuild import build_datamodule
from dsls.errors import ConfigError, TaskError

# AUPRC with one MNIST digit held out (Cui et al. 2023, Table 3): the anchors experiments/anomaly_protocol.py prints
ANCHOR_DIGITS = (1, 4, 5, 7, 9)
ANCHORS = {
    "VAE": (0.063, 0.337, 0.325, 0.148, 0.104),
    "BiGAN-σ": (0.287, 0.443, 0.514, 0.347, 0.307),
    "Latent EBM prior (Pang et al. 2020)": (0.336, 0.630, 0.619, 0.463, 0.413),
    "Joint latent EBM (Cui et al. 2023)": (0.722, 0.949, 0.980, 0.941, 0.935),
}
LOAD_BATCH = 512  # images per batch when reading a split
FALLBACK_SCORE = "recon"  # the default score where DEFAULT_SCORE cannot be computed (data that are not images)
LOGIT_LEVELS = ("σ_min", "middle σ", "σ_max")  # the logit scores' levels (dsls.anomaly.logit_sigmas), as tables say


# -- the data -------------------------------------------------------------------------------------------------------
def data_takes(config_dir: str, setting: str, phase: str = "reconstruction") -> bool:
    """Whether the data module of a config folder's phase takes `setting` (e.g. test_fraction: digits do)."""
    path = Path(config_dir, f"{phase}.yaml")
    cfg = yaml.safe_load(path.read_text()) if path.is_file() else None
    class_path = ((cfg or {}).get("data") or {}).get("class_path")
    if not class_path:
        return False
    module_path, cls_name = class_path.rsplit(".", 1)
    return setting in inspect.signature(getattr(importlib.import_module(module_path), cls_name)).parameters


def class_names(dm) -> list:
    names = getattr(dm, "class_names", None)
    return list(names) if names is not None else list(range(dm.num_classes or 0))


def labels_of(ds: Dataset) -> torch.Tensor:
    """Each row's class, read without decoding images where the data set allows (tensors, targets), else by loading;
    a data set whose rows carry no class is a TaskError."""
    if hasattr(ds, "tensors") and len(ds.tensors) > 1:
        return ds.tensors[1].long()
    if hasattr(ds, "indices") and hasattr(getattr(ds, "dataset", None), "targets"):
        return torch.as_tensor(ds.dataset.targets)[torch.as_tensor(ds.indices, dtype=torch.long)].long()
    if isinstance(getattr(ds, "y", None), torch.Tensor):  # the toy points
        return ds.y.long()
    if not len(ds) or not isinstance(ds[0], (tuple, list)):
        raise TaskError("the run's data carry no class labels, so no class can be an anomaly: train with labels "
                        "(e.g. --data.labels=true on toy data) or use --ood-data")
    return torch.cat([b[1] for b in DataLoader(ds, batch_size=LOAD_BATCH)]).long()


def images_of(ds: Dataset, rows: Sequence[int]) -> torch.Tensor:
    """The images of `rows` of a data set, as one float32 tensor."""
    from dsls.data.loaders import unpack

    loader = DataLoader(Subset(ds, [int(r) for r in rows]), batch_size=LOAD_BATCH)
    parts = [unpack(b).float() for b in loader]
    return torch.cat(parts) if parts else torch.zeros(0)


def class_indices(given: Sequence, names: Sequence, what: str) -> list[int]:
    """The label indices of classes named by index or by name (folder names may come as numbers from the command
    line); one that is not a class is a ConfigError naming the valid ones."""
    out, text = [], [str(n) for n in names]
    for c in given:
        if c not in names and str(c) not in text:
            valid = f"0..{len(names) - 1}" if list(names) == list(range(len(names))) else ", ".join(text)
            raise ConfigError(f"--anomaly-classes: {c!r} is not a class of {what}; its classes are {valid}")
        out.append(list(names).index(c) if c in names else text.index(str(c)))
    return sorted(set(out))


def anomaly_indices(dm, anomaly_classes: Optional[Sequence]) -> tuple[list[int], list[int], list[str]]:
    """(normal class indices, anomaly class indices, notes): the anomalies are the given classes (names or indices)
    or, by default, the classes the run excluded; the normal ones are those it trained on, less the anomalies."""
    names, notes = class_names(dm), []
    if not names:
        raise TaskError(f"{getattr(dm, 'dataset_name', 'the data')} has no classes, so none can be an anomaly: use "
                        "--ood-data <another data set's config> instead")
    trained = dm.kept_classes()
    trained = list(range(len(names))) if trained is None else list(trained)
    if anomaly_classes is None:
        anomalies = [i for i in range(len(names)) if i not in trained]
        if not anomalies:
            raise TaskError("the run was trained on every class, so there is no held-out class to score: train with "
                            "--data.exclude_classes=[k], or pass --anomaly-classes / --ood-data")
    else:
        anomalies = class_indices(anomaly_classes, names, getattr(dm, "dataset_name", "the data"))
        seen = [names[i] for i in anomalies if i in trained]
        if seen:
            notes.append(f"the model was trained on class(es) {', '.join(map(str, seen))}, scored here as anomalies")
    normal = [i for i in trained if i not in anomalies]
    if not normal:
        raise TaskError("every class the model was trained on is an anomaly class: leave at least one normal class")
    return normal, anomalies, notes


def _rows(labels: torch.Tensor, wanted: Sequence[int]) -> np.ndarray:
    return np.flatnonzero(np.isin(labels.numpy(), list(wanted)))


def subsample(n: int, num: Optional[int], seed: int) -> np.ndarray:
    """Rows 0..n−1, or `num` of them drawn without replacement under `seed` (kept in order)."""
    if num is None or num >= n:
        return np.arange(n)
    return np.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num].numpy())


def ood_datamodule(path: str):
    """The data module of another data set's config file (its `data:` section, or the file itself)."""
    if not os.path.isfile(path):
        raise ConfigError(f"--ood-data={path} does not exist: pass a config file with a data: section, e.g. "
                          "configs/mnist/reconstruction.yaml")
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    data = cfg.get("data", cfg) if isinstance(cfg, dict) else {}
    if not isinstance(data, dict) or "class_path" not in data:
        raise ConfigError(f"--ood-data={path} has no data: section with a class_path")
    return build_datamodule({"_class_path": data["class_path"], **(data.get("init_args") or {})})


def protocol_sources(dm, anomaly_classes, ood_data: Optional[str]) -> dict:
    """Where the protocol's test images come from: {sources: [(data set, rows, label, classes of its rows or None)],
    normal_classes, anomaly_classes, notes, protocol}."""
    if dm.test_set is None:
        raise TaskError(f"the run's data ({getattr(dm, 'dataset_name', '?')}) has no test split: train with one "
                        "(digits: --data.test_fraction=0.2; toy: --data.test_size=2500; image folders: "
                        "--data.test_fraction or a test/ folder)")
    if ood_data is not None and anomaly_classes is not None:
        raise ConfigError("--anomaly-classes and --ood-data are two protocols: give one")
    if ood_data is None:
        normal, anomalies, notes = anomaly_indices(dm, anomaly_classes)
        y = labels_of(dm.test_set)
        sources = [(dm.test_set, _rows(y, normal), 0, y), (dm.test_set, _rows(y, anomalies), 1, y)]
        if dm.excluded_train_set is not None:
            ye = labels_of(dm.excluded_train_set)
            sources.append((dm.excluded_train_set, _rows(ye, anomalies), 1, ye))
        return {"sources": sources, "normal_classes": normal, "anomaly_classes": anomalies, "notes": notes,
                "protocol": "classes"}
    other, trained = ood_datamodule(ood_data), dm.kept_classes()  # the normal images: the classes it trained on
    y = labels_of(dm.test_set) if trained is not None else None
    normal_rows = _rows(y, trained) if trained is not None else np.arange(len(dm.test_set))
    ds = other.test_set if other.test_set is not None else other.val_set
    return {"sources": [(dm.test_set, normal_rows, 0, y), (ds, np.arange(len(ds)), 1, None)],
            "normal_classes": trained, "anomaly_classes": None, "notes": [], "protocol": "ood"}


def protocol_test_set(dm, anomaly_classes, ood_data: Optional[str], num: Optional[int], seed: int,
                      data_shape: Sequence[int]) -> dict:
    """The protocol's test images, `num` of them drawn under `seed` (all by default): protocol_sources' entries and
    x (images), labels (1 = anomaly), classes (−1 where unknown)."""
    info = protocol_sources(dm, anomaly_classes, ood_data)
    rows = [(s, int(r), lab, -1 if ys is None else int(ys[r])) for s, idx, lab, ys in info.pop("sources") for r in idx]
    rows = [rows[i] for i in subsample(len(rows), num, seed)]
    labels = np.array([r[2] for r in rows], dtype=np.int64)
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise TaskError(f"the test set holds {int(labels.sum())} anomalies among {len(labels)} images: both kinds are "
                        "needed (raise --num, or check the classes)")
    wanted: dict[int, tuple[Dataset, list[int]]] = {}
    for ds, r, _, _ in rows:
        wanted.setdefault(id(ds), (ds, []))[1].append(r)
    loaded = {key: dict(zip(idx, images_of(ds, idx))) for key, (ds, idx) in wanted.items()}  # each source read once
    shapes = sorted({tuple(next(iter(images.values())).shape) for images in loaded.values()} - {tuple(data_shape)})
    if shapes:
        raise TaskError(f"the test images are shaped {list(shapes[0])}, the model's data {list(data_shape)}: "
                        "--ood-data must name a data set of the same image shape (set its image_size in "
                        "that config)")
    x = torch.stack([loaded[id(ds)][r] for ds, r, _, _ in rows])
    return {**info, "x": x, "labels": labels, "classes": np.array([r[3] for r in rows], dtype=np.int64)}


def normal_validation(dm, normal_classes: Optional[Sequence[int]]) -> torch.Tensor:
    """The validation images of the normal classes (all of them when the data carry no classes)."""
    rows = np.arange(len(dm.val_set)) if normal_classes is None else _rows(labels_of(dm.val_set), normal_classes)
    return images_of(dm.val_set, rows)


# -- the task -------------------------------------------------------------------------------------------------------
def metrics(labels: np.ndarray, scores: dict, seconds: dict) -> dict:
    """{name: {auroc, auprc, base_rate, seconds_per_1000}} by sklearn.metrics (a non-finite score counts as the most
    anomalous: NaN and +inf rank as the largest float, −inf as the smallest)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    base = float(labels.mean())
    out = {}
    for name, s in scores.items():
        top = np.finfo(np.float64).max
        s = np.nan_to_num(np.asarray(s, dtype=np.float64), nan=top, posinf=top, neginf=np.finfo(np.float64).min)
        out[name] = {"auroc": float(roc_auc_score(labels, s)), "auprc": float(average_precision_score(labels, s)),
                     "base_rate": base, "seconds_per_1000": float(seconds[name])}
    return out


def run_anomaly(model, dm, out_dir: str, anomaly_classes: Optional[Sequence] = None, ood_data: Optional[str] = None,
                num: Optional[int] = None, seed: int = 0, scores: Sequence[str] = DEFAULT_KINDS,
                default_score: Optional[str] = None) -> dict:
    """Score the protocol's test images and write the task's files (module docstring); returns results.json's entry.
    default_score None: DEFAULT_SCORE, or FALLBACK_SCORE where the model or data cannot give it (no images)."""
    from dsls.checkpoints import save_json, save_npz
    from dsls.figures.anomaly import save_anomaly_figure
    from dsls.runs import merge_results
    from dsls.tasks.inverse import check_new_output

    kinds = check_kinds(list(scores))
    names = score_names(model, kinds)
    if default_score is not None and default_score not in names:
        raise ConfigError(f"--default-score {default_score} is not among the scores computed ({', '.join(names)}): "
                          "add its kind to --scores, or name one of these")
    if num is not None and num < 2:
        raise ConfigError(f"--num={num}: need at least 2 test images")
    check_new_output(out_dir, "anomaly.npz")
    data = protocol_test_set(dm, anomaly_classes, ood_data, num, seed, model.data_shape)
    for note in data["notes"]:
        print(f"note: {note}", flush=True)
    default_score = headline_score(default_score, names, unavailable(model, data["x"]))
    normal_x = normal_validation(dm, data["normal_classes"])
    labels = data["labels"]
    print(f"anomaly ({data['protocol']}): {len(labels)} test images, {int(labels.sum())} anomalies (base rate "
          f"{labels.mean():.3f}); fitting on {len(normal_x)} normal validation images", flush=True)
    fit = fit_anomaly(model, normal_x.to(model.device))
    values, seconds = compute_scores(model, data["x"], kinds, fit, seed=seed, skip_unavailable=True)
    entry = {"protocol": data["protocol"], "anomaly_classes": data["anomaly_classes"], "ood_data": ood_data,
             "normal_classes": data["normal_classes"], "n": int(len(labels)), "n_anomalies": int(labels.sum()),
             "base_rate": float(labels.mean()), "num": num, "seed": seed, "n_normal_fit": int(len(normal_x)),
             "default_score": default_score, "scores": metrics(labels, values, seconds), "notes": data["notes"],
             "logit_levels": {logit_name(s): level for s, level in zip(logit_sigmas(model.ladder), LOGIT_LEVELS)}}
    os.makedirs(out_dir, exist_ok=True)
    save_npz(os.path.join(out_dir, "anomaly.npz"), labels=labels, classes=data["classes"],
             **{f"score_{k}": np.asarray(v, dtype=np.float64) for k, v in values.items()})
    save_json(os.path.join(out_dir, "anomaly.json"), fit.to_dict(), indent=1)
    what = (f"classes {data['anomaly_classes']} held out" if data["protocol"] == "classes"
            else f"{os.path.basename(ood_data)}'s test images as anomalies")
    save_anomaly_figure(os.path.join(out_dir, "anomaly.png"), labels, values, default_score,
                        f"anomaly scores of {len(labels)} test images ({what}; base rate {labels.mean():.3f}): "
                        "normal (blue) against anomalous (red)")
    merge_results(os.path.join(out_dir, "results.json"), {"anomaly": entry})
    return entry


def headline_score(given: Optional[str], names: Sequence[str], missing: dict) -> str:
    """The default score, fixed before scoring from the options, the model and the data's shape (never the labels):
    `given`, else DEFAULT_SCORE, else FALLBACK_SCORE (data that are not images), else the first score computed."""
    computable = [n for n in names if n not in missing]
    if given is None:
        given = next((n for n in (DEFAULT_SCORE, FALLBACK_SCORE) if n in computable), computable[0] if computable
                     else DEFAULT_SCORE)
        if given != DEFAULT_SCORE:
            why = missing.get(DEFAULT_SCORE, f"{DEFAULT_SCORE} is not among --scores")
            print(f"note: {why}: the default score is {given}", flush=True)
    if given not in computable:
        raise ConfigError(f"--default-score {given} cannot be computed here ({missing.get(given, 'not among --scores')})"
                          f": pass one of {', '.join(computable) or 'the scores --scores names'}")
    return given


def anomaly_task(ckpt: str, out_dir: Optional[str], overrides: Sequence[str], anomaly_classes=None,
                 ood_data: Optional[str] = None, num: Optional[int] = None, scores: Sequence[str] = DEFAULT_KINDS,
                 default_score: Optional[str] = None) -> dict:
    """The task on a phase-2 checkpoint or a search.ckpt (dsls.tasks.registry): the search settings give the σ-ladder
    overrides, the seed of the subsample (--model.seed) and data_dir (--model.data_dir: where the data are now)."""
    from dsls.tasks.heldout import datamodule_hparams, load_latent_model
    from dsls.tasks.settings import resolve_task

    hp, _, device = resolve_task(ckpt, out_dir, list(overrides))
    model = load_latent_model(hp["ckpt"]).to(device)
    model.ladder = model.ladder.with_overrides(hp.get("sigma_max"), hp.get("sigma_min"), hp.get("num_levels"))
    dm = build_datamodule(datamodule_hparams(model), hp.get("data_dir"))
    entry = run_anomaly(model, dm, hp["out_dir"], anomaly_classes, ood_data, num, hp["seed"], scores, default_score)
    return {"out_dir": hp["out_dir"], "entry": entry}


def anomaly_report(out: dict) -> str:
    return (f"{format_anomaly(out['entry'])}\n\nwrote {out['out_dir']}/{{anomaly.npz, anomaly.json, anomaly.png, "
            "results.json}")


def format_anomaly(entry: dict) -> str:
    """The task's table: per score AUPRC (with the base rate), AUROC and seconds per 1,000 images."""
    lines = [f"anomaly ({entry['protocol']}): {entry['n']} test images, {entry['n_anomalies']} anomalies, base rate "
             f"{entry['base_rate']:.3f}", "", "score | AUPRC | AUROC | s / 1,000 images", "--- | --- | --- | ---"]
    for name, r in entry["scores"].items():
        mark = " (default)" if name == entry["default_score"] else ""
        lines.append(f"{name}{mark} | {r['auprc']:.3f} | {r['auroc']:.3f} | {r['seconds_per_1000']:.3g}")
    return "\n".join(lines)


def row_name(name: str, entry: dict) -> str:
    """A score's name in tables over runs: a logit score by its level (its σ differs between runs, as σ_max does),
    and the default score marked."""
    level = (entry.get("logit_levels") or {}).get(name)
    label = f"logit ({level})" if level else name
    return label + (" (default)" if name == entry["default_score"] else "")


def protocol_table(rows: dict, digits: Sequence[int] = ANCHOR_DIGITS) -> str:
    """The anchors' AUPRC table with rows added: rows = {row name: {digit: [values, one per seed]}}, each cell the
    mean ± std over seeds (one seed: the value; none: n/a)."""
    head = "| held-out digit | " + " | ".join(map(str, digits)) + " |"
    lines = [head, "|" + " --- |" * (len(digits) + 1)]
    lines += [f"| {name} | " + " | ".join(f"{dict(zip(ANCHOR_DIGITS, row))[d]:.3f}" if d in ANCHOR_DIGITS else "n/a"
                                         for d in digits) + " |" for name, row in ANCHORS.items()]

    def cell(values) -> str:
        if not values:
            return "n/a"
        v = np.asarray(values, dtype=float)
        return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"

    lines += [f"| {name} | " + " | ".join(cell(row.get(d)) for d in digits) + " |" for name, row in rows.items()]
    return "\n".join(lines)
