"""Run by tests/test_ddp.py: the adversarial phase under DDP on 2 CPU processes (gloo), in each of the modes given
(e.g. joint,posthoc: one fit after the other, in one launch of the two processes). Each rank writes a JSON file per
mode with every rank's checksums of D and E after training (files, not stdout: the two processes' prints can
interleave on one line); the test checks the ranks agree."""
import json
import os
import sys

import lightning as L
import torch

from dsls.data import Toy2DDataModule
from dsls.phases.adversarial import AdversarialModule

from ddp_exit import destroy_process_group  # tests/ddp_exit.py, beside this script


class Checksums(L.Callback):
    def __init__(self, out_dir, mode):
        self.out_dir, self.mode = out_dir, mode

    def on_train_end(self, trainer, pl_module):
        sums = torch.stack([sum(p.detach().double().sum() for p in m.parameters())
                            for m in (pl_module.discriminator, pl_module.autoencoder)])
        every = trainer.strategy.all_gather(sums)
        with open(os.path.join(self.out_dir, f"checksums-{self.mode}-rank{trainer.global_rank}.json"), "w") as f:
            json.dump(every.tolist(), f)


if __name__ == "__main__":
    ae_ckpt, modes, out_dir = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    for mode in modes:  # rank 0 launches rank 1 at the first fit; the later fits reuse both processes and the group
        model = AdversarialModule(autoencoder_ckpt=ae_ckpt, mode=mode, d_hidden=16, d_depth=2,
                                  score_matching_weight=1.0)
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, callbacks=[Checksums(out_dir, mode)])
        trainer.fit(model, datamodule=Toy2DDataModule(train_size=2048, batch_size=64))
    destroy_process_group(trainer)
