"""Optical-flow clips: mmaction2's x / y JPEG rawframes through the TSN and SlowOnly flow presets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omnisource.data.datasets import build_dataset
from omnisource.data.presets import get_preset
from omnisource.data.transforms import Flip

IMGS = Path(__file__).resolve().parents[2].parent / "shared/data/mmaction2/tests/data/imgs"
needs_data = pytest.mark.skipif(not (IMGS / "x_00001.jpg").is_file(), reason="shared/data not present")


@needs_data
@pytest.mark.parametrize("preset, shape", [("tsn_flow_5x1x3_train", (3, 10, 64, 64)),
                                           ("tsn_flow_5x1x3_val", (3, 10, 56, 56)),
                                           ("slowonly_flow_16x4x1_val", (2, 2, 16, 56, 56))])
def test_flow_rawframes_become_model_inputs(tmp_path, preset, shape):
    lst = tmp_path / "flow.txt"
    lst.write_text("imgs 5 0\n")                    # mmaction2's rawframe list: folder, frames, label
    ds = build_dataset(lst, IMGS.parent, preset, format="rawframes", test_mode=True,
                       scale=64, crop_size=64, test_crop_size=56)
    item = ds[0]
    x = item["inputs"]
    assert tuple(x.shape) == shape
    # mean = std = 128: values in [-1, 1); channels alternate x, y (both real flow, not constants)
    assert float(x.min()) >= -1.0 and float(x.max()) < 1.0
    assert torch.std(x[0, 0]) > 0 and torch.std(x[0, 1]) > 0


def test_tsn_flow_stacks_each_segments_frames_into_channels():
    frames = np.zeros((15, 8, 8, 2), dtype=np.uint8)
    for t in range(15):
        frames[t, ..., 0], frames[t, ..., 1] = 2 * t, 2 * t + 1        # x, y of frame t
    p = get_preset("tsn_flow_5x1x3_val", scale=8, crop_size=8, test_crop_size=8)
    x = p(frames, np.random.default_rng(0))
    assert tuple(x.shape) == (3, 10, 8, 8)
    expected = (np.arange(30).reshape(3, 10) - 128) / 128        # segment s: x0 y0 x1 y1 ... of its 5 frames
    assert np.allclose(x[:, :, 0, 0].numpy(), expected)


def test_a_flipped_flow_field_points_the_other_way():
    frames = np.zeros((1, 2, 3, 2), dtype=np.uint8)
    frames[0, :, :, 0] = [[10, 20, 30], [40, 50, 60]]
    frames[0, :, :, 1] = 7
    out = Flip(1.0, flow=True)(frames, np.random.default_rng(0))
    assert out[0, :, :, 0].tolist() == [[225, 235, 245], [195, 205, 215]]   # mirrored and inverted
    assert (out[0, :, :, 1] == 7).all()                                     # y untouched
    assert Flip(1.0)(frames, np.random.default_rng(0))[0, 0, 0, 0] == 30    # RGB flips only mirror
