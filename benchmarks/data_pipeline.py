#!/usr/bin/env python
"""Data-pipeline throughput: decode + sample + augment -> normalised model input (clips/s).

Measures, over the real videos in ``../shared/data`` (or ``--videos``), for the train
presets ``tsn_1x1x3_train``, ``tsn_1x1x8_train`` and ``slowonly_4x16x1_train``:

* the split in one process: decode (open + index + sparse decode of the sampled frames)
  vs augment (the preset: resize, crop, flip, normalise, format), in ms per clip;
* end-to-end clips/s through ``omnisource.data.build_dataset`` + a DataLoader with 0, 1
  and 2 worker processes (steady state: timed from the first batch on);
* with ``--compare-mmaction2``: the same pipelines from the mmaction2 1.2.0 configs run in
  the reference venv (subprocess; omnisource never imports mmaction2), one process, on the
  same videos and the same number of clips, with the same normalisation added, and the
  speed-up.

Prints measured numbers only; nothing is asserted. The machine's load is printed too,
because on a shared machine it dominates the absolute figures -- compare the ratios.

    python benchmarks/data_pipeline.py --clips 24 --compare-mmaction2
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data").resolve()
DEFAULT_PRESETS = ["tsn_1x1x3_train", "tsn_1x1x8_train", "slowonly_4x16x1_train"]
MM_PYTHON = Path.home() / ".cache" / "mmaction2-ref" / "bin" / "python"
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm"}

# mmaction2 1.2.0 Kinetics-400 train pipelines (configs/recognition/{tsn,slowonly}/...)
MM_PIPELINES = {
    "tsn_1x1x3_train": dict(sample=dict(clip_len=1, frame_interval=1, num_clips=3), crop="msc", fmt="NCHW"),
    "tsn_1x1x8_train": dict(sample=dict(clip_len=1, frame_interval=1, num_clips=8), crop="msc", fmt="NCHW"),
    "slowonly_4x16x1_train": dict(sample=dict(clip_len=4, frame_interval=16, num_clips=1), crop="rrc",
                                  fmt="NCTHW"),
}

MM_SCRIPT = r'''
import json, sys, time
import numpy as np
import torch
from mmaction.utils import register_all_modules
register_all_modules(init_default_scope=True)
from mmengine.dataset import Compose

cfg = json.loads(sys.argv[1])
mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
out = {}
for name, p in cfg["pipelines"].items():
    init, dec = (("DecordInit", "DecordDecode") if cfg["backend"] == "decord"
                 else ("PyAVInit", "PyAVDecode"))
    decode = Compose([dict(type=init), dict(type="SampleFrames", **p["sample"]), dict(type=dec)])
    crop = (dict(type="MultiScaleCrop", input_size=224, scales=(1, 0.875, 0.75, 0.66),
                 random_crop=False, max_wh_scale_gap=1) if p["crop"] == "msc"
            else dict(type="RandomResizedCrop"))
    augment = Compose([dict(type="Resize", scale=(-1, 256)), crop,
                       dict(type="Resize", scale=(224, 224), keep_ratio=False),
                       dict(type="Flip", flip_ratio=0.5), dict(type="FormatShape", input_format=p["fmt"]),
                       dict(type="PackActionInputs")])
    videos = cfg["videos"]
    t_dec = t_aug = 0.0
    failed = 0
    for k in range(cfg["clips"] + 1):
        t0 = time.perf_counter()
        try:
            r = decode(dict(filename=videos[k % len(videos)], label=0, start_index=0, modality="RGB"))
        except Exception:  # e.g. PyAVInit reads 0 frames from MKV headers; counted, not timed
            failed += 1
            continue
        t1 = time.perf_counter()
        x = augment(r)["inputs"].float()
        if p["fmt"] == "NCHW":
            x = (x - mean) / std
        else:
            x = (x - mean.view(1, 3, 1, 1, 1)) / std.view(1, 3, 1, 1, 1)
        t2 = time.perf_counter()
        if k:  # first clip warms up imports and caches
            t_dec += t1 - t0
            t_aug += t2 - t1
    done = max(cfg["clips"] - failed, 1)
    out[name] = dict(decode_ms=1000 * t_dec / done, augment_ms=1000 * t_aug / done,
                     clips_per_s=done / (t_dec + t_aug), failed=failed)
print("RESULT " + json.dumps(out))
'''


def load_text() -> str:
    try:
        la = os.getloadavg()
        return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} CPU(s)"
    except OSError:  # pragma: no cover
        return f"{os.cpu_count()} CPU(s)"


def find_videos(data: Path, min_frames: int) -> list[Path]:
    """Readable videos with at least ``min_frames`` frames (probe: metadata + packet index)."""
    from omnisource.data.decode import probe_many

    cands = sorted(p for p in data.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    recs = probe_many(cands, decode=False, workers=2, progress=False)
    return [Path(r["path"]) for r in recs
            if r["readable"] and (r["frames"] or 0) >= min_frames and "corrupt" not in r["path"]]


def measure_split(preset_name: str, videos: list[Path], clips: int, backend: str, seed: int) -> dict:
    """One process, no DataLoader: time decode and augment separately."""
    from omnisource.data.decode import open_video
    from omnisource.data.presets import get_preset

    preset = get_preset(preset_name)
    rng = np.random.default_rng(seed)
    t_dec = t_aug = 0.0
    for k in range(clips + 1):
        t0 = time.perf_counter()
        with open_video(videos[k % len(videos)], backend=backend) as r:
            idx = preset.sample(len(r), rng)
            frames = r.get_frames(idx)
        t1 = time.perf_counter()
        x = preset(frames, rng)
        t2 = time.perf_counter()
        assert x.dtype.is_floating_point
        if k:  # the first clip pays imports / first-use costs
            t_dec += t1 - t0
            t_aug += t2 - t1
    return dict(decode_ms=1000 * t_dec / clips, augment_ms=1000 * t_aug / clips,
                clips_per_s=clips / (t_dec + t_aug))


def measure_loader(preset_name: str, ann: Path, root: Path, workers: int, clips: int,
                   backend: str, batch_size: int, mp_context: str = "fork") -> dict:
    """End to end through build_dataset + DataLoader; steady state after the first batch."""
    from omnisource.data import build_dataset
    from omnisource.data.datasets import build_dataloader

    ds = build_dataset(ann, root, preset_name, backend=backend)
    gc.collect()  # no PyAV object of this process may be finalised inside a forked worker
    kw = {}
    if workers > 0 and mp_context != "fork":
        kw["multiprocessing_context"] = mp_context
    loader = build_dataloader(ds, batch_size=batch_size, num_workers=workers, shuffle=True,
                              persistent_workers=workers > 0, **kw)
    seen, start, epoch = 0, None, 0
    try:
        while start is None or seen < clips:
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)
            for batch in loader:
                n = batch["inputs"].shape[0]
                if start is None:
                    start = time.perf_counter()
                    continue
                seen += n
                if seen >= clips:
                    break
            epoch += 1
    finally:
        del loader
        gc.collect()
    dt = time.perf_counter() - start
    return dict(clips_per_s=seen / dt, clips=seen, skipped=sum(getattr(ds, "skipped", {}).values()))


def run_mmaction2(presets: list[str], videos: list[Path], clips: int, backend: str) -> dict | None:
    if not MM_PYTHON.exists():
        print(f"  mmaction2 reference venv not found at {MM_PYTHON}; skipping the comparison")
        return None
    cfg = dict(pipelines={p: MM_PIPELINES[p] for p in presets if p in MM_PIPELINES},
               videos=[str(v) for v in videos], clips=clips, backend=backend)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(MM_PYTHON), "-c", MM_SCRIPT, json.dumps(cfg)], capture_output=True,
                          text=True, env=env, cwd=tempfile.gettempdir())
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    print(f"  mmaction2 run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder searched for videos")
    ap.add_argument("--videos", nargs="*", type=Path, help="use these videos instead")
    ap.add_argument("--presets", nargs="*", default=DEFAULT_PRESETS)
    ap.add_argument("--clips", type=int, default=24, help="clips timed per measurement")
    ap.add_argument("--workers", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--backend", default="pyav", choices=["pyav", "decord"])
    ap.add_argument("--min-frames", type=int, default=64, help="skip shorter videos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mp-context", default="fork", choices=["fork", "forkserver", "spawn"],
                    help="worker start method (default fork, the Linux default; OpenCV is kept "
                         "single-threaded so forked workers are safe, see omnisource.data.workers)")
    ap.add_argument("--compare-mmaction2", action="store_true",
                    help="also time mmaction2 1.2.0's pipelines in the reference venv")
    ap.add_argument("--mm-backend", nargs="*", default=["decord", "pyav"],
                    help="mmaction2 decoders to compare with (default: decord pyav)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    videos = [p.resolve() for p in args.videos] if args.videos else find_videos(args.data, args.min_frames)
    if not videos:
        print(f"no videos found under {args.data}")
        return 1
    root = Path(os.path.commonpath([str(v.parent) for v in videos]))
    print(f"{len(videos)} video(s) under {root}; {args.clips} clips per measurement; {load_text()}")
    results: dict = {"videos": [str(v) for v in videos], "load_before": load_text(), "ours": {}, "mmaction2": {}}

    with tempfile.TemporaryDirectory() as tmp:
        ann = Path(tmp) / "videos.txt"
        ann.write_text("".join(f"{v.relative_to(root)} 0\n" for v in videos))
        for name in args.presets:
            split = measure_split(name, videos, args.clips, args.backend, args.seed)
            res = {"split": split, "loader": {}}
            print(f"\n{name} ({args.backend}):")
            print(f"  one process, split: decode {split['decode_ms']:.1f} ms + augment "
                  f"{split['augment_ms']:.1f} ms per clip = {split['clips_per_s']:.2f} clips/s "
                  f"(decode {100 * split['decode_ms'] / (split['decode_ms'] + split['augment_ms']):.0f}%)")
            if args.compare_mmaction2:  # right after ours: the machine's load drifts
                for mb in args.mm_backend:
                    mm = run_mmaction2([name], videos, args.clips, mb)
                    if mm is None or name not in mm:
                        continue
                    m = mm[name]
                    results["mmaction2"].setdefault(mb, {})[name] = m
                    print(f"  mmaction2 1.2.0 ({mb}), one process: decode {m['decode_ms']:.1f} ms + "
                          f"augment {m['augment_ms']:.1f} ms = {m['clips_per_s']:.2f} clips/s"
                          + (f" ({m['failed']} clips failed)" if m.get("failed") else "")
                          + f" -> omnisource {split['clips_per_s'] / m['clips_per_s']:.2f}x")
            for w in args.workers:
                r = measure_loader(name, ann, root, w, args.clips, args.backend, args.batch_size,
                                   args.mp_context)
                res["loader"][w] = r
                print(f"  DataLoader, {w} worker(s), batch {args.batch_size}: {r['clips_per_s']:.2f} clips/s"
                      + (f" ({r['skipped']} skipped)" if r["skipped"] else ""))
            results["ours"][name] = res

    results["load_after"] = load_text()
    print(f"\n{load_text()}")
    if args.json:
        from omnisource.utils.io import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
