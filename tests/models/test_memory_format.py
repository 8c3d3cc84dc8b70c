"""Channels-last (NHWC / NDHWC) computes what the default layout computes.

The trainer switches real-width 2D models to channels-last by default (``train.channels_last:
auto``), 3D models on an AVX-512 CPU, and any model with ``train.channels_last: true``, so
outputs and gradients there must match the contiguous layout that the mmaction2 parity tests use.

Gradients are compared on ResNet-18 depth: a randomly initialised ResNet-50 in train-mode BN on
a handful of small frames is chaotic enough that *any* change of fp32 summation order (even
NCHW fp32 against float64) moves deep gradients by percents, which would test nothing. The
bottleneck (R50) variants are checked on eval-mode outputs, which are well conditioned.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from omnisource.engine.train import use_channels_last
from omnisource.models import create_model

CASES = {
    "tsn_r50_1x1x3_100e_kinetics400_rgb": ((2, 3, 3, 64, 64), torch.channels_last),
    "slowonly_r50_4x16x1_256e_kinetics400_rgb": ((2, 1, 3, 4, 32, 32), torch.channels_last_3d),
}


def _pair(name: str, **kw) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ref = create_model(name, num_classes=5, base_channels=16, **kw)
    for m in ref.modules():  # non-trivial BN scales (zero-init residual BNs would hide blocks)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    cl = create_model(name, num_classes=5, base_channels=16, **kw)
    cl.load_state_dict(ref.state_dict())
    cl.to(memory_format=CASES[name][1])
    return ref, cl


@pytest.mark.parametrize("avx512", [False, True])
def test_auto_picks_nhwc_for_2d_and_ndhwc_for_3d_only_on_avx512_cpus(monkeypatch, avx512: bool) -> None:
    import omnisource.engine.hardware as hw

    monkeypatch.setattr(hw, "cpu_has_avx512", lambda: avx512)
    tsn = create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", num_classes=5, base_channels=16)
    slow = create_model("slowonly_r50_4x16x1_256e_kinetics400_rgb", num_classes=5, base_channels=16)
    assert use_channels_last(tsn, "2d") and use_channels_last(tsn, "2d", "cpu")
    assert use_channels_last(slow, "3d") is avx512
    assert use_channels_last(slow, "3d", torch.device("cpu")) is avx512
    assert not use_channels_last(slow, "3d", "cuda")  # not measured on GPU: stays NCDHW
    tiny = create_model("slowonly_r50_4x16x1_256e_kinetics400_rgb", num_classes=5, base_channels=4)
    assert not use_channels_last(tiny, "3d")  # debug widths gain nothing


@pytest.mark.parametrize("name", sorted(CASES))
def test_channels_last_training_step_matches_contiguous(name: str) -> None:
    ref, cl = _pair(name, depth=18)
    x = torch.randn(CASES[name][0])
    outs = []
    for model in (ref.train(), cl.train()):
        torch.manual_seed(1)  # the same dropout mask in the head
        out = model(x)
        out.square().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for (n, a), b in zip(ref.named_parameters(), cl.parameters()):
        err = float((b.grad - a.grad).abs().max() / a.grad.abs().max().clamp_min(1e-12))
        assert err < 1e-3, f"{n}: relative gradient error {err:.2e}"
    for (n, a), b in zip(ref.named_buffers(), cl.buffers()):  # BN running statistics
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("name", sorted(CASES))
def test_channels_last_r50_eval_outputs_match(name: str) -> None:
    ref, cl = _pair(name)
    x = torch.randn(CASES[name][0])
    with torch.no_grad():
        torch.testing.assert_close(cl.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("setting, expect", [("auto", True), (True, True), (False, False)])
def test_inference_follows_the_training_memory_format_setting(setting, expect: bool) -> None:
    """test / predict / bench-infer load the model through apply_memory_format with the
    config's train.channels_last (auto: NHWC for a real-width 2D net on any CPU)."""
    from omnisource.engine.evaluate import apply_memory_format

    model = create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", num_classes=5, base_channels=16)
    assert apply_memory_format(model, setting, torch.device("cpu")) is expect
    conv = model.backbone.conv1.conv.weight  # [16, 3, 7, 7]: the two layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) is expect
    assert conv.is_contiguous() is (not expect)
