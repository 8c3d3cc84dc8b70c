"""Evaluate a checkpoint with the zoo protocol: every test view of every video, video-level metrics.

Examples::

    omnisource test configs/tsn_r50_1x1x3_100e_kinetics400_rgb.yaml tsn.pth --out scores.json
    omnisource test CONFIG CKPT --num-clips 10 --crops 3 --average-clips prob
    omnisource test CONFIG CKPT --report test_report/     # per-class accuracy, confusions, mistakes
    torchrun --nproc-per-node 4 -m omnisource test CONFIG CKPT --out scores.npy

``--out`` writes per-video scores (in annotation order) for score fusion: ``.json`` (scores,
labels, metrics), ``.npy`` (the score array) or ``.pkl`` (a plain list of lists; no objects).
"""
from __future__ import annotations

import argparse
import json
import sys
import logging
from pathlib import Path

from omnisource.config import add_set_argument
from omnisource.errors import InputError

HELP = "evaluate a checkpoint (multi-clip x multi-crop, top-k and mean class accuracy)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--eval", nargs="+", metavar="METRIC",
                   choices=["top_k_accuracy", "mean_class_accuracy"],
                   help="metrics (default: test.metrics of the config)")
    p.add_argument("--out", help="per-video scores: results.json | .npy | .pkl")
    p.add_argument("--categories", metavar="JSON", default=None,
                   help="multi-label lists: {category: [class indices]} for per-category mAP "
                        "(hvu_categories.json of `omnisource prepare hvu`)")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/index.html: accuracy per class, the most confused class pairs, "
                        "the most confident mistakes (thumbnails), with per_class.csv / confusions.csv")
    p.add_argument("--average-clips", choices=["score", "prob", "none"])
    p.add_argument("--num-clips", type=int, help="clips per video (default: the test preset's)")
    p.add_argument("--crops", type=int, choices=[1, 3, 10], help="crops per clip (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="videos per forward (default data.test_batch_size)")
    p.add_argument("--device", help="cpu | cuda")
    p.add_argument("--fuse-conv-bn", action="store_true",
                   help="fold BatchNorm into the convolutions before inference (faster; scores equal to ~1e-5)")
    add_set_argument(p, example="test.num_clips=5")


def write_results(path: str | Path, scores, labels: list, metrics: dict, paths: list | None = None) -> None:
    """Atomically write scores: .json (with labels/metrics), .npy, or .pkl (plain lists only)."""
    import pickle

    import numpy as np

    from omnisource.utils.io import atomic_open, atomic_write_json

    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".json":
        atomic_write_json(path, {"scores": np.asarray(scores).tolist(), "labels": labels,
                                 "paths": paths, "metrics": metrics}, indent=None)
    elif ext == ".npy":
        with atomic_open(path, "wb") as fh:
            np.save(fh, np.asarray(scores, dtype=np.float32), allow_pickle=False)
    elif ext == ".pkl":
        # plain nested lists of floats only: loadable without trusting any class
        with atomic_open(path, "wb") as fh:
            pickle.dump(np.asarray(scores).tolist(), fh, protocol=4)
    else:
        raise InputError("--out must end in .json, .npy or .pkl", file=path)


def _views_text(over: dict) -> str:
    """The test views as run: the preset's unless --num-clips / --crops / test.* changed them."""
    clips = over.get("num_clips", "the preset's")
    crop = over.get("crop", "the preset's")
    return f"clips: {clips}; crop: {crop}"


def run(args: argparse.Namespace) -> int:
    from omnisource.engine.distributed import cleanup, init_distributed
    from omnisource.engine.evaluate import (compute_metrics, load_config_and_model, run_inference,
                                            test_preset_overrides)
    from omnisource.engine.loaders import eval_loader
    from omnisource.engine.train import build_split

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.out and Path(args.out).suffix.lower() not in (".json", ".npy", ".pkl"):
        raise InputError("--out must end in .json, .npy or .pkl", file=args.out)
    info = init_distributed(device=args.device)
    cfg, model, dev = load_config_and_model(args.config, args.checkpoint, sets=args.sets,
                                            device=str(info.device) if args.device is None else args.device,
                                            fuse_conv_bn=args.fuse_conv_bn)
    if not cfg.data.test.ann_file:
        raise InputError("data.test.ann_file is not set", file=args.config)
    over = test_preset_overrides(cfg, args.num_clips, args.crops)
    dataset = build_split(cfg, "test", test_mode=True, **over)
    loader = eval_loader(dataset, args.batch_size or cfg.data.test_batch_size, rank=info.rank,
                         world=info.world_size, num_workers=cfg.data.num_workers,
                         pin_memory=dev.type == "cuda")
    average = args.average_clips or cfg.test.average_clips
    run_info: dict = {}
    scores, labels = run_inference(model, loader, len(dataset), device=dev, average=average,
                                   amp=cfg.train.amp if cfg.train.amp != "fp16" or dev.type == "cuda" else "none",
                                   show_progress=info.is_main, info=run_info)
    categories = None
    if args.categories:
        from omnisource.data.prepare.common import read_json

        categories = read_json(Path(args.categories))
        if not isinstance(categories, dict):
            raise InputError("expected {category: [class indices]} (omnisource prepare hvu writes it)",
                             file=args.categories)
    metrics = compute_metrics(scores, labels, args.eval or cfg.test.metrics, cfg.test.topk, categories=categories)
    if info.is_main:
        skipped = dict(getattr(dataset, "skipped", {}) or {})
        import numpy as np

        from omnisource.engine.metrics import format_metric

        ncls = int(np.asarray(scores).shape[-1]) if len(scores) else None
        for k, v in metrics.items():
            print(f"{k}: {format_metric(k, v, ncls)}")
        if skipped:
            print(f"skipped unreadable samples: {json.dumps(skipped)}")
        if run_info.get("replaced"):
            print(f"WARNING: {run_info['replaced']} of {len(dataset)} test videos were unreadable and "
                  "were replaced by other readable videos; the metrics above cover those substitutes "
                  "(run with strict data loading to stop instead)", file=sys.stderr)
        paths = [s.path for s in getattr(dataset, "samples", [])] or None
        if args.out:
            write_results(args.out, scores, labels, metrics, paths)
            print(f"wrote {len(scores)} video scores to {args.out}")
        if args.report and any(isinstance(lab, list) for lab in labels):
            print("the per-class report covers single-label lists; skipped for this multi-label list",
                  file=sys.stderr)
        elif args.report:
            from omnisource.data.annotations import read_label_map
            from omnisource.engine.eval_report import write_eval_report

            names = read_label_map(cfg.data.label_map) if cfg.data.label_map else None
            index = write_eval_report(
                args.report, scores, labels, paths=paths, data_root=cfg.data.test.data_root,
                class_names=names, average=average, metrics=metrics,
                meta={"config": args.config, "checkpoint": args.checkpoint,
                      "test preset": cfg.data.test.preset, "views": _views_text(over),
                      "average_clips": average})
            print(f"wrote the test report to {index}")
    cleanup()
    return 0
