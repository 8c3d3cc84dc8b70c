"""Multi-label lists (MMiT, HVU): multi-hot targets trained with binary cross-entropy, mean
average precision (and HVU's per-category mAP) from `omnisource test`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omnisource.cli import main
from omnisource.engine.metrics import average_precision, category_map, mean_average_precision
from omnisource.engine.train import source_loss
from omnisource.utils.video_writer import write_video


def test_average_precision_by_hand():
    # positives ranked 1st and 3rd: (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert np.isnan(average_precision(np.array([0.3, 0.2]), np.array([0, 0])))
    s = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.7, 0.6, 0.1]])
    y = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    # class 0: ranks 1, 2 -> 1; class 1: rank 1 -> 1; class 2: rank 2 -> 1/2
    assert mean_average_precision(s, y) == pytest.approx((1 + 1 + 0.5) / 3)
    cats = category_map(s, y, {"action": [0, 1], "scene": [2]})
    assert cats == {"mAP_action": pytest.approx(1.0), "mAP_scene": pytest.approx(0.5)}


def test_multi_hot_targets_use_binary_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    loss, acc = source_loss(logits, target, 2, 0.0, multi_label=True)
    torch.testing.assert_close(loss, torch.nn.functional.binary_cross_entropy_with_logits(logits, target))
    assert acc == 0.5                      # sample 0's top class is a positive, sample 1's is not
    soft, _ = source_loss(logits, target / target.sum(1, keepdim=True), 2, 0.0)
    assert not torch.isclose(soft, loss)   # without the flag the same floats are a soft target


def test_multilabel_list_trains_and_tests_with_map(tmp_path, capsys):
    rng = np.random.default_rng(0)
    vids = tmp_path / "v"
    vids.mkdir()
    lines = []
    for i in range(12):
        labels = [[0], [1], [0, 1], [2]][i % 4]
        colour = np.zeros(3, np.int16)
        for c in labels:
            colour[c] = 200
        frames = (np.clip(colour + rng.integers(0, 30, (32, 40, 3)), 0, 255).astype(np.uint8) for _ in range(10))
        write_video(vids / f"{i}.mp4", frames, codec="mpeg4", fps=8)
        lines.append(f"{i}.mp4 " + " ".join(map(str, labels)))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\n")
    (tmp_path / "cats.json").write_text(json.dumps({"colour": [0, 1], "other": [2]}))
    split = (f"    ann_file: {tmp_path / 'list.txt'}\n    data_root: {vids}\n"
             "    overrides: {{scale: 32, crop_size: 24}}\n    preset: tsn_1x1x3_{mode}\n")
    cfg = tmp_path / "ml.yaml"
    cfg.write_text("model:\n  name: tsn_r50_1x1x3_100e_kinetics400_rgb\n  num_classes: 3\n"
                   "  overrides: {depth: 18, base_channels: 4}\n"
                   "data:\n  train:\n" + split.format(mode="train") + "  val:\n" + split.format(mode="val")
                   + "  test:\n" + split.format(mode="val")
                   + f"  label_map: {tmp_path / 'classes.txt'}\n  batch_size: 4\n  num_workers: 0\n"
                   "optim:\n  lr: 0.05\nschedule:\n  epochs: 2\n  steps: [1]\ntrain:\n  tensorboard: false\n")
    work = tmp_path / "work"
    assert main(["train", str(cfg), "--work-dir", str(work), "--validate", "--seed", "0"]) == 0
    best = json.loads((work / "best.json").read_text())
    assert best["metric"] == "mean_average_precision" and 0 < best["value"] <= 1
    log = [json.loads(l) for l in (work / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r and np.isfinite(r["loss"]) for r in log)
    capsys.readouterr()
    out = tmp_path / "scores.json"
    assert main(["test", str(cfg), str(work / "latest.pth"), "--categories", str(tmp_path / "cats.json"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean_average_precision: " in printed and "mAP_colour: " in printed and "mAP_other: " in printed
    data = json.loads(out.read_text())
    assert data["labels"][2] == [1.0, 1.0, 0.0] and len(data["scores"]) == 12
