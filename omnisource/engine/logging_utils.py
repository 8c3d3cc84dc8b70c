"""Run logs: JSON lines (machine-readable, append-only), optional TensorBoard, tqdm progress,
and one readable line per record on the ``omnisource.engine`` logger.

Only rank 0 writes. ``log.jsonl`` is appended line by line and flushed, so a killed run keeps
every line it printed and a resumed run continues the same file. The readable lines are what a
batch job's log file (no terminal, so no progress bar) shows: loss and learning rate every
``train.log_interval`` iterations, the validation metrics of every epoch -- what mmaction2
prints; they go through ``tqdm.write`` so a live progress bar is redrawn below them.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable

from omnisource.utils.progress import progress_enabled

log = logging.getLogger("omnisource.engine")


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, initial: int = 0):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not (enabled and progress_enabled()),
                dynamic_ncols=True, leave=False, initial=initial)


def format_record(record: dict[str, Any]) -> str:
    """``{"mode": "train", "epoch": 1, "iter": 20, "loss": 1.23, ...}`` -> one readable line."""
    mode = record.get("mode", "train")
    of = f"/{record['iters']}" if "iters" in record else ""
    head = {"train": f"epoch {record.get('epoch')} iter {record.get('iter')}{of}",
            "val": f"val after epoch {record.get('epoch')}",
            "done": f"done: {record.get('global_iter')} iterations"}.get(mode, str(mode))
    skip = {"mode", "epoch", "iter", "iters", "global_iter"}
    parts = []
    losses_first = sorted(record.items(), key=lambda kv: not kv[0].startswith("loss"))
    for k, v in losses_first:
        if k in skip or isinstance(v, (dict, list)):
            continue
        if k == "lr":
            parts.append(f"lr {v:.3e}")
        elif k in ("data_time", "time_s"):
            parts.append(f"{k.removesuffix('_time').removesuffix('_s')} {v:.2f}s")
        elif k == "eta_s":
            parts.append(f"eta {_duration(v)}")
        elif k.endswith("_mb") and isinstance(v, (int, float)):
            parts.append(f"{k.removesuffix('_mb')} {v:.0f} MB")
        elif isinstance(v, float):
            parts.append(f"{k} {v:.4f}")
        elif v is None and k.endswith("_acc"):
            parts.append(f"{k} n/a")
        else:
            parts.append(f"{k} {v}")
    return f"{head}: {', '.join(parts)}" if parts else head


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunLogger:
    """Writes ``work_dir/log.jsonl`` (+ TensorBoard events under ``work_dir/tb``) on rank 0."""

    def __init__(self, work_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(work_dir) / "log.jsonl"
        self._fh = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:  # optional dependency: omnisource[tensorboard]
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(work_dir) / "tb"))
            except Exception:  # not installed / broken install: JSON lines are enough
                self._tb = None

    def write(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled or self._fh is None:
            return
        self._fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._fh.flush()
        if log.isEnabledFor(logging.INFO):
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm(loggers=[logging.getLogger()]):
                log.info("%s", format_record(record))
        if self._tb is not None and step is not None:
            mode = record.get("mode", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in (
                        "epoch", "iter", "global_iter"):
                    self._tb.add_scalar(f"{mode}/{k}", v, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
