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


def configure_opencv() -> None:
    """Make OpenCV single-threaded in this process (idempotent; call before any cv2 work)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 is a core dependency
        return
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed global RNGs, one torch thread. Never touches cv2
    (see the module docstring: the parent already made it single-threaded)."""
    import torch

    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed() + worker_id) % (2**32)
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
