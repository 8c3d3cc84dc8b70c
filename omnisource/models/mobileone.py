"""TSN and TSM with MobileOne-S4 (Vasu et al. 2023, "MobileOne: An Improved One millisecond Mobile
Backbone"), in mmpretrain's key layout: the zoo's ``tsn_`` / ``tsm_imagenet-pretrained-mobileone-s4_*``
rows.

Family ``tsm_mobileone`` (mmaction2's ``MobileOneTSM``): a temporal shift *before* every whole
block (``stageN.M.net.*``: the shift wraps the block, not a conv inside it, so the block can still
be fused into its deploy form), groups of ``shift_segments`` frames (8 in the zoo's configs, even for
the 16-segment rows, whose ``TSMHead`` averages 16), ``TSMHead``.

Family ``tsn_mobileone``, input contract ``'2d'``. A MobileOne block is a sum of branches -- k x k
conv + BN (``branch_conv_list``), a 1x1 conv + BN (``branch_scale``, for k > 1) and a BN identity
(``branch_norm``, when the shape is kept) -- then squeeze-excitation (the last 5 blocks of
stage 3 and the last of stage 4 in S4) and ReLU. The network alternates a depthwise 3x3 block and
a pointwise 1x1 block. ``deploy=True`` (the ``_deploy`` row) has each block's branches fused into
one biased conv (``branch_reparam``), the form mmpretrain's ``switch_to_deploy`` produces;
:func:`reparameterize` does that fusion on a trained network (scores unchanged to float
rounding), so a train-time checkpoint can be turned into a deploy one.

Why our own code: mmpretrain needs mmcv; the network is a page of PyTorch.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnisource.models.heads import TSNHead
from omnisource.models.recognizers import Recognizer2D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets

__all__ = ["MobileOne", "MobileOneBlock", "reparameterize", "FAMILY", "FAMILY_TSM", "ROWS"]

ARCH = {"s0": ([2, 8, 10, 1], [0.75, 1.0, 1.0, 2.0], [4, 4, 4, 4], [0, 0, 0, 0]),
        "s1": ([2, 8, 10, 1], [1.5, 1.5, 2.0, 2.5], [1, 1, 1, 1], [0, 0, 0, 0]),
        "s2": ([2, 8, 10, 1], [1.5, 2.0, 2.5, 4.0], [1, 1, 1, 1], [0, 0, 0, 0]),
        "s3": ([2, 8, 10, 1], [2.0, 2.5, 3.0, 4.0], [1, 1, 1, 1], [0, 0, 0, 0]),
        "s4": ([2, 8, 10, 1], [3.0, 3.5, 3.5, 4.0], [1, 1, 1, 1], [0, 0, 5, 1])}


def _divisible(v: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < min_ratio * v else new


class _ConvAct(nn.Module):
    """mmcv ConvModule without norm: biased conv (``conv``) + activation."""

    def __init__(self, cin: int, cout: int, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=True)
        self.activate = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv(x))


class SELayer(nn.Module):
    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        mid = _divisible(channels // ratio)
        self.conv1 = _ConvAct(channels, mid, nn.ReLU(inplace=True))
        self.conv2 = _ConvAct(mid, channels, nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv2(self.conv1(x.mean(dim=(2, 3), keepdim=True)))


def _conv_bn(cin: int, cout: int, k: int, stride: int, padding: int, groups: int) -> nn.Sequential:
    s = nn.Sequential()
    s.add_module("conv", nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False))
    s.add_module("norm", nn.BatchNorm2d(cout))
    return s


class MobileOneBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, num_convs: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, se: bool = False, deploy: bool = False) -> None:
        super().__init__()
        self.cin, self.cout, self.k, self.stride, self.padding, self.groups = cin, cout, k, stride, padding, groups
        self.se: nn.Module = SELayer(cout) if se else nn.Identity()
        self.deploy = deploy
        if deploy:
            self.branch_reparam = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=True)
        else:
            self.branch_norm = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
            self.branch_scale = _conv_bn(cin, cout, 1, stride, 0, groups) if k > 1 else None
            self.branch_conv_list = nn.ModuleList(_conv_bn(cin, cout, k, stride, padding, groups)
                                                  for _ in range(num_convs))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            out = self.branch_reparam(x)
        else:
            out = self.branch_norm(x) if self.branch_norm is not None else 0
            if self.branch_scale is not None:
                out = out + self.branch_scale(x)
            for b in self.branch_conv_list:
                out = out + b(x)
        return self.act(self.se(out))

    # ------------------------------------------------------------------ fusion (deploy form)
    def _fuse(self, conv: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
        if conv is None:   # the identity branch as a conv: 1 at the centre of each group's own channel
            per_group = self.cin // self.groups
            conv = torch.zeros(self.cin, per_group, self.k, self.k, dtype=bn.weight.dtype, device=bn.weight.device)
            for i in range(self.cin):
                conv[i, i % per_group, self.k // 2, self.k // 2] = 1
        std = (bn.running_var + bn.eps).sqrt()
        return conv * (bn.weight / std).reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * bn.weight / std

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.deploy:
            return
        w = torch.zeros(self.cout, self.cin // self.groups, self.k, self.k)
        b = torch.zeros(self.cout)
        for br in self.branch_conv_list:
            dw, db = self._fuse(br.conv.weight, br.norm)
            w, b = w + dw, b + db
        if self.branch_scale is not None:
            dw, db = self._fuse(self.branch_scale.conv.weight, self.branch_scale.norm)
            pad = self.k // 2
            w, b = w + nn.functional.pad(dw, [pad] * 4), b + db
        if self.branch_norm is not None:
            dw, db = self._fuse(None, self.branch_norm)
            w, b = w + dw, b + db
        self.branch_reparam = nn.Conv2d(self.cin, self.cout, self.k, stride=self.stride, padding=self.padding,
                                        groups=self.groups, bias=True)
        self.branch_reparam.weight.copy_(w)
        self.branch_reparam.bias.copy_(b)
        for name in ("branch_conv_list", "branch_scale", "branch_norm"):
            delattr(self, name)
        self.deploy = True


class MobileOne(nn.Module):
    """mmpretrain's MobileOne backbone (``out_indices=(3,)``): the stage-4 map ``[N, C, H/32, W/32]``."""

    def __init__(self, arch: str = "s4", in_channels: int = 3, deploy: bool = False, width: float = 1.0) -> None:
        super().__init__()
        blocks, factors, branches, ses = ARCH[arch]
        base = [max(1, int(c * width)) for c in (64, 128, 256, 512)]
        ch = min(base[0], int(base[0] * factors[0]))
        self.stage0 = MobileOneBlock(in_channels, ch, 3, 1, stride=2, padding=1, deploy=deploy)
        inp = ch
        for i, n in enumerate(blocks):
            planes = int(base[i] * factors[i])
            layers: list[nn.Module] = []
            for j in range(n):
                se = j >= n - ses[i]
                layers.append(MobileOneBlock(inp, inp, 3, branches[i], stride=2 if j == 0 else 1, padding=1,
                                             groups=inp, se=se, deploy=deploy))
                layers.append(MobileOneBlock(inp, planes, 1, branches[i], se=se, deploy=deploy))
                inp = planes
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
        self.feat_dim = inp
        for m in self.modules():        # mmpretrain's init: Kaiming convs, BN weight 1
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage0(x)
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x)
        return x


def reparameterize(model: nn.Module) -> nn.Module:
    """Fuse every MobileOne block of ``model`` into its deploy form (in place; eval mode)."""
    model.eval()
    for m in model.modules():
        if isinstance(m, MobileOneBlock):
            m.switch_to_deploy()
    if hasattr(model, "meta"):
        model.meta["deploy"] = True
    return model


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    in_channels = int(opts.pop("in_channels", 3))
    deploy = bool(opts.pop("deploy", False))
    width = float(opts.pop("base_channels", 64)) / 64           # tiny test networks: narrower
    arch = str(opts.pop("arch", preset.arch or "s4"))
    if opts:
        raise ValueError(f"options {sorted(opts)} do not apply to MobileOne")
    backbone = MobileOne(arch, in_channels, deploy, width)
    head = TSNHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(in_channels=in_channels, dropout=dropout, deploy=deploy, arch=arch)
    return Recognizer2D(backbone, head, meta)


def _build_tsm(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    from omnisource.models.tsm import TemporalShift, TSMHead

    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    in_channels = int(opts.pop("in_channels", 3))
    deploy = bool(opts.pop("deploy", False))
    width = float(opts.pop("base_channels", 64)) / 64
    segs = int(opts.pop("num_segments", preset.num_clips))
    shift_segs = int(opts.pop("shift_segments", 8))
    shift_div = int(opts.pop("shift_div", 8))
    if opts:
        raise ValueError(f"options {sorted(opts)} do not apply to MobileOne-TSM")
    if segs % shift_segs:
        raise ValueError(f"num_segments {segs} must be a multiple of shift_segments {shift_segs}")
    backbone = MobileOne(str(preset.arch or "s4"), in_channels, deploy, width)
    backbone.stage0 = TemporalShift(backbone.stage0, shift_segs, shift_div)
    for i in range(1, 5):
        stage = getattr(backbone, f"stage{i}")
        setattr(backbone, f"stage{i}", nn.Sequential(*(TemporalShift(b, shift_segs, shift_div) for b in stage)))
    head = TSMHead(num_classes, backbone.feat_dim, segs, dropout=dropout, init_std=init_std)
    meta.update(in_channels=in_channels, dropout=dropout, deploy=deploy, num_segments=segs,
                shift_segments=shift_segs, shift_div=shift_div)
    return Recognizer2D(backbone, head, meta)


def _pretrained_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """An mmpretrain MobileOne ImageNet file: ``backbone.*`` names, without the classifier."""
    out = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()
           if not k.startswith(("head.", "neck."))}
    return out, "mmpretrain"


