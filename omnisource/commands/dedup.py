"""Remove web samples that duplicate target validation / test samples (paper section 3.3).

Frame features from a 2D backbone with your weights (e.g. an ImageNet ResNet-50 file:
--model tsn_r50_1x1x3_100e_kinetics400_rgb --weights resnet50.pth, or --config + --checkpoint
of a trained recognizer), PCA-whitening fitted on the target frames, cosine similarity.
Threshold: mean similarity between random crops of the same target frame (--threshold to
override). Videos use --frames-per-video frames (max over frame pairs).

Writes into OUT: manifest.jsonl (kept web samples), dropped.jsonl (duplicates, unreadable),
pairs.jsonl / pairs.csv (suspected duplicate pairs with scores), target_index.npz, meta.json.
Resumable, and sharded under torchrun.

Example:
  omnisource dedup web/manifest.jsonl --target k400/val.txt --target-root k400/val \\
      --model tsn_r50_1x1x3_100e_kinetics400_rgb --weights resnet50_imagenet.pth --out work/dedup
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnisource.config import add_set_argument

HELP = "content-based de-duplication of web data against target val/test sets"


def _pca_dim(text: str) -> int | None:
    """``--pca-dim``: a positive count, or ``full`` / ``0`` for every non-degenerate direction."""
    if text.strip().lower() in ("full", "all", "0"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of dimensions or 'full', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"pca dim must be >= 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, help="web manifest (JSONL, e.g. from `omnisource ingest`)")
    p.add_argument("--target", type=Path, action="append", required=True,
                   help="target list to protect (mmaction2 list or manifest); repeat for val + test")
    p.add_argument("--target-root", type=Path, action="append", default=None,
                   help="data root of the target list(s): once for all, or once per --target")
    p.add_argument("--data-root", type=Path, default=None,
                   help="root of the web manifest's paths (default: from its meta.json, else its folder)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    m = p.add_argument_group("feature model (one of)")
    m.add_argument("--config", default=None, help="YAML recipe whose model: section names the network")
    m.add_argument("--checkpoint", default=None, help="weights for --config (recognizer checkpoint)")
    m.add_argument("--model", default=None, help="registered 2D model name (e.g. tsn_r50_1x1x3_100e_kinetics400_rgb)")
    m.add_argument("--weights", default=None,
                   help="weights for --model: ImageNet ResNet (torchvision/timm) or recognizer checkpoint")
    add_set_argument(m, dest="model_set", example="model.overrides.depth=101")
    d = p.add_argument_group("de-duplication")
    d.add_argument("--frames-per-video", type=int, default=3, help="frames compared per video (default 3)")
    d.add_argument("--pca-dim", type=_pca_dim, default=256, metavar="N|full",
                   help="leading PCA-whitened dimensions kept (default 256; 'full' or 0 = all non-degenerate). "
                        "Fewer dimensions make the 2048-d projection and the search ~8x cheaper, and "
                        "truncated PCA-whitening retrieves near-duplicates better (Jegou & Chum 2012)")
    d.add_argument("--threshold", type=float, default=None,
                   help="cosine threshold (default: mean similarity of crops of the same target frame)")
    d.add_argument("--threshold-frames", type=int, default=200, help="target frames for the crop threshold")
    d.add_argument("--num-crops", type=int, default=5, help="random crops per calibration frame (default 5)")
    d.add_argument("--crop-min-area", type=float, default=0.4, help="smallest crop area share (default 0.4)")
    d.add_argument("--backend", default="auto", choices=("auto", "faiss", "torch"),
                   help="similarity search: faiss (if installed) or exact blocked torch matmul")
    d.add_argument("--ivf-lists", type=int, default=0,
                   help="faiss IVF lists (0 = exact flat index; >0 faster but may miss pairs)")
    d.add_argument("--nprobe", type=int, default=16, help="faiss IVF lists probed per query")
    d.add_argument("--max-pairs", type=int, default=10, help="pairs listed per duplicate sample (default 10)")
    d.add_argument("--seed", type=int, default=0)
    from omnisource.web.runopts import add_run_arguments

    add_run_arguments(p, chunk=256, batch=64)


def run(args: argparse.Namespace) -> int:
    from omnisource.errors import ConfigError, InputError
    from omnisource.web.dedup import DedupSettings, run_dedup
    from omnisource.web.runopts import annotate_meta, resolve_device, resolve_data_root, setup_logging
    from omnisource.web.teacher import ModelSource, build_model

    setup_logging(args.verbose)
    args.device = resolve_device(args.device)
    if not args.manifest.is_file():
        raise InputError("web manifest not found", args.manifest)
    if (args.config is None) == (args.model is None):
        raise ConfigError("give the feature model as --config CFG --checkpoint CKPT or --model NAME --weights PATH")
    if args.config is not None:
        src = ModelSource(args.config, args.checkpoint, list(args.model_set))
    else:
        src = ModelSource(args.model, args.weights, list(args.model_set))
    model = build_model(src, backbone_only=True, device=args.device)
    if getattr(model, "meta", {}).get("layout") != "2d":
        raise ConfigError(f"de-duplication needs a 2D (image) backbone; {src.spec} is "
                          f"{model.meta.get('layout')}")
    roots = args.target_root or [None]
    if len(roots) == 1:
        roots = roots * len(args.target)
    if len(roots) != len(args.target):
        raise ConfigError("give --target-root once, or once per --target")
    for t in args.target:
        if not t.is_file():
            raise InputError("target list not found", t)
    web_root = resolve_data_root(args.manifest, args.data_root)
    targets = [(t, r if r is not None else t.parent) for t, r in zip(args.target, roots)]
    settings = DedupSettings(frames_per_video=args.frames_per_video, pca_dim=args.pca_dim,
                             threshold=args.threshold, threshold_frames=args.threshold_frames,
                             num_crops=args.num_crops, crop_min_area=args.crop_min_area, backend=args.backend,
                             ivf_lists=args.ivf_lists, nprobe=args.nprobe, max_pairs_per_sample=args.max_pairs,
                             seed=args.seed)
    summary = run_dedup(args.manifest, targets, args.out, model, src.describe(), settings, web_root=web_root,
                        batch_size=args.batch_size, num_workers=args.workers, device=args.device,
                        decode_backend=args.decode_backend, chunk_size=args.chunk_size, strict=args.strict,
                        progress=args.progress, force=args.force)
    annotate_meta(args.out, data_root=web_root, threshold=summary["threshold"],
                  threshold_stats=summary["threshold_stats"], pairs=summary["pairs"])
    print(f"dedup: {summary['input']} web samples -> {summary['kept']} kept; dropped {json.dumps(summary['dropped'])}; "
          f"{summary['pairs']} suspected pairs (threshold {summary['threshold']:.4f}, {summary['target_frames']} "
          f"target frames, {summary['dims']} dims, {summary['backend']})", file=sys.stderr)
    print(f"  manifest: {summary['manifest']}\n  pairs:    {Path(args.out) / 'pairs.csv'}", file=sys.stderr)
    return 0
