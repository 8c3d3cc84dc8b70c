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
from omnisource.errors import ConfigError

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
    p.add_argument("--compare-mmaction2", action="store_true",
                   help="also time mmaction2 1.2.0's own model of the row's config on the same input shape "
                        "(its reference venv: $MMACTION2_REF or ~/.cache/mmaction2-ref; never imported here)")
    add_set_argument(p, example="test.num_clips=5")


# timed in the mmaction2 reference venv (a subprocess): the row's 1.x config with random weights,
# the same batch-1 loop as ours
_MMACTION2_TIMER = """
import glob, json, os, sys, time, warnings
warnings.filterwarnings('ignore')
import torch
from mmengine.config import Config
from mmaction.registry import MODELS
from mmaction.utils import register_all_modules
import mmaction
register_all_modules()
a = json.loads(sys.argv[1])
torch.set_num_threads(a['threads'])
root = os.path.join(os.path.dirname(mmaction.__file__), '.mim', 'configs', 'recognition')
cfg = Config.fromfile(glob.glob(os.path.join(root, '*', a['config'] + '.py'))[0])
cfg.model.backbone.pretrained = None
model = MODELS.build(cfg.model).eval()
x = torch.randn(*a['shape'])
ctx = (lambda: torch.autocast('cpu', dtype=torch.bfloat16)) if a['amp'] == 'bf16' else __import__('contextlib').nullcontext
def once():
    with torch.inference_mode(), ctx():
        model(x, mode='tensor', stage='head')
for _ in range(a['warmup']):
    once()
t0 = time.perf_counter()
for _ in range(a['n']):
    once()
print(json.dumps({'videos_per_s': a['n'] / (time.perf_counter() - t0)}))
"""


def mmaction2_videos_per_s(config: str, shape: tuple, n: int, warmup: int, amp: str, threads: int) -> float:
    """mmaction2's batch-1 rate for ``config`` on an input of ``shape`` (ConfigError when it cannot run)."""
    import json
    import os
    import subprocess
    from pathlib import Path

    py = Path(os.environ.get("MMACTION2_REF", Path.home() / ".cache" / "mmaction2-ref")) / "bin" / "python"
    if not py.is_file():
        raise ConfigError(f"no mmaction2 reference venv at {py.parent.parent} (build it with "
                           "../shared/tools/mmaction2-reference/setup.sh, or set MMACTION2_REF)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    payload = json.dumps({"config": config, "shape": list(shape), "n": n, "warmup": warmup, "amp": amp,
                          "threads": threads})
    proc = subprocess.run([str(py), "-c", _MMACTION2_TIMER, payload], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ConfigError("mmaction2 timing failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["videos_per_s"])


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
    if args.compare_mmaction2:

        config = meta.get("mmaction2_config")
        if not config:
            raise ConfigError(f"{cfg.model.name} has no mmaction2 config to compare with")
        if args.fuse_conv_bn or dev.type != "cpu":
            raise ConfigError("--compare-mmaction2 times both on CPU without --fuse-conv-bn")
        ref = mmaction2_videos_per_s(config, (1,) + tuple(shape), args.num_videos, args.warmup, args.amp,
                                     torch.get_num_threads())
        ours = args.num_videos / dt
        print(f"mmaction2 1.2.0 ({config}): videos/s {ref:.3f}; omnisource / mmaction2 = {ours / ref:.2f}x")
    return 0
