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
     "rng": {"python", "numpy", "torch", "cuda"},          # rank 0's (the single-process case)
     "rng_ranks": [rng of rank 0, rng of rank 1, ...]}     # every rank's, gathered at save time

Under DDP every rank draws its own dropout masks (and mixup / augmentation draws of datasets
that use the global RNGs), so a bit-exact multi-rank resume needs each rank's own RNG streams:
:func:`gather_rng_states` collects them on every rank (one small object all-gather) before rank 0
writes the file, and :func:`rank_rng_state` picks the resuming rank's entry back out.
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


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective: call it on all ranks).

    Single process: a one-element list, no communication. The states are a few KiB per rank.
    """
    import torch.distributed as dist

    mine = rng_state()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def rank_rng_state(ckpt: dict, rank: int, world_size: int) -> dict[str, Any] | None:
    """The RNG state that ``rank`` of a ``world_size``-rank run saved, or None when the
    checkpoint cannot provide it (written by an older version or with another world size)."""
    states = ckpt.get("rng_ranks") or []
    if len(states) == world_size:
        return states[rank]
    if world_size == 1 and ckpt.get("rng"):
        return ckpt["rng"]
    return None


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
                             config: dict, best: dict | None = None, extra: dict | None = None,
                             rng_ranks: list[dict[str, Any]] | None = None) -> None:
    """Atomically write a resumable checkpoint. ``epoch`` is the epoch in progress (0-based)
    and ``iter_in_epoch`` the number of its batches already consumed. ``rng_ranks`` are every
    rank's RNG states from :func:`gather_rng_states` (default: this process's only)."""
    rng_ranks = list(rng_ranks) if rng_ranks else [rng_state()]
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
        "rng": rng_ranks[0],
        "rng_ranks": rng_ranks,
        "extra": extra or {},
    }
    atomic_torch_save(ckpt, path)


def load_training_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_training_checkpoint` (safely: weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", file=path)
    if path.stat().st_size == 0:   # never one of ours (writes are atomic): damage from outside
        raise InputError("empty checkpoint file (0 bytes): delete it to start afresh, or resume from "
                         "another checkpoint (--resume PATH)", file=path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated / foreign / pickled-object files
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise InputError(f"cannot load checkpoint safely ({type(err).__name__}"
                         f"{': ' + first if first else ''})", file=path) from None
    if not isinstance(ckpt, dict) or ckpt.get("meta", {}).get("format") != FORMAT:
        raise InputError("not an omnisource training checkpoint (cannot resume from it; use "
                         "model.pretrained to start from foreign weights)", file=path)
    return ckpt


def load_model_state(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state)`` (strict), or one InputError naming the file and what
    does not fit -- a checkpoint of another model raised a RuntimeError of hundreds of lines."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("with another shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} key(s) {what} (e.g. {keys[0]})")
        raise InputError("the checkpoint holds another model's weights: " + "; ".join(parts)
                         + " -- check model.name / model.overrides / model.num_classes", file=path)
    model.load_state_dict(state)
