"""Inference throughput with the zoo's method: batch 1 (one video with all its test views),
warm-up iterations, synchronised timing; and the peak memory.

The input is a random tensor of exactly the test preset's shape (decoding excluded, as the
zoo's "inference time (video/s)" column). Peak memory is ``torch.cuda.max_memory_allocated`` on
GPU (the zoo's gpu_mem column) and the process's peak resident set size (``ru_maxrss``) on CPU.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

from omnisource.config import add_set_argument

HELP = "inference videos/s (batch 1, all test views) and peak memory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")
    p.add_argument("--checkpoint", help="weights (optional: random weights time the same)")
    p.add_argument("--num-videos", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-clips", type=int)
    p.add_argument("--crops", type=int, choices=[1, 3, 10])
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--channels-last", nargs="?", const="on", choices=["auto", "on", "off"],
                   help="NHWC/NDHWC memory format; alone: on (default: the config's "
                        "train.channels_last, 'auto' unless set: what `omnisource test` uses)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", help="cpu | cuda")
    p.add_argument("--fuse-conv-bn", action="store_true",
                   help="fold BatchNorm into the convolutions before inference (faster; scores equal to ~1e-5)")
    add_set_argument(p, example="test.num_clips=5")


def test_input_shape(cfg, num_clips=None, crops=None, height: int = 256, width: int = 340) -> tuple:
    """Shape of one video's model input under the config's test preset (from a dummy video)."""
    import numpy as np

    from omnisource.data.presets import get_preset
    from omnisource.engine.evaluate import test_preset_overrides

    preset = get_preset(cfg.data.test.preset, **test_preset_overrides(cfg, num_clips, crops))
    idx = preset.sampler(300, np.random.default_rng(0))
    frames = np.zeros((len(idx), height, width, 3), dtype=np.uint8)
    return tuple(preset(frames, np.random.default_rng(0)).shape)


def peak_memory_mb(dev) -> tuple[str, float]:
    import torch

    if dev.type == "cuda":
        return "gpu_max_allocated", torch.cuda.max_memory_allocated(dev) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return "peak_rss", rss / (2**20 if sys.platform == "darwin" else 2**10)


def run(args: argparse.Namespace) -> int:
    import torch

    from omnisource.engine.evaluate import autocast_context, load_config_and_model

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, model, dev = load_config_and_model(
        args.config, args.checkpoint, sets=args.sets, device=args.device, fuse_conv_bn=args.fuse_conv_bn,
        channels_last={"auto": "auto", "on": True, "off": False, None: None}[args.channels_last])
    meta = getattr(model, "meta", None) or {}
    shape = test_input_shape(cfg, args.num_clips, args.crops)
    x = torch.randn((1,) + shape, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def once() -> None:
        with torch.inference_mode(), autocast_context(dev, args.amp):
            model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(args.warmup):
        once()
    t0 = time.perf_counter()
    for _ in range(args.num_videos):
        once()
    dt = time.perf_counter() - t0
    kind, mem = peak_memory_mb(dev)
    views = shape[0]
    print(f"model: {cfg.model.name}  input per video: {list(shape)}  device: {dev}  amp: {args.amp}  "
          f"channels_last: {meta.get('channels_last')}  fused conv+BN: {meta.get('fused_conv_bn', 0)}")
    print(f"videos/s: {args.num_videos / dt:.3f}  ({views} views per video: {views * args.num_videos / dt:.2f} views/s)")
    print(f"{kind}: {mem:.1f} MiB")
    return 0
