"""A training set served as the codes of a frozen encoder, encoded once: post-hoc D (phase 2) reads only codes, so it
trains on cached rows instead of loading, augmenting and encoding the examples again at every step.

A latent phase's `train_dataloader` (dsls.phases.base.LatentPhase) builds this loader from the data module's own:
the same batch size and the same epoch-seeded shuffle, resumable mid-epoch, so a cached fit draws the codes of the very
examples, in the very order, that an uncached one encodes (one view; with random flips each view's codes are rows of
their own). The data module itself is left as it is.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from dsls.data.loaders import CodeRows, make_loader
from dsls.errors import ConfigError


def train_views(datamodule) -> list[Dataset]:
    """The training set once per augmented view, without randomness: the data module's `train_views()` (the plain set,
    plus its mirror image when it flips at random), or its train_set as the one view when it names none."""
    return datamodule.train_views() if hasattr(datamodule, "train_views") else [datamodule.train_set]


def code_loader(data_loader: DataLoader, codes: torch.Tensor) -> DataLoader:
    """The train loader over the rows of `codes` that `data_loader` (a data module's train loader) is over its
    examples: its batch size, shuffle seed and memory pinning. make_loader serves the rows a batch at a time, in the
    main process (worker processes would only copy them)."""
    if data_loader.batch_size is None:  # a batch_sampler of its own: no batch size to copy
        raise ConfigError("the data module's train loader has no batch_size (it brings its own batch_sampler), so its "
                          "codes cannot be served in the same batches: set --model.cache_codes=false")
    seed = getattr(data_loader.sampler, "seed", 0)  # dsls loaders: an EpochShuffleSampler
    return make_loader(CodeRows(codes), data_loader.batch_size, True, seed, pin_memory=data_loader.pin_memory)
