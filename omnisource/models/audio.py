"""Audio family (Xiao et al. 2020, "Audiovisual SlowFast Networks"): 2D CNNs over log-mel
spectrograms, one score row per clip.

Family ``audio``, input contract ``'audio'``: ``[N, V, 1, T, F]`` (V clips of ``T`` spectrogram
frames x ``F`` mel bins, mmaction2's ``NCTF`` after ``FormatAudioShape``) or ``[N, 1, T, F]``;
the clips are flattened into the batch and each keeps its own score row, ``[N*V, classes]``
(mmaction2's ``RecognizerAudio``; the test engine averages clips like 3D views).

Two backbones, with mmaction2's key names:

* the zoo's TSN-R18 row: the plain 2D ResNet-18 of :mod:`omnisource.models.resnet` on one
  input channel (``ResNet(depth=18, in_channels=1)``);
* ``arch='audioonly'``: mmaction2's ``ResNetAudio`` (R50): a 9x9 stem and, in res2 / res3,
  bottlenecks whose 3x3 conv is *factorised* into a time (kx1) and a frequency (1xk) branch
  (``ConvAudio``: each branch conv + BN + ReLU; the stem sums them, the blocks concatenate them,
  doubling the channels ``conv3`` sees). Base width 32, so res5 has 1024 channels. As mmaction2,
  a bottleneck's ``conv2`` has no BN or ReLU of its own (its branches have theirs).

The head is ``TSNAudioHead``: global average pool, dropout, fc (``cls_head.fc_cls``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from omnisource.models.heads import _Head
from omnisource.models.layers import ConvBN
from omnisource.models.recognizers import _Recognizer
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet import ResNet, eval_frozen_stages, freeze_stages

__all__ = ["ConvAudio", "ResNetAudio", "TSNAudioHead", "RecognizerAudio", "FAMILY", "ROWS"]


class ConvAudio(nn.Module):
    """A kxk convolution factorised into a time (k x 1) and a frequency (1 x k) branch, each
    conv + BN + ReLU, summed (``op='sum'``) or concatenated (``'concat'``: 2x the channels)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, op: str = "concat") -> None:
        super().__init__()
        if op not in ("sum", "concat"):
            raise ValueError(f"op must be 'sum' or 'concat', got {op!r}")
        self.op = op
        self.conv_1 = ConvBN(cin, cout, (kernel, 1), stride=stride, padding=(kernel // 2, 0), bias=False)
        self.conv_2 = ConvBN(cin, cout, (1, kernel), stride=stride, padding=(0, kernel // 2), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv_1(x), self.conv_2(x)
        return a + b if self.op == "sum" else torch.cat([a, b], 1)


def _conv_audio(op: str) -> Callable[..., nn.Module]:
    """A :class:`ConvBN` ``conv_layer`` building :class:`ConvAudio` (mmcv ``ConvModule`` with
    ``conv_cfg=dict(type='ConvAudio')``: its keys ``conv.conv_{1,2}.*``, the module's own ``bn``)."""
    def build(cin: int, cout: int, k: Any, stride: Any, padding: Any, dilation: Any, groups: int,
              bias: bool) -> nn.Module:
        return ConvAudio(cin, cout, int(k), int(stride), op=op)
    return build


class Bottleneck2dAudio(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 factorize: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvBN(inplanes, planes, 1, bias=False)
        if factorize:
            self.conv2: nn.Module = ConvBN(planes, planes, 3, stride=stride, norm=False, bias=False, act=False,
                                           conv_layer=_conv_audio("concat"))
        else:
            self.conv2 = ConvBN(planes, planes, 3, stride=stride, padding=1, norm=False, bias=False, act=False)
        self.conv3 = ConvBN(2 * planes if factorize else planes, planes * self.expansion, 1, bias=False, act=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNetAudio(nn.Module):
    """mmaction2's ``ResNetAudio``: 9x9 factorised stem (stride 1, no pooling), 4 stages of
    audio bottlenecks, res2 / res3 factorised (``factorize=(1, 1, 0, 0)``)."""

    ARCH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

    def __init__(self, depth: int = 50, in_channels: int = 1, base_channels: int = 32,
                 factorize: tuple[int, ...] = (1, 1, 0, 0), conv1_kernel: int = 9, frozen_stages: int = -1,
                 norm_eval: bool = False) -> None:
        super().__init__()
        if depth not in self.ARCH:
            raise ValueError(f"invalid ResNetAudio depth {depth}; choose from {sorted(self.ARCH)}")
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        self.conv1 = ConvBN(in_channels, base_channels, conv1_kernel, bias=False, conv_layer=_conv_audio("sum"))
        self.res_layers: list[str] = []
        inplanes = base_channels
        for i, n in enumerate(self.ARCH[depth]):
            planes, stride = base_channels * 2 ** i, (1 if i == 0 else 2)
            down = None
            if stride != 1 or inplanes != planes * 4:
                down = ConvBN(inplanes, planes * 4, 1, stride=stride, bias=False, act=False)
            blocks = [Bottleneck2dAudio(inplanes, planes, stride, down, bool(factorize[i]))]
            blocks += [Bottleneck2dAudio(planes * 4, planes, 1, None, bool(factorize[i])) for _ in range(1, n)]
            inplanes = planes * 4
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.res_layers.append(f"layer{i + 1}")
        self.feat_dim = inplanes
        self.init_weights()
        freeze_stages(self, frozen_stages)

    def init_weights(self) -> None:
        """mmaction2's: Kaiming convs, BN weight 1, the last BN of each bottleneck 0
        (``zero_init_residual``: every block starts as the identity)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck2dAudio):
                nn.init.zeros_(m.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for name in self.res_layers:
            x = getattr(self, name)(x)
        return x

    def train(self, mode: bool = True) -> "ResNetAudio":
        super().train(mode)
        if mode:
            eval_frozen_stages(self, self.frozen_stages, self.norm_eval)
        return self


class TSNAudioHead(_Head):
    """Global average pool over (time, frequency), dropout, fc."""

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(x))


class RecognizerAudio(_Recognizer):
    """Spectrogram clips -> one score row per clip."""

    layout = "audio"

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5 and x.shape[2] == 1:
            return x.reshape((-1,) + x.shape[2:])
        if x.dim() == 4 and x.shape[1] == 1:
            return x
        raise ValueError(f"{type(self).__name__} expects [N, V, 1, T, F] or [N, 1, T, F] spectrograms, "
                         f"got {tuple(x.shape)}")

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, V, 1, T, F]`` -> raw scores ``[N*V, num_classes]``."""
        return self.cls_head(self.backbone(self._flatten(x)))

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head.pool(self.backbone(self._flatten(x)))


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 18))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    in_channels = int(opts.pop("in_channels", 1))
    if preset.arch == "audioonly":
        base = int(opts.pop("base_channels", 32))
        backbone: nn.Module = ResNetAudio(depth, in_channels, base, **opts)
    else:
        base = int(opts.pop("base_channels", 64))
        backbone = ResNet(depth=depth, in_channels=in_channels, base_channels=base, **opts)
    head = TSNAudioHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base, in_channels=in_channels, dropout=dropout,
                num_mels=80, fixed_length=128)
    return RecognizerAudio(backbone, head, meta)


def _example(model: nn.Module, n: int) -> torch.Tensor:
    return torch.randn(n, 1, 1, 64, 40)


FAMILY = register_family(Family(
    name="audio", layout="audio", build=_build,
    overrides=frozenset({"frozen_stages", "norm_eval"}),
    tiny={"base_channels": 8},
    example_input=_example,
    doc="Audio: ResNet-18 / ResNetAudio-50 over log-mel spectrograms (mmaction2 RecognizerAudio + TSNAudioHead)",
))


def _row(name: str, mm: tuple[str, ...], depth: int, arch: str, params: int, batch: int, doc: str) -> ModelPreset:
    return ModelPreset(name=name, family="audio", arch=arch, depth=depth, num_classes=400, dataset="kinetics400",
                       clip_len=64, frame_interval=1, num_clips=1, epochs=100,
                       train_preset="audio_feature_64x1x1_train", test_preset="audio_feature_64x1x1_test",
                       mmaction2_configs=mm, imagenet_pretrained=False, dropout=0.5, init_std=0.01,
                       params=params, doc=doc)


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("tsn_r18_64x1x1_100e_kinetics400_audio_feature", ("tsn_r18_8xb320-64x1x1-100e_kinetics400-audio-feature",),
         18, "resnet", 11_375_440, 320, "TSN ResNet-18 on log-mel audio features (64 video frames -> 128 x 80), Kinetics-400"),
    _row("audioonly_r50_64x1x1_100e_kinetics400_audio_feature",
         ("audioonly_r50_8xb160-64x1x1-100e_kinetics400-audio-feature",), 50, "audioonly", 6_315_728, 160,
         "Audio-only ResNetAudio-50 (factorised time / frequency convs) on log-mel features, Kinetics-400"),
])
