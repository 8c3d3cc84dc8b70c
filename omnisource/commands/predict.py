"""Classify videos with the config's test protocol and print each one's top-5 classes.

Example::

    omnisource predict demo.mp4 --config configs/tsn_r50_1x1x3_100e_kinetics400_rgb.yaml \
        --checkpoint tsn.pth --label-map label_map_k400.txt
    omnisource predict clips/*.mp4 --config C --checkpoint K --out predictions.json

The model is loaded once for all videos. A video that cannot be read is reported (file and
reason) and the others go on; the exit status is then 1. ``--out`` writes the top-k of every
video as JSON (``[{"video", "topk": [{"class", "name", "score"}]} | {"video", "error"}]``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from omnisource.config import add_set_argument
from omnisource.errors import InputError

HELP = "top-5 classes of videos (config's test views, averaged)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--out", help="also write every video's top-k to this JSON file")
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--label-map", help="class names, one per line (default: data.label_map)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--num-clips", type=int)
    p.add_argument("--crops", type=int, choices=[1, 3, 10])
    p.add_argument("--average-clips", choices=["score", "prob"])
    p.add_argument("--device", help="cpu | cuda")
    p.add_argument("--fuse-conv-bn", action="store_true",
                   help="fold BatchNorm into the convolutions before inference (faster; scores equal to ~1e-5)")
    add_set_argument(p, example="test.num_clips=5")


def predict_video(video: str | Path, cfg, model, dev, *, num_clips=None, crops=None,
                  average: str | None = None):
    """Class scores ``[C]`` of one video (all test views of the config's test preset)."""
    import torch

    from omnisource.data.annotations import Sample
    from omnisource.data.datasets import VideoDataset
    from omnisource.data.presets import get_preset
    from omnisource.engine.evaluate import test_preset_overrides, view_scores
    from omnisource.engine.metrics import average_clips

    video = Path(video)
    if video.is_dir():
        raise InputError("is a folder, not a video: give video files (a shell glob such as DIR/*.mp4 "
                         "passes every video of a folder)", file=video)
    if not video.is_file():
        raise InputError("video not found", file=video)
    preset_name = cfg.data.test.preset
    if not preset_name:
        raise InputError("data.test.preset is not set", file=cfg.get("_source"))
    preset = get_preset(preset_name, **test_preset_overrides(cfg, num_clips, crops))
    ds = VideoDataset([Sample(path=video.name, label=None, kind="video")], video.parent, preset,
                      test_mode=True, backend=cfg.data.backend, strict=True)
    item = ds[0]
    with torch.no_grad():
        s = view_scores(model, item["inputs"].unsqueeze(0).to(dev))
        mode = average or cfg.test.average_clips
        # 'none' keeps per-view rows; one ranking per video needs an average: use probabilities
        return average_clips(s.float(), "prob" if mode == "none" else mode)[0].cpu()


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from omnisource.data.annotations import read_label_map
    from omnisource.engine.evaluate import load_config_and_model
    from omnisource.errors import OmniSourceError

    if args.out and not args.out.endswith(".json"):
        raise InputError("--out must end in .json", file=args.out)
    cfg, model, dev = load_config_and_model(args.config, args.checkpoint, sets=args.sets,
                                            device=args.device, fuse_conv_bn=args.fuse_conv_bn)
    names = None
    lm = args.label_map or cfg.data.label_map
    if lm:
        names = read_label_map(lm)
    mode = args.average_clips or cfg.test.average_clips
    what = "raw class scores (logits)" if mode == "score" else "class probabilities"
    results: list[dict] = []
    failed = 0
    for video in args.videos:
        try:
            scores = predict_video(video, cfg, model, dev, num_clips=args.num_clips, crops=args.crops,
                                   average=args.average_clips)
        except OmniSourceError as err:
            if len(args.videos) == 1:
                raise
            failed += 1
            print(f"omnisource predict: {err}", file=sys.stderr)
            results.append({"video": video, "error": str(err)})
            continue
        if names is not None and len(names) != scores.numel():
            raise InputError(f"label map has {len(names)} classes but the model predicts "
                             f"{scores.numel()}", file=lm)
        k = min(args.topk, scores.numel())
        values, idx = torch.topk(scores, k)
        top = [{"class": i, "name": names[i] if names else f"class_{i}", "score": v}
               for v, i in zip(values.tolist(), idx.tolist())]
        results.append({"video": video, "topk": top})
        print(f"{video}: top-{k}, {what} averaged over the test views")
        for rank, t in enumerate(top, 1):
            print(f"{rank}. {t['name']} ({t['class']}): {t['score']:.4f}")
    if args.out:
        from omnisource.utils.io import atomic_write_json

        atomic_write_json(args.out, results)
        print(f"wrote {len(results)} predictions to {args.out}")
    if failed:
        print(f"{failed} of {len(args.videos)} videos could not be read", file=sys.stderr)
    return 1 if failed else 0
