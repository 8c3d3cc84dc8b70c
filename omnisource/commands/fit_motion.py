"""Fit the camera-motion model for perspective image inflation (paper section 3.5, Eq. 2).

Reads a video list (mmaction2 'path label' list or a JSONL manifest), estimates homographies
between frames t and t+INTERVAL of each video (OpenCV ORB/SIFT matching + RANSAC), expresses
them in a resolution-independent canonical frame (centre origin, half the long side = 1) and
writes the maximum-likelihood Gaussian N(mu, Sigma) over the 8 free parameters,
class-agnostic and per class, to a JSON file (atomically). Frame pairs with too few matches
or inliers, or with implausible warps (scene cuts), are skipped and counted.

Use the file in a config:  inflate: {mode: perspective, motion: motion.json}
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HELP = "fit the homography distribution of real videos for image -> clip inflation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_list", type=Path, help="video list ('path label' rows) or JSONL manifest")
    p.add_argument("--root", type=Path, default=None, help="data root of the list's paths (default: the list's folder)")
    p.add_argument("--out", type=Path, required=True, help="output JSON (e.g. motion.json)")
    p.add_argument("--label-map", type=Path, default=None, help="class names: per-class models keyed by name")
    p.add_argument("--interval", type=int, default=1,
                   help="frame distance of a pair; match it to the student's frame interval (default 1)")
    p.add_argument("--max-pairs", type=int, default=64, help="frame pairs per video, spread evenly (default 64)")
    p.add_argument("--min-class-pairs", type=int, default=10,
                   help="fewest usable pairs for a per-class model (default 10)")
    p.add_argument("--detector", choices=("orb", "sift"), default="orb")
    p.add_argument("--min-inliers", type=int, default=15, help="fewest RANSAC inliers of a usable pair")
    p.add_argument("--max-corner-shift", type=float, default=0.5,
                   help="largest plausible corner motion between paired frames, in half long sides")
    p.add_argument("--strict", action="store_true", help="stop at an unreadable video")
    p.add_argument("--progress", action="store_true", default=None)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from omnisource.data.annotations import load_annotations, read_label_map, resolve_path
    from omnisource.errors import InputError
    from omnisource.web.motion import PARAM_NAMES, Estimator, fit_motion, save_motion

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.interval < 1 or args.max_pairs < 1:
        raise InputError("--interval and --max-pairs must be >= 1")
    names = read_label_map(args.label_map) if args.label_map is not None else None
    samples = load_annotations(args.video_list)
    root = args.root if args.root is not None else args.video_list.parent
    videos = []
    for s in samples:
        label = s.label[0] if isinstance(s.label, list) and s.label else s.label
        videos.append((resolve_path(root, s.path, s.file, s.line), label))
    est = Estimator(detector=args.detector, min_inliers=args.min_inliers, max_corner_shift=args.max_corner_shift)
    stats = fit_motion(videos, est, interval=args.interval, max_pairs=args.max_pairs,
                       min_class_pairs=args.min_class_pairs, class_names=names, progress=args.progress,
                       strict=args.strict)
    stats.info["video_list"] = str(args.video_list)
    save_motion(args.out, stats)
    g = stats.global_model
    sd = np.sqrt(np.diag(g.sigma))
    print(f"fit-motion: {g.count} frame pairs from {stats.info['videos'].get('used', 0)} videos "
          f"(pairs {stats.info['pairs']}); {len(stats.per_class)} per-class models -> {args.out}", file=sys.stderr)
    print("  param   mu        sd", file=sys.stderr)
    for n, m, d in zip(PARAM_NAMES, g.mu, sd):
        print(f"  {n}   {m:+.5f}  {d:.5f}", file=sys.stderr)
    return 0
