"""`omnisource probe` and the probe cache."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from omnisource.cli import main  # noqa: E402
from omnisource.data.decode import (load_probe_cache, probe, probe_many,  # noqa: E402
                                    write_probe_cache)
from omnisource.errors import InputError  # noqa: E402

DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data not present")
TEST_MP4 = DATA / "mmaction2/tests/data/test.mp4"
HMDB = DATA / "hmdb51/Golf_Tips_-_Hit_The_Driver_300_Yards_golf_f_nm_np1_fr_med_0.avi"
CORRUPT = DATA / "decord/tests/test_data/corrupted.mp4"


@needs_data
def test_probe_metadata():
    rec = probe(TEST_MP4)
    assert rec["readable"] and rec["reason"] is None
    assert rec["frames"] == 300 and rec["frames_exact"]
    assert (rec["width"], rec["height"], rec["codec"]) == (340, 256, "h264")
    assert abs(rec["fps"] - 30.0) < 1e-6 and rec["kind"] == "video" and not rec["decoded"]
    assert rec["access"] == "seek" and rec["keyframes"] == 2
    avi = probe(HMDB)
    assert avi["declared_frames"] == 90 and avi["frames"] == 89  # HMDB off-by-one fixed
    # packed MPEG-4 B-frames: no usable timestamps, every read decodes from the start
    assert avi["access"] == "sequential" and "packed" in avi["access_note"]


@needs_data
def test_probe_decode_finds_damage():
    fast = probe(CORRUPT)
    assert fast["readable"]  # metadata and first frame are fine ...
    full = probe(CORRUPT, decode=True)
    assert not full["readable"] and "damaged" in full["reason"]  # ... decoding finds it
    assert full["frames"] == 49 and full["decoded"]


def test_probe_reports_unreadable(tmp_path):
    (tmp_path / "a.mp4").write_text("not a video")
    (tmp_path / "e.mp4").write_bytes(b"")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8garbage")
    for name in ("a.mp4", "e.mp4", "x.jpg", "missing.mkv"):
        rec = probe(tmp_path / name)
        assert rec["readable"] is False and rec["reason"], name
    (tmp_path / "frames").mkdir()
    assert probe(tmp_path / "frames")["readable"] is False  # empty frame folder


def test_probe_image_and_rawframes(tmp_path):
    from PIL import Image

    d = tmp_path / "clip"
    d.mkdir()
    for i in range(1, 6):
        Image.fromarray(np.full((12, 16, 3), i * 20, np.uint8)).save(d / f"img_{i:05d}.jpg")
    rec = probe(d, decode=True)
    assert rec["kind"] == "rawframes" and rec["readable"] and rec["frames"] == 5
    assert (rec["width"], rec["height"]) == (16, 12)
    img = probe(d / "img_00003.jpg")
    assert img["kind"] == "image" and img["frames"] == 1 and img["width"] == 16
    assert (img["codec"], img["pix_fmt"]) == ("jpeg", "RGB")  # the file's format and stored mode
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(tmp_path / "grey.png")
    grey = probe(tmp_path / "grey.png")
    assert (grey["codec"], grey["pix_fmt"], grey["width"], grey["height"]) == ("png", "L", 7, 5)


def test_cache_round_trip_merge_and_staleness(tmp_path):
    a, b = tmp_path / "a.txt.mp4", tmp_path / "b.mp4"
    a.write_text("x")
    b.write_text("y")
    cache = tmp_path / "probes.jsonl"
    recs = probe_many([a], workers=1)
    assert write_probe_cache(cache, recs) == 1
    write_probe_cache(cache, probe_many([b], workers=1))  # merged, not replaced
    got = load_probe_cache(cache)
    assert str(a) in got and str(b) in got and got[str(a)]["readable"] is False
    first = cache.read_text().splitlines()[0]
    assert json.loads(first)["format"] == "omnisource-probe"
    b.write_text("changed content")  # size changes -> stale record dropped on request
    assert str(b) not in load_probe_cache(cache, check_stale=True)
    assert str(b) in load_probe_cache(cache)


def test_cache_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "omnisource-probe", "version": 1}\n{"path": "a"}\n{oops\n')
    with pytest.raises(InputError) as ei:
        load_probe_cache(bad)
    assert ei.value.line == 3 and ei.value.file == str(bad)
    bad.write_text('{"frames": 3}\n')
    with pytest.raises(InputError, match="path"):
        load_probe_cache(bad)
    with pytest.raises(InputError):
        load_probe_cache(tmp_path / "none.jsonl")


@needs_data
def test_cli_probe(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    out = tmp_path / "cache.jsonl"
    rc = main(["probe", str(TEST_MP4), str(bad), str(HMDB), "--out", str(out)])
    assert rc == 0  # unreadable files are reported, not fatal ...
    text = capsys.readouterr().out
    assert "300 frames" in text and "340x256" in text and "UNREADABLE" in text
    assert "2 keyframe(s)" in text and "decoded from the start on every read (avi with packed" in text
    cache = load_probe_cache(out)
    assert cache[str(TEST_MP4)]["frames"] == 300 and cache[str(bad)]["readable"] is False
    assert main(["probe", str(bad), "--strict"]) == 1  # ... unless --strict
    capsys.readouterr()
    assert main(["probe", str(TEST_MP4), "--json", "--decode"]) == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["decoded"] and rec["frames"] == 300


def test_cli_recursive(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "sub" / "a.png")
    (tmp_path / "sub" / "notes.txt").write_text("ignored")
    assert main(["probe", str(tmp_path), "--recursive"]) == 0
    text = capsys.readouterr().out
    assert "a.png: 1 frames" in text and "notes.txt" not in text


def test_a_gif_that_ffmpeg_cannot_decode_gets_pillows_reason(shared_data):
    """Pillow's decompression-bomb GIF (a 32x32 stream declaring a 4-gigapixel screen)."""
    bomb = shared_data / "pillow" / "Tests" / "images" / "decompression_bomb.gif"
    rec = probe(bomb)
    assert rec["readable"] is False and rec["reason"].startswith("decompression bomb refused"), rec
