"""Phase 3 (inference): latent search with any registered sampler, then decode. Writes the run-folder contract:
samples-<sampler>.npz (x, z0, z), results.json (one entry per sampler) and a PNG."""
from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from dsls.phases.adversarial import AdversarialModule
from dsls.phases.base import init_args, load_phase_checkpoint
from dsls.samplers import run_sampler


class LatentSearchModule(L.LightningModule):
    phase = "search"

    def __init__(
        self,
        ckpt: Optional[str] = None,
        samplers: Sequence[str] = ("none", "langevin"),
        num_samples: int = 2500,
        batch_size: int = 2500,
        eps0: float = 5e-4,
        steps_per_level: int = 10,
        denoise: bool = True,
        init: str = "wide",
        sigma_max: Optional[float] = None,
        sigma_min: Optional[float] = None,
        num_levels: Optional[int] = None,
        seed: int = 0,
        track: int = 12,
        out_dir: Optional[str] = None,
        data_dir: Optional[str] = None,
        fidelity: Sequence[str] = ("fid", "isc", "kid", "prc"),
        fid_reference_split: str = "train",
        feature_extractor_weights_path: Optional[str] = None,
    ):
        """ckpt: a phase-2 checkpoint (latent search), or a pixel_ncsn one (the pixel-space baseline, whose
        results are keyed pixel_<sampler>). sigma_max/sigma_min/num_levels=None reuse the ladder D was trained on. init: 'wide' starts at
        N(0, (1+σ_max²)I) (= p_σmax, default), 'prior' at N(0, I). track: trajectories kept for the plot.

        Metrics (dsls.phases.search.sample_metrics): toy → modes/hq/rev_kl; digits, MNIST → classifier-FID
        against the held-out split; other images → the `fidelity` metrics of torch-fidelity (Inception; [] to
        skip all image metrics) against `fid_reference_split`. data_dir=None reads the real data where the
        model was trained on it.
        feature_extractor_weights_path: a local copy of the Inception weights (machines without internet)."""
        super().__init__()
        self.save_hyperparameters(init_args(locals()))
        self.model = load_sampling_model(ckpt)
        pixel = self.model.phase == "pixel_ncsn"
        self.key_prefix = "pixel_" if pixel else ""  # results keys: pixel_langevin, ...
        # 'none' on a pixel model would just be Gaussian noise images: not a baseline worth scoring
        self.samplers = [n for n in samplers if not (pixel and n == "none")]
        self.sampler_keys = [self.key_prefix + n for n in self.samplers]
        self.dataset_name = self.model.dataset_name
        self.ladder = self.model.ladder.with_overrides(sigma_max, sigma_min, num_levels)
        self._outputs: list[dict] = []

    # -- data: sample indices, so every rank draws its own part of one fixed set of start latents ---------------
    def predict_dataloader(self):
        return DataLoader(torch.arange(self.hparams.num_samples), batch_size=self.hparams.batch_size)

    test_dataloader = predict_dataloader

    def on_predict_start(self) -> None:
        self._outputs = []
        if metric_kind(self.dataset_name, self._metric_options()) == "fidelity":  # fail before sampling, every rank
            from dsls.metrics.fidelity import check_inception_weights

            check_inception_weights(self.hparams.feature_extractor_weights_path)
        g = torch.Generator().manual_seed(self.hparams.seed)
        self.n0 = torch.randn(self.hparams.num_samples, *self.model.latent_shape, generator=g)

    on_test_start = on_predict_start

    def _search(self, idx: torch.Tensor) -> dict:
        hp, out = self.hparams, {}
        n0 = self.n0[idx.cpu()].to(self.device)
        for k, name in enumerate(self.samplers):
            g = torch.Generator(self.device).manual_seed(hp.seed * 7919 + k * 104729 + int(idx[0]))
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            res = run_sampler(name, self.model.score, n0, self.ladder, eps0=hp.eps0, steps_per_level=hp.steps_per_level,
                              denoise=hp.denoise, init=hp.init, track=hp.track if int(idx[0]) == 0 else 0, generator=g)
            with torch.no_grad():
                x = self.model.decode(res.z)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            out[self.key_prefix + name] = {"idx": idx.cpu(), "z0": res.z0.cpu(), "z": res.z.cpu(), "x": x.cpu(), "seconds": sec, "nfe": res.nfe}
            if res.trajectory:
                with torch.no_grad():
                    out[self.key_prefix + name]["trajectory"] = torch.stack([self.model.decode(t) for t in res.trajectory],
                                                                            1).cpu()
        self._outputs.append(out)
        return {name: o["x"] for name, o in out.items()}

    def predict_step(self, batch, batch_idx):
        return self._search(batch)

    def test_step(self, batch, batch_idx):
        self._search(batch)

    # -- gather across ranks, de-duplicate padded indices, write the contract -------------------------------
    def _gather(self, name: str, key: str) -> torch.Tensor:
        """Concatenate every rank's outputs. Ranks can hold different counts (predict does not pad), so pad to the
        largest, all_gather, then trim each rank's part back."""
        local = torch.cat([o[name][key] for o in self._outputs])  # kept on the CPU between batches
        if self.trainer.world_size == 1:
            return local
        local = local.to(self.device)  # NCCL gathers device tensors
        counts = self.all_gather(torch.tensor(len(local), device=self.device)).tolist()
        padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: len(local)] = local
        parts = self.all_gather(padded)
        return torch.cat([part[:c] for part, c in zip(parts, counts)])

    def _finish(self) -> None:
        from dsls.callbacks.plots import save_search_figure

        out_dir = self.hparams.out_dir or self.trainer.default_root_dir
        results, arrays, trajs = {}, {}, {}
        for name in self.sampler_keys:  # every collective first: nothing below can strand a rank in a gather
            idx = self._gather(name, "idx")
            idx, first = np.unique(idx.cpu().numpy(), return_index=True)  # sorted; drops any padded repeats
            arrays[name] = {k: self._gather(name, k).cpu().numpy()[first].astype(np.float32) for k in ("x", "z0", "z")}
            n_local = sum(len(o[name]["idx"]) for o in self._outputs)
            sec = sum(o[name]["seconds"] for o in self._outputs) / max(n_local, 1)
            results[name] = {"seconds_per_sample": sec, "num_samples": int(len(idx)), "nfe": self._outputs[0][name]["nfe"]}
            if "trajectory" in self._outputs[0][name]:
                trajs[name] = self._outputs[0][name]["trajectory"].cpu().numpy()
        self.results = results
        if not self.trainer.is_global_zero:
            return
        os.makedirs(out_dir, exist_ok=True)
        for name, arr in arrays.items():  # the samples are on disk before any metric can fail
            np.savez(os.path.join(out_dir, f"samples-{name}.npz"), **arr)
        # the phase-3 "checkpoint": everything needed to rerun this search (experiments/evaluate.py takes it)
        torch.save({"dsls_phase": "search", "dsls_dataset": self.dataset_name, "hyper_parameters": dict(self.hparams)},
                   os.path.join(out_dir, "search.ckpt"))
        try:
            for name, arr in arrays.items():  # gathered once above; rank 0 alone scores them
                results[name].update(sample_metrics(arr["x"], self.dataset_name, self._metric_options()))
        finally:
            merge_results(os.path.join(out_dir, "results.json"), results)
        if self.logger is not None:  # e.g. the W&B sweep's metric search/langevin/<metric>
            self.logger.log_metrics({f"search/{n}/{k}": v for n, r in results.items() for k, v in r.items()
                                     if isinstance(v, (int, float))})
        save_search_figure(os.path.join(out_dir, "samples.png"), {n: a["x"] for n, a in arrays.items()},
                           trajs, self.dataset_name)
        if hasattr(self.logger, "log_image"):  # WandbLogger: the sample grid beside the metrics
            self.logger.log_image(key="search/samples", images=[os.path.join(out_dir, "samples.png")])
        self.print(format_table(results))

    def _metric_options(self) -> dict:
        hp = self.hparams
        data = dict(getattr(self.model, "datamodule_hparams", None) or {})
        if hp.data_dir:
            data["data_dir"] = hp.data_dir
        return {"datamodule": data, "fidelity": list(hp.fidelity), "split": hp.fid_reference_split,
                "feature_extractor_weights_path": hp.feature_extractor_weights_path}

    def on_predict_epoch_end(self) -> None:
        self._finish()

    def on_test_epoch_end(self) -> None:
        self._finish()


