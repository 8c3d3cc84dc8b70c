"""uint8 transforms: exact parity with mmaction2 1.2.0 where deterministic, plus properties."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from omnisource.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Flip,
                                        MultiScaleCrop, RandomCrop, RandomResizedCrop, Resize,
                                        TenCrop, ThreeCrop, check_frames, to_model_input)
from omnisource.errors import ConfigError, DataError

REF_PY = Path(os.environ.get("MMACTION2_REF_PYTHON",
                             Path.home() / ".cache/mmaction2-ref/bin/python"))


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random frames: structure makes resize/crop mistakes visible."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, h // 3 + 1, w // 3 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(base, 3, axis=1), 3, axis=2)[:, :h, :w]
    noise = rng.integers(0, 30, big.shape, dtype=np.uint8)
    return np.ascontiguousarray(big // 2 + noise)


# ----------------------------------------------------------------------------- reference run
# (name, input shape, list of mmaction2 transform dicts, extra results keys)
RESIZES = [("(-1,64)", (-1, 64), True), ("0.5", 0.5, True), ("(40,30)fixed", (40, 30), False),
           ("(100,50)within", (100, 50), True), ("(-1,45)same", (-1, 45), True)]
SHAPES = [(3, 45, 77), (2, 77, 45), (2, 64, 64)]

_REF_SCRIPT = r"""
import json, sys
import numpy as np, torch
from mmaction.datasets.transforms.processing import (Resize, CenterCrop, ThreeCrop, TenCrop,
                                                     MultiScaleCrop)
from mmaction.datasets.transforms.formatting import FormatShape
import importlib.util, mmaction
# load the data preprocessor module alone: importing mmaction.models pulls in every model
_spec = importlib.util.spec_from_file_location(
    '_adp', mmaction.__path__[0] + '/models/data_preprocessors/data_preprocessor.py')
_adp = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(_adp)
ActionDataPreprocessor = _adp.ActionDataPreprocessor
job = json.loads(sys.stdin.read())
inp = np.load(job['inputs'])
out = {}
def res(frames, **kw):
    d = dict(imgs=list(frames), img_shape=frames.shape[1:3], modality='RGB')
    d.update(kw)
    return d
def run(ts, frames, **kw):
    r = res(frames, **kw)
    for t in ts:
        r = t.transform(r)
    return r
for si, key in enumerate(job['shapes']):
    frames = inp[key]
    for name, scale, keep in job['resizes']:
        scale = tuple(scale) if isinstance(scale, list) else scale
        out[f'{key}/resize/{name}'] = np.stack(run([Resize(scale, keep_ratio=keep)], frames)['imgs'])
    r = run([Resize((-1, 64))], frames)
    small = np.stack(r['imgs'])
    out[f'{key}/center32'] = np.stack(run([CenterCrop(32)], small)['imgs'])
    out[f'{key}/center40x30'] = np.stack(run([CenterCrop((40, 30))], small)['imgs'])
    out[f'{key}/three64'] = np.stack(run([ThreeCrop(64)], small)['imgs'])
    out[f'{key}/ten32'] = np.stack(run([TenCrop(32)], small)['imgs'])
    out[f'{key}/ten40x30'] = np.stack(run([TenCrop((40, 30))], small)['imgs'])
# full test pipelines incl. FormatShape + data preprocessor normalisation
pre2d = ActionDataPreprocessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               format_shape='NCHW')
pre3d = ActionDataPreprocessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               format_shape='NCTHW')
clip3d = inp['clip3d']  # 2 clips x 4 frames
r = run([Resize((-1, 64)), ThreeCrop(64), FormatShape('NCTHW')], clip3d, num_clips=2, clip_len=4)
x, _ = pre3d.preprocess([torch.from_numpy(r['imgs'])], None)
out['pipe3d'] = x[0].numpy()
clip2d = inp['clip2d']  # 2 segments
r = run([Resize((-1, 64)), TenCrop(56), FormatShape('NCHW')], clip2d, num_clips=2, clip_len=1)
x, _ = pre2d.preprocess([torch.from_numpy(r['imgs'])], None)
out['pipe2d'] = x[0].numpy()
# MultiScaleCrop: every box mmaction2 draws (seeded python random) for two configs
import random
random.seed(0)
for name, kw in job['msc'].items():
    boxes = set()
    for _ in range(1500):
        rr = MultiScaleCrop(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
                            ).transform(res(inp['msc'][:1]))
        boxes.add(tuple(int(v) for v in rr['crop_bbox']))
    out[f'msc/{name}'] = np.array(sorted(boxes))
