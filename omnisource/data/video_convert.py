"""One video at a time: JPEG rawframes (+ optical flow) and resized re-encodes.

The per-video work of ``omnisource extract-frames`` and ``omnisource resize-videos``; each call
runs in a worker process, writes its output atomically and returns a small status dict (never
raises: a corrupt video is a ``failed`` status with the reason, and the run goes on).

Rawframes follow mmaction2's ``tools/data/build_rawframes.py`` layout (``denseflow`` output):
``<out>/<video path without extension>/img_00001.jpg ...`` and, with flow, ``x_00001.jpg`` /
``y_00001.jpg`` (one pair per consecutive frame pair: ``frames - 1``), the flow clipped to
``[-bound, bound]`` pixels (20, denseflow's default) and mapped linearly to 0..255. A video's
folder is written under a temporary name and renamed when complete, so a folder that exists is
whole. Flow: Farneback (OpenCV core) or TV-L1 (``cv2.optflow``, in opencv-contrib; denseflow's
default algorithm).
"""
from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["resize_shape", "quantize_flow", "extract_frames", "resize_video", "FLOW_ALGORITHMS"]

FLOW_ALGORITHMS = ("farneback", "tvl1")
CHUNK = 64           # frames decoded per read (bounded memory for long videos)


def resize_shape(h: int, w: int, short_side: int | None, size: tuple[int, int] | None) -> tuple[int, int]:
    """(h, w) after resizing: a fixed ``(w, h)`` size, or the short side to ``short_side``
    (even sizes: video encoders need them)."""
    if size is not None:
        return int(size[1]), int(size[0])
    if not short_side:
        return h, w
    if h <= w:
        nh, nw = short_side, round(w * short_side / h)
    else:
        nw, nh = short_side, round(h * short_side / w)
    return nh - nh % 2, nw - nw % 2


def quantize_flow(flow: np.ndarray, bound: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """``[H, W, 2]`` float flow -> uint8 x and y images (denseflow's linear map of
    ``[-bound, bound]`` to ``[0, 255]``)."""
    q = np.round((np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound)))
    q = q.astype(np.uint8)
    return q[..., 0], q[..., 1]


def _flow_fn(algorithm: str):
    import cv2

    if algorithm == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    if algorithm == "tvl1":
        if not hasattr(cv2, "optflow"):
            raise RuntimeError("TV-L1 flow needs OpenCV's contrib modules (pip install opencv-contrib-python-headless "
                               "in place of opencv-python-headless); --flow farneback needs none")
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda a, b: tvl1.calc(a, b, None)
    raise ValueError(f"flow must be one of {FLOW_ALGORITHMS}, got {algorithm!r}")


def _frames(path: str):
    """Decoded RGB frames of ``path``, in order, in chunks (our PyAV reader: rotation applied)."""
    from omnisource.data.decode import open_video

    with open_video(path) as reader:
        n = len(reader)
        fps = reader.info.fps
        yield n, fps
        for start in range(0, n, CHUNK):
            yield from reader.get_frames(list(range(start, min(n, start + CHUNK))))


def extract_frames(job: tuple) -> dict[str, Any]:
    """``(video, out_dir, short_side, size, flow, bound, quality)`` -> rawframes folder."""
    import cv2

    video, out_dir, short_side, size, flow, bound, quality = job
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        it = _frames(video)
        n_declared, _ = next(it)
        flow_fn = _flow_fn(flow) if flow else None
        prev = None
        count = 0
        enc = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]
        for frame in it:
            h, w = frame.shape[:2]
            nh, nw = resize_shape(h, w, short_side, size)
            if (nh, nw) != (h, w):
                frame = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
            count += 1
            if not cv2.imwrite(str(tmp / f"img_{count:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), enc):
                raise OSError(f"cannot write {tmp / f'img_{count:05d}.jpg'}")
            if flow_fn is not None:
                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
                if prev is not None:
                    fx, fy = quantize_flow(flow_fn(prev, gray), bound)
                    cv2.imwrite(str(tmp / f"x_{count - 1:05d}.jpg"), fx, enc)
                    cv2.imwrite(str(tmp / f"y_{count - 1:05d}.jpg"), fy, enc)
                prev = gray
        if count == 0:
            raise ValueError("no frame could be decoded")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return {"status": "ok", "frames": count, "flow_frames": max(0, count - 1) if flow else 0}
    except Exception as err:       # a worker reports; the run goes on
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
        return {"status": "failed", "reason": str(reason)}


def resize_video(job: tuple) -> dict[str, Any]:
    """``(video, out_path, short_side, size, crf)`` -> H.264 re-encode at the new size (the
    source frame rate, no audio), written atomically."""
    import cv2

    from omnisource.utils.video_writer import write_video

    video, out_path, short_side, size, crf = job
    try:
        it = _frames(video)
        n, fps = next(it)
        rate = Fraction(fps or 30).limit_denominator(1001)
        shape: list[tuple[int, int]] = []

        def frames():
            for f in it:
                h, w = f.shape[:2]
                nh, nw = resize_shape(h, w, short_side, size)
                shape[:] = [(nh, nw)]
                yield cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA) if (nh, nw) != (h, w) else f

        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        write_video(out_path, frames(), codec="libx264", fps=rate, options={"crf": str(crf), "preset": "veryfast"})
        return {"status": "ok", "frames": n, "height": shape[0][0], "width": shape[0][1]}
    except Exception as err:
        Path(out_path).unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
        return {"status": "failed", "reason": str(reason)}
