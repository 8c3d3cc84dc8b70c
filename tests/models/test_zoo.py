"""Model registry: every preset builds, runs forward + backward on a tiny input, and has mmaction2's
parameter count at full size."""
from __future__ import annotations

import pytest
import torch

from omnisource.errors import ConfigError
from omnisource.models import (list_families, create_model, example_input, get_family, get_model_preset, list_models,
                               preset_module, resolve_name)

REQUIRED = [
    "tsn_r50_1x1x3_100e_kinetics400_rgb",
    "tsn_r50_1x1x8_100e_minikinetics_rgb",
    "slowonly_r50_4x16x1_256e_kinetics400_rgb",
    "slowonly_r50_8x8x1_256e_minikinetics_rgb",
    "slowonly_r101_8x8x1_196e_kinetics400_rgb",
    "slowonly_imagenet_pretrained_r50_4x16x1_150e_kinetics400_rgb",
    "slowonly_imagenet_pretrained_r50_8x8x1_150e_kinetics400_rgb",
]


def _tiny(name: str, num_classes: int = 5) -> torch.nn.Module:
    """The preset at its family's tiny configuration (the registry says what that is)."""
    return create_model(name, num_classes=num_classes, **get_family(get_model_preset(name).family).tiny)


def test_required_presets_registered() -> None:
    names = list_models()
    for name in REQUIRED:
        assert name in names
    assert list_models("tsn_*") and all(n.startswith("tsn_") for n in list_models("tsn_*"))
    ours = {n for n in names if preset_module(n).startswith("omnisource.")}   # not a test's toy rows
    by_family = set().union(*(list_models(family=f) for f in list_families()))
    assert by_family >= ours
    for fam in ("slowfast", "r2plus1d", "csn", "c3d", "x3d"):     # the 3D families of issue 21
        assert list_models(family=fam), fam
    assert "c2d_r50_nopool_8x8x1_100e_kinetics400_rgb" in list_models(family="tsn")


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_tiny(name: str) -> None:
    """Every preset: tiny network, forward + backward on its family's declared input, the loss
    dict in training and scores in inference."""
    torch.manual_seed(0)
    model = _tiny(name)
    row = get_model_preset(name)
    fam = get_family(row.family)
    assert model.meta["family"] == fam.name and model.meta["layout"] == fam.layout == row.layout
    assert model.meta["num_classes"] == 5 and model.num_classes == 5
    for key in ("input_size", "mean", "std", "clip_len", "train_preset", "test_preset", "mmaction2_configs"):
        assert key in model.meta
    x = example_input(model)
    model.train()
    out = model(x)
    assert out.shape[-1] == 5 and out.shape[0] % x.shape[0] == 0
    assert torch.isfinite(out).all()
    rows = out.shape[0] // x.shape[0]
    target = torch.tensor([1, 3]).repeat_interleave(rows)
    losses = model(x, loss_fn=lambda s, head: torch.nn.functional.cross_entropy(s, target))
    assert isinstance(losses, dict) and "loss_cls" in losses
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", list_models())
def test_state_dict_round_trip_through_load_checkpoint(name: str, tmp_path) -> None:
    from omnisource.models import load_checkpoint

    torch.manual_seed(1)
    a = _tiny(name).eval()
    torch.save({"state_dict": a.state_dict(), "meta": {"note": "round trip"}}, tmp_path / "w.pth")
    torch.manual_seed(2)
    b = _tiny(name).eval()
    report = load_checkpoint(b, tmp_path / "w.pth")
    assert not report.missing and not report.unexpected
    x = example_input(a)
    import numpy as np

    with torch.no_grad():   # (numpy seeded: TRN samples its relation tuples at test time too)
        np.random.seed(0)
        out_a = a(x)
        np.random.seed(0)
        torch.testing.assert_close(out_a, b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list_models())
