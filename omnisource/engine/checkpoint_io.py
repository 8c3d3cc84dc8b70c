"""Training checkpoints as plain containers: atomic writes, ``weights_only=True`` loads.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so
``torch.load(path, weights_only=True)`` can read it without executing pickled code. RNG states
(Python, NumPy, torch, CUDA) are converted to tensors / lists for that reason. Writes go through
a temporary file + rename (:func:`omnisource.utils.io.atomic_torch_save`), so a ``kill -9`` at
any moment leaves either the previous or the new checkpoint, never a torn one.

Layout (``state_dict`` is the key mmaction2 uses, so ``models.load_checkpoint`` reads ours too)::

    {"meta": {"format": "omnisource-train", "version": 1, "epoch", "iter_in_epoch",
              "global_iter", "config", "best", "torch", "time"},
     "state_dict": model weights, "optimizer", "scheduler", "scaler" (or None),
     "rng": {"python", "numpy", "torch", "cuda"}}
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnisource.errors import InputError
from omnisource.utils.io import atomic_torch_save

FORMAT = "omnisource-train"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """All global RNG states as plain data."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [int(version), [int(x) for x in internal], gauss],
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def assert_finite(model: torch.nn.Module) -> bool:
    """True when every parameter and buffer is finite (a checkpoint must never be poisoned)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return False
    return True


def save_training_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer, scheduler,
                             scaler, epoch: int, iter_in_epoch: int, global_iter: int,
                             config: dict, best: dict | None = None, extra: dict | None = None) -> None:
    """Atomically write a resumable checkpoint. ``epoch`` is the epoch in progress (0-based)
    and ``iter_in_epoch`` the number of its batches already consumed."""
    m = _unwrap(model)
    ckpt = {
        "meta": {"format": FORMAT, "version": VERSION, "epoch": int(epoch),
                 "iter_in_epoch": int(iter_in_epoch), "global_iter": int(global_iter),
                 "config": config, "best": best or {}, "torch": str(torch.__version__),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    atomic_torch_save(ckpt, path)


def load_training_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_training_checkpoint` (safely: weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", file=path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated / foreign / pickled-object files
        raise InputError(f"cannot load checkpoint safely ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]})", file=path) from None
    if not isinstance(ckpt, dict) or ckpt.get("meta", {}).get("format") != FORMAT:
        raise InputError("not an omnisource training checkpoint (cannot resume from it; use "
                         "model.pretrained to start from foreign weights)", file=path)
    return ckpt
