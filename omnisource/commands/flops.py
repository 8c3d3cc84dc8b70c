"""Parameters and FLOPs of a model, per view.

``omnisource flops CONFIG_OR_MODEL [--input-shape ...] [--set model.overrides.depth=101]``

CONFIG is a YAML recipe (its ``model:`` section is used); a registered model name works too
(``omnisource flops tsn_r50_1x1x3_100e_kinetics400_rgb``). Counting is done by
``torch.utils.flop_counter.FlopCounterMode`` on a real forward pass (no hand-counted formulas).
One view is one frame for 2D (TSN) models (``[1, 1, 3, S, S]``) and one clip for 3D models
(``[1, 3, T, S, S]``). With a CONFIG, ``S`` and ``T`` are what its test preset feeds the model
(the same input ``bench-infer`` measures); with a model name, the model's own input size and
clip length. ``--size`` sets ``S``; ``--input-shape`` sets the full model input instead.

torch counts a multiply-add as 2 FLOPs; mmaction2's zoo tables and fvcore report multiply-adds
(MACs) and call them FLOPs, so both numbers are printed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from omnisource.config import add_set_argument

HELP = "print parameter count and FLOPs per view of a config or model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="CONFIG_OR_MODEL", help="YAML recipe or registered model name")
    parser.add_argument("--input-shape", type=int, nargs="+", metavar="D",
                        help="full model input shape, e.g. 1 8 3 224 224 (2D) or 1 3 8 224 224 (3D)")
    parser.add_argument("--size", type=int, default=None, help="spatial size of a view (default: the preset's)")
    parser.add_argument("--num-classes", type=int, default=None, help="override the number of classes")
    add_set_argument(parser, dest="overrides", example="model.overrides.depth=101")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _model_from_target(args: argparse.Namespace) -> tuple[Any, str, Any]:
    from omnisource.errors import ConfigError, InputError
    from omnisource.models import create_model

    target = args.target
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise InputError("config file not found", file=path)
        from omnisource.config import load_config

        cfg = load_config(path, args.overrides)
        m = cfg["model"]
        if not m.get("name"):
            raise InputError("config has no model.name", file=path)
        overrides = dict(m.get("overrides") or {})
        num_classes = args.num_classes if args.num_classes is not None else m.get("num_classes")
        try:
            return create_model(m["name"], num_classes=num_classes, **overrides), str(m["name"]), cfg
        except ConfigError as err:
            if err.file is not None:
                raise
            raise ConfigError(f"model: {err.message}", file=path) from None
    if args.overrides:
        raise InputError("--set needs a CONFIG file; pass a YAML recipe instead of a model name", file=target)
    return create_model(target, num_classes=args.num_classes), target, None


def _config_view(cfg: Any) -> tuple[int, int] | None:
    """(spatial size, frames per clip) the config's test preset feeds the model, or None."""
    if cfg is None or not cfg.data.test.preset:
        return None
    from omnisource.commands.bench_infer import test_input_shape

    shape = test_input_shape(cfg, num_clips=1, crops=1)
    # 2D: [S*V, 3, H, W] per video; 3D: [V, 3, T, H, W]
    return int(shape[-1]), int(shape[-3]) if len(shape) == 5 else 1


def measure(model: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    """Params and FLOPs of one forward pass on a zero tensor of ``shape`` (eval mode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.zeros(shape)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    flops = int(counter.get_total_flops())
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "flops": flops, "macs": flops // 2, "input_shape": list(shape)}


def run(args: argparse.Namespace) -> int:
    from omnisource.errors import InputError

    model, name, cfg = _model_from_target(args)
    meta = model.meta
    view = _config_view(cfg)
    size = args.size or (view[0] if view else int(meta.get("input_size", 224)))
    clip_len = view[1] if view and meta["layout"] == "3d" else int(meta.get("clip_len") or 1)
    if args.input_shape:
        shape = tuple(args.input_shape)
        if meta["layout"] == "2d" and len(shape) != 5:
            raise InputError(f"2D models take [N, S, 3, H, W]; got --input-shape {list(shape)}", file=args.target)
        if meta["layout"] == "3d" and len(shape) not in (5, 6):
            raise InputError(f"3D models take [N, 3, T, H, W]; got --input-shape {list(shape)}", file=args.target)
        if meta["layout"] == "audio" and len(shape) not in (4, 5):
            raise InputError(f"audio models take [N, 1, T, F]; got --input-shape {list(shape)}", file=args.target)
        with_views = meta["layout"] == "2d" or len(shape) == 6 or (meta["layout"] == "audio" and len(shape) == 5)
        views = shape[0] * (shape[1] if with_views else 1)
    elif meta["layout"] == "2d":
        # one frame, or one group of frames for models that mix segments (TSM / TIN shift across them)
        segs = int(meta.get("num_segments") or 1)
        shape, views = (1, segs, int(meta.get("in_channels", 3)), size, size), segs
    elif meta["layout"] == "audio":   # one spectrogram clip: mmaction2's 128 frames x 80 mel bins
        shape, views = (1, 1, int(meta.get("fixed_length", 128)), int(meta.get("num_mels", 80))), 1
    else:
        shape, views = (1, int(meta.get("in_channels", 3)), clip_len, size, size), 1
    try:
        res = measure(model, shape)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"forward failed for input shape {list(shape)}: {err}", file=args.target) from None
    res.update(model=name, layout=meta["layout"], views=views,
               flops_per_view=res["flops"] / views, macs_per_view=res["macs"] / views)
    if args.json:
        print(json.dumps(res))
        return 0
    unit = "frame" if meta["layout"] == "2d" and not args.input_shape else "view"
    print(f"model:        {name} ({meta['layout']})")
    print(f"input shape:  {list(shape)}  ({views} {unit}{'s' if views != 1 else ''})")
    print(f"params:       {res['params']:,} ({res['params'] / 1e6:.2f} M)")
    print(f"FLOPs/{unit}:  {res['flops_per_view'] / 1e9:.2f} G  (torch counter: multiply-add = 2 FLOPs)")
    print(f"MACs/{unit}:   {res['macs_per_view'] / 1e9:.2f} G  (what mmaction2's zoo / fvcore call FLOPs)")
    return 0
