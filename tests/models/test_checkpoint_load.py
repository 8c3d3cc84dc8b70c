"""Checkpoint loading: round trip, mmaction2 0.x/1.x layouts, head handling, safe unpickling,
ImageNet (torchvision/timm) import and 2D->3D inflation."""
from __future__ import annotations

import json
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from omnisource.errors import InputError
from omnisource.models import create_model, load_checkpoint, load_pretrained_backbone, read_checkpoint_file
from omnisource.models.checkpoint import inflate_weight

TSN = "tsn_r50_1x1x3_100e_kinetics400_rgb"
SLOW = "slowonly_r50_4x16x1_256e_kinetics400_rgb"
B = 8  # base_channels of the tiny test networks




def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics so that loading them (or not) changes outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)


def _tiny(name: str = TSN, num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = create_model(name, num_classes=num_classes, base_channels=B)
    _randomize_bn(m, seed)
    return m.eval()


def _x(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name.startswith("tsn"):
        return torch.randn(2, 3, 3, 32, 32, generator=g)
    return torch.randn(2, 3, 4, 32, 32, generator=g)


# --- mmaction2 key layout, derived independently from mmaction2's naming rules --------------
def mmaction2_resnet_layout(depth: int, base: int, num_classes: int, temporal: dict | None = None) -> dict:
    """Key -> shape for an mmaction2 ResNet/ResNet3d recognizer (bottleneck depths).

    ``temporal`` maps 'stem' and stage index -> temporal kernel of conv1 in inflated blocks
    (SlowOnly: stem 1, stages 3 and 4 inflated with 3x1x1), None for a 2D net.
    """
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]

    def conv(o, i, k, kt=None):
        return (o, i, k, k) if temporal is None else (o, i, kt if kt is not None else 1, k, k)

    def bn(prefix, c, out):
        for n in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.bn.{n}"] = (c,)
        out[f"{prefix}.bn.num_batches_tracked"] = ()

    out: dict[str, tuple] = {}
    out["backbone.conv1.conv.weight"] = conv(base, 3, 7, temporal and temporal["stem"])
    bn("backbone.conv1", base, out)
    inplanes = base
    for s, n in enumerate(blocks):
        planes = base * 2 ** s
        kt = temporal.get(s + 1, 1) if temporal else None
        for i in range(n):
            p = f"backbone.layer{s + 1}.{i}"
            out[f"{p}.conv1.conv.weight"] = conv(planes, inplanes, 1, kt)
            bn(f"{p}.conv1", planes, out)
            out[f"{p}.conv2.conv.weight"] = conv(planes, planes, 3, 1 if temporal else None)
            bn(f"{p}.conv2", planes, out)
            out[f"{p}.conv3.conv.weight"] = conv(planes * 4, planes, 1, 1 if temporal else None)
            bn(f"{p}.conv3", planes * 4, out)
            if i == 0:
                out[f"{p}.downsample.conv.weight"] = conv(planes * 4, inplanes, 1, 1 if temporal else None)
                bn(f"{p}.downsample", planes * 4, out)
            inplanes = planes * 4
    out["cls_head.fc_cls.weight"] = (num_classes, inplanes)
    out["cls_head.fc_cls.bias"] = (num_classes,)
    return out


def _random_state(layout: dict, seed: int = 3) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.1
    return sd


@pytest.mark.parametrize("name,temporal", [(TSN, None), (SLOW, {"stem": 1, 3: 3, 4: 3})])
def test_mmaction2_layout_loads_strictly(tmp_path: Path, name: str, temporal) -> None:
    layout = mmaction2_resnet_layout(50, B, 5, temporal)
    sd = _random_state(layout)
    # a 1.x checkpoint: meta + state_dict, normalisation buffers of the data preprocessor
    sd["data_preprocessor.mean"] = torch.zeros(3, 1, 1)
    sd["data_preprocessor.std"] = torch.ones(3, 1, 1)
    path = tmp_path / "mm1x.pth"
    torch.save({"meta": {"epoch": 7, "mmengine_version": "0.10.4"}, "state_dict": sd}, path)
    model = create_model(name, num_classes=5, base_channels=B)
    report = load_checkpoint(model, path)
    assert report.meta["epoch"] == 7 and not report.missing and not report.unexpected
    own = model.state_dict()
    assert set(own) == set(layout)
    for k in layout:
        assert torch.equal(own[k], sd[k]), k


def test_round_trip_identical_outputs(tmp_path: Path) -> None:
    for name in (TSN, SLOW):
        a = _tiny(name, seed=1)
        path = tmp_path / f"{name}.pth"
        torch.save({"state_dict": a.state_dict()}, path)
        b = create_model(name, num_classes=5, base_channels=B).eval()
        load_checkpoint(b, path)
        with torch.no_grad():
            assert torch.equal(a(_x(name)), b(_x(name)))


@pytest.mark.parametrize("wrap", ["0.x", "1.x", "ddp", "bare", "omnisource"])
def test_nesting_and_prefixes(tmp_path: Path, wrap: str) -> None:
    a = _tiny(seed=2)
    sd = a.state_dict()
    if wrap == "0.x":  # mmcv runner: meta + state_dict + optimizer
        obj = {"meta": {"mmcv_version": "1.3", "epoch": 100}, "state_dict": sd, "optimizer": {"state": {}}}
    elif wrap == "1.x":
        obj = {"meta": {"epoch": 1}, "state_dict": sd, "message_hub": {}, "optimizer": {}}
    elif wrap == "ddp":  # saved from a DistributedDataParallel wrapper
        obj = {"state_dict": OrderedDict((f"module.{k}", v) for k, v in sd.items())}
    elif wrap == "omnisource":
        obj = {"model": sd, "optimizer": {}, "epoch": 3}
    else:
        obj = sd
    torch.save(obj, tmp_path / "c.pth")
    b = create_model(TSN, num_classes=5, base_channels=B).eval()
    # the model side may be wrapped too (keys are matched on the bare model)
    load_checkpoint(torch.nn.DataParallel(b) if wrap == "ddp" else b, tmp_path / "c.pth")
    with torch.no_grad():
        assert torch.equal(a(_x(TSN)), b(_x(TSN)))


def test_strict_errors_name_keys_and_file(tmp_path: Path) -> None:
    sd = _tiny().state_dict()
    del sd["backbone.layer2.1.conv2.bn.running_var"]
    sd["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": sd}, path)
    model = create_model(TSN, num_classes=5, base_channels=B)
    with pytest.raises(InputError) as err:
        load_checkpoint(model, path)
    msg = str(err.value)
    assert str(path) in msg
    assert "backbone.layer2.1.conv2.bn.running_var" in msg and "backbone.extra.weight" in msg
    report = load_checkpoint(model, path, strict=False)
    assert report.missing == ["backbone.layer2.1.conv2.bn.running_var"]
    assert report.unexpected == ["backbone.extra.weight"]


