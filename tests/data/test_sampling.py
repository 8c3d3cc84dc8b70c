"""Frame samplers: parity with mmaction2 1.2.0, a hand-checked table (v0 and v1), properties."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from omnisource.data.sampling import (DenseSampleFrames, EmptyVideoError, SampleFrames,
                                      UntrimmedClipSampler, UntrimmedSampleFrames)
from omnisource.errors import ConfigError, DataError

REF_PY = Path(os.environ.get("MMACTION2_REF_PYTHON",
                             Path.home() / ".cache/mmaction2-ref/bin/python"))

# ----------------------------------------------------------------------------- parity grid
TOTALS = [1, 2, 3, 4, 5, 7, 8, 15, 16, 31, 48, 64, 100, 257]
SAMPLE_GRID = [
    dict(clip_len=c, frame_interval=fi, num_clips=k, twice_sample=tw, out_of_bound_opt=oob,
         keep_tail_frames=kt, start_index=si)
    for c, fi, k, tw, oob, kt, si in itertools.product(
        [1, 2, 4, 8], [1, 2, 16], [1, 2, 3, 8, 10, 25], [False, True],
        ["loop", "repeat_last"], [False, True], [0, 1])
    # keep_tail_frames and start_index are cheap axes; thin them to keep the grid quick
    if not (kt and si)
]
DENSE_GRID = [
    dict(clip_len=c, frame_interval=fi, num_clips=k, sample_range=sr, num_sample_positions=p,
         out_of_bound_opt=oob, start_index=si)
    for c, fi, k, sr, p, oob, si in itertools.product(
        [1, 2, 8], [1, 4], [1, 5, 8], [8, 32, 64], [1, 3, 10], ["loop", "repeat_last"], [0, 1])
]
TRAIN_GRID = [
    dict(clip_len=c, frame_interval=fi, num_clips=k, keep_tail_frames=kt, out_of_bound_opt=oob)
    for c, fi, k, kt, oob in itertools.product([1, 4, 8], [1, 2, 8], [1, 3, 8], [False, True],
                                               ["loop", "repeat_last"])
]
UNTRIMMED_GRID = [dict(clip_len=c, clip_interval=ci, frame_interval=fi)
                  for c, ci, fi in itertools.product([1, 2, 3, 8], [1, 5, 16], [1, 2])]

_REF_SCRIPT = r"""
import json, sys
from mmaction.datasets.transforms.loading import (SampleFrames, DenseSampleFrames,
                                                  UntrimmedSampleFrames)
job = json.load(sys.stdin)
import numpy as np
out = {'sample': [], 'dense': [], 'untrimmed': [], 'train': []}
for cfg in job['train']:
    t = SampleFrames(**cfg)
    row = []
    for n in job['totals']:
        draws = []
        for seed in (0, 1, 2):
            np.random.seed(seed)
            draws.append(t.transform({'total_frames': n, 'start_index': 0})['frame_inds'].tolist())
        row.append(draws)
    out['train'].append(row)
for cfg in job['sample']:
    cfg = dict(cfg); si = cfg.pop('start_index')
    t = SampleFrames(test_mode=True, **cfg)
    row = []
    for n in job['totals']:
        try:
            row.append(t.transform({'total_frames': n, 'start_index': si})['frame_inds'].tolist())
        except ZeroDivisionError:
            row.append('ZeroDivisionError')
    out['sample'].append(row)
for cfg in job['dense']:
    cfg = dict(cfg); si = cfg.pop('start_index')
    t = DenseSampleFrames(test_mode=True, **cfg)
    out['dense'].append([t.transform({'total_frames': n, 'start_index': si})['frame_inds'].tolist()
                         for n in job['totals']])
