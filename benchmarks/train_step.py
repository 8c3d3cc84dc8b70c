"""Training-step and inference throughput of TSN-R50 and SlowOnly-R50 on this machine.

Measures forward+backward+SGD-step samples/s (train mode) and inference clips/s (eval mode,
no grad) for

* TSN-R50: 3 segments of 224x224 per sample, input ``[N, 3, 3, 224, 224]``;
* SlowOnly-R50 4x16x1: one 4-frame 224x224 clip per sample, input ``[N, 1, 3, 4, 224, 224]``;

in fp32 and/or bf16 autocast, with channels_last on/off/``auto`` (``auto``: what the trainer's
``train.channels_last: auto`` picks for that model on this device) and optionally
``torch.compile`` (``--compile``; compile time is reported separately from the steady-state
rate). Next to each rate: the GFLOP/s it sustains (FLOPs of one step counted by torch's
``FlopCounterMode``, times the rate) and the same process's 2048x2048 fp32 matrix-multiply
GFLOP/s (``sgemm``), the practical ceiling of this CPU: how far from the hardware a step is,
whichever side is faster. Every measurement runs in its own subprocess, ours and mmaction2's alike
(``--compare-mmaction2``: mmaction2's own models in the reference venv
``~/.cache/mmaction2-ref``; omnisource never imports it). With ``--repeats R`` the variants are
run round-robin R times (A, B, A, B, ...) and medians are printed, so background load hits
both sides alike; the load average is printed with the numbers. Prints measured numbers only.

    python benchmarks/train_step.py                       # 2 threads, batch 2, fp32 + bf16
    python benchmarks/train_step.py --amp none --channels-last auto --compare-mmaction2 --repeats 3
    python benchmarks/train_step.py --amp none --models tsn --compile --modes train
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

MODELS = {
    "tsn": ("tsn_r50_1x1x3_100e_kinetics400_rgb", (3, 3, 224, 224),
            "tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py"),
    "slowonly": ("slowonly_r50_4x16x1_256e_kinetics400_rgb", (1, 3, 4, 224, 224),
                 "slowonly/slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb.py"),
    # the 3D families of issue 21, each at its zoo input (one clip per sample)
    "i3d": ("i3d_r50_32x2x1_100e_kinetics400_rgb", (1, 3, 32, 224, 224),
            "i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py"),
    "slowfast": ("slowfast_r50_4x16x1_256e_kinetics400_rgb", (1, 3, 32, 224, 224),
                 "slowfast/slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py"),
    "r2plus1d": ("r2plus1d_r34_8x8x1_180e_kinetics400_rgb", (1, 3, 8, 224, 224),
                 "r2plus1d/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb.py"),
    "csn": ("ircsn_ig65m_pretrained_bnfrozen_r50_32x2x1_58e_kinetics400_rgb", (1, 3, 32, 224, 224),
            "csn/ircsn_ig65m-pretrained-r50-bnfrozen_8xb12-32x2x1-58e_kinetics400-rgb.py"),
    "c3d": ("c3d_sports1m_16x1x1_45e_ucf101_rgb", (1, 3, 16, 112, 112),
            "c3d/c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb.py"),
    "x3d": ("x3d_s_13x6x1_facebook_kinetics400_rgb", (1, 3, 13, 160, 160),
            "x3d/x3d_s_13x6x1_facebook-kinetics400-rgb.py"),
}
# the default run: the original two (the others are minutes each on 2 CPU cores: --models ...)
DEFAULT_MODELS = ["tsn", "slowonly"]
REF_VENV = Path(os.environ.get("MMACTION2_REF", Path.home() / ".cache" / "mmaction2-ref"))
ROOT = Path(__file__).resolve().parents[1]

# The timing loop, shared verbatim by both sides (exec'd in each measuring subprocess). Each side
# brings its own ``forward`` and ``make_optimizer``: SGD (momentum 0.9, weight decay 1e-4) as its
# trainer builds it (mmengine: torch.optim.SGD with torch's defaults; ours: engine.optim).
# ``compile`` wraps the model in torch.compile; the first (warm-up) steps then include the
# compilation, which is timed and reported on its own.
LOOP = textwrap.dedent('''
    def bench(model, shape, batch, amp, channels_last, layout, iters, warmup, infer, compile=False):
        import contextlib, time, torch
        if channels_last:
            model.to(memory_format=torch.channels_last if layout == "2d" else torch.channels_last_3d)
        x = torch.randn((batch,) + tuple(shape))
        y = torch.randint(0, 1 << 20, (batch,))   # taken modulo the model's classes below
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp == "bf16" else contextlib.nullcontext
        opt = make_optimizer(model)
        model.train(not infer)
        net = torch.compile(model) if compile else model
        def step():
            if infer:
                with torch.inference_mode(), ctx():
                    forward(net, x)
                return
            with ctx():
                out = forward(net, x)
            target = (y % out.shape[-1]).repeat_interleave(out.shape[0] // batch)
            loss = torch.nn.functional.cross_entropy(out.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        t1 = time.perf_counter()
        for _ in range(iters):
            step()
        t2 = time.perf_counter()
        # the arithmetic one step does (torch's own counter, eager model, one untimed step):
        # with the rate it gives the GFLOP/s actually sustained
        from torch.utils.flop_counter import FlopCounterMode
        timed_net, net = net, model      # step() reads ``net`` from this scope
        with FlopCounterMode(display=False) as fc:
            step()
        net = timed_net
        flops = fc.get_total_flops()
        return {"rate": batch * iters / (t2 - t1), "warmup_s": t1 - t0,
                "gflops": flops * iters / (t2 - t1) / 1e9, "gflop_per_step": flops / 1e9}

    def sgemm_gflops(n=2048, reps=10):
        """This process's fp32 matrix-multiply rate: the ceiling convolutions are measured against."""
        import time, torch
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
''')

MMACTION2_SCRIPT = textwrap.dedent('''
    import json, os, sys, torch
    from mmengine.config import Config
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    register_all_modules()
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    exec(args["loop"])
    def forward(model, x):
        return model(x, mode="tensor", stage="head")
    def make_optimizer(model):
        return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
    cfg = Config.fromfile(os.path.join(args["cfg_root"], args["config"]))
    cfg.model.backbone.pretrained = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    res = {}
    for mode in args["modes"]:
        res[mode] = bench(model, args["shape"], args["batch"], args["amp"], args["channels_last"],
                          args["layout"], args["iters"], args["warmup"], mode == "infer")
    res["sgemm_gflops"] = sgemm_gflops()
    print(json.dumps(res))
