"""Run by tests/test_ddp.py: FidelityMetrics under DDP on 2 CPU processes (gloo). Each rank writes what the
metric function received on it (rank 0: every sampler's gathered samples; other ranks: nothing)."""
import json
import os
import sys

import lightning as L
import torch

import dsls.callbacks.fidelity as cb
from dsls.data import DigitsDataModule
from dsls.metrics.extractors import register_offline_extractor
from dsls.phases.adversarial import AdversarialModule

from ddp_exit import destroy_process_group  # tests/ddp_exit.py, beside this script

calls = []


def recording_metrics(x, reference, name, **kw):
    calls.append({"n": len(x), "unique": len(torch.unique(x.flatten(1), dim=0)), "reference": len(reference)})
    return real_metrics(x, reference, name, **kw)


if __name__ == "__main__":
    ae_ckpt, out_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    real_metrics, cb.fidelity_metrics = cb.fidelity_metrics, recording_metrics
    register_offline_extractor()
    callback = cb.FidelityMetrics(reference_name="digits-val", num_samples=n, batch_size=8, metrics=("fid", "kid"),
                                  feature_extractor="dsls-offline", kid_subset_size=10,
                                  samplers={"none": {}, "langevin": {"steps_per_level": 1}},
                                  cache_root=os.path.join(out_dir, "cache"))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=2, val_check_interval=2,
                        limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    model = AdversarialModule(autoencoder_ckpt=ae_ckpt, d_hidden=16, d_depth=1)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16))
    logged = sorted(k for k in trainer.callback_metrics if k.startswith("fidelity/"))
    with open(os.path.join(out_dir, f"fidelity-rank{trainer.global_rank}.json"), "w") as f:
        json.dump({"calls": calls, "logged": logged}, f)
    destroy_process_group(trainer)
