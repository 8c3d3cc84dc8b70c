"""The zoo table: every (architecture, dataset) recipe, the accuracy the mmaction2 zoo reports
for it, and whether a local run of it exists.

    omnisource zoo list [--dataset sthv2] [--arch tsm] [--work-dirs work_dirs] [--json]

``--arch`` matches a family name (``tsm``, ``slowfast``, ...) or a part of the row name. A local
result is ``<work-dirs>/<row name>/best.json`` (written by ``omnisource train --work-dir
work_dirs/<row name> configs/<row name>.yaml``). Rows come from ``omnisource/zoo/table.yaml``,
from which ``configs/`` is generated (``python -m omnisource.zoo``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "list the zoo's recipes with their reported accuracy and local results"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="print the zoo table")
    ls.add_argument("--dataset", default=None, help="only rows of this dataset (e.g. kinetics400, sthv2)")
    ls.add_argument("--arch", default=None, help="only rows of this family, or whose name contains it")
    ls.add_argument("--work-dirs", type=Path, default=Path("work_dirs"), help="where local runs live")
    ls.add_argument("--json", action="store_true", help="one JSON object per row")


def run(args: argparse.Namespace) -> int:
    from omnisource.errors import InputError
    from omnisource.zoo import local_result, zoo_rows

    rows = zoo_rows(dataset=args.dataset, arch=args.arch)
    if not rows:
        raise InputError(f"no zoo row matches dataset={args.dataset!r} arch={args.arch!r}")
    if args.json:
        for r in rows:
            print(json.dumps({"name": r.name, "family": r.family, "dataset": r.dataset, "sampling": r.sampling,
                              "mmaction2_configs": list(r.configs), "zoo_top1": r.top1, "zoo_top5": r.top5,
                              "zoo_resolution": r.resolution, "recipe": f"configs/{r.name}.yaml",
                              "local": local_result(r.name, args.work_dirs) or None}))
        return 0
    w = max(len(r.name) for r in rows)
    print(f"{'recipe (configs/<name>.yaml)':<{w}}  {'family':<12} {'dataset':<12} {'sampling':<9} "
          f"{'zoo top-1':>14} {'top-5':>14}  local result")
    for r in rows:
        top1 = "-" if r.top1 is None else str(r.top1)
        top5 = "-" if r.top5 is None else str(r.top5)
        print(f"{r.name:<{w}}  {r.family:<12} {r.dataset:<12} {r.sampling:<9} {top1:>14} {top5:>14}  "
              f"{local_result(r.name, args.work_dirs) or '-'}")
    print(f"{len(rows)} rows; zoo accuracies as mmaction2's model zoo reports them (first table row of the config)")
    return 0
