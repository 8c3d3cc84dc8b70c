"""omnisource test --report: per-class accuracy, confused pairs, confident mistakes."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from omnisource.engine.eval_report import confused_pairs, per_class_stats, write_eval_report
from omnisource.utils.video_writer import write_video


def _probs(preds: list[int], c: int = 4, conf: float = 0.7) -> np.ndarray:
    p = np.full((len(preds), c), (1 - conf) / (c - 1))
    p[np.arange(len(preds)), preds] = conf
    return p


def test_per_class_rows_and_pairs_count_what_happened():
    # class 0: 3 videos, 1 right, twice taken for 2; class 1: 2 right; class 2: 1 taken for 1
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = _probs([0, 2, 2, 1, 1, 1])
    rows = {r["class"]: r for r in per_class_stats(probs, y)}
    assert set(rows) == {0, 1, 2}                         # class 3 has no test video
    assert rows[0]["videos"] == 3 and rows[0]["correct"] == 1 and abs(rows[0]["top1"] - 1 / 3) < 1e-9
    assert rows[0]["confused_with"] == 2 and rows[0]["confused_count"] == 2
    assert rows[1]["top1"] == 1.0 and rows[1]["confused_with"] is None
    assert rows[2]["top1"] == 0.0 and rows[2]["top5"] is None     # 4 classes: top-5 not applicable
    assert [r["class"] for r in per_class_stats(probs, y)] == [2, 0, 1]   # worst first
    pairs = confused_pairs(probs, y)
    assert [(p["true"], p["pred"], p["count"]) for p in pairs] == [(0, 2, 2), (2, 1, 1)]
    assert abs(pairs[0]["share"] - 2 / 3) < 1e-9 and pairs[1]["share"] == 1.0
    assert confused_pairs(_probs([0, 1]), np.array([0, 1])) == []


def test_report_page_files_and_thumbnails(tmp_path: Path):
    root = tmp_path / "videos"
    root.mkdir()
    names = ["blue", "red", "green"]
    paths = []
    for i in range(5):
        write_video(root / f"v{i}.mp4", [np.full((32, 48, 3), 40 * i, np.uint8)] * 4, codec="mpeg4")
        paths.append(f"v{i}.mp4")
    labels = [0, 1, 2, [0, 1], 1]                  # one multi-label sample: left out
    logits = np.log(_probs([0, 2, 2, 0, 0], c=3, conf=0.9))
    out = tmp_path / "report"
    index = write_eval_report(out, logits, labels, paths=paths, data_root=root, class_names=names,
                              average="score", metrics={"top1_acc": 0.5}, meta={"config": "x.yaml"})
    html = index.read_text()
    assert "left out (multi-label or unlabelled)" in html and "x.yaml" in html
    assert "red" in html and "green" in html
    for src in re.findall(r'src="([^"]+)"', html):   # every referenced image was written
        assert (out / src).is_file(), src
    assert len(re.findall(r"<figure>", html)) == 2   # v1 (red -> green) and v4 (red -> blue)
    assert "v1.mp4: true red, predicted green (0.90)" in html
    with open(out / "per_class.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["name"], r["videos"], r["correct"]) for r in rows] == [("red", "2", "0"), ("blue", "1", "1"),
                                                                       ("green", "1", "1")]
    with open(out / "confusions.csv") as fh:
        pairs = {(r["true_name"], r["pred_name"]): int(r["count"]) for r in csv.DictReader(fh)}
    assert pairs == {("red", "green"): 1, ("red", "blue"): 1}


def test_report_without_scorable_samples(tmp_path: Path):
    index = write_eval_report(tmp_path / "r", np.zeros((2, 3)), [[0, 1], None])
    assert "no single-label samples" in index.read_text()


def test_thumbnail_of_a_rawframe_folder_is_its_middle_rgb_frame(tmp_path: Path):
    # mmaction2 rawframe folders hold img_*.jpg and, for two-stream models, flow x_* / y_* too
    from PIL import Image

    from omnisource.utils.html_report import Writer

    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(1, 7):
        Image.fromarray(np.full((48, 64, 3), 30 * i, np.uint8)).save(folder / f"img_{i:05d}.jpg")
    for i in range(1, 4):
        for d in "xy":
            Image.fromarray(np.full((48, 64), 250, np.uint8)).save(folder / f"{d}_{i:05d}.jpg")
    w = Writer(tmp_path / "out")
    (tmp_path / "out").mkdir()
    name = w.thumb(folder, {"kind": "video"})
    px = np.asarray(Image.open(tmp_path / "out" / name).convert("RGB")).astype(int)
    assert abs(px.mean() - 120) < 6          # img_00004 (value 120), not a flow image (250)
