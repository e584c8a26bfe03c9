"""Phase 3 (inference): latent search with the registered samplers, then decode. Orchestration only: the samplers
are in dsls.samplers, the score in dsls.score, the metrics in dsls.metrics.samples, the files in dsls.runs.

Sample i's start latent depends only on (seed, i), and its search noise only on (seed, i, sampler name): the same
seed gives the same samples for any batch size, number of devices or list of samplers.
"""
from __future__ import annotations

import os
import time
from typing import Literal, Optional, Sequence, Union

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from dsls.distributed import all_gather
from dsls.errors import TaskError
from dsls.interrupts import stop_on_sigterm
from dsls.loading import load_phase_module
from dsls.model import GUIDANCE_SCALE, SAMPLE_BATCH, sample_batch, sampling_model
from dsls.phases.base import init_args
from dsls.runs import format_table, merge_results, save_samples, save_search_ckpt
from dsls.samplers import SamplerSettings, build_samplers
from dsls.score import SamplingModel
from dsls.tasks import Conditions
from dsls.tasks.generate import GuidedGeneration


FLOOR = "floor"  # the floor row's name: samples-floor.npz, results.json["floor"]


class LatentSearchModule(L.LightningModule):
    phase = "search"

    def __init__(
        self,
        ckpt: Optional[str] = None,
        samplers: SamplerSettings = SamplerSettings(),
        num_samples: int = 2500,
        batch_size: int = SAMPLE_BATCH,
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
        classifier_ckpt: Optional[str] = None,
        labels: Optional[Union[int, Literal["balanced"]]] = None,
        guidance_scale: float = GUIDANCE_SCALE,
        dg_scale: Optional[float] = None,
    ):
        """ckpt: a phase-2 checkpoint (latent search), or a pixel_ncsn one (the pixel-space baseline, whose results are
        keyed pixel_<sampler>). samplers: the samplers to run, each with its settings, e.g. {none: {}, langevin:
        {eps0: 5.0e-4}, ode: {rtol: 1.0e-5}} (a mapping or a list of names also works from Python; see
        dsls.samplers). sigma_max/sigma_min/num_levels=None reuse the ladder D was trained on. track: trajectories
        kept for the plot.

        Metrics (dsls.metrics.samples): toy → modes/hq/rev_kl; digits, MNIST → classifier-FID against the held-out
        split; other images → the `fidelity` metrics of torch-fidelity (Inception; [] to skip all image metrics)
        against `fid_reference_split`. data_dir=None reads the real data where the model was trained on it.
        feature_extractor_weights_path: a local copy of the Inception weights (machines without internet).

        Class guidance: classifier_ckpt (a latent_classifier checkpoint on the same autoencoder), labels (one class
        for every sample, or 'balanced': sample i gets class i mod K) and guidance_scale w add w · log C(y | z, σ) to
        the score; samples-<sampler>.npz then holds the requested labels `y`, and results add class_accuracy (by the
        data set's metric classifier, not the guiding one).

        dg_scale: the weight w of discriminator guidance, for a phase-2 checkpoint whose D was trained against a
        latent score model's samples (None: dsls.priors.DG_SCALE); ckpt may also be a latent_score checkpoint (its
        score network, sampled as D's score is)."""
        super().__init__()
        hp = init_args(locals())
        # the settings first, before any checkpoint is read: the pipeline checks them before phase 1 trains
        chosen = build_samplers(samplers)
        if num_samples < 1 or batch_size < 1:
            raise TaskError(f"--model.num_samples and --model.batch_size must be >= 1, got {num_samples} and "
                            f"{batch_size}")
        if classifier_ckpt and labels is None:  # a classifier that guides nothing would be ignored silently
            raise TaskError("--model.classifier_ckpt guides only with labels: add --model.labels=balanced "
                            "(sample i gets class i mod K) or --model.labels=<class>")
        self.save_hyperparameters({**hp, "samplers": {n: s.settings() for n, s in chosen.items()}})  # plain data
        self.model: SamplingModel = sampling_model(ckpt, dg_scale=dg_scale)  # a LatentModel, or the pixel baseline
        pixel = self.model.phase == "pixel_ncsn"
        # 'none' on a pixel model would just be Gaussian noise images: not a baseline worth scoring
        self.samplers = {n: s for n, s in chosen.items() if not (pixel and n == "none")}
        self.key_prefix = "pixel_" if pixel else ""  # results keys: pixel_langevin, ...
        self.dataset_name = self.model.dataset_name
        self.ladder = self.model.ladder.with_overrides(sigma_max, sigma_min, num_levels)
        self.guidance = None if labels is None else GuidedGeneration.load(classifier_ckpt, self.model, labels,
                                                                          guidance_scale)
        if self.guidance is not None:
            self.model = self.guidance.model  # the same model, with the latent classifier attached
        self._outputs: list[dict] = []

    # -- data: sample indices, so every rank draws its own part of one fixed set of samples ---------------------
    def predict_dataloader(self):
        """Per sample its index and, when guided, its requested label."""
        n = self.hparams.num_samples
        conditions = {"idx": torch.arange(n)}
        if self.guidance is not None:
            conditions["y"] = self.guidance.labels_for(n)
        return DataLoader(Conditions(conditions), batch_size=self.hparams.batch_size)

    test_dataloader = predict_dataloader

    def on_predict_start(self) -> None:
        self._outputs = []
        from dsls.metrics.samples import metric_kind

        self._check_new_outputs()
        if metric_kind(self.dataset_name, self._metric_options()) == "fidelity":  # fail before sampling, every rank
            from dsls.metrics.fidelity import check_inception_weights

            check_inception_weights(self.hparams.feature_extractor_weights_path)

    on_test_start = on_predict_start

    def _check_new_outputs(self) -> None:
        """A search never overwrites another's samples: results.json would mix two searches' seeds and counts."""
        out_dir = self.hparams.out_dir or self.trainer.default_root_dir
        names = ["search.ckpt", *(f"samples-{self.key_prefix}{n}.npz" for n in self.samplers)]
        names += [f"samples-{FLOOR}.npz"] if self._writes_floor() else []
        there = [n for n in names if os.path.isfile(os.path.join(out_dir, n))]
        if there:
            raise TaskError(f"{out_dir} already holds {', '.join(there)} from an earlier search: pass another "
                            "--model.out_dir (evaluate.py: --out), or move them away first")

    def _sync_time(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def _search(self, batch: dict) -> dict:
        hp, out, idx = self.hparams, {}, batch["idx"].cpu()
        track = hp.track if int(idx[0]) == 0 else 0
        labels = batch["y"].tolist() if "y" in batch else None
        for name, sampler in self.samplers.items():
            t0 = self._sync_time()  # one code path with LatentModel.sample: dsls.model.sample_batch
            res, x = sample_batch(self.model, sampler, idx.tolist(), hp.seed, self.ladder, labels, hp.guidance_scale,
                                  track)
            o = {"idx": idx, "z0": res.z0.cpu(), "z": res.z.cpu(), "x": x.cpu(), "seconds": self._sync_time() - t0,
                 "nfe": res.nfe}
            if "y" in batch:
                o["y"] = batch["y"].cpu()
            if res.trajectory:
                with torch.no_grad():
                    o["trajectory"] = torch.stack([self.model.decode(t) for t in res.trajectory], 1).cpu()
            out[self.key_prefix + name] = o
        self._outputs.append(out)
        return {name: o["x"] for name, o in out.items()}

    def predict_step(self, batch, batch_idx):
        return self._search(batch)

    def test_step(self, batch, batch_idx):
        self._search(batch)

    def on_predict_batch_start(self, batch, batch_idx, dataloader_idx=0) -> None:
        stop_on_sigterm(self.trainer)  # SIGTERM: stop at the next batch (Lightning's predict loop never looks)

    on_test_batch_start = on_predict_batch_start

    # -- gather across ranks, de-duplicate padded indices, write the contract -------------------------------
    def _gather(self, name: str, key: str) -> torch.Tensor:
        """Concatenate every rank's outputs. Ranks can hold different counts (predict does not pad), so pad to the
        largest, all_gather, then trim each rank's part back."""
        local = torch.cat([o[name][key] for o in self._outputs])  # kept on the CPU between batches
        if self.trainer.world_size == 1:
            return local
        local = local.to(self.device)  # NCCL gathers device tensors
        counts = all_gather(torch.tensor(len(local), device=self.device)).tolist()
        padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: len(local)] = local
        parts = all_gather(padded)
        return torch.cat([part[:c] for part, c in zip(parts, counts)])

    def _finish(self) -> None:
        from dsls.callbacks.search_figures import log_search_media, log_search_metrics, save_search_figures
        from dsls.metrics.samples import sample_metrics

        hp = self.hparams
        out_dir = hp.out_dir or self.trainer.default_root_dir
        stop_on_sigterm(self.trainer, every_rank=True)  # SIGTERM: no samples, results or search.ckpt, on any rank
        results, arrays, trajs = {}, {}, {}
        for name, sampler in self.samplers.items():  # every collective first: nothing below can strand a rank
            key = self.key_prefix + name
            idx, first = np.unique(self._gather(key, "idx").numpy(), return_index=True)  # drops padded repeats
            arrays[key] = {k: self._gather(key, k).cpu().numpy()[first] for k in ("x", "z0", "z", "y")
                           if k in self._outputs[0][key]}
            n_local = sum(len(o[key]["idx"]) for o in self._outputs)
            sec = sum(o[key]["seconds"] for o in self._outputs) / max(n_local, 1)
            nfe = max(o[key]["nfe"] for o in self._outputs)  # adaptive solvers can differ per batch: the most
            results[key] = {"seconds_per_sample": sec, "num_samples": int(len(idx)), "nfe": nfe, "seed": hp.seed,
                            "settings": sampler.settings(), "ladder": self.ladder.state_dict()}
            if "trajectory" in self._outputs[0][key]:
                trajs[key] = self._outputs[0][key]["trajectory"].numpy()
        self.results = results
        if not self.trainer.is_global_zero:
            return
        for key, arr in arrays.items():  # the samples are on disk before any metric can fail
            save_samples(out_dir, key, arr)
        floor = self._floor()  # the reconstructions of held-out images; None for toy and the pixel baseline
        if floor is not None:
            save_samples(out_dir, FLOOR, floor)
        save_search_ckpt(out_dir, self.dataset_name, dict(hp))
        shown = dict(results)  # self.results: the samplers only; results.json, the table and figures add the floor
        try:
            for key, arr in arrays.items():  # gathered once above; rank 0 alone scores them
                results[key].update(sample_metrics(arr["x"], self.dataset_name, self._metric_options()))
                if "y" in arr:  # 'none' ignores the score: its accuracy is the unguided (chance) level
                    results[key].update(self.guidance.summary(arr["x"], arr["y"], self.dataset_name,
                                                              self._metric_options(), guided=key != "none"))
            if floor is not None:
                shown[FLOOR] = {"source": f"G(E(x)) of {len(floor['x'])} held-out real images",
                                **sample_metrics(floor["x"], self.dataset_name, self._metric_options())}
        finally:
            merge_results(os.path.join(out_dir, "results.json"), shown)
        log_search_metrics(self.logger, shown)  # any logger: search/<sampler>/<metric> (the sweeps' target)
        drawn = {**arrays, FLOOR: floor} if floor is not None else arrays
        images = save_search_figures(out_dir, self.model, drawn, trajs, shown, self.dataset_name,
                                     self.ladder.sigma_min)
        log_search_media(self.logger, shown, images)  # W&B: a results table and the images with their settings
        self.print(format_table(shown))

    def _writes_floor(self) -> bool:
        """Whether this search scores the floor row: a latent model (not the pixel baseline) on an image data set
        with a metric (classifier or fidelity)."""
        from dsls.metrics.samples import metric_kind

        return self.key_prefix == "" and metric_kind(self.dataset_name, self._metric_options()) in ("classifier",
                                                                                                    "fidelity")

    @torch.no_grad()
    def _floor(self) -> Optional[dict]:
        """The floor of any search in this latent space: {"x": the autoencoder's reconstructions G(E(x)), "real": x}
        of up to num_samples of the real images the metric compares against (dsls.metrics.samples.heldout_images);
        None where there is no floor row (_writes_floor)."""
        from dsls.metrics.samples import heldout_images

        if not self._writes_floor():
            return None
        real = heldout_images(self.dataset_name, self._metric_options(), self.hparams.num_samples)
        if real is None:
            return None
        x = torch.cat([self.model.decode(self.model.encode(b)).float().cpu() for b in
                       real.split(self.hparams.batch_size)])
        return {"x": x.numpy(), "real": real.numpy()}

    def _metric_options(self) -> dict:
        from dsls.metrics.samples import metric_options

        hp = self.hparams
        return metric_options(self.model.datamodule_hparams, hp.data_dir, hp.fidelity, hp.fid_reference_split,
                              hp.feature_extractor_weights_path)

    def on_predict_epoch_end(self) -> None:
        self._finish()

    def on_test_epoch_end(self) -> None:
        self._finish()


def load_sampling_model(ckpt: Optional[str]):
    """The frozen phase module of a phase-2 or pixel_ncsn checkpoint (experiments/bench_sampling.py times its nets);
    the search itself samples from dsls.model.sampling_model."""
    return load_phase_module(ckpt)
