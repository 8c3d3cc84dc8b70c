"""MobileNetV2 (Sandler et al. 2018) in mmaction2's layout: the 2D backbone of the TSM
MobileNetV2 rows (``tsm.py``).

Keys equal mmaction2's ``MobileNetV2`` (``conv1.conv``, ``layerN.M.conv.K.{conv,bn}``, ``conv2``):
inverted residual blocks (1x1 expansion with ReLU6, depthwise 3x3 with ReLU6, linear 1x1
projection), widths rounded to multiples of 8, a 1280-wide last 1x1 convolution.
"""
from __future__ import annotations

from torch import nn

from omnisource.models.layers import ConvBN

__all__ = ["make_divisible", "InvertedResidual", "MobileNetV2"]

# expand ratio, channels, blocks, stride of each stage
ARCH = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int, min_value: int | None = None, min_ratio: float = 0.9) -> int:
    """``value`` rounded to a multiple of ``divisor``, never more than 10% below it."""
    min_value = divisor if min_value is None else min_value
    out = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < min_ratio * value else out


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and cin == cout
        hidden = int(round(cin * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBN(cin, hidden, 1, act="relu6"))
        layers += [ConvBN(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, act="relu6"),
                   ConvBN(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """``[N, 3, H, W]`` -> ``[N, 1280, H/32, W/32]`` (``widen_factor`` scales every width)."""

    def __init__(self, widen_factor: float = 1.0, in_channels: int = 3, norm_eval: bool = False) -> None:
        super().__init__()
        self.norm_eval = norm_eval
        c = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvBN(in_channels, c, 3, stride=2, padding=1, act="relu6")
        self.layers: list[str] = []
        for i, (t, ch, n, s) in enumerate(ARCH):
            out = make_divisible(ch * widen_factor, 8)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(c, out, s if j == 0 else 1, t))
                c = out
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.layers.append(f"layer{i + 1}")
        self.feat_dim = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
        self.conv2 = ConvBN(c, self.feat_dim, 1, act="relu6")
        self.layers.append("conv2")
        for m in self.modules():        # mmaction2's init: Kaiming convs, BN 1/0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.conv1(x)
        for name in self.layers:
            x = getattr(self, name)(x)
        return x

    def train(self, mode: bool = True) -> "MobileNetV2":
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
