"""Run logs: JSON lines (machine-readable, append-only), optional TensorBoard, tqdm progress.

Only rank 0 writes. ``log.jsonl`` is appended line by line and flushed, so a killed run keeps
every line it printed and a resumed run continues the same file.
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
