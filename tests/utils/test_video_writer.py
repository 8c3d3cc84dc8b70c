"""omnisource.utils.video_writer: the one encoder loop of the world, the benchmarks and the tests."""
from __future__ import annotations

import av
import numpy as np
import pytest

from omnisource.utils.video_writer import write_video


def _frames(n: int, h: int = 48, w: int = 64):
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : 4 + 3 * i] = (200, 40, 40)  # every frame differs
        yield img


@pytest.mark.parametrize("name, codec, fmt", [("v.mp4", "libx264", "mp4"),
                                              ("v.avi", "mpeg4", "avi"),
                                              ("v.ts", "libx264", "mpegts"),
                                              ("v.avi", "mjpeg", "avi")])
def test_container_from_suffix_and_frames_round_trip(tmp_path, name, codec, fmt):
    path = write_video(tmp_path / "sub" / name, _frames(10), codec=codec, fps=10, gop_size=4)
    assert path == tmp_path / "sub" / name
    with av.open(str(path)) as c:
        assert fmt in c.format.name.split(",")
        s = c.streams.video[0]
        assert s.codec_context.name == codec.replace("libx264", "h264")
        got = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    assert len(got) == 10 and got[0].shape == (48, 64, 3)
    assert got[3][:, 10:14].mean() > got[3][:, 40:].mean() + 50  # the bar, not noise
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temporary left


def test_codec_options_and_attributes_reach_the_encoder(tmp_path):
    path = write_video(tmp_path / "g.mp4", _frames(30), options={"x264-params": "keyint=10:scenecut=0"})
    with av.open(str(path)) as c:
        keys = [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size]
    assert [i for i, k in enumerate(keys) if k] == [0, 10, 20]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def broken():
        yield np.zeros((48, 64, 3), np.uint8)
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError, match="generator died"):
        write_video(tmp_path / "x.mp4", broken())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "y.mp4", [])
    assert list(tmp_path.iterdir()) == []