np.savez(job['output'], **out)
print('ok')
"""

MSC_CONFIGS = {
    "tsn": dict(input_size=224, scales=[1, 0.875, 0.75, 0.66], max_wh_scale_gap=1),
    "tsm13": dict(input_size=224, scales=[1, 0.875, 0.75, 0.66], max_wh_scale_gap=1,
                  num_fixed_crops=13),
    "i3d": dict(input_size=224, scales=[1, 0.8], max_wh_scale_gap=0),
}


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> dict:
    if not REF_PY.exists():
        pytest.skip(f"mmaction2 reference venv not found at {REF_PY}")
    tmp = tmp_path_factory.mktemp("mmaction2_transforms")
    inputs = {f"{n}x{h}x{w}": _frames(n, h, w, seed=i) for i, (n, h, w) in enumerate(SHAPES)}
    inputs["clip3d"] = _frames(8, 40, 70, seed=11)
    inputs["clip2d"] = _frames(2, 70, 40, seed=12)
    inputs["msc"] = _frames(1, 256, 340, seed=13)
    np.savez(tmp / "inputs.npz", **inputs)
    job = dict(inputs=str(tmp / "inputs.npz"), output=str(tmp / "out.npz"),
               shapes=[f"{n}x{h}x{w}" for n, h, w in SHAPES],
               resizes=[[name, scale, keep] for name, scale, keep in RESIZES], msc=MSC_CONFIGS)
    proc = subprocess.run([str(REF_PY), "-c", _REF_SCRIPT], input=json.dumps(job),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"mmaction2 reference run failed:\n{proc.stderr[-3000:]}")
    with np.load(tmp / "out.npz") as out:
        result = {k: out[k] for k in out.files}
    result["_inputs"] = inputs
    return result


RNG = np.random.default_rng(0)


@pytest.mark.mmaction2
@pytest.mark.parametrize("n,h,w", SHAPES)
def test_resize_matches_mmaction2(ref, n, h, w):
    key = f"{n}x{h}x{w}"
    frames = ref["_inputs"][key]
    for name, scale, keep in RESIZES:
        ours = Resize(scale, keep_ratio=keep)(frames, RNG)
        theirs = ref[f"{key}/resize/{name}"]
        assert ours.shape == theirs.shape, name
        # same OpenCV bilinear kernel and mmcv's size rounding: identical pixels
        np.testing.assert_array_equal(ours, theirs, err_msg=name)


@pytest.mark.mmaction2
@pytest.mark.parametrize("n,h,w", SHAPES)
def test_crops_match_mmaction2_exactly(ref, n, h, w):
    key = f"{n}x{h}x{w}"
    small = ref[f"{key}/resize/(-1,64)"]  # crop mmaction2's own resized frames
    cases = {"center32": CenterCrop(32), "center40x30": CenterCrop((40, 30)),
             "three64": ThreeCrop(64), "ten32": TenCrop(32), "ten40x30": TenCrop((40, 30))}
    for name, t in cases.items():
        ours = t(small, RNG)
        np.testing.assert_array_equal(ours, ref[f"{key}/{name}"], err_msg=name)


@pytest.mark.mmaction2
def test_full_test_pipelines_match_mmaction2(ref):
    from omnisource.data.presets import get_preset
    clip3d = ref["_inputs"]["clip3d"]
    p3 = get_preset("slowonly_4x16x1_test", scale=64, num_clips=2)
    ours3 = p3(clip3d, RNG).numpy()
    assert ours3.shape == ref["pipe3d"].shape == (6, 3, 4, 64, 64)
    np.testing.assert_array_equal(ours3, ref["pipe3d"])  # bit-exact float32
    clip2d = ref["_inputs"]["clip2d"]
    p2 = get_preset("tsn_1x1x3_test", scale=64, crop_size=56, num_clips=2)
    ours2 = p2(clip2d, RNG).numpy()
    assert ours2.shape == ref["pipe2d"].shape == (20, 3, 56, 56)
    np.testing.assert_array_equal(ours2, ref["pipe2d"])


@pytest.mark.mmaction2
@pytest.mark.parametrize("name", list(MSC_CONFIGS))
def test_multiscale_crop_boxes_match_mmaction2(ref, name):
    kw = dict(MSC_CONFIGS[name])
    t = MultiScaleCrop(kw.pop("input_size"), tuple(kw.pop("scales")), **kw)
    h, w = 256, 340
    ours = set()
    for cw, ch in t.candidate_sizes(h, w):
        for x, y in t.fixed_offsets(h, w, cw, ch):
            ours.add((x, y, x + cw, y + ch))
    theirs = {tuple(b) for b in ref[f"msc/{name}"].tolist()}
    assert theirs == ours


# ----------------------------------------------------------------------------- properties
def test_resize_sizes_follow_mmcv_rounding():
    r = Resize((-1, 256))
    assert r.output_size(240, 320) == (256, 341)      # 320 * 256/240 = 341.33
    assert r.output_size(360, 640) == (256, 455)      # 455.1
    assert r.output_size(480, 270) == (455, 256)      # portrait: short side is the width
    assert r.output_size(100, 150) == (256, 384)
    assert Resize(0.5).output_size(45, 77) == (23, 39)  # int(22.5 + .5), int(38.5 + .5)
    assert Resize((224, 224), keep_ratio=False).output_size(50, 90) == (224, 224)
    assert Resize((40, 30), keep_ratio=False).output_size(50, 90) == (30, 40)  # (w, h)
    assert Resize(256).output_size(240, 320) == (256, 341)  # int = short side


def test_resize_identity_and_dtype():
    f = _frames(2, 64, 80)
    assert Resize((-1, 64))(f, RNG) is f
    out = Resize((-1, 32))(f, RNG)
    assert out.dtype == np.uint8 and out.shape == (2, 32, 40, 3)
    # every frame resized independently
    np.testing.assert_array_equal(Resize((-1, 32))(f[1:], RNG)[0], out[1])


def test_center_three_ten_crop_geometry_and_order():
    f = np.zeros((2, 64, 100, 3), np.uint8)
    f[..., 0] = np.arange(100, dtype=np.uint8)[None, None, :]      # red = x
    f[..., 1] = np.arange(64, dtype=np.uint8)[None, :, None]       # green = y
    c = CenterCrop(32)(f, RNG)
    assert c.shape == (2, 32, 32, 3) and c[0, 0, 0, 0] == 34 and c[0, 0, 0, 1] == 16
    t = ThreeCrop(64)(f, RNG)
    assert t.shape == (6, 64, 64, 3)
    assert [int(t[i * 2, 0, 0, 0]) for i in range(3)] == [0, 36, 18]   # left, right, middle
    ten = TenCrop(32)(f, RNG)
    assert ten.shape == (20, 32, 32, 3)
    firsts = [(int(ten[2 * k, 0, 0, 0]), int(ten[2 * k, 0, 0, 1])) for k in range(10)]
    # corners/centre (x, y) on a step of (68//4, 32//4) = (17, 8); odd views are flips
    assert firsts[0::2] == [(0, 0), (68, 0), (0, 32), (68, 32), (34, 16)]
    assert [x for x, _ in firsts[1::2]] == [31, 99, 31, 99, 65]
    portrait = ThreeCrop(64)(np.ascontiguousarray(f.transpose(0, 2, 1, 3)), RNG)
    # after the transpose the red channel holds the row (y) coordinate
    assert [int(portrait[i * 2, 0, 0, 0]) for i in range(3)] == [0, 36, 18]


def test_fixed_crops_reject_too_small_frames():
    f = np.zeros((1, 20, 30, 3), np.uint8)
    for t in (CenterCrop(32), TenCrop(32), ThreeCrop(25)):
        with pytest.raises(DataError):
            t(f, RNG)


def test_random_crops_one_decision_for_all_frames():
    f = np.broadcast_to(_frames(1, 60, 90), (6, 60, 90, 3)).copy()
    for t in (RandomResizedCrop(), MultiScaleCrop(48, (1, .875, .75, .66)), RandomCrop(40),
              Flip(0.5)):
        for seed in range(10):
            out = t(f, np.random.default_rng(seed))
            assert all(np.array_equal(out[0], out[i]) for i in range(1, 6))


def test_random_resized_crop_ranges_and_determinism():
    t = RandomResizedCrop()
    rng = np.random.default_rng(0)
    h, w = 256, 340
    areas, ratios = [], []
    for _ in range(400):
        x, y, cw, ch = t.crop_box(h, w, rng)
        assert 0 <= x <= w - cw and 0 <= y <= h - ch
        areas.append(cw * ch / (h * w))
        ratios.append(cw / ch)
    assert 0.07 < min(areas) and max(areas) <= 1.0 and np.mean(areas) > 0.3
    assert min(ratios) > 0.7 and max(ratios) < 1.4
    a = t.crop_box(h, w, np.random.default_rng(3))
    assert a == t.crop_box(h, w, np.random.default_rng(3))
    # nothing fits a 1 x 100 strip except via the centred-square fallback
    assert RandomResizedCrop((0.9, 1.0), (1.0, 1.0)).crop_box(4, 100, rng) == (48, 0, 4, 4)


def test_multiscale_crop_candidates():
    t = MultiScaleCrop(224, (1, 0.875, 0.75, 0.66))
    sizes = t.candidate_sizes(256, 340)
    # sides 256, 224, 192, 168; |i-j| <= 1 -> 10 pairs; 224 is snapped exactly
    assert len(sizes) == 10 and (256, 256) in sizes and (224, 192) in sizes
    assert all(abs(cw - ch) <= 32 for cw, ch in sizes)
    offs = t.fixed_offsets(256, 340, 224, 224)
    assert offs == [(0, 0), (116, 0), (0, 32), (116, 32), (58, 16)]
    assert len(MultiScaleCrop(224, num_fixed_crops=13).fixed_offsets(256, 340, 224, 224)) == 13
    rng = np.random.default_rng(0)
    seen = {t.crop_box(256, 340, rng) for _ in range(400)}
    assert len(seen) > 30


def test_random_crop_never_takes_last_offset_like_mmaction2():
    t = RandomCrop(8)
    rng = np.random.default_rng(0)
    f = np.zeros((1, 10, 10, 3), np.uint8)
    f[..., 0] = np.arange(10, dtype=np.uint8)
    xs = {int(t(f, rng)[0, 0, 0, 0]) for _ in range(200)}
    assert xs == {0, 1}  # offsets 0..1, never 2 (np.random.randint(0, 10 - 8))


def test_flip():
    f = _frames(3, 8, 10)
    always = Flip(1.0)(f, RNG)
    np.testing.assert_array_equal(always, f[:, :, ::-1])
    assert Flip(0.0)(f, RNG) is f
    np.testing.assert_array_equal(Flip(1.0, "vertical")(f, RNG), f[:, ::-1])
    flips = [Flip(0.5)(f, np.random.default_rng(s)) is not f for s in range(200)]
    assert 60 < sum(flips) < 140


def test_to_model_input_layouts_and_values():
    f = _frames(12, 6, 5)
    x2 = to_model_input(f, "2d", 1)
    assert x2.shape == (12, 3, 6, 5) and x2.dtype == torch.float32 and x2.is_contiguous()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = (torch.from_numpy(f).permute(0, 3, 1, 2).float() - mean) / std
    assert torch.equal(x2, ref)
    x3 = to_model_input(f, "3d", 4)
    assert x3.shape == (3, 3, 4, 6, 5)
    # view 1, channel 2, frame 3 is input frame 1*4 + 3
    expect = (torch.from_numpy(f[7, :, :, 2]).float() - IMAGENET_MEAN[2]) / IMAGENET_STD[2]
    assert torch.equal(x3[1, 2, 3], expect)
    # negative strides (flip) are fine
    assert torch.equal(to_model_input(f[:, :, ::-1], "2d", 1), x2.flip(-1))
    ro = f.copy()
    ro.flags.writeable = False
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(to_model_input(ro, "2d", 1), x2)  # read-only input, no warning
    with pytest.raises(DataError):
        to_model_input(f[:10], "3d", 4)
    with pytest.raises(ConfigError):
        to_model_input(f, "4d", 1)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        Resize("big")
    with pytest.raises(ConfigError):
        Resize((0, 10), keep_ratio=False)
    with pytest.raises(ConfigError):
        MultiScaleCrop(224, num_fixed_crops=7)
    with pytest.raises(ConfigError):
        RandomResizedCrop(area_range=(0.5, 2.0))
    with pytest.raises(ConfigError):
        Flip(1.5)
    with pytest.raises(ConfigError):
        CenterCrop(0)
    for bad in (np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4, 3), np.float32),
                np.zeros((0, 4, 4, 3), np.uint8), [[1]]):
        with pytest.raises(DataError):
            check_frames(bad)
