"""Teacher filtering and pseudo-labelling of web data (paper section 3.4).

One teacher or an ensemble (--teacher CONFIG CHECKPOINT, repeated; probabilities averaged).
Images are scored by 2D teachers (one centre crop); videos by 2D teachers (segment average)
or 3D teachers (clips). label = teacher argmax, score = its probability. Keep rules (all given
must pass): --threshold (global), --source-threshold SRC=T, --topk-per-class K or
--top-fraction-per-class F (by rank), --agree (argmax == query class).

Two passes: OUT/scores/ (the resumable, sharded teacher pass) and the selection into OUT/
(manifest.jsonl kept, dropped.jsonl rejected with scores, meta.json), plus per-class counts
before/after filtering as OUT/class_counts.csv and .png (the paper's Fig. 3).

Example:
  omnisource filter web/dedup/manifest.jsonl --teacher configs/tsn_r50.yaml tsn_r50.pth \\
      --threshold 0.5 --label-map label_map_k400.txt --out work/filter
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "teacher filtering + pseudo-labels of web data, with per-class counts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from omnisource.web.runopts import add_run_arguments, add_teacher_arguments

    p.add_argument("manifest", type=Path, help="web manifest (JSONL)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--data-root", type=Path, default=None,
                   help="root of the manifest's paths (default: from its meta.json, else its folder)")
    p.add_argument("--label-map", type=Path, default=None, help="class names (maps names, labels the table)")
    add_teacher_arguments(p)
    s = p.add_argument_group("selection")
    s.add_argument("--threshold", type=float, default=None, help="minimum teacher confidence")
    s.add_argument("--source-threshold", action="append", default=[], metavar="SOURCE=T",
                   help="threshold for one source (replaces --threshold there); repeatable")
    s.add_argument("--topk-per-class", type=int, default=None, help="keep the K most confident per class")
    s.add_argument("--top-fraction-per-class", type=float, default=None,
                   help="keep this share (0-1] of each class, most confident first")
    s.add_argument("--rank-by", choices=("label", "query"), default="label",
                   help="classes for the rank rules: teacher label (default) or query class")
    s.add_argument("--agree", action="store_true", help="also require teacher argmax == query class")
    s.add_argument("--soft-labels", choices=("none", "topk", "dense"), default="none",
                   help="store soft labels: topk (meta.soft_label [[class, p], ...]) or dense (label = probs)")
    s.add_argument("--soft-topk", type=int, default=5, help="classes kept in topk soft labels (default 5)")
    add_run_arguments(p, chunk=256, batch=32)


def run(args: argparse.Namespace) -> int:
    from omnisource.data.annotations import read_label_map
    from omnisource.errors import InputError
    from omnisource.web import filter as flt
    from omnisource.web.runopts import (annotate_meta, parse_key_floats, resolve_data_root, resolve_device,
                                        setup_logging)
    from omnisource.web.teacher import build_ensemble, parse_teacher_args

    setup_logging(args.verbose)
    args.device = resolve_device(args.device)
    if not args.manifest.is_file():
        raise InputError("manifest not found", args.manifest)
    rule = flt.SelectRule(threshold=args.threshold,
                          source_thresholds=parse_key_floats(args.source_threshold, "--source-threshold"),
                          topk_per_class=args.topk_per_class, top_fraction_per_class=args.top_fraction_per_class,
                          rank_group=args.rank_by, agree=args.agree, soft_labels=args.soft_labels,
                          soft_topk=args.soft_topk).validate()
    names = read_label_map(args.label_map) if args.label_map else None
    root = resolve_data_root(args.manifest, args.data_root)
    sources = parse_teacher_args(args.teacher, args.teacher_set)
    ens = build_ensemble(sources, device=args.device, data_root=str(root), segments=args.segments,
                         clips=args.clips, batch_size=args.batch_size, num_workers=args.workers,
                         backend=args.decode_backend)
    if names is not None and len(names) != ens.num_classes:
        raise InputError(f"label map has {len(names)} classes but the teacher predicts {ens.num_classes}",
                         args.label_map)
    try:
        scores = flt.score_stage(args.manifest, args.out / "scores", ens, topk=max(5, args.soft_topk),
                                 keep_probs=args.soft_labels == "dense", label_map=names,
                                 chunk_size=args.chunk_size, strict=args.strict, progress=args.progress,
                                 force=args.force)
    finally:
        ens.close()
    annotate_meta(args.out / "scores", data_root=root)
    t = ens.timing
    if t.items:
        print(f"scoring: {t.items} samples, {100 * t.share_forward():.0f}% of the time in the teachers' forward",
              file=sys.stderr)
    sel = flt.select_stage(scores.manifest, args.out, rule, strict=args.strict, progress=args.progress,
                           force=args.force)
    from omnisource.web.stage import dist_info

    if dist_info()[0] != 0:          # rank 0 writes the tables and prints
        return 0
    before = flt.query_counts(args.manifest, names)
    after = flt.label_counts(sel.manifest)
    rows = flt.class_count_rows(before, after, names)
    csv_path, png_path = flt.write_class_counts(rows, args.out, title=f"{args.manifest.name}: per-class counts")
    annotate_meta(args.out, data_root=root, class_counts=csv_path.name, class_counts_plot=png_path.name)
    print(flt.format_table(rows))
    c = sel.meta["counts"]
    print(f"filter: {scores.meta['counts']['in']['total']} samples, {scores.meta['counts']['out']['total']} scored, "
          f"{c['out']['total']} kept; dropped {json.dumps(c['dropped']['by_reason'])} "
          f"(+ {scores.meta['counts']['dropped']['total']} unreadable)", file=sys.stderr)
    print(f"  manifest: {sel.manifest}\n  counts:   {csv_path}  {png_path}", file=sys.stderr)
    return 0
