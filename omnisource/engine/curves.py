"""Training curves from a work dir's ``log.jsonl``: ``curves.png`` beside it.

Why a PNG next to the log: the numbers of a run are in ``log.jsonl`` (and TensorBoard when it is
installed), but the question after a run -- did the loss still fall, when did validation stop
improving, what did the schedule do -- is answered at a glance by three small plots: training
losses (every logged source) and validation metrics against the iteration, and the learning
rate. Written by ``omnisource train`` when a run ends (see :func:`omnisource.engine.train.train`);
:func:`plot_curves` redraws it for any log, e.g. of a run still going.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from omnisource.utils.io import atomic_write_bytes

log = logging.getLogger("omnisource.engine")

VAL_KEYS = ("top1_acc", "top5_acc", "mean_class_accuracy", "mean_average_precision")


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train records, val records) of a ``log.jsonl``; unreadable lines (a run killed while
    writing one) are skipped. A resumed run appends to the same file, so records are ordered
    and de-duplicated by global iteration (the latest wins)."""
    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or "global_iter" not in rec:
                continue
            if rec.get("mode") == "train":
                train[int(rec["global_iter"])] = rec
            elif rec.get("mode") == "val":
                val[int(rec["global_iter"])] = rec
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def plot_curves(log_path: str | Path, out_png: str | Path | None = None) -> Path | None:
    """Draw the curves of ``log_path`` into ``out_png`` (default: ``curves.png`` beside it).
    Returns the PNG's path, or ``None`` when the log holds no training record yet."""
    log_path = Path(log_path)
    train, val = read_log(log_path)
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    x = [r["global_iter"] for r in train]
    loss_keys = sorted({k for r in train for k in r if k == "loss" or k.startswith("loss_")})
    for k in loss_keys:
        pts = [(r["global_iter"], r[k]) for r in train if isinstance(r.get(k), (int, float))]
        if pts:
            axes[0].plot(*zip(*pts), label=k, lw=1.2 if k == "loss" else 0.8)
    axes[0].set_title("training loss")
    axes[0].set_xlabel("iteration")
    if loss_keys:
        axes[0].legend(fontsize=7)
    if val:
        for k in VAL_KEYS:
            pts = [(r["global_iter"], r[k]) for r in val if isinstance(r.get(k), (int, float))]
            if pts:
                axes[1].plot(*zip(*pts), marker="o", ms=3, label=k)
        axes[1].legend(fontsize=7)
    axes[1].set_title("validation" if val else "validation (none logged)")
    axes[1].set_xlabel("iteration")
    axes[2].plot(x, [r.get("lr", float("nan")) for r in train], lw=1)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(0, 0), useOffset=False)
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("iteration")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    out = Path(out_png) if out_png is not None else log_path.with_name("curves.png")
    atomic_write_bytes(out, buf.getvalue())
    return out


def write_curves_quietly(work_dir: Path) -> Path | None:
    """:func:`plot_curves` for a finished run: a failure to plot never fails the run."""
    path = Path(work_dir) / "log.jsonl"
    if not path.is_file():
        return None
    try:
        return plot_curves(path)
    except (ImportError, OSError, ValueError, RuntimeError, TypeError) as err:
        log.warning("%s: training curves not drawn (%s: %s)", path, type(err).__name__, err)
        return None