def test_head_size_mismatch_needs_reset_head(tmp_path: Path) -> None:
    src = _tiny(num_classes=5, seed=4)
    path = tmp_path / "k5.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    model = create_model(TSN, num_classes=3, base_channels=B).eval()
    before = model.cls_head.fc_cls.weight.detach().clone()
    with pytest.raises(InputError, match=r"5 vs 3 classes.*reset_head"):
        load_checkpoint(model, path)
    assert torch.equal(model.cls_head.fc_cls.weight, before)  # nothing half-loaded
    report = load_checkpoint(model, path, reset_head=True)
    assert report.head_reset
    torch.testing.assert_close(model.backbone.conv1.conv.weight, src.backbone.conv1.conv.weight)
    w = model.cls_head.fc_cls.weight
    assert w.shape == (3, src.feat_dim) and 0.001 < w.std().item() < 0.05  # fresh N(0, 0.01) init
    assert torch.count_nonzero(model.cls_head.fc_cls.bias) == 0


def test_other_backbone_is_named_as_such_not_as_a_head_to_reset(tmp_path: Path) -> None:
    # an R-18 checkpoint into an R-50 config, same classes: the classifier's input width differs;
    # "--reset-head" would be the wrong advice (the backbone keys differ too)
    torch.manual_seed(0)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": create_model(TSN, num_classes=5, depth=18, base_channels=B).state_dict()},
               path)
    with pytest.raises(InputError, match=r"takes 64 features in the checkpoint but 256 .*another "
                                         r"backbone") as err:
        load_checkpoint(_tiny(num_classes=5), path)
    assert "reset" not in str(err.value)


