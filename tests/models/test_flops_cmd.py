"""`omnisource flops`: params and FLOPs per view for a model name or a YAML recipe."""
from __future__ import annotations

import json
from pathlib import Path


from omnisource.cli import main
from omnisource.models import create_model




def _run_json(capsys, *argv: str) -> dict:
    assert main(["flops", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_flops_of_config(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model:\n  name: slowonly_r50_4x16x1_256e_kinetics400_rgb\n  num_classes: 10\n"
                   "  overrides:\n    base_channels: 8\n")
    res = _run_json(capsys, str(cfg), "--size", "32")
    model = create_model("slowonly_r50_4x16x1_256e_kinetics400_rgb", num_classes=10, base_channels=8)
    assert res["params"] == sum(p.numel() for p in model.parameters())
    assert res["input_shape"] == [1, 3, 4, 32, 32] and res["layout"] == "3d"
    # conv FLOPs grow linearly with the number of frames: equal steps from T=4 to 8 to 12
    f = [_run_json(capsys, str(cfg), "--input-shape", "1", "3", str(t), "32", "32")["flops"] for t in (4, 8, 12)]
    assert f[0] > 0 and f[1] - f[0] == f[2] - f[1] and f[1] > f[0]


def test_flops_of_model_name_per_view(capsys) -> None:
    one = _run_json(capsys, "tsn_r18_1x1x3_100e_kinetics400_rgb", "--size", "32")
    three = _run_json(capsys, "tsn_r18_1x1x3_100e_kinetics400_rgb", "--input-shape", "1", "3", "3", "32", "32")
    assert one["views"] == 1 and three["views"] == 3
    assert one["macs"] * 2 == one["flops"]
    # three frames cost three times the backbone; the fc runs once per video (consensus first)
    fc = 2 * 512 * 400
    assert three["flops"] - fc == 3 * (one["flops"] - fc)


def test_flops_errors(tmp_path: Path, capsys) -> None:
    assert main(["flops", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["flops", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["flops", "tsn_r18_1x1x3_100e_kinetics400_rgb", "--input-shape", "1", "3", "32", "32"]) == 2
    assert "[N, S, 3, H, W]" in capsys.readouterr().err


def test_flops_of_a_config_uses_its_test_input(tmp_path: Path, capsys) -> None:
    """A 64-pixel 3D recipe is counted at 64 px and its clip length (224 before), as bench-infer."""
    cfg = tmp_path / "small.yaml"
    cfg.write_text("model:\n  name: slowonly_r50_4x16x1_256e_kinetics400_rgb\n  num_classes: 10\n"
                   "  overrides:\n    base_channels: 8\n"
                   "data:\n  test:\n    preset: slowonly_8x8x1_test\n"
                   "    overrides: {clip_len: 6, scale: 72, test_crop_size: 64}\n")
    res = _run_json(capsys, str(cfg))
    assert res["input_shape"] == [1, 3, 6, 64, 64]
    cfg2 = tmp_path / "tsn.yaml"
    cfg2.write_text("model:\n  name: tsn_r50_1x1x3_100e_kinetics400_rgb\n  num_classes: 10\n"
                    "  overrides: {base_channels: 8}\n"
                    "data:\n  test:\n    preset: tsn_1x1x3_val\n    overrides: {scale: 72, test_crop_size: 64}\n")
    assert _run_json(capsys, str(cfg2))["input_shape"] == [1, 1, 3, 64, 64]
