"""Training throughput of the Lightning phase modules against a plain PyTorch loop with the same networks and batch.

    python experiments/bench_training.py [--device cpu|cuda] [--steps N] [--warmup W] [--json out.json]

Phase 1: ReconstructionModule (configs/cifar10/reconstruction.yaml: conv AE, batch 128). Phase 2: AdversarialModule
posthoc (adversarial.yaml, batch 256), built from the autoencoder dict (no phase-1 checkpoint, σ_max = 10).
Data: synthetic CIFAR-shaped tensors in [-1, 1] (real CIFAR-10 is not needed) from one LightningDataModule whose
train_dataloader() (no workers) feeds both runs. Each run: same seed, W warm-up steps, then N timed steps (wall from
the start of step W to the end of the last step, CUDA synchronised at both ends). Ratio = Lightning steps/s ÷ plain
steps/s. The plain loops re-implement the few lines of loss math of each training_step (calling the module's
helpers would drag self.log in) on the module's own networks, optimizer settings and LR schedule; they skip the
module's logged-only metrics (D accuracies). With identical work and RNG use both runs end on the same weights;
the script prints the largest difference as a check.
"""
from __future__ import annotations

import dsls  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads (dsls/__init__.py)

import argparse
import logging
import time
import warnings
from types import SimpleNamespace

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from dsls.benchmarking import (PeakMemory, env_lines, fmt, init_args, markdown_table, memory_method, pick_device,
                               sync, write_json)
from dsls.phases.adversarial import AdversarialModule
from dsls.phases.reconstruction import ReconstructionModule
from dsls.phases.schedules import warmup_cosine


class SyntheticCIFAR(L.LightningDataModule):
    data_shape = (3, 32, 32)

    def __init__(self, n: int, batch_size: int, pin_memory: bool, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, *self.data_shape, generator=g) * 2 - 1
        self.ds = TensorDataset(x, torch.randint(0, 10, (n,), generator=g))
        self.batch_size, self.pin_memory = batch_size, pin_memory

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.ds, batch_size=self.batch_size, shuffle=True, drop_last=True, num_workers=0,
                          pin_memory=self.pin_memory)


