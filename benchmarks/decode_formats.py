#!/usr/bin/env python
"""Sparse-read cost and correctness per container / codec layout, ours vs decord.

The real videos in ``../shared/data`` are mostly long-GOP H.264 MP4s and packed-B-frame MPEG-4
AVIs (HMDB51, UCF101). Datasets in the wild also come as MJPEG AVIs (every frame a keyframe),
MPEG-4 AVIs with a keyframe every 12 frames (FFmpeg's default), H.264 in AVI, MPEG
transport streams (broadcast and IPTV captures) and MPEG program streams (DVD); how a
reader treats those decides whether a TSN read decodes 3 frames or 3000. This benchmark writes
one video of each kind (a moving pattern, 320x240, ``--frames`` frames at 25 fps), draws TSN
train indices (``--preset``), and prints per kind:

* our reader's mode (``pts``: timestamps name frames, seek + skip; ``ordinal``: counted in
  decode order, with keyframe jumps where checked safe) and the keyframe count;
* ms per clip, wall and CPU, ours and decord's (decord as mmaction2 opens it: one thread,
  from bytes), and the ratio of CPU times;
* whether each reader's frames equal a plain sequential decode (decord orders the frames of
  an AVI whose timestamps are in decode order by those timestamps -- wrong frames).

Prints measured numbers only; nothing is asserted.

    python benchmarks/decode_formats.py [--frames 750] [--clips 20] [--preset tsn_1x1x3_train]
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from omnisource.data.decode.pyav_index import clear_index_cache
from omnisource.data.decode.pyav_reader import PyAVReader
from omnisource.data.presets import get_preset
from omnisource.utils.video_writer import write_video

# name -> (file suffix, codec, codec-context attributes, codec options)
KINDS = {
    "mjpeg.avi": (".avi", "mjpeg", {}, {}),
    "mpeg4-gop12.avi": (".avi", "mpeg4", {"gop_size": 12, "bit_rate": 600_000}, {}),
    "mpeg4-gop12-bframes.avi": (".avi", "mpeg4", {"gop_size": 12, "bit_rate": 600_000,
                                                 "max_b_frames": 2}, {}),
    "h264-gop25-bframes.avi": (".avi", "libx264", {},
                               {"x264-params": "keyint=25:min-keyint=25:scenecut=0:bframes=3"}),
    "h264-gop25-bframes.ts": (".ts", "libx264", {},
                              {"x264-params": "keyint=25:min-keyint=25:scenecut=0:bframes=3"}),
    "mpeg2-gop12-bframes.ts": (".ts", "mpeg2video", {"gop_size": 12, "bit_rate": 2_000_000,
                                                    "max_b_frames": 2}, {}),
    # MPEG program stream (.mpg / .vob: DVD rips, old camcorders), open GOPs as FFmpeg writes
    "mpeg2-gop15-bframes.mpg": (".mpg", "mpeg2video", {"bit_rate": 3_000_000},
                                {"g": "15", "bf": "2", "sc_threshold": "1000000000"}),
    "h264-gop25-bframes.mp4": (".mp4", "libx264", {},
                               {"x264-params": "keyint=25:min-keyint=25:scenecut=0:bframes=3"}),
    "h264-gop250-bframes.mp4": (".mp4", "libx264", {}, {"x264-params": "keyint=250:bframes=3"}),
}


def _frame(i: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A textured pattern drifting right and down: realistic P-frame sizes, every frame unique."""
    y, x = np.mgrid[0:h, 0:w]
    r = (128 + 100 * np.sin((x + 2 * i) / 17.0) * np.cos((y + i) / 23.0)).astype(np.uint8)
    g = (128 + 100 * np.sin((x - 3 * i) / 31.0 + y / 13.0)).astype(np.uint8)
    b = ((x * 3 + y * 5 + 7 * i) % 256).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


def write(path: Path, codec: str, attrs: dict, options: dict, n: int) -> None:
    write_video(path, (_frame(i) for i in range(n)), codec=codec, options=options, **attrs)


def sequential(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def timed(read, requests: list[np.ndarray]) -> tuple[float, float, list[np.ndarray]]:
    """(wall ms, CPU ms) per clip, and the clips."""
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    for idx in requests:
        out.append(read(idx))
    n = len(requests)
    return 1000 * (time.perf_counter() - t0) / n, 1000 * (time.process_time() - c0) / n, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=750, help="frames per video (25 fps)")
    ap.add_argument("--clips", type=int, default=20, help="clips timed per video and reader")
    ap.add_argument("--preset", default="tsn_1x1x3_train")
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--keep", type=Path, help="write the videos here (default: a temp folder)")
    args = ap.parse_args()
    try:
        import decord
    except ImportError:
        decord = None
    preset = get_preset(args.preset)
    print(f"{args.frames} frames 320x240 per video, {args.clips} {args.preset} clips each; "
          f"decord: {'yes' if decord else 'not installed'}; load {os.getloadavg()[0]:.2f}")
    print(f"{'video':26s} {'our mode':9s} {'keys':>5s} {'ours ms':>8s} {'CPU':>6s} "
          f"{'decord ms':>10s} {'CPU':>6s} {'x decord CPU':>12s}  exact: ours / decord")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.kinds:
            suffix, codec, attrs, options = KINDS[name]
            path = folder / name
            write(path, codec, attrs, options, args.frames)
            ref = sequential(path)
            clear_index_cache()
            with PyAVReader(str(path)) as r:
                n, mode, keys = len(r), r.mode, len(r._index.key_dpos)
            rng = np.random.default_rng(0)
            requests = [preset.sample(n, rng) for _ in range(args.clips)]

            def ours(idx):
                with PyAVReader(str(path)) as r:   # one reader per sample, as datasets do
                    return r.get_frames(idx)
            ow, oc, oclips = timed(ours, requests)
            exact = lambda clips: all(np.array_equal(c, np.stack([ref[i] for i in idx]))  # noqa: E731
                                      for c, idx in zip(clips, requests))
            line = f"{name:26s} {mode:9s} {keys:5d} {ow:8.1f} {oc:6.1f} "
            if decord is not None:
                data = path.read_bytes()

                def dec(idx):
                    vr = decord.VideoReader(io.BytesIO(data), num_threads=1)
                    return vr.get_batch(np.asarray(idx) % len(vr)).asnumpy()
                dw, dc, dclips = timed(dec, requests)
                line += f"{dw:10.1f} {dc:6.1f} {dc / oc:12.2f}  {exact(oclips)} / {exact(dclips)}"
            else:
                line += f"{'-':>10s} {'-':>6s} {'-':>12s}  {exact(oclips)} / -"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
