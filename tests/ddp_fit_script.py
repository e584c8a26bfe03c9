"""Run by tests/test_ddp.py: the adversarial phase under DDP on 2 CPU processes (gloo), joint or posthoc.
Prints one line per rank with checksums of D and E after training; the test checks the ranks agree."""
import sys

import lightning as L
import torch

from dsls.data import Toy2DDataModule
from dsls.phases.adversarial import AdversarialModule


class Checksums(L.Callback):
    def on_train_end(self, trainer, pl_module):
        sums = torch.stack([sum(p.detach().double().sum() for p in m.parameters())
                            for m in (pl_module.discriminator, pl_module.autoencoder)])
        every = trainer.strategy.all_gather(sums)
        print(f"DDP-CHECKSUMS rank={trainer.global_rank} {every.tolist()}", flush=True)


if __name__ == "__main__":
    ae_ckpt, mode = sys.argv[1], sys.argv[2]
    model = AdversarialModule(autoencoder_ckpt=ae_ckpt, mode=mode, d_hidden=16, d_depth=2, score_matching_weight=1.0)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[Checksums()])
    trainer.fit(model, datamodule=Toy2DDataModule(train_size=2048, batch_size=64))
