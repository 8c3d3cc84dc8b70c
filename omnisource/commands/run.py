"""Run the whole OmniSource recipe end to end (cached per stage, resumable).

  omnisource run [--data DIR] [--work-dir W] [--config omnisource.yaml] [--set key=value ...]
                 [--ablations] [--reduced]

Without --data a small deterministic synthetic world is generated in W/world (classes defined by
appearance and motion, few labelled target videos, noisy web images / videos / untrimmed videos)
so the method can be seen on a CPU in minutes. The data layout read with --data DIR:

  DIR/label_map.txt                 one class name per line
  DIR/target/train.txt, val.txt     mmaction2 video lists, paths relative to DIR/target/
  DIR/web/images/list.txt           path query_label   (optional; paths relative to that folder)
  DIR/web/videos/list.txt           path query_label   (optional)
  DIR/web/untrimmed/list.txt        path query_label   (optional)

query_label is the class (index or name) whose query found the sample; it may be wrong.

Stages: world -> check -> teacher -> teacher-2d -> ingest -> dedup -> score/select (teacher
filtering) -> untrimmed -> student (joint training) [-> unfiltered, only-* with --ablations]
-> test. A finished stage is skipped on re-run; an interrupted one resumes. Writes
W/results.json (measured numbers with seeds, stage status) and W/report/. Stages live in
W/stages/<stage>/; a stage failing on bad input stops the run (one line, exit 2), an unexpected
error too (one line, exit 1, traceback in W/stages/<stage>/error.log). One run per work dir.

Every key of --config / --set, its default and meaning: docs/config.md (also in
omnisource/pipeline/config.py, RUN_DEFAULTS).
"""
from __future__ import annotations

import argparse
import logging
import sys

from omnisource.config import add_set_argument

HELP = "run the whole OmniSource recipe (teacher, filtering, joint training, test) with caching"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="data folder (default: generate the synthetic world)")
    parser.add_argument("--work-dir", default="work_dirs/omnisource_run", help="where stages and results go")
    parser.add_argument("--config", default=None, help="run settings (YAML; see omnisource/pipeline/config.py)")
    add_set_argument(parser, example="train.epochs=10")
    parser.add_argument("--ablations", action="store_true",
                        help="also train target + each source alone and target + unfiltered web data")
    parser.add_argument("--reduced", action="store_true",
                        help="a tiny generated world and short training (smoke test, CI)")
    parser.add_argument("--progress", default=None, action=argparse.BooleanOptionalAction,
                        help="progress bars (default: when stderr is a terminal)")


def run(args: argparse.Namespace) -> int:
    from omnisource.pipeline.run import format_table, format_table2, run_pipeline

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # the web stages log their first drops one by one; in the recipe they are counted in each
    # stage's meta.json / dropped.jsonl and shown in the report instead
    logging.getLogger("omnisource.web").setLevel(logging.ERROR)
    world_spec = None
    sets = list(args.sets)
    if args.reduced:
        from omnisource.pipeline.world import WorldSpec

        world_spec = WorldSpec.reduced()
        sets = REDUCED_SETS + sets

    def say(msg: str) -> None:
        print(msg, flush=True)

    from omnisource.pipeline.run import StageCrashed

    try:
        results = run_pipeline(args.work_dir, args.data, args.config, tuple(sets), ablations=args.ablations or None,
                               world_spec=world_spec, say=say, progress=args.progress)
    except StageCrashed as err:   # one line; the traceback is in the stage folder
        print(f"omnisource run: error: {err}", file=sys.stderr)
        return 1
    print()
    print(format_table(results))
    if args.ablations:
        print("\nTable 2 layout (top-1/top-5 %, measured):")
        print(format_table2(results))
    for src, info in results.get("filtering", {}).items():
        unit = " positive clips from" if src == "untrimmed" else " of"
        line = f"teacher filtering, {src}: kept {info['kept']}"
        if info.get("crawl_size"):
            prec = info.get("pseudo_label_precision")
            line += (f"{unit} {info['crawl_size']} crawled ({100 * info['relevant_in_crawl']:.0f}% relevant);"
                     f" pseudo-label precision " + ("n/a" if prec is None else f"{100 * prec:.0f}%"))
        if info.get("threshold") is not None:
            line += f"; threshold {info['threshold']:.2f}"
        if info.get("estimated_precision") is not None:
            line += f" (calibrated precision estimate {100 * info['estimated_precision']:.0f}%)"
        if info.get("student_batch_size") is not None:
            line += f"; student batch {info['student_batch_size']}, loss weight {info['student_loss_weight']:.2f}"
        if info.get("ablation_gain_top1") is not None:
            line += f"; target + {src} alone: {100 * info['ablation_gain_top1']:+.1f} top-1 points"
        print(line)
    for key, label in (("omnisource_gain_top1", "OmniSource vs target only"),
                       ("unfiltered_gain_top1", "unfiltered web data vs target only")):
        if key in results:
            print(f"{label}: {100 * results[key]:+.1f} top-1 points (measured, seed {results['seed']})")
    if results.get("warning"):
        print(f"WARNING: {results['warning']}", file=sys.stderr)
    bad = {n: s for n, s in results["stages"].items() if s["status"] not in ("done", "cached")}
    if bad:
        print("stages that did not run:", file=sys.stderr)
        for n, s in bad.items():
            print(f"  {n}: {s['status']} ({s['reason']})", file=sys.stderr)
    print(f"results: {args.work_dir}/results.json   report: {args.work_dir}/report/")
    return 0


# settings of --reduced: a smoke test of every stage in well under a minute of training
REDUCED_SETS = [
    "train.epochs=2", "train.batch_size=4", "image_teacher.epochs=2", "image_teacher.batch_size=4",
    "sources.web_images.batch_size=2", "sources.web_videos.batch_size=2", "sources.untrimmed.batch_size=2",
    "train.num_workers=0",
    "untrimmed.window=1.0", "untrimmed.stride=1.0", "untrimmed.pos_threshold=0.0",
    "filter.top_fraction_per_class=0.5", "filter.agree=false",
]
