"""DataLoaders shared by every DataModule. A run resumed from any checkpoint, mid-epoch too, sees the same batches as
one that never stopped:

- the training order of epoch e is a function of (seed, e) alone (Lightning calls `set_epoch` each epoch);
- the train loader is stateful: Lightning saves its place in the epoch in the checkpoint's loop state and hands it
  back on resume, and the loader skips the batches the interrupted run already took;
- no loader draws from the global torch RNG (a DataLoader without its own generator draws one number from it at every
  `iter()`), so the noise a phase draws from that RNG, saved and restored by the phase, continues the same stream.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


class EpochShuffleSampler(DistributedSampler):
    """Epoch e's permutation of range(n) from (seed, e); under DDP rank r takes every world-th index of it, padded to a
    multiple of the world as DistributedSampler does. A DistributedSampler, so Lightning uses it as it is instead of
    wrapping it in one. `skip` drops the first indices of the next iteration (set by ResumableLoader on resume)."""

    def __init__(self, n: int, seed: int = 0):
        ddp = dist.is_available() and dist.is_initialized()
        super().__init__(range(n), num_replicas=dist.get_world_size() if ddp else 1, rank=dist.get_rank() if ddp else 0,
                         shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self):
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        order += order[: self.total_size - len(order)]
        skip, self.skip = self.skip, 0
        return iter(order[self.rank:self.total_size:self.num_replicas][skip:])


class ResumableLoader(DataLoader):
    """The train loader: counts the batches it has yielded this epoch, which are the ones the training loop took
    (Lightning prefetches nothing from a loader with a length; worker prefetch happens below the count). Lightning
    calls `state_dict` when it saves a checkpoint and `load_state_dict` on resume before the first batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch, self._yielded = -1, 0  # the epoch being iterated, and the batches yielded from it
        self._resume: dict | None = None

    def __iter__(self):
        # A generator: this runs at the first batch, after Lightning's set_epoch (workers start then too).
        if not isinstance(self.sampler, EpochShuffleSampler):  # Lightning swapped it (overfit_batches): in order
            yield from super().__iter__()
            return
        epoch = self.sampler.epoch
        resume, self._resume = self._resume, None
        start = resume["batches"] if resume is not None and resume["epoch"] == epoch else 0
        self.sampler.skip = start * self.batch_size
        self.generator.manual_seed(_epoch_seed(self.sampler.seed, epoch))  # the workers' seeds: per epoch
        self._epoch, self._yielded = epoch, start
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)  # applied by the next __iter__, if it iterates that epoch


class CodeRows(Dataset):
    """The rows of a tensor (cached codes) as a data set, fetched a batch at a time: DataLoader calls __getitems__ with
    the batch's indices, and `collate` passes the gathered rows on as they are (row-by-row fetching and stacking costs
    more than the small D step it feeds)."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.rows[i]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.rows[torch.as_tensor(indices)]

    @staticmethod
    def collate(rows: torch.Tensor) -> torch.Tensor:
        return rows


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's or a job scheduler's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def make_loader(ds: Dataset, batch_size: int, train: bool, seed: int = 0, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """train: epoch-seeded shuffle, drop the last partial batch, resumable mid-epoch; eval: in order, every sample.
    num_workers is capped by the CPUs present: more worker processes than cores only compete (and torch warns)."""
    num_workers = min(num_workers, usable_cpus())
    kwargs = dict(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                  persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))
    if isinstance(ds, CodeRows):  # rows of a tensor in memory: worker processes would only add a copy per batch
        kwargs.update(collate_fn=CodeRows.collate, num_workers=0, persistent_workers=False)
    if train:
        if len(ds) < batch_size:  # drop_last would leave no batch: fit would stop at once and exit 0
            from dsls.errors import ConfigError

            raise ConfigError(f"the training set ({len(ds)} examples) is smaller than --data.batch_size={batch_size}: "
                              "no training step would run; lower the batch size, or give it more examples (a larger "
                              "--data.train_size where the data set has one; more images; lower val/test fractions)")
        return ResumableLoader(ds, sampler=EpochShuffleSampler(len(ds), seed), drop_last=True, **kwargs)
    return DataLoader(ds, **kwargs)


def unpack(batch):
    """Batches are tensors (toy) or (x, y) tuples (image data sets)."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch
