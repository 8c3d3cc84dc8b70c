"""TIN family (Shao et al. 2020, "Temporal Interlacing Network"): like TSM, but the temporal
shift of each channel group is *learned*: a small offset network predicts a fractional shift per
group and clip, a weight network a per-frame gate, and frames are mixed by linear interpolation
between the two neighbouring integer shifts.

Family ``tin``, input contract ``'2d'`` (whole groups of ``num_segments`` frames, as TSM). As
mmaction2's ``ResNetTIN``: every bottleneck's ``conv1.conv`` becomes ``CombineNet(interlace, conv)``
(keys ``conv1.conv.net1.{offset_net,weight_net}.*``, ``conv1.conv.net2.weight``), on the first
``C / shift_div`` channels (``shift_div`` 4), and ``TSMHead`` averages the segments' scores.

mmaction2 runs the integer shift on a compiled op (``mmcv.ops.tin_shift``) that its CPU build
lacks. :func:`tin_shift` is that op in PyTorch, written from the kernel's semantics (mmcv
``tin_shift_cuda_kernel.cuh``): for input ``[N, T, C, HW]`` and integer shifts ``[N, G]`` (channel
group ``g = c // (C / G)``), ``out[n, t + s, c] = in[n, t, c]`` where ``0 <= t + s < T``, zero
elsewhere; the backward pass moves gradients by ``-s`` and the shifts get none (they are
integers). ``tests/models/test_tin.py`` checks it on hand-computed cases and with gradcheck.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnisource.models.recognizers import Recognizer2D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet import ResNet
from omnisource.models.tsm import TSMHead, segment_group_input, tsm_pretrained_state

__all__ = ["tin_shift", "linear_sampler", "TemporalInterlace", "FAMILY", "ROWS"]


def _shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``out[n, t + s, c] = x[n, t, c]`` (``s`` the shift of ``c``'s group), zero-filled."""
    n, t, c, hw = x.shape
    groups = shift.shape[1]
    if c % groups:
        raise ValueError(f"tin_shift: {c} channels do not split into {groups} groups")
    s = shift.to(torch.long).repeat_interleave(c // groups, dim=1)          # [N, C]
    src = torch.arange(t, device=x.device)[None, :, None] - s[:, None, :]   # [N, T, C]: t_out - s
    valid = (src >= 0) & (src < t)
    idx = src.clamp(0, t - 1)[..., None].expand(n, t, c, hw)
    out = torch.gather(x, 1, idx)
    return out * valid[..., None].to(x.dtype)


class _TINShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(shift)
        return _shift(x, shift)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        (shift,) = ctx.saved_tensors
        return _shift(grad.contiguous(), -shift), None


def tin_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """mmcv's ``tin_shift``: ``x`` ``[N, T, C, HW]``, integer ``shift`` ``[N, G]`` (see module doc)."""
    if x.dim() != 4 or shift.dim() != 2 or shift.shape[0] != x.shape[0]:
        raise ValueError(f"tin_shift expects [N, T, C, HW] and [N, G], got {tuple(x.shape)} and {tuple(shift.shape)}")
    return _TINShift.apply(x, shift)


def linear_sampler(data: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Shift ``data`` ``[N, T, C, H, W]`` by fractional per-group ``offset`` ``[N, G]``: the two
    neighbouring integer shifts, blended by the fractional part (differentiable in ``offset``)."""
    n, t, c, h, w = data.shape
    o0 = torch.floor(offset).int()
    o1 = o0 + 1
    flat = data.view(n, t, c, h * w).contiguous()
    d0, d1 = tin_shift(flat, o0), tin_shift(flat, o1)
    w0 = 1 - (offset - o0.float())
    w1 = 1 - w0
    g = offset.shape[1]
    w0 = w0[:, :, None].repeat(1, 1, c // g).view(n, -1)[:, None, :, None]
    w1 = w1[:, :, None].repeat(1, 1, c // g).view(n, -1)[:, None, :, None]
    return (w0 * d0 + w1 * d1).view(n, t, c, h, w)


class OffsetNet(nn.Module):
    """Per clip, a fractional shift in (-2, 2) for each of ``groups`` channel groups."""

    def __init__(self, in_channels: int, groups: int, num_segments: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, 1, 3, padding=1)
        self.fc1 = nn.Linear(num_segments, num_segments)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(num_segments, groups)
        nn.init.constant_(self.fc2.bias, 0.5108)   # mmaction2's init: a starting shift of ~0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t = x.shape
        x = self.fc2(self.relu(self.fc1(self.conv(x).view(n, t))))
        return 4 * (torch.sigmoid(x.view(n, 1, -1)) - 0.5)


class WeightNet(nn.Module):
    """Per frame and group, a gate in (0, 2) on the shifted features."""

    def __init__(self, in_channels: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.conv = nn.Conv1d(in_channels, groups, 3, padding=1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t = x.shape
        return 2 * torch.sigmoid(self.conv(x).view(n, self.groups, t).permute(0, 2, 1))


class TemporalInterlace(nn.Module):
    """The learned shift of the first ``C / shift_div`` channels (two offsets, mirrored: 4 groups)."""

    def __init__(self, in_channels: int, num_segments: int = 8, shift_div: int = 4) -> None:
        super().__init__()
        self.num_segments, self.shift_div = num_segments, shift_div
        self.deform_groups = 2
        self.offset_net = OffsetNet(in_channels // shift_div, self.deform_groups, num_segments)
        self.weight_net = WeightNet(in_channels // shift_div, self.deform_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if n % self.num_segments:
            raise ValueError(f"TIN needs whole groups of {self.num_segments} frames, got {n} frames")
        b, folds = n // self.num_segments, c // self.shift_div
        desc = x[:, :folds].reshape(b, self.num_segments, folds, h, w)
        pooled = desc.mean(dim=(3, 4)).permute(0, 2, 1).contiguous()         # [B, folds, T]
        offset = self.offset_net(pooled).view(b, -1)
        weight = self.weight_net(pooled)                                    # [B, T, 2]
        shifted = linear_sampler(desc, torch.cat([offset, -offset], 1))
        weight = weight[:, :, :, None].repeat(1, 1, 2, folds // 4).view(b, self.num_segments, -1)
        shifted = (shifted * weight[:, :, :, None, None]).reshape(n, folds, h, w)
        return torch.cat([shifted, x[:, folds:]], dim=1)


class CombineNet(nn.Module):
    """``net2(net1(x))``: the interlace before the wrapped convolution (mmaction2's key names)."""

    def __init__(self, net1: nn.Module, net2: nn.Module) -> None:
        super().__init__()
        self.net1, self.net2 = net1, net2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net2(self.net1(x))


def tin_pretrained_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """An ImageNet ResNet file in TIN's names: every block's conv1 under ``.net2``."""
    import re

    out, fmt = tsm_pretrained_state(sd)
    mapped = {}
    for k, v in out.items():
        k = re.sub(r"^(layer\d+\.\d+\.conv1\.conv)\.net\.", r"\1.net2.", k)
        k = re.sub(r"^(layer\d+\.\d+\.conv1\.conv)\.(weight|bias)$", r"\1.net2.\2", k)
        mapped[k] = v
    return mapped, fmt


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    segs = int(opts.pop("num_segments", preset.num_clips))
    shift_div = int(opts.pop("shift_div", 4))
    backbone = ResNet(depth=depth, base_channels=base_channels, in_channels=in_channels, **opts)
    for name in backbone.res_layers:
        for block in getattr(backbone, name):
            conv = block.conv1.conv
            block.conv1.conv = CombineNet(TemporalInterlace(conv.in_channels, segs, shift_div), conv)
    head = TSMHead(num_classes, backbone.feat_dim, segs, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
                num_segments=segs, shift_div=shift_div)
    return Recognizer2D(backbone, head, meta)



FAMILY = register_family(Family(
    name="tin", layout="2d", build=_build,
    overrides=frozenset({"num_segments", "shift_div", "frozen_stages", "norm_eval", "partial_bn"}),
    tiny={"base_channels": 16},
    example_input=segment_group_input,
    pretrained_fresh=(r"\.net1\.",),
    pretrained_state=tin_pretrained_state, inflate=False,
    doc="TIN: 2D ResNet with learned, interpolated temporal shifts (mmaction2 ResNetTIN + TSMHead; "
        "tin_shift in PyTorch)",
))


def _row(name: str, mm: str, dataset: str, classes: int, epochs: int, dropout: float, params: int,
         preset: str, doc: str) -> ModelPreset:
    return ModelPreset(name=name, family="tin", depth=50, num_classes=classes, dataset=dataset, clip_len=1,
                       frame_interval=1, num_clips=8, epochs=epochs, train_preset=f"{preset}_train",
                       test_preset=f"{preset}_test", mmaction2_configs=(mm,), imagenet_pretrained=True,
                       dropout=dropout, init_std=0.001, params=params, doc=doc)


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("tin_r50_1x1x8_40e_sthv1_rgb", "tin_imagenet-pretrained-r50_8xb6-1x1x8-40e_sthv1-rgb", "sthv1", 174, 40,
         0.8, 23_895_566, "tin_sth_1x1x8", "TIN ResNet-50, 8 segments, Something-Something V1 (rawframes)"),
    _row("tin_r50_1x1x8_40e_sthv2_rgb", "tin_imagenet-pretrained-r50_8xb6-1x1x8-40e_sthv2-rgb", "sthv2", 174, 40,
         0.8, 23_895_566, "tin_sth_1x1x8", "TIN ResNet-50, 8 segments, Something-Something V2 (rawframes)"),
    _row("tin_tsm_finetune_r50_1x1x8_50e_kinetics400_rgb",
         "tin_kinetics400-pretrained-tsm-r50_1x1x8-50e_kinetics400-rgb", "kinetics400", 400, 50, 0.5,
         24_358_640, "tin_1x1x8", "TIN ResNet-50, 8 segments, fine-tuned from a Kinetics-400 TSM"),
])