FAMILY = register_family(Family(
    name="tsn_mobileone", layout="2d", build=_build,
    overrides=frozenset({"deploy", "arch"}),
    tiny={"base_channels": 8},
    pretrained_state=_pretrained_state, inflate=False,
    doc="TSN with MobileOne (mmpretrain layout): train-time branches or the fused deploy form",
))


def _tsm_pretrained_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """An mmpretrain MobileOne file onto the shifted blocks (``stageN.M.`` -> ``stageN.M.net.``)."""
    import re

    out, fmt = _pretrained_state(sd)
    return {re.sub(r"^(stage0|stage\d+\.\d+)\.", r"\1.net.", k): v for k, v in out.items()}, fmt


def _example(model: nn.Module, n: int) -> torch.Tensor:
    return torch.randn(n, int(model.meta["num_segments"]), int(model.meta.get("in_channels", 3)), 32, 32)


FAMILY_TSM = register_family(Family(
    name="tsm_mobileone", layout="2d", build=_build_tsm,
    overrides=frozenset({"deploy", "num_segments", "shift_segments", "shift_div"}),
    tiny={"base_channels": 8},
    example_input=_example,
    pretrained_state=_tsm_pretrained_state, inflate=False,
    doc="TSM with MobileOne (mmaction2 MobileOneTSM): shifts before each block, deploy form too",
))


def _row(name: str, mm: str, deploy: bool, params: int, doc: str, family: str = "tsn_mobileone",
         segs: int = 8, preset: str = "tsn_1x1x8", epochs: int = 100, dropout: float = 0.4,
         init_std: float = 0.01) -> ModelPreset:
    return ModelPreset(name=name, family=family, arch="s4", num_classes=400, dataset="kinetics400",
                       clip_len=1, frame_interval=1, num_clips=segs, epochs=epochs, train_preset=f"{preset}_train",
                       test_preset=f"{preset}_test", mmaction2_configs=(mm,), imagenet_pretrained=True,
                       dropout=dropout, init_std=init_std, params=params, doc=doc,
                       model={"deploy": deploy} if deploy else {})


# parameter counts: mmaction2 1.2.0's MODELS.build(cfg.model), reference venv with mmpretrain 1.2.0 added
ROWS = register_presets([
    _row("tsn_mobileone_s4_1x1x8_100e_kinetics400_rgb",
         "tsn_imagenet-pretrained-mobileone-s4_8xb32-1x1x8-100e_kinetics400-rgb", False, 13_721_848,
         "TSN MobileOne-S4 (train-time branches), 8 segments, Kinetics-400 (a 1.x-only row)"),
    _row("tsn_mobileone_s4_deploy_1x1x8_100e_kinetics400_rgb",
         "tsn_imagenet-pretrained-mobileone-s4_deploy_8xb32-1x1x8-100e_kinetics400-rgb", True, 13_608_952,
         "TSN MobileOne-S4, deploy form (branches fused), 8 segments, Kinetics-400 (a 1.x-only row)"),
    _row("tsm_mobileone_s4_1x1x16_50e_kinetics400_rgb",
         "tsm_imagenet-pretrained-mobileone-s4_8xb16-1x1x16-50e_kinetics400-rgb", False, 13_721_848,
         "TSM MobileOne-S4 (shifts in groups of 8, TSMHead over 16), Kinetics-400 (a 1.x-only row)",
         family="tsm_mobileone", segs=16, preset="tsm_mobileone_1x1x16", epochs=50, dropout=0.5, init_std=0.001),
    _row("tsm_mobileone_s4_deploy_1x1x16_50e_kinetics400_rgb",
         "tsm_imagenet-pretrained-mobileone-s4_deploy_8xb16-1x1x16-50e_kinetics400-rgb", True, 13_608_952,
         "TSM MobileOne-S4, deploy form, Kinetics-400 (a 1.x-only row)",
         family="tsm_mobileone", segs=16, preset="tsm_mobileone_1x1x16", epochs=50, dropout=0.5, init_std=0.001),
])
