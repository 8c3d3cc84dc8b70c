"""`omnisource extract-frames` (rawframes + optical flow, mmaction2's naming) and
`omnisource resize-videos`: outputs, the list they write, a corrupt input reported, and resuming
after a kill with finished videos left alone."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from omnisource.cli import main
from omnisource.data.annotations import load_annotations
from omnisource.data.decode import open_video
from omnisource.data.video_convert import quantize_flow, resize_shape
from omnisource.utils.video_writer import write_video


def _moving_square(path, n=12, step=2):
    frames = []
    for t in range(n):
        a = np.full((48, 64, 3), 40, np.uint8)
        a[16:32, 10 + step * t:26 + step * t] = 220
        frames.append(a)
    write_video(path, frames, codec="libx264", fps=10, options={"crf": "10"})


@pytest.fixture()
def videos(tmp_path):
    src = tmp_path / "videos"
    (src / "cls").mkdir(parents=True)
    _moving_square(src / "cls" / "a.mp4")
    _moving_square(src / "b.mp4", n=8)
    (src / "broken.mp4").write_bytes(b"\x00" * 100)
    lst = tmp_path / "list.txt"
    lst.write_text("cls/a.mp4 1\nb.mp4 0\nbroken.mp4 2\n")
    return src, lst


def test_shapes_and_flow_quantisation():
    assert resize_shape(240, 320, 256, None) == (256, 340) and resize_shape(1080, 608, 320, None) == (568, 320)
    assert resize_shape(240, 320, None, (171, 128)) == (128, 171)
    x, y = quantize_flow(np.array([[[-20.0, 0.0], [40.0, 2.0]]]))
    assert x.tolist() == [[0, 255]] and y.tolist() == [[128, 140]]


def test_extract_frames_with_flow_list_and_resume(videos, tmp_path, capsys):
    src, lst = videos
    out = tmp_path / "frames"
    assert main(["extract-frames", str(lst), "--data-root", str(src), "--out", str(out), "--flow", "farneback",
                 "--workers", "2"]) == 0
    assert "2 of 3 videos done, 1 unreadable" in capsys.readouterr().out
    a = out / "cls" / "a"
    assert len(list(a.glob("img_*.jpg"))) == 12 and len(list(a.glob("x_*.jpg"))) == 11
    assert (a / "img_00001.jpg").is_file() and (a / "y_00011.jpg").is_file()
    fx = np.asarray(Image.open(a / "x_00005.jpg"), dtype=np.float64)
    fy = np.asarray(Image.open(a / "y_00005.jpg"), dtype=np.float64)
    inside = fx[18:30, 20:30].mean()     # the square moves +2 px per frame: x flow ~ +2 -> 128 + 12.75
    assert 132 < inside < 150 and abs(fy[18:30, 20:30].mean() - 127.5) < 6 and abs(fx[:8].mean() - 127.5) < 3
    rows = load_annotations(out / "list_rawframes.txt")
    assert [(r.path, r.total_frames, r.label) for r in rows] == [("cls/a", 12, 1), ("b", 8, 0)]
    assert [r.total_frames for r in load_annotations(out / "list_flow.txt")] == [11, 7]
    assert (out / "failures.txt").read_text().startswith("broken.mp4\t")
    with open_video(str(a), backend="rawframes") as r:           # readable as mmaction2 rawframes
        assert len(r) == 12 and r.get_frames([1]).shape == (1, 48, 64, 3)
    # killed after the first video: its status line survives, b's is torn, b's folder is gone
    status = (out / ".status.jsonl").read_text().splitlines()
    (out / ".status.jsonl").write_text(status[0] + "\n" + next(l for l in status if '"cls/a.mp4"' in l)
                                       + '\n{"key": "b.m')
    import shutil

    shutil.rmtree(out / "b")
    before = (a / "img_00003.jpg").stat().st_mtime_ns
    assert main(["extract-frames", str(lst), "--data-root", str(src), "--out", str(out), "--flow", "farneback"]) == 0
    assert "resuming: 1 of 3" in capsys.readouterr().err
    assert (a / "img_00003.jpg").stat().st_mtime_ns == before and len(list((out / "b").glob("img_*"))) == 8
    # another setting into the same folder needs --force
    assert main(["extract-frames", str(lst), "--data-root", str(src), "--out", str(out), "--short-side", "32"]) == 2
    assert main(["extract-frames", str(lst), "--data-root", str(src), "--out", str(tmp_path / "s"),
                 "--strict", "--workers", "1"]) == 2


def test_resize_videos_from_a_folder(videos, tmp_path, capsys):
    src, _ = videos
    out = tmp_path / "small"
    assert main(["resize-videos", str(src), "--out", str(out), "--short-side", "32", "--workers", "2"]) == 0
    with open_video(str(out / "cls" / "a.mp4")) as r:
        assert r.info.height == 32 and r.info.width == 42 and len(r) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {"videos": 3, "done": 2, "failed": 1}
    assert main(["resize-videos", str(src), "--out", str(tmp_path / "x")]) == 2      # no size given
    assert "--short-side" in capsys.readouterr().err
