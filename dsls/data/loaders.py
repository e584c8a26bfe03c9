"""DataLoaders shared by every DataModule: the training shuffle is a function of (seed, epoch) alone, so a run
resumed from a checkpoint sees the same batches as one that never stopped. Lightning calls `set_epoch` on the
sampler each epoch (and swaps in a seeded DistributedSampler under DDP)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffleSampler(Sampler[int]):
    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(ds: Dataset, batch_size: int, train: bool, seed: int = 0, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """train: epoch-seeded shuffle, drop the last partial batch; eval: in order, every sample."""
    return DataLoader(ds, batch_size=batch_size, sampler=EpochShuffleSampler(len(ds), seed) if train else None,
                      drop_last=train, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)
