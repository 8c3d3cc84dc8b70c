"""Process-level set-up shared by every DataLoader / worker pool of omnisource.

Why one module: three loaders (datasets, engine, multi-source) and the teacher's decoding pool
all need the same two things, and getting them subtly different is how workers hang.

* OpenCV runs single-threaded in every process. Its thread pool is not fork-safe: once a parent
  has used it (e.g. a resize in the preset), a forked DataLoader worker that touches cv2 can block
  forever in ``pthread_cond_destroy`` (reproduced with gdb). Parallelism in the data pipeline comes
  from worker processes instead, so nothing is lost. :func:`configure_opencv` is called when the
  transform modules are imported, i.e. before any cv2 work and before any fork.
* Each worker uses one torch thread (N workers x M intra-op threads would oversubscribe the CPU)
  and seeds the global numpy / random generators from torch's per-worker seed (items use their
  own seeded generators; this only protects user transforms that use global RNGs).
"""
from __future__ import annotations

import random

import numpy as np

# Worker processes of *all* DataLoaders running side by side (the multi-source loader gives each
# source its own pool); None = only this DataLoader's ``num_workers``. Set per worker process by
# :func:`worker_init_fn`; the PyAV reader sizes its decoding threads from it.
_pool_workers: int | None = None


def pool_workers() -> int | None:
    """Total worker processes sharing the machine with this one, when a loader declared it."""
    return _pool_workers


def configure_opencv() -> None:
    """Make OpenCV single-threaded in this process (idempotent; call before any cv2 work)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 is a core dependency
        return
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def worker_init_fn(worker_id: int, pool_workers: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: seed global RNGs, one torch thread. Never touches cv2
    (see the module docstring: the parent already made it single-threaded).

    ``pool_workers``: all worker processes of the loaders running together (bind it with
    ``functools.partial``); without it, a multi-source loader's 4 one-worker pools would each
    decode with every core's worth of threads and oversubscribe the CPU.
    """
    import torch

    global _pool_workers
    _pool_workers = pool_workers

    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed() + worker_id) % (2**32)
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
