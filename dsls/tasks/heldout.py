"""The frozen phase-2 model a task works with, and the held-out real data of the data set it was trained on
(the validation split of its data module): observations for inverse problems, end points for interpolation, codes
for the likelihood and for the on-manifold threshold."""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DataLoader, Subset

from dsls.errors import PhaseCheckpointError
from dsls.errors import TaskError


def load_latent_model(ckpt: str):
    """The phase-2 model (a dsls.model.LatentModel) whose score rates the latents (a pixel-space model has no latents
    to rate)."""
    from dsls.model import sampling_model

    model = sampling_model(ckpt)
    if model.phase != "adversarial":
        raise PhaseCheckpointError(f"this task needs a phase-2 (adversarial) checkpoint or its search.ckpt; "
                                   f"{ckpt} is a {model.phase} checkpoint.")
    return model


def _datamodule_class(dataset_name: Optional[str]):
    """The data module of a data set name: what a checkpoint saved by a bare Trainer (no class path) implies."""
    import dsls.data as data
    from dsls.data.toy2d import NAMES

    if dataset_name in NAMES:
        return data.Toy2DDataModule
    for name in data.__all__:
        cls = getattr(data, name)
        if isinstance(cls, type) and getattr(cls, "dataset_name", None) == dataset_name:
            return cls
    return None


def datamodule_hparams(model) -> dict:
    """The settings of the data module the model was trained on, with its class path."""
    hp = dict(model.datamodule_hparams or {})
    if hp and "_class_path" not in hp:
        cls = _datamodule_class(model.dataset_name)
        if cls is not None:
            hp["_class_path"] = f"{cls.__module__}.{cls.__qualname__}"
    if "_class_path" not in hp:
        raise TaskError(f"the checkpoint does not record the data module it was trained on (data set "
                         f"{model.dataset_name!r}), so the held-out codes cannot be rebuilt: train through the `dsls` "
                         "CLI or `Trainer.fit(model, datamodule=...)`.")
    return hp


def heldout_data(model, n: int, offset: int = 0) -> torch.Tensor:
    """Rows offset .. offset+n of the validation split, data space (toy (n, 2); images (n, C, H, W) in [-1, 1])."""
    from dsls.metrics.samples import reference_dataset
    from dsls.data.loaders import unpack

    ds, _ = reference_dataset(datamodule_hparams(model), "val")
    if offset >= len(ds):
        raise TaskError(f"the validation split has {len(ds)} rows, fewer than the {offset + 1} asked for")
    rows = Subset(ds, range(offset, min(offset + n, len(ds))))
    return torch.cat([unpack(b) for b in DataLoader(rows, batch_size=512)]).float()


@torch.no_grad()
def heldout_codes(model, n: int, batch_size: int, device, offset: int = 0) -> torch.Tensor:
    """E(x) of validation rows offset .. offset+n (the encoder's mean code, no code noise)."""
    x = heldout_data(model, n, offset)
    return torch.cat([model.autoencoder.encode(b.to(device), sample=False) for b in x.split(batch_size)]).float()