''')


def forward(model, x):
    return model(x)


def make_optimizer(model):
    """The trainer's SGD (fused on CPU), same hyper-parameters as the mmaction2 side."""
    from omnisource.config import load_config
    from omnisource.engine.optim import build_optimizer

    cfg = load_config(None, ["optim.momentum=0.9", "optim.weight_decay=0.0001"])
    return build_optimizer(model, cfg.optim, 1e-4)


def ours_worker(payload: dict) -> dict:
    """Runs in a subprocess: our preset through the shared loop."""
    import torch

    from omnisource.engine.train import use_channels_last
    from omnisource.models import create_model

    torch.set_num_threads(payload["threads"])
    exec(payload["loop"], globals())
    torch.manual_seed(0)
    model = create_model(payload["name"])
    cl = payload["channels_last"]
    if cl == "auto":
        cl = use_channels_last(model, payload["layout"])
    res: dict = {"channels_last": bool(cl)}
    for mode in payload["modes"]:
        res[mode] = bench(model, payload["shape"], payload["batch"], payload["amp"], cl,  # noqa: F821
                          payload["layout"], payload["iters"], payload["warmup"], mode == "infer",
                          payload["compile"])
    res["sgemm_gflops"] = sgemm_gflops()  # noqa: F821
    return res


def _run(cmd: list[str], payload: dict) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS=str(payload["threads"]))
    proc = subprocess.run(cmd + [json.dumps(payload)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        print("  run failed:", proc.stderr.strip().splitlines()[-3:], flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(side: str, key: str, args, amp: str, cl, compile_: bool) -> dict | None:
    name, shape, config = MODELS[key]
    payload = dict(threads=args.threads, loop=LOOP, shape=shape, batch=args.batch, amp=amp,
                   channels_last=cl, layout="2d" if key == "tsn" else "3d", iters=args.iters,
                   warmup=args.warmup + (1 if compile_ else 0), modes=args.modes)
    if side == "omnisource":
        payload.update(name=name, compile=compile_)
        return _run([sys.executable, str(Path(__file__).resolve()), "--worker"], payload)
    py = REF_VENV / "bin" / "python"
    cfg_root = next((REF_VENV / "lib").glob("python3*/site-packages/mmaction/.mim/configs/recognition"), None)
    if not py.is_file() or cfg_root is None:
        return None
    payload.update(cfg_root=str(cfg_root), config=config, channels_last=bool(cl))
    return _run([str(py), "-c", MMACTION2_SCRIPT], payload)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS) + ["all"], default=DEFAULT_MODELS,
                   help="which models (all: every family above)")
    p.add_argument("--amp", nargs="+", choices=["none", "bf16"], default=["none", "bf16"])
    p.add_argument("--channels-last", choices=["on", "off", "both", "auto"], default="both",
                   help="ours: NHWC/NDHWC on, off, both, or the trainer's auto rule; mmaction2 "
                        "runs its default NCHW except with 'on' (and with 'both', both)")
    p.add_argument("--compile", action="store_true", help="also measure ours under torch.compile")
    p.add_argument("--modes", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=5,
                   help="timed steps per measurement (fewer swing the rate by +-5%% on a 2-core VM)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="round-robin rounds; medians are printed")
    p.add_argument("--compare-mmaction2", action="store_true")
    p.add_argument("--out", help="also write the medians as JSON (benchmarks/results/train_step.json feeds "
                                 "the throughput column of docs/models.md)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if "all" in args.models:
        args.models = list(MODELS)
    if args.worker:
        print(json.dumps(ours_worker(json.loads(args.worker))))
        return 0

    import torch

    from omnisource.engine.hardware import cpu_bf16_support

    native, what = cpu_bf16_support()
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{args.iters} timed iterations after {args.warmup} warm-up, {args.repeats} round(s)")
    print(f"bf16 hardware: {'yes' if native else 'NO'} ({what})")
    if args.compare_mmaction2 and not (REF_VENV / "bin" / "python").is_file():
        print(f"mmaction2 reference venv not found at {REF_VENV}; comparison skipped")
        args.compare_mmaction2 = False
    from omnisource.engine.hardware import cpu_name

    cpu = cpu_name()
    print(f"CPU: {cpu}")
    table: list[dict] = []
    ours_cl = {"on": [True], "off": [False], "both": [False, True], "auto": ["auto"]}[args.channels_last]
    ref_cl = {"on": [True], "off": [False], "both": [False, True], "auto": [False]}[args.channels_last]
    for key in args.models:
        for amp in args.amp:
            variants = [("omnisource", cl, False) for cl in ours_cl]
            variants += [("omnisource", cl, True) for cl in ours_cl] if args.compile else []
            variants += [("mmaction2", cl, False) for cl in ref_cl] if args.compare_mmaction2 else []
            runs: dict[tuple, list[dict]] = {v: [] for v in variants}
            loads = [_load()]
            for r in range(args.repeats):
                for v in variants:
                    res = measure(v[0], key, args, amp, v[1], v[2])
                    if res is not None:
                        runs[v].append(res)
                loads.append(_load())
            print(f"\n{key} amp={amp}  (load average before/after each round: {' | '.join(loads)})")
            print(f"{'side':10s} {'NHWC':5s} {'compile':7s} {'train/s':>8s} {'infer/s':>8s} "
                  f"{'GFLOP/s':>8s} {'sgemm':>6s}  per-round train/s")
            med: dict[tuple, dict[str, float]] = {}
            for v, rs in runs.items():
                if not rs:
                    continue
                m = {mode: statistics.median(r[mode]["rate"] for r in rs) for mode in args.modes}
                med[v] = m
                cl = rs[0].get("channels_last", v[1])
                extra = ""
                if v[2]:
                    extra = f"  compile+warm-up {statistics.median(r['train']['warmup_s'] for r in rs):.0f}s" \
                        if "train" in args.modes else ""
                rounds = " ".join(f"{r['train']['rate']:.3f}" for r in rs) if "train" in args.modes else ""
                mode0 = args.modes[0]   # GFLOP/s of the first mode (train unless only infer)
                gf = statistics.median(r[mode0].get("gflops", float("nan")) for r in rs)
                peak = statistics.median(r.get("sgemm_gflops", float("nan")) for r in rs)
                print(f"{v[0]:10s} {str(cl):5s} {str(v[2]):7s} "
                      + " ".join(f"{m.get(k, float('nan')):8.3f}" for k in ("train", "infer"))
                      + f" {gf:8.1f} {peak:6.0f}  {rounds}{extra}", flush=True)
            base = med.get(("mmaction2", False, False))
            ours0 = next((m for v, m in med.items() if v[0] == "omnisource" and not v[2]), None)
            if ours0 and amp == "none":
                table.append({"model": MODELS[key][0], "key": key, "amp": amp,
                              "train": ours0.get("train", float("nan")), "infer": ours0.get("infer", float("nan")),
                              "ref_train": (base or {}).get("train", float("nan")),
                              "ref_infer": (base or {}).get("infer", float("nan"))})
            if ours0 and amp == "bf16" and table and table[-1]["key"] == key:
                table[-1].update(bf16_train=ours0.get("train"), bf16_infer=ours0.get("infer"))
            if base:
                for v, m in med.items():
                    if v[0] == "omnisource":
                        ratios = " ".join(f"{k} {m[k] / base[k]:.2f}x" for k in args.modes)
                        print(f"  ours (NHWC={v[1]}, compile={v[2]}) vs mmaction2 default NCHW: {ratios}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"cpu": cpu, "threads": args.threads, "batch": args.batch, "torch": torch.__version__,
                                   "rows": table}, indent=1) + "\n")
    return 0



if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