def test_missing_num_batches_tracked_tolerated(tmp_path: Path) -> None:
    a = _tiny(seed=5)
    sd = {k: v for k, v in a.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pth")
    b = create_model(TSN, num_classes=5, base_channels=B).eval()
    assert load_checkpoint(b, tmp_path / "old.pth").missing == []
    with torch.no_grad():
        assert torch.equal(a(_x(TSN)), b(_x(TSN)))


class _Evil:
    """Pickles as a call to os.system: a hostile checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ForeignBuffer:
    """Stands in for mmengine's HistoryBuffer: a class the loading side does not have."""

    def __init__(self) -> None:
        self.values = [1.0, 2.0]


def test_restricted_unpickler_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    a = _tiny(seed=6)
    obj = {"meta": {"hub": _ForeignBuffer(), "evil": _Evil(marker)}, "state_dict": a.state_dict()}
    path = tmp_path / "hostile.pth"
    torch.save(obj, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    loaded = read_checkpoint_file(path)
    assert not marker.exists()
    assert "Opaque" in type(loaded["meta"]["evil"]).__name__
    b = create_model(TSN, num_classes=5, base_channels=B).eval()
    report = load_checkpoint(b, path)
    assert not marker.exists()
    assert "opaque" in str(report.meta["hub"])
    with torch.no_grad():
        assert torch.equal(a(_x(TSN)), b(_x(TSN)))


def test_unreadable_files(tmp_path: Path) -> None:
    model = create_model(TSN, num_classes=5, base_channels=B)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(model, tmp_path / "nope.pth")
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match=re.escape(str(bad))):
        load_checkpoint(model, bad)
    st = tmp_path / "cut.safetensors"
    _save_safetensors({"conv1.weight": torch.zeros(4, 3, 7, 7)}, st)
    st.write_bytes(st.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        load_checkpoint(model, st)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(InputError, match="not a dict"):
        load_checkpoint(model, tmp_path / "list.pth")
    torch.save({"state_dict": {}, "meta": {"epoch": 3}}, tmp_path / "empty.pth")
    with pytest.raises(InputError, match="state dict is empty"):   # not "no state dict found"
        load_checkpoint(model, tmp_path / "empty.pth")
    torch.save({"optimizer": [1]}, tmp_path / "nosd.pth")
    with pytest.raises(InputError, match=r"non-tensor entries: optimizer"):
        load_checkpoint(model, tmp_path / "nosd.pth")


def test_refused_weights_only_load_is_logged_in_one_clean_line(tmp_path: Path, caplog) -> None:
    # a file needing more than weights_only (here: an ndarray in its meta, as mmaction2 0.x
    # writes) is re-read with the restricted unpickler; the log names it in one sentence,
    # without torch's paragraph of advice or its terminal escape codes
    import logging

    import numpy as np

    src = _tiny(seed=8)
    path = tmp_path / "old.pth"
    torch.save({"state_dict": src.state_dict(), "meta": {"arr": np.arange(3)}}, path)
    caplog.set_level(logging.INFO, logger="omnisource.models.checkpoint")
    load_checkpoint(create_model(TSN, num_classes=5, base_channels=B), path)
    msgs = [r.getMessage() for r in caplog.records if "weights_only load refused" in r.getMessage()]
    assert len(msgs) == 1 and "\x1b" not in msgs[0] and "trust" not in msgs[0], msgs


# --- ImageNet import ------------------------------------------------------------------------
def to_torchvision_keys(backbone_sd: dict) -> OrderedDict:
    """Our/mmaction2 backbone keys -> torchvision ResNet keys (written independently of the
    mapping under test): conv1.conv -> conv1, conv1.bn -> bn1, layerK.i.convJ.bn -> layerK.i.bnJ,
    downsample.conv/bn -> downsample.0/1."""
    out = OrderedDict()
    for k, v in backbone_sd.items():
        k = k.replace("conv1.conv.", "conv1.", 1) if k.startswith("conv1.conv.") else k
        k = k.replace("conv1.bn.", "bn1.", 1) if k.startswith("conv1.bn.") else k
        k = k.replace("downsample.conv.", "downsample.0.").replace("downsample.bn.", "downsample.1.")
        k = re.sub(r"\.conv(\d)\.conv\.", r".conv\1.", k)
        k = re.sub(r"\.conv(\d)\.bn\.", r".bn\1.", k)
        out[k] = v
    return out


def _save_safetensors(sd: dict, path: Path) -> None:
    """Minimal safetensors writer (format: u64 header size, JSON header, raw buffers)."""
    names = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, offset = {}, [], 0
    for k, v in sd.items():
        b = v.contiguous().numpy().tobytes()
        header[k] = {"dtype": names[v.dtype], "shape": list(v.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


@pytest.mark.parametrize("fmt", ["torchvision", "timm_safetensors"])
def test_imagenet_import_2d(tmp_path: Path, fmt: str) -> None:
    src = _tiny(seed=7)
    tv = to_torchvision_keys(src.backbone.state_dict())
    assert "layer1.0.bn2.running_var" in tv and "layer1.0.downsample.1.weight" in tv and "bn1.weight" in tv
    tv["fc.weight"] = torch.randn(1000, src.feat_dim)
    tv["fc.bias"] = torch.randn(1000)
    if fmt == "torchvision":
        path = tmp_path / "resnet50.pth"
        torch.save(tv, path)
    else:
        path = tmp_path / "model.safetensors"
        _save_safetensors(tv, path)
    model = create_model(TSN, num_classes=5, base_channels=B, pretrained=str(path)).eval()
    assert model.meta["pretrained"] == str(path)
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    # load_checkpoint refuses a backbone-only ImageNet file with a pointer to `pretrained`
    with pytest.raises(InputError, match="pretrained"):
        load_checkpoint(model, path)


def test_imagenet_import_rejects_wrong_width_and_urls(tmp_path: Path) -> None:
    src = create_model(TSN, num_classes=5, base_channels=16)
    path = tmp_path / "wide.pth"
    torch.save(to_torchvision_keys(src.backbone.state_dict()), path)
    with pytest.raises(InputError, match="do not fit"):
        create_model(TSN, num_classes=5, base_channels=B, pretrained=str(path))
    with pytest.raises(InputError, match="never downloads"):
        create_model(TSN, base_channels=B, pretrained="https://download.pytorch.org/models/resnet50.pth")


def test_inflate_weight_sums_to_2d_kernel() -> None:
    w2 = torch.randn(4, 3, 7, 7)
    w3 = inflate_weight(w2, torch.Size((4, 3, 5, 7, 7)))
    assert w3.shape == (4, 3, 5, 7, 7)
    torch.testing.assert_close(w3.sum(2), w2)
    assert torch.equal(w3[:, :, 0], w3[:, :, 4])


def test_inflated_slowonly_matches_2d_on_constant_clip(tmp_path: Path) -> None:
    """I3D-style inflation: a temporally constant clip gives the 2D network's activations.

    SlowOnly-R50 has 9 temporal 3x1x1 convs (res4: 6 blocks, res5: 3), so zero temporal padding
    reaches 9 frames in from each end; the middle of a 20-frame clip sees no border.
    """
    # float64 throughout (weights in the file too), so the comparison is exact up to 1e-9
    src = _tiny(seed=8).double()
    path = tmp_path / "r50_tv.pth"
    torch.save({"state_dict": to_torchvision_keys(src.backbone.state_dict())}, path)
    model = create_model("slowonly_imagenet_pretrained_r50_8x8x1_150e_kinetics400_rgb", num_classes=5,
                         base_channels=B).double().eval()
    load_pretrained_backbone(model, path)
    w = model.backbone.layer3[0].conv1.conv.weight
    assert w.shape[2] == 3  # really inflated
    frame = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    clip = frame[:, :, None].expand(1, 3, 20, 64, 64).contiguous()
    with torch.no_grad():
        f2 = src.backbone(frame)               # [1, C, 2, 2]
        f3 = model.backbone(clip)              # [1, C, 20, 2, 2]
    assert f3.shape[2] == 20
    torch.testing.assert_close(f3[:, :, 9], f2, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(f3[:, :, 10], f2, atol=1e-9, rtol=1e-9)
    assert (f3[:, :, 0] - f2).abs().max() > 1e-2  # the border does differ: the test can tell


def test_pretrained_from_recognizer_checkpoint(tmp_path: Path) -> None:
    """A TSN checkpoint (mmaction2 layout) initialises a SlowOnly backbone by inflation."""
    src = _tiny(seed=10)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "tsn.pth")
    model = create_model(SLOW, num_classes=5, base_channels=B, pretrained=str(tmp_path / "tsn.pth"))
    a = src.backbone.layer4[0].conv1.conv.weight
    b = model.backbone.layer4[0].conv1.conv.weight
    torch.testing.assert_close(b.sum(2), a)


def test_a_referenced_callable_is_turned_inert_and_named_in_a_warning(tmp_path: Path, caplog) -> None:
    marker = tmp_path / "pwned"
    a = _tiny(seed=6)
    torch.save({"meta": {"evil": _Evil(marker)}, "state_dict": a.state_dict()}, tmp_path / "h.pth")
    with caplog.at_level("WARNING", logger="omnisource"):
        read_checkpoint_file(tmp_path / "h.pth")
    assert not marker.exists()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("references code that was not imported or called" in m and "system" in m for m in warned), warned


def test_safetensors_with_a_foreign_header_is_one_clear_error(tmp_path: Path) -> None:
    import json as _json

    model = create_model(TSN, num_classes=5, base_channels=B)
    for header in ([1, 2], {"w": [0, 1]}, {"w": "x"}):
        raw = _json.dumps(header).encode()
        f = tmp_path / "odd.safetensors"
        f.write_bytes(len(raw).to_bytes(8, "little") + raw)
        with pytest.raises(InputError, match=r"odd.safetensors: bad safetensors (header|entry)"):
            load_checkpoint(model, f)


def test_resume_from_an_empty_or_foreign_checkpoint_is_one_line(tmp_path: Path) -> None:
    from omnisource.engine import checkpoint_io as ckio

    empty = tmp_path / "latest.pth"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"latest.pth: empty checkpoint file \(0 bytes\)"):
        ckio.load_training_checkpoint(empty)
    with pytest.raises(InputError, match=r"empty checkpoint file \(0 bytes\)"):
        read_checkpoint_file(empty)
    other = create_model(TSN, num_classes=7, base_channels=B)
    mine = create_model(TSN, num_classes=5, base_channels=B)
    with pytest.raises(InputError, match=r"another model.s weights: 2 key\(s\) with another shape \(e.g. cls_head"):
        ckio.load_model_state(mine, other.state_dict(), tmp_path / "x.pth")


def test_imagenet_import_into_a_flow_stem_averages_rgb_and_repeats(tmp_path: Path) -> None:
    """TSN on flow (10 input channels): the RGB stem's mean over its 3 input channels, repeated
    10 times (cross-modality initialisation); every other tensor as for RGB."""
    src = _tiny(seed=3)
    tv = to_torchvision_keys(src.backbone.state_dict())
    path = tmp_path / "resnet.pth"
    torch.save(tv, path)
    flow = create_model("tsn_r50_5x1x3_110e_kinetics400_flow", num_classes=5, base_channels=B, depth=50,
                        pretrained=str(path))
    w = flow.backbone.conv1.conv.weight
    assert w.shape[1] == 10
    expected = tv["conv1.weight"].mean(dim=1, keepdim=True).repeat(1, 10, 1, 1)
    assert torch.equal(w, expected)
    assert torch.equal(flow.backbone.layer1[0].conv2.conv.weight, tv["layer1.0.conv2.weight"])
