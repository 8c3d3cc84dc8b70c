"""Train a recognizer from a YAML recipe (single process, or one process per GPU with torchrun).

Examples::

    omnisource train configs/tsn_r50_1x1x3_100e_kinetics400_rgb.yaml --validate
    omnisource train CONFIG --resume auto              # continue after a crash / kill -9
    omnisource train CONFIG --set optim.lr=0.02 data.batch_size=16
    torchrun --nproc-per-node 8 -m omnisource train CONFIG --validate

The work dir (default ``work_dirs/<config name>``) receives ``config.yaml`` (the resolved
config), ``log.jsonl``, TensorBoard events, ``latest.pth``, ``epoch_N.pth`` and ``best.pth``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from omnisource.config import add_set_argument

HELP = "train a recognizer from a YAML recipe (torchrun for multi-GPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML recipe (configs/*.yaml)")
    p.add_argument("--work-dir", help="output folder (default: work_dir of the config, else work_dirs/<config name>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|PATH",
                   help="resume from WORK_DIR/latest.pth ('auto', the default) or from PATH")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels: a resumed run equals an uninterrupted one")
    p.add_argument("--validate", default=None, action=argparse.BooleanOptionalAction,
                   help="validate every train.val_interval epochs (default: when data.val.ann_file is set)")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    add_set_argument(p, example="optim.lr=0.1")


def run(args: argparse.Namespace) -> int:
    from omnisource.config import load_config
    from omnisource.engine.train import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    sets = list(args.sets)
    if args.seed is not None:
        sets.append(f"train.seed={args.seed}")
    if args.deterministic:
        sets.append("train.deterministic=true")
    cfg = load_config(args.config, sets)
    work_dir = Path(args.work_dir or cfg.work_dir or Path("work_dirs") / Path(args.config).stem)
    from omnisource.engine.distributed import cleanup, get_rank

    try:
        summary = train(cfg, work_dir, resume=args.resume, validate=args.validate,
                        device=args.device)
        rank = get_rank()
    finally:
        cleanup()
    if rank == 0:
        best = summary.get("best") or {}
        extra = f"; best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}" if best else ""
        print(f"finished {summary['global_iter']} iterations in {summary['work_dir']}{extra}")
        if summary.get("unreadable"):
            n = summary["unreadable"]
            what = "read of an unreadable train sample was" if n == 1 else "reads of unreadable train samples were"
            print(f"WARNING: {n} {what} replaced by other samples (the warnings above name the files; "
                  "`omnisource data check` lists them)", file=sys.stderr)
        if summary.get("damaged_frames"):
            n = summary["damaged_frames"]
            print(f"WARNING: {n} damaged frame{'' if n == 1 else 's'} of train clips could not be decoded and "
                  f"{'was' if n == 1 else 'were'} replaced by the nearest decodable frame (`omnisource data check` "
                  "names the damaged files)", file=sys.stderr)
    return 0
