"""Teacher-filtering throughput: images/s scored by a TSN-R50 teacher, and where the time goes.

Measures :class:`omnisource.web.teacher.TeacherEnsemble` exactly as ``omnisource filter`` runs
it: reduced-size JPEG decoding in worker processes (Pillow draft via read_image), batched
forward passes in the main process. Prints images/s and the share of the main process's time
spent in the forward pass vs waiting for decoded inputs (goal: > 85% in forward, i.e. decoding
hidden behind the model). Random weights (the speed does not depend on them).

    python benchmarks/filter_throughput.py                 # 96 photos of 1600x1200, batch 16, 2 workers
    python benchmarks/filter_throughput.py --n 32 --workers 0 --no-draft   # the slow baseline
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photos(folder: Path, n: int, w: int, h: int) -> list[str]:
    """Photo-like JPEGs (smooth colour fields + noise, quality 90): realistic decode cost."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        small = rng.integers(0, 255, (12, 16, 3)).astype(np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
        name = f"p{i:05d}.jpg"
        Image.fromarray(img).save(folder / name, quality=90)
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96, help="images scored (default 96)")
    ap.add_argument("--size", default="1600x1200", help="photo size WxH (default 1600x1200)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="decoding worker processes (default 2)")
    ap.add_argument("--model", default="tsn_r50_1x1x3_100e_kinetics400_rgb")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size (baseline)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up batches (not timed)")
    args = ap.parse_args(argv)

    import torch

    from omnisource.models import create_model
    from omnisource.web import features as F
    from omnisource.web.teacher import ModelSource, TeacherEnsemble

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(x) for x in args.size.lower().split("x"))
    model = create_model(args.model, num_classes=400).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = make_photos(folder, args.n + args.warmup * args.batch_size, w, h)
        recs = [{"path": n, "kind": "image"} for n in names]
        with TeacherEnsemble([model], [ModelSource(args.model, None)], data_root=str(folder),
                             batch_size=args.batch_size, num_workers=args.workers) as ens:
            if args.no_draft:         # the baseline: decode every JPEG at full size, then resize
                ens.plan = dataclasses.replace(ens.plan, reduced_decode=False)
            warm = recs[: args.warmup * args.batch_size]
            if warm:
                ens.score(warm)
            ens.timing.wait_s = ens.timing.forward_s = 0.0
            ens.timing.items = 0
            t0 = time.perf_counter()
            out = ens.score(recs[len(warm):])
            wall = time.perf_counter() - t0
            t = ens.timing
        # decode-only cost of the same images in one process, for reference
        t1 = time.perf_counter()
        for r in recs[len(warm): len(warm) + min(16, args.n)]:
            F.read_image_reduced(folder / r["path"], None if args.no_draft else 256)
        dec = (time.perf_counter() - t1) / min(16, args.n)
    bad = sum(isinstance(o, str) for o in out)
    print(f"model {args.model} (random weights), {args.n} JPEGs {w}x{h}, batch {args.batch_size}, "
          f"{args.workers} workers, torch threads {torch.get_num_threads()}, cpu cores {os.cpu_count()}, "
          f"draft {'off' if args.no_draft else 'on'}")
    print(f"throughput: {args.n / wall:.2f} images/s  (wall {wall:.1f}s, {bad} failed)")
    print(f"main process: forward {t.forward_s:.1f}s, waiting for decoded inputs {t.wait_s:.1f}s "
          f"-> {100 * t.share_forward():.1f}% of the time in the forward pass (goal > 85%)")
    print(f"decode alone (1 process): {1000 * dec:.1f} ms/image ({1 / dec:.1f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
