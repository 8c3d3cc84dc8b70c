"""Backbone training-time behaviour: frozen_stages, norm_eval, TSN partial BN; the 3D table."""
from __future__ import annotations

import pytest
import torch

from omnisource.models import ARCHS_3D, create_model

TSN = "tsn_r50_1x1x3_100e_kinetics400_rgb"
SLOW = "slowonly_r50_4x16x1_256e_kinetics400_rgb"




def _bns(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _step(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.train()
    model(x).sum().backward()


@pytest.mark.parametrize("name", [TSN, SLOW])
def test_frozen_stages(name: str) -> None:
    model = create_model(name, num_classes=3, base_channels=8, frozen_stages=2)
    bb = model.backbone
    x = torch.randn(2, 2, 3, 32, 32) if name == TSN else torch.randn(2, 3, 4, 32, 32)
    mean_before = bb.layer2[0].conv1.bn.running_mean.clone()
    mean3_before = bb.layer3[0].conv1.bn.running_mean.clone()
    _step(model, x)
    for mod in (bb.conv1, bb.layer1, bb.layer2):
        assert all(not p.requires_grad and p.grad is None for p in mod.parameters())
        assert all(not bn.training for bn in _bns(mod))
    assert all(p.requires_grad for p in bb.layer3.parameters())
    assert bb.layer3[0].conv1.conv.weight.grad is not None
    assert all(bn.training for bn in _bns(bb.layer3))
    assert torch.equal(bb.layer2[0].conv1.bn.running_mean, mean_before)   # frozen stats
    assert not torch.equal(bb.layer3[0].conv1.bn.running_mean, mean3_before)


@pytest.mark.parametrize("name", [TSN, SLOW])
def test_norm_eval(name: str) -> None:
    model = create_model(name, num_classes=3, base_channels=8, norm_eval=True)
    model.train()
    assert model.training and model.backbone.layer1.training
    assert all(not bn.training for bn in _bns(model.backbone))
    assert all(p.requires_grad for p in model.parameters())  # norm_eval freezes stats, not affine


def test_partial_bn() -> None:
    model = create_model(TSN, num_classes=3, base_channels=8, partial_bn=True)
    bns = _bns(model.backbone)
    first, rest = bns[0], bns[1:]
    assert first is model.backbone.conv1.bn
    stats = [bn.running_mean.clone() for bn in bns]
    _step(model, torch.randn(2, 2, 3, 32, 32))
    assert first.training and first.weight.requires_grad and first.weight.grad is not None
    assert not torch.equal(first.running_mean, stats[0])
    for bn, before in zip(rest, stats[1:]):
        assert not bn.training and not bn.weight.requires_grad and not bn.bias.requires_grad
        assert torch.equal(bn.running_mean, before)
    # convs keep training
    assert model.backbone.layer4[0].conv2.conv.weight.grad is not None
    # eval() / train() round trip keeps the partial-BN mode
    model.eval()
    model.train()
    assert first.training and not any(bn.training for bn in rest)


def test_3d_table_rows() -> None:
    """SlowOnly, I3D and C2D differ only by their rows: check the kernels each row produces."""
    assert set(ARCHS_3D) >= {"slowonly", "i3d", "c2d"}
    slow = create_model(SLOW, base_channels=8).backbone
    assert slow.conv1.conv.weight.shape[2:] == (1, 7, 7)
    assert [slow.layer3[i].conv1.conv.weight.shape[2] for i in range(6)] == [3] * 6
    assert slow.layer2[0].conv1.conv.weight.shape[2] == 1
    assert slow.layer3[0].conv2.conv.weight.shape[2:] == (1, 3, 3)
    i3d = create_model("i3d_r50_32x2x1_100e_kinetics400_rgb", base_channels=8).backbone
    assert i3d.conv1.conv.weight.shape[2:] == (5, 7, 7) and i3d.conv1.conv.stride == (2, 2, 2)
    assert [i3d.layer2[i].conv1.conv.weight.shape[2] for i in range(4)] == [3, 1, 3, 1]
    assert [i3d.layer4[i].conv1.conv.weight.shape[2] for i in range(3)] == [1, 3, 1]
    c2d = create_model("c2d_r50_8x8x1_100e_kinetics400_rgb", base_channels=8).backbone
    assert all(m.weight.shape[2] == 1 for m in c2d.modules() if isinstance(m, torch.nn.Conv3d))
    # temporal resolution: SlowOnly keeps T, I3D divides by 8 (conv1, pool1, pool2), C2D by 2
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert slow.eval()(x).shape[2] == 8
        assert i3d.eval()(x).shape[2] == 1
        assert c2d.eval()(x).shape[2] == 4
