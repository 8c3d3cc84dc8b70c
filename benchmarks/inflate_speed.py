"""Measured cost of image -> pseudo-clip inflation at dataset time (paper 3.5, Table 8).

Prints clips/s and ms per clip for still / translate / perspective (reflect and crop borders)
on one CPU thread, for a typical short-side-256 web image. Perspective needs a motion model;
a synthetic one is used unless --motion points at the output of `omnisource fit-motion`.

    python benchmarks/inflate_speed.py [--frames 8 32] [--size 256 340] [--motion motion.json]
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from omnisource.data.inflate import inflate_image
from omnisource.data.motion_model import IDENTITY8, MotionModel, load_motion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--size", type=int, nargs=2, default=[256, 340], metavar=("H", "W"))
    ap.add_argument("--motion", default=None)
    ap.add_argument("--seconds", type=float, default=1.5, help="time budget per measurement")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*args.size, 3), dtype=np.uint8)
    motion = load_motion(args.motion) if args.motion else MotionModel(IDENTITY8, np.diag(np.full(8, 0.01) ** 2))
    cases = [("still", {}), ("translate", {}), ("perspective", {"motion": motion}),
             ("perspective", {"motion": motion, "border": "crop"})]
    print(f"image {args.size[0]}x{args.size[1]}, 1 OpenCV thread")
    print(f"{'mode':<22}{'frames':>7}{'clips/s':>10}{'ms/clip':>10}")
    for t in args.frames:
        for mode, kw in cases:
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                inflate_image(img, t, mode, rng, **kw)
                n += 1
            dt = (time.perf_counter() - t0) / n
            label = mode + (f" ({kw['border']})" if "border" in kw else "")
            print(f"{label:<22}{t:>7}{1 / dt:>10.1f}{dt * 1e3:>10.2f}")


if __name__ == "__main__":
    main()
