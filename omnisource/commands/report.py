"""Static HTML report of the web stages found in WORK_DIR (WORK_DIR/report/index.html).

Per stage: counts in/out/dropped by source and class; filter: per-class counts before/after
(Fig. 3), score histograms, kept and rejected samples of --class with scores and labels;
dedup: best-similarity histogram and duplicate pairs side by side; untrimmed: frame/window
score histograms and the most confident samples. Thumbnails are JPEG files beside the page.

Example:
  omnisource report work/ --class 5 --label-map label_map_k400.txt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "HTML report (counts, histograms, sample grids, duplicate pairs) of a run's web stages"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("work_dir", type=Path, help="folder holding the stages' outputs")
    p.add_argument("--out", type=Path, default=None, help="report folder (default WORK_DIR/report)")
    p.add_argument("--class", dest="class_index", default=None,
                   help="class (index or name with --label-map) whose kept / rejected samples are shown")
    p.add_argument("--label-map", type=Path, default=None, help="class names")
    p.add_argument("--max-items", type=int, default=24, help="samples per grid / pairs shown (default 24)")


def run(args: argparse.Namespace) -> int:
    from omnisource.data.annotations import read_label_map
    from omnisource.errors import InputError
    from omnisource.web.report import build_report, find_stages

    if not args.work_dir.is_dir():
        raise InputError("work dir not found", args.work_dir)
    names = read_label_map(args.label_map) if args.label_map else None
    cls = args.class_index
    if cls is not None:
        if str(cls).lstrip("-").isdigit():
            cls = int(cls)
        elif names is not None and cls in names:
            cls = names.index(cls)
        else:
            raise InputError(f"--class {cls!r} is not an index" + (" nor a class name of the label map"
                                                                   if names else " (pass --label-map for names)"))
    if not find_stages(args.work_dir):
        raise InputError("no finished stage (meta.json) found under the work dir", args.work_dir)
    index = build_report(args.work_dir, args.out, cls, names, args.max_items)
    print(f"report: {index}", file=sys.stderr)
    return 0
