"""Phase 2's cost with codes cached once (`cache_codes: true`, the default) against encoding every batch (false).

    python experiments/bench_codes.py [--device cpu|cuda] [--steps N] [--warmup W] [--only toy,digits,cifar10]

Each setting is the config's own networks with random weights (timing only) and the config's batch size: toy and
digits on their real data, CIFAR-10's networks on synthetic 3x32x32 images (--cifar-images of them, random flips on,
so two views are cached). For each: the one-off encoding of the training set, the wall per D step after W warm-up
steps, and the whole phase at the config's max_steps (one-off + max_steps x step), both ways, from one run.
"""
from __future__ import annotations

import dsls  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads (dsls/__init__.py)

import argparse
import time

import yaml

import lightning as L
import torch

import dsls.quiet  # noqa: F401  (the known library messages)
from dsls.benchmarking import env_lines, fmt, init_args, markdown_table, pick_device, sync
from dsls.data import DigitsDataModule, ImageDataModule, Toy2DDataModule
from dsls.data.images import TransformedSubset
from dsls.phases.adversarial import AdversarialModule


class SyntheticImages(ImageDataModule):
    """CIFAR-shaped random images served like the real DataModule: a TransformedSubset with the train transform."""

    dataset_name, channels = "cifar10", 3

    def __init__(self, n: int, batch_size: int):
        super().__init__("unused", 32, batch_size, num_workers=0, random_flip=True)
        self.n = n

    def build_datasets(self):
        from torchvision.transforms import functional as TF

        pairs = [(TF.to_pil_image(torch.rand(3, 32, 32)), 0) for _ in range(self.n)]  # (PIL image, label)
        return (TransformedSubset(pairs, range(self.n), self.transform(True)),
                TransformedSubset(pairs, range(min(self.n, 64)), self.transform(False)), None)


class Clock(L.Callback):
    """Times the one-off work before the first step (encoding, statistics) and the steps after `warmup`."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device, self.t = warmup, device, {}

    def on_fit_start(self, trainer, pl_module):  # callbacks run before the module's on_fit_start (the caching)
        self.t["fit_start"] = time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        sync(self.device)
        self.t["train_start"] = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in (self.warmup, trainer.max_steps):
            sync(self.device)
            self.t[trainer.global_step] = time.perf_counter()


def measure(config_dir: str, dm_factory, cache: bool, steps: int, warmup: int, dev: torch.device) -> dict:
    rec, adv = init_args(config_dir, "reconstruction"), init_args(config_dir, "adversarial")
    L.seed_everything(0, verbose=False)
    module = AdversarialModule(autoencoder={**rec, "dataset_name": "bench"}, cache_codes=cache,
                               **{**adv, "sigma_max": adv.get("sigma_max") or 10.0})
    clock = Clock(warmup, dev)
    L.Trainer(accelerator="gpu" if dev.type == "cuda" else "cpu", devices=1, max_steps=warmup + steps, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              num_sanity_val_steps=0, callbacks=[clock]).fit(module, datamodule=dm_factory())
    t = clock.t
    return {"one_off_s": t["train_start"] - t["fit_start"], "step_s": (t[warmup + steps] - t[warmup]) / steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cifar-images", type=int, default=2048)
    p.add_argument("--only", default="toy,digits,cifar10")
    a = p.parse_args()
    dev = pick_device(a.device)
    settings = {
        "toy": ("configs/toy", lambda b: Toy2DDataModule(batch_size=b)),
        "digits": ("configs/digits", lambda b: DigitsDataModule(batch_size=b)),
        "cifar10": ("configs/cifar10", lambda b: SyntheticImages(a.cifar_images, b)),
    }
    rows = []
    for name in a.only.split(","):
        config_dir, make = settings[name]
        cfg = yaml.safe_load(open(f"{config_dir}/adversarial.yaml"))
        batch, max_steps = cfg["data"]["init_args"]["batch_size"], cfg["trainer"]["max_steps"]
        r = {cache: measure(config_dir, lambda: make(batch), cache, a.steps, a.warmup, dev) for cache in (False, True)}
        phase = {c: r[c]["one_off_s"] + max_steps * r[c]["step_s"] for c in r}
        rows.append([name, batch, fmt(r[False]["step_s"] * 1e3, ".3g"), fmt(r[True]["step_s"] * 1e3, ".3g"),
                     fmt(r[True]["one_off_s"], ".3g"), max_steps, fmt(phase[False], ".4g"), fmt(phase[True], ".4g"),
                     fmt(phase[False] / phase[True], ".3g")])
        print(f"  {name}: {r}", flush=True)
    print("\n".join(env_lines(dev)) + f"\n{a.warmup} + {a.steps} steps per run\n")
    print(markdown_table(["data", "batch", "step ms, encoding", "step ms, cached", "caching s (once)", "max_steps",
                          "phase s, encoding", "phase s, cached", "speed-up"], rows))


if __name__ == "__main__":
    main()
