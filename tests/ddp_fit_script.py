"""Run by tests/test_ddp.py: the adversarial phase under DDP on 2 CPU processes (gloo), joint or posthoc.
Each rank writes a JSON file with every rank's checksums of D and E after training (files, not stdout: the two
processes' prints can interleave on one line); the test checks the ranks agree."""
import json
import os
import sys

import lightning as L
import torch

from dsls.data import Toy2DDataModule
from dsls.phases.adversarial import AdversarialModule

from ddp_exit import destroy_process_group  # tests/ddp_exit.py, beside this script


class Checksums(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        sums = torch.stack([sum(p.detach().double().sum() for p in m.parameters())
                            for m in (pl_module.discriminator, pl_module.autoencoder)])
        every = trainer.strategy.all_gather(sums)
        with open(os.path.join(self.out_dir, f"checksums-rank{trainer.global_rank}.json"), "w") as f:
            json.dump(every.tolist(), f)


if __name__ == "__main__":
    ae_ckpt, mode, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    model = AdversarialModule(autoencoder_ckpt=ae_ckpt, mode=mode, d_hidden=16, d_depth=2, score_matching_weight=1.0)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[Checksums(out_dir)])
    trainer.fit(model, datamodule=Toy2DDataModule(train_size=2048, batch_size=64))
    destroy_process_group(trainer)
