"""The zoo table: configs/ is exactly what the table and the registry generate, every recipe row
of the registry has a table row, and `omnisource zoo list` filters the table and shows the
accuracy the zoo reports and local results."""
from __future__ import annotations

import json


from omnisource.cli import main
from omnisource.models import get_model_preset, list_models
from omnisource.zoo import CONFIGS, load_table, render_alias, render_recipe, zoo_rows


def test_configs_are_generated_from_the_table():
    """A hand edit of a recipe (or of the table without regenerating) fails here:
    run `python -m omnisource.zoo` after changing omnisource/zoo/table.yaml."""
    table = load_table()
    stale = []
    for name in table["rows"]:
        if (CONFIGS / f"{name}.yaml").read_text() != render_recipe(name, table):
            stale.append(name)
        for alias in get_model_preset(name).mmaction2_configs:
            if (CONFIGS / f"{alias}.yaml").read_text() != render_alias(alias, name):
                stale.append(alias)
    assert not stale, f"regenerate configs/ (python -m omnisource.zoo): {stale[:5]}"
    expected = {f"{n}.yaml" for n in table["rows"]} | {f"{a}.yaml" for n in table["rows"]
                                                        for a in get_model_preset(n).mmaction2_configs}
    assert {p.name for p in CONFIGS.glob("*.yaml")} == expected, "configs/ holds files the table does not make"


def test_every_recipe_row_of_the_registry_is_in_the_table():
    table = load_table()
    rows = {n for n in list_models() if get_model_preset(n).recipe and get_model_preset(n).module.startswith("omnisource.")}
    assert rows == set(table["rows"])
    for name, row in table["rows"].items():
        assert get_model_preset(name).dataset in table["datasets"], name
        assert row["data"] in table["datasets"][get_model_preset(name).dataset], name


def test_zoo_list_filters_and_shows_reported_and_local_results(tmp_path, capsys):
    tsm = zoo_rows(arch="tsm")
    assert tsm and all(r.family == "tsm" or "tsm" in r.name for r in tsm)
    sth = zoo_rows(dataset="sthv2")
    assert sth and {r.dataset for r in sth} == {"sthv2"}
    tsn = next(r for r in zoo_rows(dataset="kinetics400", arch="tsn") if r.name == "tsn_r50_1x1x3_100e_kinetics400_rgb")
    assert (tsn.top1, tsn.top5) == (70.6, 89.26)
    run = tmp_path / "tsn_r50_1x1x3_100e_kinetics400_rgb"
    run.mkdir()
    (run / "best.json").write_text(json.dumps({"metric": "top1_acc", "value": 0.6125, "epoch": 40}))
    assert main(["zoo", "list", "--dataset", "kinetics400", "--arch", "tsn", "--work-dirs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("tsn_r50_1x1x3_100e_kinetics400_rgb "))
    assert "70.6" in line and "89.26" in line and "top1_acc 61.25 (epoch 40)" in line
    assert main(["zoo", "list", "--dataset", "sthv2", "--json", "--work-dirs", str(tmp_path)]) == 0
    recs = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert recs and all(r["dataset"] == "sthv2" and r["recipe"].startswith("configs/") for r in recs)
    assert main(["zoo", "list", "--dataset", "nope"]) == 2
