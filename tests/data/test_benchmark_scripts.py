"""The data benchmarks run end to end on a generated video and record what they claim to measure.

Nothing here times anything against a goal (speed goals live in ``benchmarks/``); the point is
that a refactor of the reader cannot silently break the scripts or their instrumentation -- e.g.
the decode-only measurement counts the CPU spent in FFmpeg's decoder calls by hooking the
reader's packet/drain methods, and would report 0 ms if those hooks stopped being called.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from omnisource.data.annotations import DuplicateEntryWarning
from omnisource.utils.video_writer import write_video

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _video(path: Path, n: int = 80) -> Path:
    rng = np.random.default_rng(0)
    return write_video(path, (rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(n)),
                       options={"preset": "ultrafast", "bf": "2"}, gop_size=20)


def test_data_pipeline_benchmark_reports_its_split_and_decoder_share(tmp_path, capsys):
    bench = _load("data_pipeline")
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "numbers.json"
    rc = bench.main(["--videos", str(video), "--presets", "tsn_1x1x3_train", "--clips", "4",
                     "--rounds", "1", "--workers", "0", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())["ours"]["tsn_1x1x3_train"]
    assert res["split"]["clips_per_s"] > 0
    only = res["decode_only"]
    assert 0 < only["decoder_ms"] <= only["cpu_ms"] and only["cold_cpu_ms"] > 0
    assert res["loader"]["0"]["clips"] >= 4
    text = capsys.readouterr().out
    assert "decode only, same frames, one thread" in text and "in FFmpeg's decoder" in text


def test_data_pipeline_per_video_table_names_each_files_frame_mix(tmp_path, capsys):
    # --per-video: decode-only CPU per file (the decoder share measured by the same hooks) and
    # the file's picture types, which bound what an exact reader can skip
    bench = _load("data_pipeline")
    videos = [_video(tmp_path / "a.mp4"), _video(tmp_path / "b.mp4", n=100)]
    out = tmp_path / "numbers.json"
    rc = bench.main(["--videos", *map(str, videos), "--presets", "tsn_1x1x3_train", "--clips", "2",
                     "--rounds", "1", "--workers", "--per-video", "2", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["ours"]["tsn_1x1x3_train"]["per_video"]
    assert [Path(r["video"]).name for r in rows] == ["a.mp4", "b.mp4"]
    for r in rows:
        assert 0 < r["decoder_ms"] <= r["cpu_ms"] and r["mm_cpu_ms"] is None
        assert r["codec"] == "h264" and r["mix"].startswith("I ") and "B " in r["mix"]
    text = capsys.readouterr().out
    assert "decode only, per video" in text and "all 2 videos" in text


def test_data_pipeline_names_the_frames_each_loader_item_decodes(tmp_path, monkeypatch):
    # the mmaction2 side of the DataLoader comparison decodes the frames our dataset samples
    # for the same item (else 63-clip ratios swing on which frames each side drew): the
    # indices handed over must be the ones our DataLoader's items really decode
    import torch

    from omnisource.data import build_dataset
    from omnisource.data.decode.pyav_reader import PyAVReader

    bench = _load("data_pipeline")
    videos = [_video(tmp_path / f"v{i}.mp4", n=60 + 20 * i) for i in range(2)]
    ann = tmp_path / "list.txt"
    ann.write_text("".join(f"{v.name} 0\n" for v in videos) * 4)
    named = bench.loader_frame_indices("tsn_1x1x3_train", ann, tmp_path, 6, "pyav")
    assert len(named) == 6 and all(len(i) == 3 for i in named)
    assert named[0] != named[2]  # same video, another item: another draw

    decoded = []
    real = PyAVReader.get_frames
    monkeypatch.setattr(PyAVReader, "get_frames",
                        lambda self, idx: (decoded.append([int(i) for i in idx]), real(self, idx))[1])
    with pytest.warns(DuplicateEntryWarning):  # the list repeats its videos on purpose
        ds = build_dataset(ann, tmp_path, "tsn_1x1x3_train")
    ds.set_epoch(0)
    for batch in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0):
        if len(decoded) >= 6:
            break
    assert len(decoded) == 6  # the items of a batch are read side by side: compare as sets
    assert sorted(decoded) == sorted(named)


def test_data_pipeline_lets_mmaction2_sample_when_an_item_has_no_single_clip(tmp_path, capsys):
    # an unreadable video is replaced by another one: there is no clip of *that* video to
    # name, so the comparison falls back to each side sampling its own frames (no crash)
    bench = _load("data_pipeline")
    good = _video(tmp_path / "good.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    ann = tmp_path / "list.txt"
    ann.write_text(f"{good.name} 0\nempty.mp4 0\n" * 2)
    assert bench.loader_frame_indices("tsn_1x1x3_train", ann, tmp_path, 4, "pyav") is None
    assert "samples its own" in capsys.readouterr().out


def test_time_loader_leaves_out_the_start_up_round_and_spans_epochs():
    # the first round of batches (one per worker) is start-up, produced side by side: timing
    # from the first batch counted the second worker's batch as free, which with one video
    # (3 clips, under one batch) put the 2-worker figures 10x off on both sides
    bench = _load("data_pipeline")
    epochs: list[int] = []

    class ThreeBatches:
        def __iter__(self):
            return iter([[0] * 4 for _ in range(3)])

    r = bench.time_loader(ThreeBatches(), clips=10, workers=2, size_of=len, on_epoch=epochs.append)
    # epoch 0: batches 1-2 start-up, batch 3 counted (4); epoch 1: 4 + 4 -> 12 >= 10
    assert r["clips"] == 12 and epochs == [0, 1] and r["clips_per_s"] > 0
    r = bench.time_loader(ThreeBatches(), clips=8, workers=0, size_of=len)
    assert r["clips"] == 8  # without workers only the first batch is start-up


def test_data_pipeline_default_clips_cover_enough_batches_with_one_video(tmp_path, capsys):
    bench = _load("data_pipeline")
    video = _video(tmp_path / "clip.mp4")
    rc = bench.main(["--videos", str(video), "--presets", "tsn_1x1x3_train", "--rounds", "1",
                     "--workers", "0", "--batch-size", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"{bench.MIN_LOADER_BATCHES * 2} clips per measurement" in out


def test_joint_ablation_harness_runs_every_ablation_and_summarises(tmp_path, capsys):
    bench = _load("joint_ablation")
    out = tmp_path / "ablation.json"
    assert bench.main(["--worlds", "demo", "--seeds", "0", "--reduced", "--work", str(tmp_path / "w"),
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res) == 1 and set(bench.RUNS) <= set(res[0]["top1"])
    text = capsys.readouterr().out
    assert "world demo: 1 seed(s)" in text and "+ all sources" in text and "all >= best single" in text