class StepTimer(L.Callback):
    """Wall from the start of step `warmup` (batch already on the device) to the end of the last step."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device, self.starts, self.ends, self.t0, self.t1 = warmup, device, 0, 0, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.starts == self.warmup:
            sync(self.device)
            self.t0 = time.perf_counter()
        self.starts += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends += 1
        if self.ends == trainer.max_steps:
            sync(self.device)
            self.t1 = time.perf_counter()


def run_lightning(module: L.LightningModule, dm, total: int, warmup: int, dev: torch.device) -> float:
    timer = StepTimer(warmup, dev)
    trainer = L.Trainer(accelerator="gpu" if dev.type == "cuda" else "cpu", devices=1, max_steps=total, max_epochs=-1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    assert timer.ends == total, f"Lightning ran {timer.ends} steps, expected {total}"
    return timer.t1 - timer.t0


def plain_loop(step, dm, total: int, warmup: int, dev: torch.device) -> float:
    """Epochs over dm.train_dataloader() until `total` steps; returns the wall of steps warmup..total-1."""
    i, t0 = 0, None
    while True:
        for x, _ in dm.train_dataloader():
            x = x.to(dev, non_blocking=True)
            if i == warmup:
                sync(dev)
                t0 = time.perf_counter()
            step(x)
            i += 1
            if i == total:
                sync(dev)
                return time.perf_counter() - t0


def plain_phase1(m: ReconstructionModule, dm, total: int, warmup: int, dev: torch.device) -> float:
    """ReconstructionModule.training_step + configure_optimizers, by hand: MSE(G(E(x)), x), AdamW, OneCycleLR."""
    m.to(dev).train()
    ae, hp = m.autoencoder, m.hparams
    opt = torch.optim.AdamW(m.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    n = max(total, 4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, hp.lr, total_steps=n, pct_start=max(0.05, 2.0 / n))

    def step(x):
        loss = F.mse_loss(ae.decode(ae.encode(x)), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()

    return plain_loop(step, dm, total, warmup, dev)


def plain_phase2(m: AdversarialModule, dm, total: int, warmup: int, dev: torch.device) -> float:
    """AdversarialModule (posthoc) on_fit_start + training_step + _d_loss, by hand: BCE + DSM (create_graph), Adam,
    warm-up/cosine schedule."""
    m.to(dev).train()
    ae, D, hp = m.autoencoder, m.discriminator, m.hparams
    assert hp.mode == "posthoc"
    with torch.no_grad():  # code statistics, as on_fit_start (σ_max is given, so only code_var is set)
        codes = torch.cat([ae.encode(x.to(dev)) for (x, _), _ in zip(dm.train_dataloader(), range(8))])[:2048]
        torch.cdist(codes, codes).max()  # on_fit_start computes it too (and ignores it when σ_max is given)
        D.code_var.fill_(float(codes.var(0).mean()))
    opt = torch.optim.Adam(D.parameters(), lr=hp.lr_d, betas=(0.9, 0.99))
    sched = warmup_cosine(opt, SimpleNamespace(total_steps=total))
    w = hp.score_matching_weight

    def noisy(z):
        sigma = m.ladder.sample(z.shape[0], hp.sigma_sampling, device=z.device)
        noise = torch.randn_like(z)
        return z + sigma.unsqueeze(-1) * noise, sigma, noise

    def step(x):
        with torch.no_grad():
            zq = ae.encode(x)
        zq_t, sq, nq = noisy(zq)
        zp_t, sp, _ = noisy(torch.randn_like(zq))
        if w > 0:
            zq_t.requires_grad_(True)
        lq, lp = D(zq_t, sq), D(zp_t, sp)
        loss = F.softplus(-lq).mean() + F.softplus(lp).mean()
        if w > 0:
            (g,) = torch.autograd.grad(lq.sum(), zq_t, create_graph=True)
            s = g - zq_t / (1 + sq**2).unsqueeze(-1)
            loss = loss + w * ((sq.unsqueeze(-1) * s + nq) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()

    return plain_loop(step, dm, total, warmup, dev)


def max_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q.to(p.device)).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    p.add_argument("--config-dir", default="configs/cifar10")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 200 on cuda, 30 on cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 on cuda, 3 on cpu)")
    p.add_argument("--num-data", type=int, default=8192, help="synthetic training images")
    p.add_argument("--phases", default="1,2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dev = pick_device(args.device)
    steps = args.steps or (200 if dev.type == "cuda" else 30)
    warmup = args.warmup if args.warmup is not None else (10 if dev.type == "cuda" else 3)
    total = warmup + steps
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for msg in ("num_workers", "does not have many workers", "Tensor Cores", "no `val_dataloader`", "LeafSpec",
                "module\\(s\\) in eval mode"):  # the last: posthoc's frozen autoencoder is in eval mode on purpose
        warnings.filterwarnings("ignore", message=f".*{msg}")
    rec, adv = init_args(args.config_dir, "reconstruction"), init_args(args.config_dir, "adversarial")
    adv["sigma_max"] = adv.get("sigma_max") or 10.0
    phases = {
        "1": ("phase 1 ReconstructionModule (conv AE)", 128, lambda: ReconstructionModule(**rec), plain_phase1),
        "2": ("phase 2 AdversarialModule posthoc", 256,
              lambda: AdversarialModule(autoencoder={**rec, "dataset_name": "cifar10"}, **adv), plain_phase2),
    }
    rows, results = [], {}
    for key in args.phases.split(","):
        name, batch, build, plain = phases[key]
        dm = SyntheticCIFAR(args.num_data, batch, pin_memory=dev.type == "cuda", seed=args.seed)
        res = {}
        for runner in ("lightning", "plain"):
            print(f"  {name}: {runner}, {warmup} + {steps} steps ...", flush=True)
            L.seed_everything(args.seed, verbose=False)
            module = build()
            with PeakMemory(dev) as mem:
                wall = (run_lightning(module, dm, total, warmup, dev) if runner == "lightning"
                        else plain(module, dm, total, warmup, dev))
            res[runner] = dict(wall_s=wall, steps_per_s=steps / wall, samples_per_s=steps * batch / wall,
                               peak_mb=mem.mb, module=module)
        ratio = res["lightning"]["steps_per_s"] / res["plain"]["steps_per_s"]
        diff = max_weight_diff(res["lightning"].pop("module"), res["plain"].pop("module"))
        for runner, r in res.items():
            rows.append([name, runner, batch, steps, fmt(r["wall_s"], ".4g"), fmt(r["steps_per_s"], ".4g"),
                         fmt(r["samples_per_s"], ".4g"), fmt(r["peak_mb"], ".1f"),
                         fmt(ratio, ".3f") if runner == "lightning" else ""])
        results[key] = dict(name=name, batch=batch, steps=steps, warmup=warmup, ratio=ratio, max_weight_diff=diff,
                            **{k: v for k, v in res.items()})
    head = env_lines(dev) + [f"timed steps: {steps} after {warmup} warm-up; synthetic data: {args.num_data} images "
                             f"3x32x32 in [-1, 1]", f"peak memory: {memory_method(dev)}"]
    table = markdown_table(["phase", "runner", "batch", "steps timed", "wall (s)", "steps/s", "samples/s",
                            "peak mem (MB)", "lightning / plain"], rows)
    print("\n" + "\n".join(head) + "\n\n" + table + "\n")
    for r in results.values():
        print(f"{r['name']}: throughput ratio lightning/plain = {r['ratio']:.3f} (goal >= 0.9); "
              f"max |weight difference| after {warmup + steps} steps = {r['max_weight_diff']:.3g}")
    write_json(args.json, dict(env=head, device=str(dev), results=results))
    return results


if __name__ == "__main__":
    main()
