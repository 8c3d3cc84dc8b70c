"""torchrun / DDP plumbing: env:// initialisation, rank helpers, ordered result gathering.

Launch with ``torchrun --nproc-per-node N -m omnisource train ...``: torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them everything
runs as a single process and every helper here is a no-op. The backend is NCCL on GPU and Gloo
on CPU.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None, device: str | None = None) -> DistInfo:
    """Initialise the default process group from torchrun's environment (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"),
                                init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


# How long cleanup() lets the process group's threads finish before tearing it down (seconds).
_SETTLE_S = 0.1


def cleanup() -> None:
    """Tear the process group down at the end of a distributed run (also after an error: no
    collective here, so a rank that failed alone cannot hang in it).

    Why the pause first: gloo's worker threads drop their references to the tensors of a
    collective only *after* the caller has seen it complete. A tensor whose Python object the
    caller has meanwhile released (``all_gather_object``'s buffers, a logged scalar) then needs
    the GIL to be freed; if the interpreter is already finalising, CPython ends that thread inside
    a C++ destructor and the process aborts ("terminate called without an active exception")
    although every result was written -- about one 2-rank run in ten on the Xeon, and torchrun
    reports the run as failed. Sleeping releases the GIL so those threads finish first."""
    if dist.is_available() and dist.is_initialized():
        time.sleep(_SETTLE_S)
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, float], device: torch.device | None = None) -> dict[str, float]:
    """Average scalar logs over ranks (one collective for the whole dict)."""
    if get_world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= get_world_size()
    return dict(zip(keys, t.tolist()))


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Contiguous shard of ``range(n)`` for ``rank``, padded by repeating the last index.

    Every rank gets ``ceil(n / world)`` items so collectives stay in lockstep; :func:`gather_ordered`
    drops the padding. Contiguous (not strided) shards make the gathered order the dataset order.
    """
    per = -(-n // world) if n else 0
    idx = list(range(rank * per, min(n, (rank + 1) * per)))
    if n:
        pad_src = idx[-1] if idx else n - 1
        idx += [pad_src] * (per - len(idx))
    return idx


def gather_ordered(local: list[Any], n: int) -> list[Any]:
    """Concatenate per-rank results of :func:`shard_indices` shards in rank order and unpad to ``n``."""
    world = get_world_size()
    if world == 1:
        return list(local)[:n]
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, list(local))
    out: list[Any] = []
    for p in parts:
        out.extend(p)
    return out[:n]


class ShardSampler(torch.utils.data.Sampler[int]):
    """Deterministic contiguous shard of an evaluation set for this rank (see :func:`shard_indices`)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.indices = shard_indices(n, rank, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def average_buffers(model: torch.nn.Module) -> None:
    """Average floating-point buffers (BN running stats) over ranks.

    DDP broadcasts rank 0's buffers at each forward, but the last forward of an epoch leaves
    every rank with its own statistics; averaging them before validation / checkpointing uses
    every rank's data and leaves all ranks with identical models.
    """
    if get_world_size() == 1:
        return
    world = get_world_size()
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b.data)
            b.data /= world