def load_sampling_model(ckpt: Optional[str]) -> L.LightningModule:
    """Rebuild the frozen model a search samples from: phase 2 (D + autoencoder) or the pixel_ncsn baseline."""
    from dsls.phases.pixel_ncsn import PixelNCSNModule

    ck = load_phase_checkpoint(ckpt, ("adversarial", "pixel_ncsn"), flag="--model.ckpt")
    hp = {k: v for k, v in ck["hyper_parameters"].items() if not k.startswith("_")}  # drop CLI bookkeeping
    model = (PixelNCSNModule(**hp) if ck["dsls_phase"] == "pixel_ncsn"
             else AdversarialModule(**{**hp, "autoencoder_ckpt": None}))
    model.load_state_dict(ck["state_dict"])
    model.dataset_name = ck.get("dsls_dataset") or model.dataset_name
    model.datamodule_hparams = ck.get("datamodule_hyper_parameters")  # to find the real data for reference metrics
    return model.eval().requires_grad_(False)


def metric_kind(dataset_name: Optional[str], options: dict) -> Optional[str]:
    """Which metrics a data set gets: 'toy', 'classifier' (digits, MNIST at 28 px), 'fidelity' (other images,
    Inception) or None (options['fidelity'] = [] skips the image metrics)."""
    from dsls.metrics.toy import MIXTURES

    data = options.get("datamodule") or {}
    if dataset_name in MIXTURES:
        return "toy"
    if not options.get("fidelity"):
        return None
    if dataset_name == "digits" or (dataset_name == "mnist" and data.get("image_size", 28) == 28):
        return "classifier"
    if dataset_name != "mnist" and data.get("_class_path"):
        return "fidelity"
    return None


