"""The zoo table: one row per (architecture, dataset) recipe, and the recipes generated from it.

Facts live in one place each: the network, its sampling, presets, dataset, class count, epochs
and mmaction2 config names in the model registry (:mod:`omnisource.models`); the training
settings of the mmaction2 config (batch, GPUs, optimiser, schedule, test averaging), the data
paths per dataset and the accuracy the zoo reports in ``table.yaml`` beside this file.
:func:`render_recipe` joins them into ``configs/<name>.yaml`` (and one ``_base_`` alias per 1.x
config name); ``python -m omnisource.zoo`` rewrites ``configs/``, and a test fails when a recipe
there differs from what the table gives, so recipes never drift apart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from omnisource.errors import ConfigError
from omnisource.models import get_family, get_model_preset, list_models

__all__ = ["TABLE", "ZooRow", "load_table", "zoo_rows", "render_recipe", "render_alias", "write_recipes",
           "local_result"]

TABLE = Path(__file__).resolve().parent / "table.yaml"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class ZooRow:
    name: str
    family: str
    dataset: str
    sampling: str
    configs: tuple[str, ...]
    top1: Any
    top5: Any
    resolution: str
    settings: dict[str, Any]


def load_table(path: Path = TABLE) -> dict[str, Any]:
    from omnisource.utils.yaml_io import read_yaml_file

    data, _ = read_yaml_file(path, what="zoo table")
    if not isinstance(data, dict) or not {"datasets", "rows"} <= set(data):
        raise ConfigError("the zoo table needs 'datasets' and 'rows'", file=path)
    return data


def zoo_rows(dataset: str | None = None, arch: str | None = None, table: dict[str, Any] | None = None) -> list[ZooRow]:
    """Rows of the table (registry order), filtered by dataset and by family / name substring."""
    table = table or load_table()
    out = []
    for name in list_models():
        if name not in table["rows"]:
            continue
        r = get_model_preset(name)
        if dataset and r.dataset != dataset:
            continue
        if arch and arch != r.family and arch not in name:
            continue
        z = table["rows"][name].get("zoo") or {}
        out.append(ZooRow(name, r.family, r.dataset, f"{r.clip_len}x{r.frame_interval}x{r.num_clips}",
                          tuple(r.mmaction2_configs), z.get("top1"), z.get("top5"), z.get("resolution", ""),
                          table["rows"][name]))
    return out


def _yaml(obj: Any, indent: int = 0) -> str:
    text = yaml.safe_dump(obj, sort_keys=False, width=120, default_flow_style=False, allow_unicode=True)
    pad = " " * indent
    return "".join(pad + line + "\n" for line in text.splitlines())


def render_recipe(name: str, table: dict[str, Any] | None = None) -> str:
    """The YAML recipe of row ``name`` (the 0.x / registry name)."""
    table = table or load_table()
    row = table["rows"].get(name)
    if row is None:
        raise ConfigError(f"{name} has no row in the zoo table", file=TABLE)
    preset = get_model_preset(name)
    ds = table["datasets"].get(preset.dataset, {}).get(row["data"])
    if ds is None:
        raise ConfigError(f"{name}: dataset {preset.dataset!r} has no {row['data']!r} data entry", file=TABLE)
    mm = preset.mmaction2_configs
    lines = [f"# {preset.doc} (mmaction2 zoo:", f"# {name}" + (f" = 1.x {mm[0]})." if mm else "; no mmaction2 config).")]
    z = row.get("zoo")
    if z:
        lines.append(f"# Zoo: {z['top1']} / {z['top5']} top-1 / top-5 ({z.get('resolution', '')}).")
    if ds.get("prepare"):
        lines.append(f"# Data: `{ds['prepare']}` writes the lists below.")
    if get_family(preset.family).requires:
        lines.append(f"# Needs the optional extra: pip install 'omnisource[{get_family(preset.family).requires[0]}]'.")
    lines.append(f"# Generated from omnisource/zoo/table.yaml (python -m omnisource.zoo); edit the table, not this file.")
    model: dict[str, Any] = {"name": name, "num_classes": preset.num_classes}
    overrides = dict(row.get("model_overrides") or {})
    if "pretrained" in row:
        overrides = {"pretrained": None, **overrides}
    if overrides:
        model["overrides"] = overrides
    data: dict[str, Any] = {}
    presets = {"train": preset.train_preset, "val": preset.test_preset.replace("_test", "_val"), "test": preset.test_preset,
               **(row.get("presets") or {})}      # a recipe's own pipelines (the 0.x OmniSource rows)
    for split in ("train", "val", "test"):
        entry = {"ann_file": ds[split]["ann_file"], "data_root": ds[split]["data_root"], "preset": presets[split]}
        if ds.get("overrides"):
            entry["overrides"] = dict(ds["overrides"])
        data[split] = entry
    data["label_map"] = ds["label_map"]
    data["batch_size"] = row["batch_per_gpu"]
    data["num_workers"] = row.get("num_workers", 8)
    schedule = {"epochs": row["schedule"].get("epochs", preset.epochs),
                **{k: v for k, v in row["schedule"].items() if k != "epochs"}}
    body = {"model": model, "data": data, "optim": dict(row["optim"]), "schedule": schedule}
    if row.get("train"):
        body["train"] = dict(row["train"])
    body["test"] = {"average_clips": row["average_clips"]}
    text = "\n".join(lines) + "\n" + _yaml(body)
    if "pretrained" in row:      # say what the null stands for, on its line
        text = text.replace("    pretrained: null\n", f"    pretrained: null    # {row['pretrained']}\n", 1)
    if row.get("gpus"):
        text = text.replace(f"  batch_size: {row['batch_per_gpu']}\n",
                            f"  batch_size: {row['batch_per_gpu']}    # per GPU (zoo: {row['gpus']} GPUs x "
                            f"{row['batch_per_gpu']})\n", 1)
    return text


def render_alias(alias: str, name: str) -> str:
    return f"# mmaction2 1.x config name of {name}: the same recipe.\n_base_: {name}.yaml\n"


def write_recipes(folder: Path = CONFIGS) -> list[Path]:
    """Rewrite every recipe of the table (and its 1.x aliases) under ``folder``."""
    from omnisource.utils.io import atomic_write_text

    table = load_table()
    written = []
    for name in table["rows"]:
        atomic_write_text(folder / f"{name}.yaml", render_recipe(name, table))
        written.append(folder / f"{name}.yaml")
        for alias in get_model_preset(name).mmaction2_configs:
            atomic_write_text(folder / f"{alias}.yaml", render_alias(alias, name))
            written.append(folder / f"{alias}.yaml")
    return written


def local_result(name: str, work_dirs: Path) -> str:
    """The best validation result of a local run of ``name`` (``work_dirs/<name>/best.json``,
    written by ``omnisource train``), or ''."""
    f = work_dirs / name / "best.json"
    if not f.is_file():
        return ""
    try:
        best = json.loads(f.read_text())
        return f"{best['metric']} {100 * float(best['value']):.2f} (epoch {best['epoch']})"
    except (ValueError, KeyError, TypeError):
        return "unreadable best.json"
