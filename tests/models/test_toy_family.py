"""Adding a family needs nothing outside its own file: a toy family registered here, in the test
file, runs through create_model, load_checkpoint, `omnisource train` and `omnisource test`.

This file is also the example of docs/models.md ("Adding a family")."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from omnisource.cli import main
from omnisource.models import (Family, ModelPreset, create_model, list_families, list_models, load_checkpoint,
                               preset_module, register_family, register_presets)
from omnisource.models.heads import TSNHead
from omnisource.models.recognizers import Recognizer2D
from omnisource.utils.video_writer import write_video


# --- the family: its block, its builder, its registration, its table --------------------------
class ToyBackbone(nn.Module):
    """Two strided convolutions: the smallest 2D backbone that still sees its input."""

    def __init__(self, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.feat_dim = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    width = int(opts.pop("width", 8))
    backbone = ToyBackbone(int(opts.pop("in_channels", 3)), width)
    head = TSNHead(num_classes, backbone.feat_dim, dropout=float(opts.pop("dropout", preset.dropout)))
    return Recognizer2D(backbone, head, meta)


if "toy" not in list_families():   # one registration per process (xdist workers import once)
    register_family(Family(name="toy", layout="2d", build=_build, overrides=frozenset({"width"}),
                           tiny={"width": 4}, doc="a test's toy family"))
    register_presets([ModelPreset(
        name="toy_1x1x3_demo_rgb", family="toy", num_classes=2, dataset="toy", clip_len=1, frame_interval=1,
        num_clips=3, epochs=1, train_preset="tsn_1x1x3_train", test_preset="tsn_1x1x3_test",
        mmaction2_configs=("toy_8xb1-1x1x3-1e_toy-rgb",), input_size=24, dropout=0.0, recipe=False)])


# --- through the whole tool -------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    (root / "videos").mkdir()
    rows = []
    for i in range(4):
        colour = np.array((220, 30, 30) if i % 2 else (30, 30, 220), np.int16)
        rng = np.random.default_rng(i)
        write_video(root / "videos" / f"v{i}.mp4",
                    (np.clip(colour + rng.integers(-20, 20, (32, 40, 3)), 0, 255).astype(np.uint8) for _ in range(10)),
                    codec="mpeg4", fps=8)
        rows.append(f"v{i}.mp4 {i % 2}")
    (root / "list.txt").write_text("\n".join(rows) + "\n")
    split = (f"    ann_file: {root / 'list.txt'}\n    data_root: {root / 'videos'}\n"
             "    preset: tsn_1x1x3_{mode}\n    overrides: {{scale: 28, crop_size: 24}}\n")
    cfg = root / "toy.yaml"
    cfg.write_text("model:\n  name: toy_8xb1-1x1x3-1e_toy-rgb\n  num_classes: 2\n  overrides: {width: 4}\n"
                   "data:\n  train:\n" + split.format(mode="train") + "  test:\n" + split.format(mode="test")
                   + "  batch_size: 2\n  num_workers: 0\n"
                   "schedule:\n  epochs: 1\n  steps: [1]\ntrain:\n  tensorboard: false\n  plot_curves: false\n")
    return root, cfg


def test_a_family_registered_in_one_file_works_everywhere(project, tmp_path, capsys):
    root, cfg = project
    assert "toy_1x1x3_demo_rgb" in list_models(family="toy")
    assert preset_module("toy_8xb1-1x1x3-1e_toy-rgb") == __name__       # the registry knows who defined it
    model = create_model("toy_1x1x3_demo_rgb", width=4)
    assert model.meta["family"] == "toy" and model.num_classes == 2
    torch.save({"state_dict": model.state_dict()}, tmp_path / "toy.pth")
    other = create_model("toy_1x1x3_demo_rgb", width=4)
    load_checkpoint(other, tmp_path / "toy.pth")
    x = torch.randn(2, 3, 3, 24, 24)
    torch.testing.assert_close(model.eval()(x), other.eval()(x))
    with pytest.raises(Exception, match="did you mean 'width'"):
        create_model("toy_1x1x3_demo_rgb", widht=4)
    work = tmp_path / "work"
    assert main(["train", str(cfg), "--work-dir", str(work), "--no-validate"]) == 0
    assert (work / "latest.pth").is_file()
    capsys.readouterr()
    assert main(["test", str(cfg), str(work / "latest.pth")]) == 0
    out = capsys.readouterr().out
    assert "top1_acc:" in out and "top5_acc: n/a (5 >= 2 classes)" in out
