"""The latent classifier C(y | z, σ) on noised codes E(x) + σε of labelled data, for class guidance.

The autoencoder is frozen (it comes from a phase-1 checkpoint, as for D); σ is drawn from the same ladder with the
same sampling as D, so the classifier is valid at every σ the search visits. The search adds w · log C(y | z, σ) to
its score (dsls.guidance.ClassGuidance).
"""
from __future__ import annotations

from typing import Optional

import torch

from dsls.checkpoints import load_phase_checkpoint
from dsls.losses import noisy_cross_entropy
from dsls.nets import NoiseConditionalDiscriminator
from dsls.noise import LATENT_LADDER
from dsls.phases.base import LATENT_NET, LatentPhase, frozen_from_checkpoint, init_args
from dsls.phases.schedules import warmup_cosine


class LatentClassifierModule(LatentPhase):
    phase = "latent_classifier"
    autoencoder_sources = ("reconstruction", "adversarial")  # phase 2's: joint mode's fine-tuned E, and D's σ_max

    def __init__(
        self,
        autoencoder_ckpt: Optional[str] = None,
        num_classes: int = 10,
        sigma_max: Optional[float] = None,
        sigma_min: float = LATENT_LADDER.sigma_min,
        num_levels: int = LATENT_LADDER.num_levels,
        sigma_sampling: str = LATENT_LADDER.sigma_sampling,
        c_hidden: int = LATENT_NET.hidden,
        c_depth: int = LATENT_NET.depth,
        c_embed_dim: int = LATENT_NET.embed_dim,
        c_lr: float = LATENT_NET.lr,
        c_weight_decay: float = 1e-4,
        autoencoder: Optional[dict] = None,
    ):
        """autoencoder_ckpt: phase 1's checkpoint, or phase 2's (its autoencoder, which joint mode fine-tuned, and its
        σ_max; the pipeline passes this one). sigma_max=None: phase 2's, or from a phase-1 checkpoint the largest
        pairwise code distance, as D chooses it; keep sigma_min, num_levels and sigma_sampling equal to phase 2's (the
        configs do). num_classes must match the data's labels. The c_ prefix keeps pipeline overrides of phase 1's
        hidden/depth/lr from reaching the classifier."""
        super().__init__()
        autoencoder = self._init_latent(autoencoder_ckpt, autoencoder, sigma_max)
        self.save_hyperparameters(init_args(locals()))
        self.classifier = NoiseConditionalDiscriminator(autoencoder["latent_dim"], c_hidden, c_depth, c_embed_dim,
                                                        out_dim=num_classes)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None)
        k = getattr(dm, "num_classes", None)
        if dm is not None and k != self.hparams.num_classes:
            what = f"has {k} classes" if k else "has no labels"
            raise ValueError(f"--model.num_classes={self.hparams.num_classes} but the data {what}"
                             + (f": set --model.num_classes={k}" if k else
                                " (toy mixtures: --data.labels=true, the label is the mode index)"))

    @property
    def latent_net(self) -> torch.nn.Module:
        return self.classifier

    def log_prob(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log C(· | z, σ), (B, K)."""
        return torch.log_softmax(self.classifier(z, sigma), dim=-1)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        with torch.no_grad():
            z = self.autoencoder.encode(x)
        _, sigma, noise = self.noisy(z)
        loss, logits = noisy_cross_entropy(self.classifier, z, y, sigma, noise)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({f"{stage}/ce": loss, f"{stage}/acc": acc}, prog_bar=True, on_step=stage == "train",
                      on_epoch=True, sync_dist=True)  # (epoch means over every rank's batches under DDP)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")
        with torch.no_grad():  # accuracy at σ_min: how well the classifier knows the clean codes
            x, y = batch
            z = self.autoencoder.encode(x)
            s = torch.full((len(z),), self.ladder.sigma_min, device=z.device)
            self.log("val/acc_sigma_min", (self.classifier(z, s).argmax(-1) == y).float().mean(), on_epoch=True,
                     sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.classifier.parameters(), lr=self.hparams.c_lr,
                                weight_decay=self.hparams.c_weight_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": warmup_cosine(opt, self), "interval": "step"}}


def load_latent_classifier(path: str, flag: str = "--model.classifier_ckpt") -> LatentClassifierModule:
    """A frozen latent classifier from its checkpoint (a wrong phase's fails naming `flag`, the setting to fix)."""
    ck = load_phase_checkpoint(path, "latent_classifier", flag=flag)
    return frozen_from_checkpoint(LatentClassifierModule, ck, autoencoder_ckpt=None)
