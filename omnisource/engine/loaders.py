"""Data loaders for the engine: a resumable, seeded training loader and ordered eval loaders.

Reproducibility is built from pure functions of ``(seed, epoch, position)``:

* the sample order of an epoch is a permutation seeded by ``(seed, epoch)`` and each rank takes
  a disjoint stride of it (as ``DistributedSampler``, padded so every rank has the same number of
  batches);
* every request carries the epoch and a per-sample seed ``(seed, epoch, position)``. Datasets
  of :mod:`omnisource.data.datasets` (which have ``rng_for``) receive ``(index, epoch)`` and
  derive their own generator from ``(dataset seed, epoch, index)``; for any other dataset
  :class:`SeededDataset` seeds Python's, NumPy's and torch's global RNGs with the sample seed.
  Either way augmentation does not depend on which worker loads the sample.

Hence a run resumed in the middle of an epoch (:meth:`TrainLoader.set_start`) sees exactly the
batches an uninterrupted run would have seen, without decoding the skipped ones.

The trainer only needs this small protocol from any loader (the multi-source loader of issue 5
implements it too): iterable of batches, ``__len__`` (batches per epoch), ``set_epoch(epoch)``,
and optionally ``set_start(batch_index)`` (otherwise the trainer draws and discards batches).
"""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from omnisource.data.parallelism import fetch_many
from omnisource.data.workers import worker_init_fn
from omnisource.engine.distributed import ShardSampler


def sample_seed(seed: int, epoch: int, position: int) -> int:
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, position]).generate_state(1)[0])


class SeededDataset(Dataset):
    """Wraps a dataset; items are requested as ``(index, sample_seed, epoch)`` triples."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        # omnisource.data.datasets.ClipDataset: items keyed by (index, epoch), own seeded rngs
        self._epoch_keyed = hasattr(dataset, "rng_for")

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int] | int) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed, epoch = key
        if self._epoch_keyed:
            return self.dataset[(index, epoch)]
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return self.dataset[index]

    def __getitems__(self, keys: list) -> list:
        """A batch: side by side on free cores for epoch-keyed datasets (their items depend only
        on the key); one by one otherwise, since seeding global RNGs is not thread-safe. Defined
        here so that the wrapped dataset's ``__getitems__`` (reached through ``__getattr__``) is
        never handed these triples."""
        if self._epoch_keyed:
            return fetch_many(self.__getitem__, keys)
        return [self.__getitem__(k) for k in keys]

    def __getattr__(self, name: str) -> Any:  # expose .skipped, .samples, ... of the dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SeededBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of ``(index, sample_seed, epoch)`` for one rank, epoch-seeded, resumable mid-epoch."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True, drop_last: bool = False):
        if n <= 0:
            raise ValueError("training set is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.shuffle, self.drop_last = rank, world, shuffle, drop_last
        self.epoch = 0
        self.start = 0
        self.per_rank = -(-n // world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.start = 0

    def rank_positions(self) -> np.ndarray:
        """Positions in the epoch's global order taken by this rank (strided, padded)."""
        total = self.per_rank * self.world
        return np.arange(self.rank, total, self.world)

    def order(self) -> np.ndarray:
        if self.shuffle:
            g = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.epoch, 7]))
            perm = g.permutation(self.n)
        else:
            perm = np.arange(self.n)
        total = self.per_rank * self.world
        if total > self.n:  # pad by wrapping around, like DistributedSampler
            perm = np.concatenate([perm, perm[: total - self.n]])
        return perm

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return -(-self.per_rank // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        perm = self.order()
        pos = self.rank_positions()
        for b in range(self.start, len(self)):
            chunk = pos[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(int(perm[p]), sample_seed(self.seed, self.epoch, int(p)), self.epoch) for p in chunk]


def collate(items: list[dict]) -> dict:
    """``default_collate`` of dataset items; string fields (paths) stay lists."""
    return default_collate(items)


class TrainLoader:
    """Single-source training loader implementing the trainer's loader protocol."""

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world: int = 1, num_workers: int = 0, pin_memory: bool = False,
                 drop_last: bool = False, shuffle: bool = True):
        self.dataset = dataset
        self.batch_sampler = SeededBatchSampler(len(dataset), batch_size, seed, rank, world,
                                                shuffle, drop_last)
        kw: dict[str, Any] = {}
        if num_workers > 0:
            kw = dict(persistent_workers=True, worker_init_fn=worker_init_fn, prefetch_factor=2)
        gen = torch.Generator()
        gen.manual_seed(seed + 1000 * rank)
        self.loader = DataLoader(SeededDataset(dataset), batch_sampler=self.batch_sampler,
                                 num_workers=num_workers, pin_memory=pin_memory,
                                 collate_fn=collate, generator=gen, **kw)

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def set_start(self, batch_index: int) -> None:
        self.batch_sampler.start = int(batch_index)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.loader)


def eval_loader(dataset: Dataset, batch_size: int, *, rank: int = 0, world: int = 1,
                num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Ordered loader over this rank's contiguous shard (gathered back in dataset order)."""
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw = dict(worker_init_fn=worker_init_fn)
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world),
                      num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate, **kw)
