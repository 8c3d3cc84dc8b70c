"""Named presets: zoo values, layouts, overrides, start_index, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from omnisource.data.presets import Preset, get_preset, list_presets
from omnisource.data.sampling import DenseSampleFrames, SampleFrames
from omnisource.data.transforms import (CenterCrop, Flip, MultiScaleCrop, RandomCrop,
                                        RandomResizedCrop, Resize, TenCrop, ThreeCrop)
from omnisource.errors import ConfigError, DataError

REQUIRED = [f"{fam}_{mode}" for fam in ("tsn_1x1x3", "tsn_1x1x8", "slowonly_4x16x1",
                                        "slowonly_8x8x1") for mode in ("train", "val", "test")]
SMALL = dict(scale=40, crop_size=32)


def _frames(n: int, h: int = 30, w: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_required_presets_exist():
    names = list_presets()
    assert set(REQUIRED) <= set(names)
    assert names == sorted(names)
    assert list_presets("tsn_1x1x3_*") == ["tsn_1x1x3_test", "tsn_1x1x3_train", "tsn_1x1x3_val"]


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_produces_its_layout(name):
    p = get_preset(name, **SMALL)
    rng = np.random.default_rng(0)
    inds = p.sample(120, rng)
    assert len(inds) == p.frames_per_sample
    assert inds.min() >= 0 and inds.max() < 120
    assert p.test_mode == (not name.endswith("_train"))
    if p.layout == "audio":                   # spectrogram windows of the sampled video frames
        from omnisource.data.audio import AudioPreset

        x = p(np.random.default_rng(1).random((300, 80), dtype=np.float32), inds, 120)
        assert isinstance(p, AudioPreset) and x.shape == (p.num_clips, 1, p.fixed_length, 80)
        return
    assert isinstance(p, Preset) and p.name == name
    flow = p.spec.modality == "flow"
    frames = _frames(len(inds))
    if flow:                                  # optical flow: x / y channels
        frames = np.ascontiguousarray(frames[..., :2])
    x = p(frames, rng)
    assert x.dtype == torch.float32 and x.is_contiguous()
    size = p.input_size
    clips = len(inds) // p.clip_len
    if p.layout == "2d" and flow:             # each segment's frames stacked into channels
        assert x.shape == (clips * p.num_crops, 2 * p.clip_len, *size)
    elif p.layout == "2d":
        assert x.shape == (len(inds) * p.num_crops, 3, *size)
    else:
        assert x.shape == (p.num_crops * clips, 2 if flow else 3, p.clip_len, *size)
    assert p.test_mode == (not name.endswith("_train"))


def test_zoo_values_tsn_1x1x3():
    train = get_preset("tsn_1x1x3_train")
    assert train.layout == "2d" and (train.clip_len, train.num_clips) == (1, 3)
    s = train.sampler
    assert type(s) is SampleFrames and not s.test_mode and s.frame_interval == 1
    r0, msc, r1, flip = train.transforms
    assert isinstance(r0, Resize) and r0.scale == (-1, 256) and r0.keep_ratio
    assert isinstance(msc, MultiScaleCrop) and msc.scales == (1, 0.875, 0.75, 0.66)
    assert msc.input_size == (224, 224) and msc.max_wh_scale_gap == 1 and not msc.random_crop
    assert msc.num_fixed_crops == 5
    assert isinstance(r1, Resize) and r1.scale == (224, 224) and not r1.keep_ratio
    assert isinstance(flip, Flip) and flip.flip_ratio == 0.5 and flip.direction == "horizontal"
    val = get_preset("tsn_1x1x3_val")
    assert val.sampler.num_clips == 3 and val.sampler.test_mode and val.num_crops == 1
    assert isinstance(val.transforms[1], CenterCrop) and val.transforms[1].crop_size == (224, 224)
    test = get_preset("tsn_1x1x3_test")
    assert test.sampler.num_clips == 25 and test.num_crops == 10
    assert isinstance(test.transforms[1], TenCrop) and test.transforms[1].crop_size == (224, 224)
    assert test.input_size == (224, 224)
    assert get_preset("tsn_1x1x8_train").sampler.num_clips == 8
    assert get_preset("tsn_1x1x8_test").sampler.num_clips == 25


def test_zoo_values_slowonly():
    for fam, (t, i) in {"slowonly_4x16x1": (4, 16), "slowonly_8x8x1": (8, 8)}.items():
        train = get_preset(f"{fam}_train")
        assert train.layout == "3d" and (train.clip_len, train.sampler.frame_interval) == (t, i)
        assert train.sampler.num_clips == 1
        assert [type(x) for x in train.transforms] == [Resize, RandomResizedCrop, Resize, Flip]
        assert train.transforms[1].area_range == (0.08, 1.0)
        val = get_preset(f"{fam}_val")
        assert val.sampler.num_clips == 1 and isinstance(val.transforms[1], CenterCrop)
        test = get_preset(f"{fam}_test")
        assert test.sampler.num_clips == 10 and test.num_crops == 3
        assert isinstance(test.transforms[1], ThreeCrop) and test.transforms[1].crop_size == (256, 256)
    # other zoo specifics
    assert get_preset("tsm_1x1x8_train").transforms[1].num_fixed_crops == 13
    i3d = get_preset("i3d_32x2x1_train").transforms[1]
    assert i3d.scales == (1, 0.8) and i3d.max_wh_scale_gap == 0
    c3d = get_preset("c3d_16x1x1_train")
    assert isinstance(c3d.transforms[1], RandomCrop) and c3d.transforms[0].scale == (-1, 128)
    assert isinstance(get_preset("tsn_dense_1x1x5_train").sampler, DenseSampleFrames)
    c2d = get_preset("c2d_8x8x1_test")
    assert c2d.transforms[0].scale == (-1, 224) and c2d.transforms[1].crop_size == (224, 224)
    assert get_preset("c2d_8x8x1_val").transforms[0].scale == (-1, 256)


def test_omnisource_presets_use_v0_offsets():
    for name in ("tsn_1x1x8_omnisource_test", "slowonly_8x8x1_omnisource_val"):
        assert get_preset(name).sampler.test_offsets == "v0"
    assert get_preset("tsn_1x1x3_test").sampler.test_offsets == "v1"
    v0 = get_preset("slowonly_4x16x1_test", test_offsets="v0").sample(300)
    v1 = get_preset("slowonly_4x16x1_test").sample(300)
    assert v0[0] == 11 and v1[0] == 0
    assert get_preset("slowonly_8x8x1_omnisource_val").input_size == (256, 256)
    assert isinstance(get_preset("tsn_1x1x8_omnisource_train").transforms[1], RandomResizedCrop)


def test_overrides_shrink_and_reshape():
    p = get_preset("tsn_1x1x3_train", scale=64, crop_size=56, num_clips=2)
    x = p(_frames(2, 48, 80), np.random.default_rng(0))
    assert x.shape == (2, 3, 56, 56)
    p = get_preset("slowonly_4x16x1_test", scale=32, num_clips=2, clip_len=2, frame_interval=3)
    x = p(_frames(4, 24, 40), None)
    assert x.shape == (6, 3, 2, 32, 32)
    p = get_preset("tsn_1x1x3_val", msc_scales=[1, 0.5], mean=[0, 0, 0], std=[1, 1, 1])
    assert p.mean == (0, 0, 0)
    x = get_preset("tsn_1x1x3_val", scale=16, crop_size=16, mean=[0, 0, 0], std=[1, 1, 1])(
        np.full((3, 16, 16, 3), 7, np.uint8))
    assert torch.all(x == 7)
    x = get_preset("tsn_1x1x3_test", crop="center", **SMALL)(_frames(25))
    assert x.shape == (25, 3, 32, 32)


def test_unknown_names_and_keys_are_config_errors_with_hints():
    with pytest.raises(ConfigError, match="did you mean.*tsn_1x1x3_train"):
        get_preset("tsn_1x1x3_trian")
    with pytest.raises(ConfigError, match="did you mean 'crop_size'"):
        get_preset("tsn_1x1x3_train", crop_sise=56)
    with pytest.raises(ConfigError):
        get_preset("tsn_1x1x3_train", crop="ten")
    with pytest.raises(ConfigError):
        get_preset("tsn_1x1x3_test", test_offsets="v3")
    with pytest.raises(ConfigError):
        get_preset("tsn_1x1x3_test", std=[0, 1, 1])


def test_start_index_for_rawframes():
    p = get_preset("tsn_1x1x3_val")
    p1 = p.with_start_index(1)
    assert p1.start_index == 1 and p.start_index == 0 and p1.spec.start_index == 1
    assert (p1.sample(30) - p.sample(30)).tolist() == [1, 1, 1]
    assert get_preset("tsn_1x1x3_val", start_index=1).sample(30).tolist() == p1.sample(30).tolist()


def test_seeded_train_is_deterministic_and_random():
    p = get_preset("tsn_1x1x3_train", **SMALL)
    f = _frames(3)
    a = p(f, np.random.default_rng(5))
    b = p(f, np.random.default_rng(5))
    assert torch.equal(a, b)
    outs = {p(f, np.random.default_rng(s)).sum().item() for s in range(10)}
    assert len(outs) > 3


def test_test_presets_ignore_rng():
    p = get_preset("slowonly_8x8x1_test", **SMALL)
    f = _frames(80)
    assert torch.equal(p(f, np.random.default_rng(0)), p(f, np.random.default_rng(1)))


def test_3d_views_are_crop_major_then_clip():
    p = get_preset("slowonly_4x16x1_test", scale=20, num_clips=3, mean=[0, 0, 0],
                   std=[1, 1, 1])
    # clip c has constant value 10*(c+1); ThreeCrop does not mix clips
    f = np.concatenate([np.full((4, 20, 36, 3), 10 * (c + 1), np.uint8) for c in range(3)])
    x = p(f)
    assert x.shape == (9, 3, 4, 20, 20)
    values = x[:, 0, 0, 0, 0].tolist()
    assert values == [10, 20, 30] * 3
    # 2D TenCrop: crop-major over segments too
    p2 = get_preset("tsn_1x1x3_test", scale=20, crop_size=16, num_clips=2, mean=[0, 0, 0],
                    std=[1, 1, 1])
    f2 = np.stack([np.full((20, 30, 3), 50, np.uint8), np.full((20, 30, 3), 60, np.uint8)])
    assert p2(f2)[:, 0, 0, 0].tolist() == [50, 60] * 10


def test_single_image_becomes_a_pseudo_clip():
    p = get_preset("slowonly_8x8x1_train", **SMALL)
    x = p(_frames(1), np.random.default_rng(0))
    assert x.shape == (1, 3, 8, 32, 32)
    assert torch.equal(x[:, :, 0], x[:, :, 7])
    xt = get_preset("slowonly_8x8x1_test", **SMALL)(_frames(1))
    assert xt.shape == (3, 3, 8, 40, 40)


def test_bad_frames_are_data_errors():
    p = get_preset("slowonly_4x16x1_train", **SMALL)
    with pytest.raises(DataError):
        p(_frames(3))                       # not a whole number of 4-frame clips
    with pytest.raises(DataError):
        p(np.zeros((4, 10, 10), np.uint8))  # no channel axis


def test_describe_and_family_names():
    from omnisource.data.presets import describe, preset_names_for
    assert preset_names_for("slowonly_4x16x1") == ["slowonly_4x16x1_train", "slowonly_4x16x1_val",
                                                   "slowonly_4x16x1_test"]
    text = describe("slowonly_4x16x1_test")
    assert "ThreeCrop" in text and "num_clips=10" in text and text.endswith("3D")
