"""Model registry: every preset builds, runs forward + backward on a tiny input, and has mmaction2's
parameter count at full size."""
from __future__ import annotations

import pytest
import torch

from omnisource.errors import ConfigError
from omnisource.models import Recognizer2D, Recognizer3D, create_model, get_preset_spec, list_models

REQUIRED = [
    "tsn_r50_1x1x3_100e_kinetics400_rgb",
    "tsn_r50_1x1x8_100e_minikinetics_rgb",
    "slowonly_r50_4x16x1_256e_kinetics400_rgb",
    "slowonly_r50_8x8x1_256e_minikinetics_rgb",
    "slowonly_r101_8x8x1_196e_kinetics400_rgb",
    "slowonly_imagenet_pretrained_r50_4x16x1_150e_kinetics400_rgb",
    "slowonly_imagenet_pretrained_r50_8x8x1_150e_kinetics400_rgb",
]




def _tiny_input(model: torch.nn.Module, n: int = 2) -> torch.Tensor:
    if model.meta["layout"] == "2d":
        return torch.randn(n, 2, 3, 32, 32)
    return torch.randn(n, 1, 3, 8, 32, 32)  # 8 frames: enough for I3D's two temporal strides + pool2


def test_required_presets_registered() -> None:
    names = list_models()
    for name in REQUIRED:
        assert name in names
    assert list_models("tsn_*") and all(n.startswith("tsn_") for n in list_models("tsn_*"))


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_tiny(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, base_channels=8)
    spec = get_preset_spec(name)
    assert model.meta["layout"] == spec.layout
    assert model.meta["num_classes"] == 5 and model.num_classes == 5
    assert isinstance(model, Recognizer2D if spec.layout == "2d" else Recognizer3D)
    for key in ("input_size", "mean", "std", "clip_len", "train_preset", "test_preset"):
        assert key in model.meta
    x = _tiny_input(model)
    model.train()
    out = model(x)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    loss = torch.nn.functional.cross_entropy(out, torch.tensor([1, 3]))
    loss.backward()
    g = model.backbone.conv1.conv.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert model.cls_head.fc_cls.weight.grad.abs().sum() > 0


def test_2d_consensus_and_layout() -> None:
    """[N, S, 3, H, W] -> [N, C]: the score of a video is the segment average (fc is affine)."""
    torch.manual_seed(0)
    model = create_model("tsn_r18_1x1x3_100e_kinetics400_rgb", num_classes=7, base_channels=8).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        per_segment = torch.stack([model(x[:, i:i + 1]) for i in range(3)], dim=1)
    assert out.shape == (2, 7)
    torch.testing.assert_close(out, per_segment.mean(1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[N, S, 3, H, W\]"):
        model(torch.randn(2, 3, 32, 32))


def test_3d_views_flattened() -> None:
    torch.manual_seed(0)
    model = create_model("slowonly_r50_4x16x1_256e_kinetics400_rgb", num_classes=6, base_channels=8).eval()
    x = torch.randn(2, 3, 3, 4, 32, 32)  # N=2 videos, V=3 views
    with torch.no_grad():
        out = model(x)
        single = model(x[1:2, 2])  # the [N, 3, T, H, W] layout
    assert out.shape == (6, 6)
    torch.testing.assert_close(out[1 * 3 + 2], single[0], atol=1e-5, rtol=1e-5)
    feats = model.extract_features(x)
    assert feats.shape == (6, model.feat_dim)


def test_extract_features_2d_images() -> None:
    model = create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", base_channels=8).eval()
    with torch.no_grad():
        f = model.extract_features(torch.randn(4, 3, 32, 32))
        v = model.extract_features(torch.randn(2, 3, 3, 32, 32))
    assert f.shape == (4, 8 * 8 * 4) and v.shape == (2, 8 * 8 * 4)


def test_default_classes_and_overrides() -> None:
    assert create_model("tsn_r50_1x1x8_100e_minikinetics_rgb", base_channels=8).num_classes == 200
    assert create_model("slowonly_r50_8x8x1_256e_minikinetics_rgb", base_channels=8).num_classes == 200
    m = create_model("slowonly_r50_4x16x1_256e_kinetics400_rgb", base_channels=8)
    assert m.num_classes == 400 and m.meta["clip_len"] == 4 and m.meta["frame_interval"] == 16
    m = create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", depth=18, base_channels=8, dropout=0.0)
    assert m.backbone.depth == 18 and m.cls_head.dropout is None and m.feat_dim == 64
    # 3D table fields are overridable: inflating every stage changes layer1's kernels
    m = create_model("slowonly_r50_4x16x1_256e_kinetics400_rgb", base_channels=8, inflate=(1, 1, 1, 1))
    assert m.backbone.layer1[0].conv1.conv.weight.shape[2] == 3
    # mmaction2 1.x config names are aliases
    alias = create_model("tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb", base_channels=8)
    assert alias.meta["name"] == "tsn_r50_1x1x3_100e_kinetics400_rgb"


def test_bad_names_and_overrides() -> None:
    with pytest.raises(ConfigError, match="did you mean tsn_r50_1x1x3_100e_kinetics400_rgb"):
        create_model("tsn_r50_1x1x3_100e_kinetic400_rgb")
    with pytest.raises(ConfigError, match="did you mean 'base_channels'"):
        create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", base_channel=8)
    with pytest.raises(ConfigError, match="partial_bn"):
        create_model("slowonly_r50_4x16x1_256e_kinetics400_rgb", partial_bn=True)
    with pytest.raises(ConfigError, match="depth"):
        create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", depth=42)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", num_classes=0)


# Parameter counts measured with mmaction2 1.2.0 in ~/.cache/mmaction2-ref:
#   cfg = Config.fromfile(<mmaction>/.mim/configs/recognition/<family>/<config>.py)
#   cfg.model.backbone.pretrained = None; register_all_modules(); m = MODELS.build(cfg.model)
#   sum(p.numel() for p in m.parameters())
# (fixtures taken from mmaction2, not results of this code)
MMACTION2_PARAMS = {
    "tsn_r50_1x1x3_100e_kinetics400_rgb": 24_327_632,        # tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e
    "slowonly_r50_4x16x1_256e_kinetics400_rgb": 32_454_096,  # slowonly_r50_8xb16-4x16x1-256e
    "slowonly_r101_8x8x1_196e_kinetics400_rgb": 60_359_120,  # slowonly_r101_8xb16-8x8x1-196e
    "i3d_r50_32x2x1_100e_kinetics400_rgb": 28_043_472,       # i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e
    "tsn_r101_1x1x8_100e_kinetics400_rgb": 43_319_760,       # tsn_imagenet-pretrained-r101_8xb32-1x1x8-100e
}


def test_parameter_counts_equal_mmaction2() -> None:
    for name, expected in MMACTION2_PARAMS.items():
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = create_model(name)
        assert sum(p.numel() for p in model.parameters()) == expected, name
