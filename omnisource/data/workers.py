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
import sys

import numpy as np


def configure_opencv() -> None:
    """Make OpenCV single-threaded in this process (idempotent; call before any cv2 work)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 is a core dependency
        return
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def ignore_sigterm() -> None:
    """In a worker process: leave SIGTERM to the main process.

    A SIGTERM sent to the whole process group (a scheduler ending a job, ``timeout``, ``kill
    -TERM -PGID``) used to kill the DataLoader workers first, and the main process died with
    torch's "DataLoader worker is killed by signal: Terminated" traceback instead of its own
    "interrupted; resume with ..." line. The main process stops its workers as it unwinds; a
    worker whose parent is gone exits by itself (torch's worker loop watches the parent)."""
    import signal

    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except (ValueError, OSError):  # pragma: no cover - not the main thread of the process
        pass
    sys.excepthook = _quiet_resource_sharer(sys.excepthook)


def _from_resource_sharer(exc_type: type, tb) -> bool:
    if not issubclass(exc_type, (OSError, EOFError)):
        return False
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith("resource_sharer.py"):
            return True
        tb = tb.tb_next
    return False


def _quiet_resource_sharer(default):
    """A ``sys.excepthook`` that drops one traceback: multiprocessing's fd-sharing thread
    (``resource_sharer._serve``, which reports through ``sys.excepthook``) in a worker hitting
    a closed connection because the main process has gone -- seen printing ConnectionResetError
    / BrokenPipeError after an interrupted run's own message. Everything else goes to ``default``."""
    def hook(exc_type, exc, tb):
        if _from_resource_sharer(exc_type, tb):
            return
        default(exc_type, exc, tb)

    return hook


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed global RNGs, one torch thread, SIGTERM ignored. Never
    touches cv2 (see the module docstring: the parent already made it single-threaded)."""
    import torch

    ignore_sigterm()
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed() + worker_id) % (2**32)
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
