"""Folding BatchNorm into the convolutions (``--fuse-conv-bn``) keeps the class scores."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from omnisource.errors import ConfigError
from omnisource.models import create_model
from omnisource.models.fusion import fuse_conv_bn
from omnisource.models.resnet import ConvBN

CASES = {  # 2D and 3D backbones share ConvBN (dims=2 / 3)
    "tsn_r50_1x1x3_100e_kinetics400_rgb": (2, 3, 3, 48, 48),
    "slowonly_r50_4x16x1_256e_kinetics400_rgb": (2, 1, 3, 4, 48, 48),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, depth=18, base_channels=8)
    for m in model.modules():  # statistics and scales far from the identity map
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_folded_model_gives_the_same_scores(name: str) -> None:
    model = _model(name)
    x = torch.randn(CASES[name])
    with torch.no_grad():
        before = model(x)
        convbns = sum(isinstance(m, ConvBN) for m in model.modules())
        assert fuse_conv_bn(model) == convbns > 0
        after = model(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert fuse_conv_bn(model) == 0  # nothing left to fold


def test_folding_a_training_model_is_refused() -> None:
    model = _model("tsn_r50_1x1x3_100e_kinetics400_rgb").train()
    with pytest.raises(ConfigError, match="eval mode"):
        fuse_conv_bn(model)
