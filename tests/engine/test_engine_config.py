"""Config loading: defaults <- _base_ <- file <- --set, unknown keys, validation, every recipe."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from omnisource.config import DEFAULTS, derive, load_config, save_resolved, config_from_dict
from omnisource.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs").glob("*.yaml"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_file_and_set_overrides(tmp_path):
    p = write(tmp_path, "a.yaml", "model:\n  name: tiny\noptim:\n  lr: 0.5\nschedule:\n  steps: [3, 6]\n")
    cfg = load_config(p, ["optim.momentum=0.8", "schedule.steps=[1, 2]", "train.amp=bf16",
                          "model.overrides.base_channels=8"])
    assert cfg.optim.lr == 0.5                      # file beats defaults
    assert cfg.optim.momentum == 0.8                # --set beats file (YAML-parsed number)
    assert cfg.schedule.steps == [1, 2]
    assert cfg.train.amp == "bf16"
    assert cfg.model.overrides == {"base_channels": 8}
    assert cfg.optim.weight_decay == DEFAULTS["optim"]["weight_decay"]


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    p = write(tmp_path, "bad.yaml", "model:\n  name: tiny\noptim:\n  momentum: 0.9\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "optim.lrr" in msg and "optim.lr" in msg and f"{p}:5" in msg


def test_unknown_set_key_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'train.accum_steps'"):
        load_config(None, ["train.acum_steps=2"])


@pytest.mark.parametrize("sets, match", [
    (["train.amp=fp8"], "train.amp"),
    (["optim.lr=-1"], "optim.lr"),
    (["data.batch_size=two"], "data.batch_size"),
    (["schedule.policy=poly"], "schedule.policy"),
    (["test.crops=5"], "test.crops"),
    (["schedule.steps=[5, 2]"], "increasing"),
    (["sources=[{name: a}, {name: a}]"], "duplicate source"),
])
def test_bad_values_are_config_errors(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, sets)


def test_base_inheritance_is_single_level(tmp_path):
    write(tmp_path, "base.yaml", "optim:\n  lr: 0.3\n  momentum: 0.7\n")
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\noptim:\n  lr: 0.1\n")
    cfg = load_config(child)
    assert (cfg.optim.lr, cfg.optim.momentum) == (0.1, 0.7)
    write(tmp_path, "base2.yaml", "_base_: base.yaml\n")
    grand = write(tmp_path, "grand.yaml", "_base_: base2.yaml\n")
    with pytest.raises(ConfigError, match="one level"):
        load_config(grand)


def test_linear_scaling_rule_and_resolved_roundtrip(tmp_path):
    cfg = load_config(None, ["optim.lr=0.2", "optim.reference_batch_size=128", "data.batch_size=16",
                             "train.accum_steps=2"])
    derive(cfg, world_size=2)
    assert cfg.derived.total_batch_size == 64
    assert cfg.derived.lr == pytest.approx(0.1)
    derive(cfg, world_size=1)
    assert cfg.derived.lr == pytest.approx(0.05)
    cfg2 = load_config(None, ["optim.scale_lr=false", "optim.reference_batch_size=128"])
    assert derive(cfg2, 8).derived.lr == cfg2.optim.lr
    save_resolved(cfg, tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    again = config_from_dict(data)
    assert again.optim.to_dict() == cfg.optim.to_dict() and again.derived.lr == cfg.derived.lr


def test_sources_are_accepted_and_checked():
    cfg = load_config(None, ["sources=[{name: kinetics, ann_file: a.txt}, {name: web, ann_file: b.txt, "
                             "loss_weight: 0.5, batch_size: 4, resample: {power: 0.5}, inflate: still}]"])
    assert [s.name for s in cfg.sources] == ["kinetics", "web"]
    assert cfg.sources[1].loss_weight == 0.5 and cfg.sources[0].loss_weight == 1.0
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, ["sources=[{name: a, batch_size: 0}]"])
    with pytest.raises(ConfigError, match="loss_weight"):
        load_config(None, ["sources=[{name: a, loss_weight: -1}]"])


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "broken.yaml", "model:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(p)


def test_python_config_is_refused_with_the_yaml_way(tmp_path):
    # an mmaction2 config is Python: refused before reading (configs are never executed), and
    # the message says what to use instead -- not a puzzling "must be a YAML mapping"
    p = write(tmp_path, "tsn_mm.py", "import os\nos.system('touch pwned')\nmodel = dict(type='Recognizer2D')\n")
    with pytest.raises(ConfigError, match=r"tsn_mm.py: Python configs .* never executed.*configs/"):
        load_config(p)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_validates(path):
    from omnisource.data.presets import list_presets
    from omnisource.models import list_models, resolve_name

    cfg = load_config(path)
    # a recipe is named after its model preset: the 0.x name, or one of its 1.x config names
    assert cfg.model.name == resolve_name(path.stem), "a recipe is named after its model preset"
    assert cfg.model.name in list_models()
    for split in ("train", "val", "test"):
        assert cfg.data[split].preset in list_presets(), (split, cfg.data[split].preset)
        assert cfg.data[split].ann_file
    assert cfg.optim.reference_batch_size, "zoo lrs are tuned for a total batch"


def test_every_model_preset_has_a_recipe_under_each_of_its_names():
    """Every zoo row has configs/<0.x name>.yaml and configs/<1.x name>.yaml for each mmaction2 1.x
    config it reproduces (rows without a recipe, e.g. the demo world's tiny networks, are built
    by their own pipeline). Read from the registry, not from a list kept here."""
    from omnisource.models import get_model_preset, list_models

    stems = {p.stem for p in RECIPES}
    rows = [get_model_preset(n) for n in list_models()]
    assert any(r.recipe for r in rows)
    for r in rows:
        if not r.recipe:
            continue
        assert r.name in stems, r.name
        for alias in r.mmaction2_configs:
            assert alias in stems, (r.name, alias)


def test_resolved_config_loads_back(tmp_path):
    """The config written into a work dir is itself a valid recipe (same settings)."""
    from omnisource.config import derive, load_config, save_resolved

    cfg = load_config(RECIPES[0], overrides=["optim.lr=0.5", "train.seed=7"])
    derive(cfg)
    save_resolved(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.optim.lr == 0.5 and again.train.seed == 7
    assert again.model.name == cfg.model.name


def test_hostile_config_files_are_one_clear_error(tmp_path, monkeypatch):
    """/dev/zero as _base_ (read until out of memory), a huge file, deep nesting, duplicate keys."""
    import omnisource.utils.yaml_io as yio
    from omnisource.pipeline.config import load_run_settings

    f = tmp_path / "c.yaml"
    f.write_text("_base_: /dev/zero\nmodel:\n  name: x\n")
    with pytest.raises(ConfigError, match=r"/dev/zero: config is a device, not a regular file"):
        load_config(f)
    f.write_text("model:\n  name: x\noptim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"c.yaml:5: duplicate key 'lr' \(first on line 4\)"):
        load_config(f)
    f.write_text("model:\n  overrides: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ConfigError, match=r"c.yaml: nested more than 64 levels deep"):
        load_config(f)
    f.write_text("world: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
    with pytest.raises(ConfigError, match=r"nested more than 64 levels deep"):
        load_run_settings(f)
    monkeypatch.setattr(yio, "MAX_BYTES", 1000)
    f.write_text("# " + "x" * 2000 + "\n")
    with pytest.raises(ConfigError, match=r"c.yaml: config is 2003 bytes, over the 1000-byte cap"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"over the 1000-byte cap"):
        load_run_settings(f)


def test_a_wrong_type_names_its_line_or_blames_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  name: tsn_r50_1x1x3_100e_kinetics400_rgb\n  num_classes: four\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: 'model.num_classes' must be int, got 'four'"):
        load_config(f)
    f.write_text("model:\n  name: tsn_r50_1x1x3_100e_kinetics400_rgb\n")
    with pytest.raises(ConfigError, match=r"^--set: 'schedule.epochs' must be an integer, got 'abc'"):
        load_config(f, ["schedule.epochs=abc"])


def test_train_validate_is_true_false_or_null():
    assert load_config(None, ["train.validate=false"]).train.validate is False
    assert load_config(None, ["train.validate=true"]).train.validate is True
    assert load_config(None).train.validate is None
    with pytest.raises(ConfigError, match="'train.validate' must be true or false"):
        load_config(None, ["train.validate=3"])