def test_flops_command_of_the_tiny_configuration(name: str, tmp_path, capsys) -> None:
    import json

    from omnisource.cli import main

    fam = get_family(get_model_preset(name).family)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"model:\n  name: {name}\n  num_classes: 5\n  overrides: {json.dumps(fam.tiny)}\n")
    assert main(["flops", str(cfg), "--size", "32", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["params"] == sum(p.numel() for p in _tiny(name).parameters()) and res["flops"] > 0


ZOO_ROWS = [n for n in list_models() if get_model_preset(n).params is not None]


@pytest.mark.parametrize("name", ZOO_ROWS)
def test_parameter_count_equals_mmaction2(name: str) -> None:
    """Every zoo row's full-size network has the parameter count mmaction2 1.2.0 builds for its
    config (recorded in the row, measured with ../shared/tools/mmaction2-reference)."""
    row = get_model_preset(name)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == row.params


def test_every_name_of_a_row_resolves() -> None:
    for n in list_models():
        row = get_model_preset(n)
        assert resolve_name(n) == n
        for alias in row.mmaction2_configs:
            assert resolve_name(alias) == n
            assert resolve_name(f"configs/recognition/{row.family}/{alias}.py") == n
    assert preset_module("tsn_r50_1x1x3_100e_kinetics400_rgb") == "omnisource.models.tsn"
    assert preset_module("i3d_r50_32x2x1_100e_kinetics400_rgb") == "omnisource.models.resnet3d"
    assert get_family("tsn").module == "omnisource.models.tsn"


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


def test_timesformer_imports_a_timm_vit_file(tmp_path):
    """A ViT-B/16 in timm's names (here random, tiny) initialises divided attention as mmaction2
    does: each block's attention becomes both the temporal and the spatial one."""
    from omnisource.models.timesformer import vit_pretrained_state

    torch.manual_seed(0)
    model = create_model("timesformer_divST_8x32x1_15e_kinetics400_rgb", num_classes=5,
                         **get_family("timesformer").tiny)
    dims = 32
    sd = {"patch_embed.proj.weight": torch.randn(dims, 3, 16, 16), "patch_embed.proj.bias": torch.randn(dims),
          "cls_token": torch.randn(1, 1, dims), "pos_embed": torch.randn(1, 5, dims),
          "norm.weight": torch.randn(dims), "norm.bias": torch.randn(dims), "head.weight": torch.randn(10, dims)}
    for i in range(2):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": torch.randn(dims), p + "norm1.bias": torch.randn(dims),
                   p + "attn.qkv.weight": torch.randn(3 * dims, dims), p + "attn.qkv.bias": torch.randn(3 * dims),
                   p + "attn.proj.weight": torch.randn(dims, dims), p + "attn.proj.bias": torch.randn(dims),
                   p + "norm2.weight": torch.randn(dims), p + "norm2.bias": torch.randn(dims),
                   p + "mlp.fc1.weight": torch.randn(4 * dims, dims), p + "mlp.fc1.bias": torch.randn(4 * dims),
                   p + "mlp.fc2.weight": torch.randn(dims, 4 * dims), p + "mlp.fc2.bias": torch.randn(dims)})
    mapped, fmt = vit_pretrained_state(sd)
    assert fmt == "timm ViT"
    own = model.backbone.state_dict()
    assert set(mapped) <= set(own)
    missing = set(own) - set(mapped)    # only what a ViT does not have: time embedding, temporal_fc
    assert missing == {"time_embed"} | {f"transformer_layers.layers.{i}.attentions.0.temporal_fc.{w}"
                                        for i in range(2) for w in ("weight", "bias")}
    l0 = "transformer_layers.layers.0.attentions."
    assert torch.equal(mapped[l0 + "0.attn.in_proj_weight"], sd["blocks.0.attn.qkv.weight"])
    assert torch.equal(mapped[l0 + "1.attn.in_proj_weight"], sd["blocks.0.attn.qkv.weight"])
    torch.save(sd, tmp_path / "vit.pth")
    loaded = create_model("timesformer_divST_8x32x1_15e_kinetics400_rgb", num_classes=5,
                          pretrained=str(tmp_path / "vit.pth"), **get_family("timesformer").tiny)
    assert torch.equal(loaded.backbone.transformer_layers.layers[1].ffns[0].layers[1].weight, sd["blocks.1.mlp.fc2.weight"])


def test_tpn_adds_its_auxiliary_head_loss_in_training():
    """TPN's res4 head is scored in training and its loss (weight 0.5, mmaction2's) is returned
    beside the classifier's, so the trainer adds and logs both; inference gives scores only."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = _tiny("tpn_slowonly_r50_8x8x1_150e_kinetics_rgb").train()
    x = example_input(model)
    y = torch.tensor([1, 3])
    seen = []

    def loss_fn(scores, which):
        seen.append(which)
        return F.cross_entropy(scores, y)

    losses = model(x, loss_fn=loss_fn)
    assert set(losses) == {"loss_cls", "loss_aux"} and seen == ["cls", "aux"]
    aux = model.neck.aux_head
    model.eval()                                  # no dropout: the aux loss is reproducible
    with torch.no_grad():
        again = model(x, loss_fn=lambda s, w: F.cross_entropy(s, y))
        direct = 0.5 * F.cross_entropy(aux(model.backbone(x.flatten(0, 1))[0]), y)
    assert torch.allclose(again["loss_aux"], direct)
    sum(losses.values()).backward()
    assert aux.fc.weight.grad is not None and aux.fc.weight.grad.abs().sum() > 0
    assert model(x).shape == (2, 5)


def test_tpn_tsm_folds_segments_into_time_and_adds_the_auxiliary_loss():
    """TPN on TSM: each group of num_segments frames becomes one [C, T, h, w] pyramid input (so two
    views give two score rows, each equal to scoring that view alone), and training adds the res4
    head's loss as the SlowOnly TPN does."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = _tiny("tpn_tsm_r50_1x1x8_150e_sthv1_rgb").eval()
    segs = model.meta["num_segments"]
    x = torch.randn(1, 2 * segs, 3, 32, 32)                        # one video, two views
    with torch.no_grad():
        both = model(x)
        first, second = model(x[:, :segs]), model(x[:, segs:])
    assert both.shape == (2, 5)
    assert torch.allclose(both[0], first[0], atol=1e-5) and torch.allclose(both[1], second[0], atol=1e-5)
    with pytest.raises(ValueError, match="whole groups"):
        model(x[:, :segs - 1])
    model.train()
    y = torch.tensor([1, 3])
    xt = torch.randn(2, segs, 3, 32, 32)
    losses = model(xt, loss_fn=lambda s, w: F.cross_entropy(s, y))
    assert set(losses) == {"loss_cls", "loss_aux"}
    sum(losses.values()).backward()
    assert model.neck.aux_head.fc.weight.grad.abs().sum() > 0
