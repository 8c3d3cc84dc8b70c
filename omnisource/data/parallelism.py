"""How much of the machine one process may use for data loading, and the batch fetcher that uses it.

Why this module: a DataLoader with fewer worker processes than cores (0 workers while debugging,
one worker per GPU on a small node) leaves cores idle while a worker decodes its batch one clip
after another. Video decoding spends almost all its time inside FFmpeg, which releases the GIL,
so threads of one process can decode the clips of a batch side by side. Two levels share the
free cores and must not multiply each other:

* :func:`fetch_many` -- the items of one batch at once (a dataset's ``__getitems__``, which
  torch's DataLoader calls with the whole batch of indices, in worker processes and with 0
  workers alike);
* :func:`decode_parallelism` -- the independent keyframe runs of one read at once
  (:mod:`.decode.pyav_reader`).

Items spread better than runs (a TSN read of a short clip often has one run only), so a batch
takes the cores first and every read inside it decodes on its own thread
(:func:`decode_parallelism` returns 1 there). Item results depend only on the item's key (each
item draws from its own seeded generator), so a batch fetched in parallel is the same batch,
tensor for tensor, as one fetched item by item.
"""
from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

K = TypeVar("K")
T = TypeVar("T")

_local = threading.local()
_pools: dict[tuple[int, int, str], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's or taskset's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def process_share() -> int:
    """Threads this process may keep busy: all usable cores outside a DataLoader worker;
    ``cores // num_workers`` inside one, so the workers together never oversubscribe the
    machine (the multi-source loader has one worker pool, too)."""
    data = sys.modules.get("torch.utils.data")  # never import torch just for this
    info = data.get_worker_info() if data is not None else None
    if info is None:
        return usable_cpus()
    return max(1, usable_cpus() // max(1, int(info.num_workers)))


def in_batch_fetch() -> bool:
    """Whether the calling thread is fetching one item of a batch that :func:`fetch_many`
    spreads over threads (the cores are then taken by the items)."""
    return bool(getattr(_local, "busy", False))


def decode_parallelism() -> int:
    """How many keyframe runs of one read may be decoded at once on this thread: 1 inside a
    batch fetched side by side, else :func:`process_share`."""
    return 1 if in_batch_fetch() else process_share()


def thread_pool(size: int, name: str) -> ThreadPoolExecutor:
    """This process's pool of ``size`` threads for ``name`` (keyed by pid: a pool inherited
    through ``fork`` has no threads, so a forked worker makes its own)."""
    key = (os.getpid(), size, name)
    pool = _pools.get(key)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = ThreadPoolExecutor(size, thread_name_prefix=f"omnisource-{name}")
    return pool


def fetch_many(get: Callable[[K], T], keys: Sequence[K], ways: int | None = None) -> list[T]:
    """``[get(k) for k in keys]``, computed on up to ``ways`` threads (default
    :func:`process_share`) when the process has cores to spare.

    The calling thread works too; every thread takes the next key not yet taken, so a slow item
    (a long keyframe run) does not hold back the rest. Results come back in key order. If items
    fail, the exception of the first failing key (in key order) is raised once every thread has
    stopped -- the one a sequential loop would have raised first; keys after a failure may still
    have been fetched (they have no side effects beyond caches and skip counters). Nested calls
    (an item that fetches a batch itself) run sequentially.
    """
    keys = list(keys)
    ways = process_share() if ways is None else int(ways)
    ways = min(ways, len(keys))
    if ways < 2 or in_batch_fetch():
        return [get(k) for k in keys]
    results: list = [None] * len(keys)
    errors: dict[int, BaseException] = {}
    counter = iter(range(len(keys)))
    take = threading.Lock()

    def work() -> None:
        _local.busy = True
        try:
            while True:
                with take:
                    i = next(counter, None)
                if i is None or (errors and min(errors) < i):
                    return  # a sequential loop would have stopped at an earlier failure
                try:
                    results[i] = get(keys[i])
                except BaseException as err:  # re-raised in the caller, in key order
                    errors[i] = err
        finally:
            _local.busy = False

    pool = thread_pool(ways - 1, "batch")
    futures = [pool.submit(work) for _ in range(ways - 1)]
    work()
    for fut in futures:
        fut.result()
    if errors:
        raise errors[min(errors)]
    return results