def sample_metrics(x: np.ndarray, dataset_name: Optional[str], options: Optional[dict] = None) -> dict:
    """The data set's metrics of samples x (data space): see LatentSearchModule's docstring."""
    options = options or {}
    data = options.get("datamodule") or {}
    kind = metric_kind(dataset_name, options)
    if kind == "toy":
        from dsls.metrics.toy import toy_metrics

        return toy_metrics(x, dataset_name)
    if kind == "classifier":
        from dsls.metrics.classifier import classifier_metrics

        return classifier_metrics(x, dataset_name, data_dir=data.get("data_dir", "data"))
    if kind == "fidelity":
        from dsls.metrics.fidelity import fidelity_metrics

        split = options.get("split", "train")
        reference, name = reference_dataset(data, split)
        return fidelity_metrics(x, reference, name, metrics=tuple(options["fidelity"]),
                                feature_extractor_weights_path=options.get("feature_extractor_weights_path"))
    if x.ndim == 4 and options.get("fidelity"):  # images, but no way to rebuild the real data for a reference
        print(f"note: no image metrics for {dataset_name!r}: the checkpoint does not record its data module "
              "(train it through the `dsls` CLI), or pass --model.fidelity=[] to silence this")
    return {}


def reference_dataset(datamodule_hparams: dict, split: str):
    """The real `split` (train | val | test) of the data module a checkpoint was trained with, without random flips,
    and its cache name: data set, split and a hash of the settings that change the images (size, category, ...)."""
    import hashlib
    import importlib

    hp = {k: v for k, v in datamodule_hparams.items() if not k.startswith("_")}
    if "random_flip" in hp:
        hp["random_flip"] = False
    module_path, cls_name = datamodule_hparams["_class_path"].rsplit(".", 1)
    dm = getattr(importlib.import_module(module_path), cls_name)(**hp)
    dm.prepare_data()
    dm.setup("fit")
    ds = getattr(dm, f"{split}_set", None)
    if ds is None:
        raise ValueError(f"{cls_name} has no {split!r} split; set --model.fid_reference_split to train, val or test")
    looks = {k: v for k, v in sorted(hp.items()) if k not in ("batch_size", "num_workers", "pin_memory", "seed")}
    tag = hashlib.sha1(repr((datamodule_hparams["_class_path"], looks)).encode()).hexdigest()[:8]
    return ds, f"{getattr(dm, 'dataset_name', cls_name)}-{split}-{tag}"


def merge_results(path: str, new: dict) -> dict:
    """results.json keeps one entry per sampler ever run in this folder; a re-run replaces its own entry."""
    old = json.load(open(path)) if os.path.isfile(path) else {}
    old.update(new)
    with open(path, "w") as f:
        json.dump(old, f, indent=2)
    return old


def format_table(results: dict) -> str:
    metric_cols = ["modes", "hq_fraction", "rev_kl", "classifier_fid", "class_kl", "mean_confidence",
                   "fid", "is_mean", "kid_mean", "precision", "recall"]
    cols = [c for c in metric_cols if any(c in r for r in results.values())] + ["seconds_per_sample", "nfe"]
    fmt = lambda v: "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["sampler | " + " | ".join(cols), "--- | " + " | ".join("---" for _ in cols)]
    lines += [f"{name} | " + " | ".join(fmt(r.get(c)) for c in cols) for name, r in results.items()]
    return "\n".join(lines)
