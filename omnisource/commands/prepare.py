"""Datasets of the zoo from their official layout to training lists.

    omnisource prepare kinetics400 --src data/kinetics400_raw --out data/kinetics400
    omnisource prepare ucf101 --src data/ucf101 --out data/ucf101/lists --split 2
    omnisource prepare --list

Writes under ``--out``: ``label_map.txt``, ``<dataset>_<split>_list_{videos,rawframes}.txt``
(paths relative to ``--src``: train with ``data_root: <src>``), ``missing_<split>.txt`` (listed
videos not on disk), ``prepare_report.json``; ActivityNet adds clip-level manifests, HVU a tag
category map. A listed but absent video is counted and named, never a traceback; an annotation
file in the wrong format names the file, the line and what was expected. Nothing is overwritten
without ``--force``. Exit status 0 when lists were written (see the missing counts), 1 when a
split found none of its videos, 2 for bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "dataset lists + label map from a dataset's official annotation files (--list: which)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", nargs="?", help="dataset name (see --list)")
    p.add_argument("--list", action="store_true", help="name every dataset this command prepares")
    p.add_argument("--src", type=Path, help="the dataset as downloaded (annotations + videos below it)")
    p.add_argument("--out", type=Path, help="output folder for the lists")
    p.add_argument("--split", type=int, default=1, help="UCF101 / HMDB51 split (1-3)")
    p.add_argument("--label-map", type=Path, default=None, help="class order to use instead of the dataset's")
    p.add_argument("--classes", type=Path, default=None, help="Mini-Kinetics-200: the 200 class names")
    p.add_argument("--annotations", nargs="+", default=[], metavar="SPLIT=FILE",
                   help="annotation files by role (train=, val=, test=, classes=) when not found under --src")
    p.add_argument("--probe", action="store_true",
                   help="also open every found video (metadata + first frame): unreadable ones are left out "
                        "of the lists and named in unreadable_<split>.txt")
    p.add_argument("--workers", type=int, default=4, help="probe threads (default 4)")
    p.add_argument("--force", action="store_true", help="overwrite the lists of an earlier run")


def run(args: argparse.Namespace) -> int:
    from omnisource.data.prepare import DOCS, list_datasets, prepare
    from omnisource.errors import InputError

    if args.list:
        for name in list_datasets():
            print(f"{name:<18} {DOCS[name]}")
        return 0
    if not args.dataset or not args.src or not args.out:
        raise InputError("prepare needs DATASET --src RAW_DIR --out DIR (or --list)")
    ann = {}
    for item in args.annotations:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--annotations expects SPLIT=FILE, got {item!r}")
        ann[key] = value
    if args.split not in (1, 2, 3):
        raise InputError(f"--split must be 1, 2 or 3, got {args.split}")
    res = prepare(args.dataset, args.src, args.out, force=args.force, split=args.split, annotations=ann,
                  label_map=args.label_map, classes=args.classes, probe=args.probe, workers=args.workers)
    empty = []
    print(f"{res.dataset}: {res.report['classes']} classes; data_root {res.report['data_root']}")
    for name, s in res.report["splits"].items():
        extra = f", {s['clips']} clips" if "clips" in s else ""
        bad = f", {s['unreadable']} unreadable: unreadable_{name}.txt" if "unreadable" in s else ""
        print(f"  {name:<16} {s['found']:>8} of {s['listed']} listed videos found ({s['missing']} missing: "
              f"missing_{name}.txt{bad}){extra} -> {res.out / s['list']}")
        if s["listed"] and not s["found"]:
            empty.append(name)
    if empty:
        print(f"prepare: no video of split(s) {', '.join(empty)} was found under {args.src}", file=sys.stderr)
        return 1
    return 0
