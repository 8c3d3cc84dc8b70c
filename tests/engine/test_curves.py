"""curves.png from a work dir's log.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

from omnisource.engine.curves import plot_curves, read_log

PNG = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, records: list, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_read_log_orders_dedups_and_skips_a_torn_line(tmp_path: Path):
    log = tmp_path / "log.jsonl"
    _write(log, [{"mode": "train", "global_iter": 2, "loss": 2.0, "lr": 0.1},
                 {"mode": "val", "global_iter": 2, "top1_acc": 0.3},
                 {"mode": "train", "global_iter": 4, "loss": 1.5, "lr": 0.1},   # killed after this
                 {"mode": "resume", "global_iter": 2},
                 {"mode": "train", "global_iter": 4, "loss": 1.4, "lr": 0.1},   # resumed: re-logged
                 {"mode": "train", "global_iter": 6, "loss": 1.0, "lr": 0.01, "loss_web": 0.5}],
           tail='{"mode": "train", "glob')                                       # torn last line
    train, val = read_log(log)
    assert [(r["global_iter"], r["loss"]) for r in train] == [(2, 2.0), (4, 1.4), (6, 1.0)]
    assert [r["top1_acc"] for r in val] == [0.3]


def test_plot_curves_writes_a_png_beside_the_log(tmp_path: Path):
    log = tmp_path / "log.jsonl"
    _write(log, [{"mode": "done", "global_iter": 0}])
    assert plot_curves(log) is None and not (tmp_path / "curves.png").exists()   # nothing to draw yet
    _write(log, [{"mode": "train", "global_iter": i, "loss": 1 / i, "loss_web_images": 0.5 / i, "lr": 0.1}
                 for i in range(1, 6)] + [{"mode": "val", "global_iter": 5, "top1_acc": 0.5, "top5_acc": 0.9}])
    out = plot_curves(log)
    assert out == tmp_path / "curves.png" and out.read_bytes().startswith(PNG)
