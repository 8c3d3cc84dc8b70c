"""Training-step and inference throughput of TSN-R50 and SlowOnly-R50 on this machine.

Measures forward+backward+SGD-step samples/s (train mode) and inference clips/s (eval mode,
no grad) for

* TSN-R50: 3 segments of 224x224 per sample, input ``[N, 3, 3, 224, 224]``;
* SlowOnly-R50 4x16x1: one 4-frame 224x224 clip per sample, input ``[N, 1, 3, 4, 224, 224]``;

in fp32 and/or bf16 autocast, with channels_last on/off (2D only: NHWC; 3D: NDHWC). Prints
measured numbers only. ``--compare-mmaction2`` runs the same loop on mmaction2's own models in
the reference venv (``~/.cache/mmaction2-ref``, a subprocess: omnisource never imports it).

    python benchmarks/train_step.py                       # 2 threads, batch 2, fp32 + bf16
    python benchmarks/train_step.py --amp none --channels-last both --compare-mmaction2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

MODELS = {
    "tsn": ("tsn_r50_1x1x3_100e_kinetics400_rgb", (3, 3, 224, 224),
            "tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py"),
    "slowonly": ("slowonly_r50_4x16x1_256e_kinetics400_rgb", (1, 3, 4, 224, 224),
                 "slowonly/slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb.py"),
}
REF_VENV = Path(os.environ.get("MMACTION2_REF", Path.home() / ".cache" / "mmaction2-ref"))

# The timing loop, shared verbatim by both sides (run with exec in the mmaction2 subprocess).
LOOP = textwrap.dedent('''
    def bench(model, shape, batch, amp, channels_last, layout, iters, warmup, infer):
        import contextlib, time, torch
        if channels_last:
            model.to(memory_format=torch.channels_last if layout == "2d" else torch.channels_last_3d)
        x = torch.randn((batch,) + tuple(shape))
        y = torch.randint(0, 400, (batch,))
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp == "bf16" else contextlib.nullcontext
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        def step():
            if infer:
                with torch.inference_mode(), ctx():
                    forward(model, x)
                return
            with ctx():
                out = forward(model, x)
            loss = torch.nn.functional.cross_entropy(out.float(), y.repeat_interleave(out.shape[0] // batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.train(not infer)
        for _ in range(warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        return batch * iters / (time.perf_counter() - t0)
''')

MMACTION2_SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from mmengine.config import Config
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    register_all_modules()
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    exec(args["loop"])
    def forward(model, x):
        return model(x, mode="tensor", stage="head")
    import os
    cfg = Config.fromfile(os.path.join(args["cfg_root"], args["config"]))
    cfg.model.backbone.pretrained = None
    model = MODELS.build(cfg.model)
    res = {}
    for infer in (False, True):
        res["infer" if infer else "train"] = bench(model, args["shape"], args["batch"], args["amp"],
            args["channels_last"], args["layout"], args["iters"], args["warmup"], infer)
    print(json.dumps(res))
''')


def forward(model, x):
    return model(x)


def run_ours(key: str, args, amp: str, cl: bool) -> dict[str, float]:
    import torch

    from omnisource.models import create_model

    exec(LOOP, globals())
    name, shape, _ = MODELS[key]
    torch.manual_seed(0)
    model = create_model(name)
    layout = "2d" if key == "tsn" else "3d"
    out = {}
    for infer in (False, True):
        out["infer" if infer else "train"] = bench(  # noqa: F821 (defined by exec(LOOP))
            model, shape, args.batch, amp, cl, layout, args.iters, args.warmup, infer)
    return out


def run_mmaction2(key: str, args, amp: str, cl: bool) -> dict[str, float] | None:
    py = REF_VENV / "bin" / "python"
    if not py.is_file():
        print(f"  mmaction2 reference venv not found at {REF_VENV}; skipping comparison")
        return None
    cfg_root = next((REF_VENV / "lib").glob("python3*/site-packages/mmaction/.mim/configs/recognition"), None)
    _, shape, config = MODELS[key]
    payload = dict(threads=args.threads, loop=LOOP, cfg_root=str(cfg_root), config=config, shape=shape,
                   batch=args.batch, amp=amp, channels_last=cl, layout="2d" if key == "tsn" else "3d",
                   iters=args.iters, warmup=args.warmup)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run([str(py), "-c", MMACTION2_SCRIPT, json.dumps(payload)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        print("  mmaction2 run failed:", proc.stderr.strip().splitlines()[-1:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--amp", nargs="+", choices=["none", "bf16"], default=["none", "bf16"])
    p.add_argument("--channels-last", choices=["on", "off", "both"], default="both")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compare-mmaction2", action="store_true")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    cls = {"on": [True], "off": [False], "both": [False, True]}[args.channels_last]
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{args.iters} timed iterations after {args.warmup} warm-up")
    print(f"{'model':10s} {'amp':5s} {'NHWC':5s} {'side':10s} {'train samples/s':>16s} {'infer clips/s':>14s}")
    for key in args.models:
        for amp in args.amp:
            for cl in cls:
                rows = [("omnisource", run_ours(key, args, amp, cl))]
                if args.compare_mmaction2:
                    rows.append(("mmaction2", run_mmaction2(key, args, amp, cl)))
                for side, r in rows:
                    if r is None:
                        continue
                    print(f"{key:10s} {amp:5s} {str(cl):5s} {side:10s} {r['train']:16.3f} {r['infer']:14.3f}",
                          flush=True)
                if len(rows) == 2 and rows[1][1]:
                    a, b = rows[0][1], rows[1][1]
                    print(f"{'':33s} ratio {a['train'] / b['train']:10.2f}x {a['infer'] / b['infer']:13.2f}x")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