for cfg in job['untrimmed']:
    t = UntrimmedSampleFrames(**cfg)
    row = []
    for n in job['totals']:
        try:
            row.append(t.transform({'total_frames': n, 'start_index': 0})['frame_inds'].tolist())
        except ValueError:  # no clip centre inside a very short video
            row.append('ValueError')
    out['untrimmed'].append(row)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mmaction2_indices() -> dict:
    if not REF_PY.exists():
        pytest.skip(f"mmaction2 reference venv not found at {REF_PY}")
    job = dict(totals=TOTALS, sample=SAMPLE_GRID, dense=DENSE_GRID, untrimmed=UNTRIMMED_GRID,
               train=TRAIN_GRID)
    proc = subprocess.run([str(REF_PY), "-c", _REF_SCRIPT], input=json.dumps(job),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"mmaction2 reference run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.mmaction2
def test_sampleframes_test_mode_matches_mmaction2_v1(mmaction2_indices):
    compared = 0
    zero_div = 0
    for cfg, row in zip(SAMPLE_GRID, mmaction2_indices["sample"]):
        ours = SampleFrames(test_mode=True, test_offsets="v1", **cfg)
        for n, ref in zip(TOTALS, row):
            got = ours(n)
            if ref == "ZeroDivisionError":
                # the one documented deviation: single 3D clip + twice_sample
                assert cfg["clip_len"] > 1 and cfg["num_clips"] == 1 and cfg["twice_sample"], cfg
                assert len(got) == 2 * cfg["clip_len"]
                zero_div += 1
                continue
            assert got.tolist() == ref, f"{cfg} total_frames={n}: ours {got.tolist()} ref {ref}"
            assert got.dtype == np.int64
            compared += 1
    assert compared > 10000 and zero_div > 0


@pytest.mark.mmaction2
def test_dense_and_untrimmed_match_mmaction2(mmaction2_indices):
    for cfg, row in zip(DENSE_GRID, mmaction2_indices["dense"]):
        ours = DenseSampleFrames(test_mode=True, **cfg)
        for n, ref in zip(TOTALS, row):
            assert ours(n).tolist() == ref, f"{cfg} total_frames={n}"
    for cfg, row in zip(UNTRIMMED_GRID, mmaction2_indices["untrimmed"]):
        ours = UntrimmedSampleFrames(**cfg)
        for n, ref in zip(TOTALS, row):
            if ref == "ValueError":  # documented deviation: one centred clip
                assert n <= cfg["clip_interval"] // 2
                assert ours.num_clips_for(n) == 1 and len(ours(n)) == cfg["clip_len"]
                continue
            assert ours(n).tolist() == ref, f"{cfg} total_frames={n}"
            assert ours.num_clips_for(n) * cfg["clip_len"] == len(ref)


@pytest.mark.mmaction2
def test_train_mode_matches_mmaction2_where_deterministic(mmaction2_indices):
    """Short videos take mmaction2's non-random train branches: indices must be identical.

    A case counts as deterministic when our sampler gives the same indices 20 times in a row; then
    every mmaction2 draw (3 numpy seeds) must equal them. Random cases must stay in bounds.
    """
    deterministic = random_cases = 0
    for cfg, row in zip(TRAIN_GRID, mmaction2_indices["train"]):
        s = SampleFrames(**cfg)
        for n, draws in zip(TOTALS, row):
            rng = np.random.default_rng(0)
            ours = {tuple(s(n, rng).tolist()) for _ in range(20)}
            if len(ours) == 1:
                assert all(tuple(d) == next(iter(ours)) for d in draws), f"{cfg} total_frames={n}"
                deterministic += 1
            else:
                assert all(0 <= i < n for o in ours for i in o)
                random_cases += 1
    assert deterministic > 100 and random_cases > 100


# ----------------------------------------------------------------------------- hand-checked
# Worked out by hand from the formulas (see the sampling module docstring), independent of
# any reference install: (kwargs, total_frames, expected indices).
HAND_TABLE = [
    # 2D, v1: avg=10/3 -> 1.67, 5, 8.33 -> truncated
    (dict(clip_len=1, num_clips=3), 10, [1, 5, 8]),
    (dict(clip_len=1, num_clips=3, start_index=1), 10, [2, 6, 9]),
    (dict(clip_len=1, num_clips=3, twice_sample=True), 10, [1, 5, 8, 0, 3, 6]),
    # 2D, v0 agrees with v1
    (dict(clip_len=1, num_clips=3, test_offsets="v0"), 10, [1, 5, 8]),
    (dict(clip_len=1, num_clips=3, twice_sample=True, test_offsets="v0"), 10, [1, 5, 8, 0, 3, 6]),
    # 1-frame video: every index is 0
    (dict(clip_len=1, num_clips=3), 1, [0, 0, 0]),
    (dict(clip_len=4, frame_interval=2, num_clips=2), 1, [0] * 8),
    # 3D, v1: window 49, max_offset 251, spacing 251/9, numpy rounding
    (dict(clip_len=4, frame_interval=16, num_clips=10), 300,
     [o + 16 * j for o in [0, 28, 56, 84, 112, 139, 167, 195, 223, 251] for j in range(4)]),
    # 3D, v0: window 64, avg 23.7, centres int(i*23.7 + 11.85)
    (dict(clip_len=4, frame_interval=16, num_clips=10, test_offsets="v0"), 300,
     [o + 16 * j for o in [11, 35, 59, 82, 106, 130, 154, 177, 201, 225] for j in range(4)]),
    # single 3D clip: v1 centres max_offset (100-57=43)//2 = 21, v0 int(37/2) = 18
    (dict(clip_len=8, frame_interval=8), 100, [21 + 8 * j for j in range(8)]),
    (dict(clip_len=8, frame_interval=8, test_offsets="v0"), 100, [18 + 8 * j for j in range(8)]),
    # video shorter than the window: loop vs repeat_last
    (dict(clip_len=4, frame_interval=2), 5, [0, 2, 4, 1]),
    (dict(clip_len=4, frame_interval=2, out_of_bound_opt="repeat_last"), 5, [0, 2, 4, 4]),
    (dict(clip_len=4, frame_interval=2, test_offsets="v0"), 5, [0, 2, 4, 1]),
    # v1 3D twice_sample: spacing 8 continues past the end (16, 24) and is folded back
    (dict(clip_len=2, num_clips=2, twice_sample=True), 10, [0, 1, 8, 9, 6, 7, 4, 5]),
    (dict(clip_len=2, num_clips=2, twice_sample=True, out_of_bound_opt="repeat_last"), 10,
     [0, 1, 8, 9, 0, 0, 0, 0]),
    # our deviation: single 3D clip + twice_sample -> centred clip, then the clip at 0
    (dict(clip_len=4, frame_interval=16, twice_sample=True), 100,
     [25, 41, 57, 73, 0, 16, 32, 48]),
    # v0 short video with twice_sample: 0.x's _get_test_clips returns num_clips zero offsets
    (dict(clip_len=4, frame_interval=2, num_clips=2, twice_sample=True, test_offsets="v0"), 5,
     [0, 2, 4, 1] * 2),
]


@pytest.mark.parametrize("kwargs,total,expected", HAND_TABLE)
def test_hand_checked_test_indices(kwargs, total, expected):
    got = SampleFrames(test_mode=True, **kwargs)(total)
    assert got.tolist() == expected
    assert got.dtype == np.int64


def test_hand_checked_dense():
    # sample_position 37, interval 64//5 = 12, starts linspace(0, 36, 10)
    got = DenseSampleFrames(1, 1, 5, test_mode=True)(100).reshape(10, 5)
    assert got[0].tolist() == [0, 12, 24, 36, 48]
    assert got[:, 0].tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    # short video: one start, offsets wrap modulo N
    short = DenseSampleFrames(1, 1, 5, test_mode=True)(30).reshape(10, 5)
    assert (short == np.array([0, 12, 24, 6, 18])).all()
    # train: window start in [0, 37 - 1), clips 12 apart
    rng = np.random.default_rng(0)
    for _ in range(50):
        inds = DenseSampleFrames(1, 1, 5)(100, rng)
        assert np.all(np.diff(inds) == 12) and 0 <= inds[0] < 36


def test_hand_checked_untrimmed():
    # centres 8, 24, 40; clip_len 3 with stride 2 -> centre-2, centre, centre+2; clipped to 49
    assert UntrimmedSampleFrames(3, 16, 2)(50).tolist() == [6, 8, 10, 22, 24, 26, 38, 40, 42]
    assert UntrimmedSampleFrames(2, 16, 1)(9).tolist() == [7, 8]
    # shorter than half an interval: one clip centred at N // 2 (mmaction2 crashes here)
    assert UntrimmedSampleFrames(3, 16, 1)(5).tolist() == [1, 2, 3]


def test_train_deterministic_branches():
    # N=5 < num_clips=8: avg == 0 -> around(arange(8) * 5/8), numpy's half-to-even
    got = SampleFrames(1, 1, 8)(5, np.random.default_rng(0))
    assert got.tolist() == [0, 1, 1, 2, 2, 3, 4, 4]
    # video shorter than one clip window: all clips start at 0 and loop
    got = SampleFrames(4, 4, 2)(6, np.random.default_rng(0))
    assert got.tolist() == [0, 4, 2, 0] * 2


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("test_mode", [False, True])
@pytest.mark.parametrize("clip_len,interval,clips", [(1, 1, 3), (1, 1, 8), (4, 16, 1),
                                                     (8, 8, 1), (8, 8, 10), (32, 2, 3)])
@pytest.mark.parametrize("total", [1, 2, 9, 40, 300])
@pytest.mark.parametrize("offsets", ["v0", "v1"])
def test_counts_and_bounds(test_mode, clip_len, interval, clips, total, offsets):
    rng = np.random.default_rng(1)
    for start in (0, 1):
        for oob in ("loop", "repeat_last"):
            s = SampleFrames(clip_len, interval, clips, test_mode=test_mode, start_index=start,
                             out_of_bound_opt=oob, test_offsets=offsets)
            inds = s(total, rng)
            assert inds.shape == (clips * clip_len,) == (s.frames_per_sample,)
            assert inds.min() >= start and inds.max() < start + total


def test_test_mode_is_deterministic_and_ignores_rng():
    s = SampleFrames(8, 8, 10, test_mode=True)
    a = s(250, np.random.default_rng(0))
    b = s(250, np.random.default_rng(123))
    c = s(250)
    assert a.tolist() == b.tolist() == c.tolist()


def test_clips_are_sorted_and_within_clip_stride_in_bounds():
    s = SampleFrames(4, 16, 10, test_mode=True)
    clips = s(640).reshape(10, 4)
    assert np.all(np.diff(clips, axis=1) == 16)
    assert np.all(np.diff(clips[:, 0]) > 0)


def test_loop_vs_repeat_last():
    loop = SampleFrames(8, 4, 1, test_mode=True)(10).tolist()
    rep = SampleFrames(8, 4, 1, test_mode=True, out_of_bound_opt="repeat_last")(10).tolist()
    assert loop == [0, 4, 8, 2, 6, 0, 4, 8]
    assert rep == [0, 4, 8, 8, 8, 8, 8, 8]


def test_seeded_train_is_reproducible_and_varies():
    s = SampleFrames(1, 1, 8)
    a = s(300, np.random.default_rng(7))
    b = s(300, np.random.default_rng(7))
    assert a.tolist() == b.tolist()
    draws = {tuple(s(300, np.random.default_rng(seed))) for seed in range(20)}
    assert len(draws) > 15
    # train offsets do not depend on the test-offset generation
    v0 = SampleFrames(4, 2, 3, test_offsets="v0")(100, np.random.default_rng(3))
    v1 = SampleFrames(4, 2, 3, test_offsets="v1")(100, np.random.default_rng(3))
    assert v0.tolist() == v1.tolist()


def test_train_distribution_tsn_segments():
    # 3 segments of 10 frames: each index uniform over its own segment
    s = SampleFrames(1, 1, 3)
    rng = np.random.default_rng(0)
    draws = np.stack([s(30, rng) for _ in range(3000)])
    for seg in range(3):
        col = draws[:, seg]
        assert col.min() == 10 * seg and col.max() == 10 * seg + 9
        counts = np.bincount(col - 10 * seg, minlength=10)
        assert counts.min() > 200  # expected 300 each
        assert abs(col.mean() - (10 * seg + 4.5)) < 0.3


def test_keep_tail_frames_reaches_the_tail():
    rng = np.random.default_rng(0)
    plain = np.stack([SampleFrames(1, 1, 3)(10, rng) for _ in range(500)])
    tail = np.stack([SampleFrames(1, 1, 3, keep_tail_frames=True)(10, rng) for _ in range(500)])
    assert plain.max() == 8          # segments of 3 frames: frame 9 is never drawn
    assert tail.max() == 9           # float segments of 3.33 frames reach the last frame


def test_sorted_random_branch():
    # avg = (10-4+1)//8 == 0 and N > max(8, 4): sorted uniform starts in [0, 6]
    rng = np.random.default_rng(0)
    for _ in range(50):
        starts = SampleFrames(4, 1, 8)(10, rng).reshape(8, 4)[:, 0]
        assert np.all(np.diff(starts) >= 0) and starts.max() <= 6


def test_twice_sample_only_in_test_mode():
    assert len(SampleFrames(1, 1, 8, twice_sample=True)(100, np.random.default_rng(0))) == 8
    s = SampleFrames(1, 1, 8, twice_sample=True, test_mode=True)
    assert len(s(100)) == s.frames_per_sample == 16


def test_with_start_index_copies():
    s = SampleFrames(1, 1, 3, test_mode=True)
    s1 = s.with_start_index(1)
    assert (s1(10) - s(10)).tolist() == [1, 1, 1]
    assert s.start_index == 0
    d = DenseSampleFrames(2, 1, 2, test_mode=True, num_sample_positions=2).with_start_index(1)
    assert isinstance(d, DenseSampleFrames) and d(50).min() >= 1


@pytest.mark.parametrize("bad", [0, -3, None, 2.5])
def test_empty_or_bad_total_frames_is_a_clear_data_error(bad):
    with pytest.raises(EmptyVideoError) as err:
        SampleFrames(1, 1, 3, test_mode=True)(bad)
    assert isinstance(err.value, DataError)
    assert "total_frames" in str(err.value)
    with pytest.raises(DataError):
        DenseSampleFrames(1, 1, 3)(bad)


@pytest.mark.parametrize("kwargs", [dict(clip_len=0), dict(clip_len=1, num_clips=0),
                                    dict(clip_len=1, frame_interval=-1),
                                    dict(clip_len=1, out_of_bound_opt="wrap"),
                                    dict(clip_len=1, test_offsets="v2"),
                                    dict(clip_len=1, start_index=-1)])
def test_bad_config_is_config_error(kwargs):
    with pytest.raises(ConfigError):
        SampleFrames(**kwargs)


def test_untrimmed_clip_sampler():
    pos = UntrimmedClipSampler("positive")
    rng = np.random.default_rng(0)
    picks = {pos.choose(10, [2, 5], rng) for _ in range(100)}
    assert picks == {2, 5}
    assert not pos.keeps(4, [])
    with pytest.raises(ConfigError):
        pos.choose(4, [], rng)
    with pytest.raises(ConfigError):
        pos.choose(4, [7], rng)
    rnd = UntrimmedClipSampler("random")
    assert {rnd.choose(3, None, rng) for _ in range(100)} == {0, 1, 2}
    assert rnd.keeps(3, [])
    assert pos.clip_path("raw/abc", 3) == "raw/abc/part_3.mp4"
    assert UntrimmedClipSampler("random", "_{}.mp4").clip_path("raw/abc", 3) == "raw/abc_3.mp4"
    a = UntrimmedClipSampler("random").choose(100, None, np.random.default_rng(5))
    b = UntrimmedClipSampler("random").choose(100, None, np.random.default_rng(5))
    assert a == b
    with pytest.raises(ConfigError):
        UntrimmedClipSampler("best")
