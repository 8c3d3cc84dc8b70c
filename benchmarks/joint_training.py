"""Joint multi-source training throughput vs target-only, at the same total batch size (CPU).

The OmniSource loader draws one batch from every source per iteration; one DataLoader serves all
sources (each worker builds a whole joint step), so the multi-source iteration should cost what a
single-source iteration of the same total batch costs. This script
measures both on a generated world (real decoding through omnisource.data.datasets, a tiny 3D
network, SGD steps) and prints iterations/s and the ratio.

    python benchmarks/joint_training.py [--iters 30] [--workers 0 2] [--batch 16] [--rounds 3]

Numbers depend on the machine and its load; nothing here is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def build_sources(root: Path, batch: int, preset: str, pov: dict, joint: bool):
    from omnisource.data.datasets import build_dataset
    from omnisource.data.multisource import Resample, Source

    lm = str(root / "label_map.txt")

    def ds(lst: Path, droot: Path):
        return build_dataset(lst, droot, preset, label_map=lm, **pov)

    target = ds(root / "target" / "train.txt", root / "target")
    if not joint:
        return [Source("target", target, batch)]
    # about the paper's Table 2 ratio 2 : 1 : 1 : 1, with the same total batch as target-only
    aux_bs = max(1, batch // 5)
    t_bs = batch - 3 * aux_bs
    return [
        Source("target", target, t_bs),
        Source("web_images", ds(root / "web/images/list.txt", root / "web/images"), aux_bs,
               resample=Resample("power", power=0.2)),
        Source("web_videos", ds(root / "web/videos/list.txt", root / "web/videos"), aux_bs,
               resample=Resample("clip", clip=20)),
        Source("untrimmed", ds(root / "web/untrimmed/list.txt", root / "web/untrimmed"), aux_bs),
    ]


def _busy_cpu_s() -> float:
    """CPU seconds all processes of the machine have run so far (from /proc/stat; Linux)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except OSError:  # pragma: no cover - not Linux
        return float("nan")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measure(loader, model, opt, iters: int, warmup: int = 3) -> tuple[float, float, float]:
    """(iterations/s, share of time spent waiting for data, machine CPU ms per iteration).

    The CPU column counts every process (main, workers, anything else running), so it shows
    whether a slower mode does more work or only waits more."""
    it = iter(loader)
    n = 0
    t_data = 0.0
    t0 = None
    while n < iters + warmup:
        if n == warmup:
            t0 = time.perf_counter()
            c0 = _busy_cpu_s()
            t_data = 0.0
        td = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            loader.set_epoch(loader.epoch)
            it = iter(loader)
            batch = next(it)
        t_data += time.perf_counter() - td
        srcs = batch["sources"]
        x = torch.cat([b["inputs"] for b in srcs.values()])
        y = torch.cat([b["label"] for b in srcs.values()])
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += 1
    total = time.perf_counter() - t0  # type: ignore[operator]
    return iters / total, t_data / total, 1000 * (_busy_cpu_s() - c0) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                    help="DataLoader workers (shared by the 4 sources in joint mode)")
    ap.add_argument("--world", default=None, help="existing world folder (default: generate one)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate target-only and joint this many times; medians are reported "
                         "(background load and drift then hit both alike)")
    args = ap.parse_args()

    from omnisource.data.multisource import MultiSourceLoader
    from omnisource.models import create_model
    from omnisource.pipeline.world import WorldSpec, generate_world

    tmp = tempfile.TemporaryDirectory()
    root = Path(args.world) if args.world else Path(tmp.name) / "world"
    if not args.world:
        generate_world(root, WorldSpec(web_images_per_class=20, web_videos_per_class=10,
                                       untrimmed_per_class=2))
    preset, pov = "slowonly_8x8x1_train", dict(clip_len=8, frame_interval=2, scale=48, crop_size=40)
    import warnings

    warnings.filterwarnings("ignore", message="This DataLoader will create")
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch}, {args.iters} iterations")
    for workers in args.workers:
        rates: dict[bool, list[float]] = {False: [], True: []}
        waits: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        sizes: dict[bool, str] = {}
        for _ in range(args.rounds):
            for joint in (False, True):
                torch.manual_seed(0)
                model = create_model("slowonly_r50_8x8x1_256e_kinetics400_rgb", num_classes=8,
                                     depth=18, base_channels=8)
                opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                sources = build_sources(root, args.batch, preset, pov, joint)
                loader = MultiSourceLoader(sources, seed=0, num_workers=workers)
                ips, wait, cpu = measure(loader, model, opt, args.iters)
                rates[joint].append(ips)
                cpus[joint].append(cpu)
                waits[joint].append(wait)
                sizes[joint] = "+".join(str(s.batch_size) for s in sources)
                del loader
        for joint in (False, True):
            label = "4 sources, same total batch" if joint else "target only"
            rounds = " ".join(f"{r:.2f}" for r in rates[joint])
            print(f"workers {workers}: {label:<28} batch {sizes[joint]:<9} "
                  f"{statistics.median(rates[joint]):6.2f} it/s (rounds: {rounds})  "
                  f"data wait {100 * statistics.median(waits[joint]):4.1f}% of time, "
                  f"machine CPU {statistics.median(cpus[joint]):5.0f} ms/it")
        ratio = statistics.median(rates[True]) / statistics.median(rates[False])
        print(f"workers {workers}: joint / target-only throughput = {ratio:.3f} (medians of "
              f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f})")
    tmp.cleanup()


if __name__ == "__main__":
    main()
