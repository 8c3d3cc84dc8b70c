"""``docs/config.md``: every key of the training config and of the run config, its default and
its meaning, generated from the DEFAULTS themselves.

Why generated: the meaning of a key is the comment beside it in ``omnisource/config.py`` /
``omnisource/pipeline/config.py``, where whoever changes a default sees it; a hand-kept page
drifts. The comments are read with :mod:`ast` + the source lines (a key's trailing ``#``
comment and the comment-only lines indented under it), the defaults from the live dicts.
``tests/engine/test_config_doc.py`` fails when the page is out of date; regenerate with::

    python -m omnisource.pipeline.config_doc > docs/config.md
"""
from __future__ import annotations

import ast
import inspect
import json
from types import ModuleType
from typing import Any, Iterator


def _comments(module: ModuleType, var: str) -> dict[str, str]:
    """dotted key -> comment, for the dict literal assigned to ``var`` in ``module``."""
    src = inspect.getsource(module)
    lines = src.splitlines()
    tree = ast.parse(src)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    out: dict[str, str] = {}

    def comment_at(lineno: int, col_key: int) -> str:
        line = lines[lineno - 1]
        above = []
        j = lineno - 2            # comment-only lines right above the key, at its indentation
        while j >= 0 and lines[j].strip().startswith("#") and lines[j].index("#") == col_key:
            above.insert(0, lines[j].split("#", 1)[1].strip())
            j -= 1
        text = ""
        if "#" in line:
            text = line.split("#", 1)[1].strip()
        col = line.index("#") if "#" in line else None
        i = lineno
        while col is not None and i < len(lines):   # continuation: comment-only lines at that column
            nxt = lines[i]
            if nxt.strip().startswith("#") and nxt.index("#") == col:
                text += " " + nxt.split("#", 1)[1].strip()
                i += 1
            else:
                break
        return " ".join(above + ([text] if text else [])).strip()

    def walk(node: ast.AST, prefix: str) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in funcs:
            ret = next((n.value for n in ast.walk(funcs[node.func.id]) if isinstance(n, ast.Return)), None)
            if ret is not None:
                walk(ret, prefix)
            return
        if not isinstance(node, ast.Dict):
            return
        for k, v in zip(node.keys, node.values):
            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                dotted = prefix + k.value
                out[dotted] = comment_at(k.lineno, k.col_offset)
                walk(v, dotted + ".")

    for n in tree.body:
        target = n.targets[0] if isinstance(n, ast.Assign) else getattr(n, "target", None)
        if isinstance(target, ast.Name) and target.id == var and n.value is not None:
            walk(n.value, "")
    return out


_SECTION = object()   # a row that names a section (its keys follow)


def _rows(defaults: dict, comments: dict[str, str], open_keys: set[str], prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    for key, value in defaults.items():
        dotted = prefix + key
        if isinstance(value, dict) and value and dotted not in open_keys:
            head = comments.get(dotted, "")
            if head:
                yield dotted, _SECTION, head
            yield from _rows(value, comments, open_keys, dotted + ".")
        else:
            meaning = comments.get(dotted, "")
            if dotted in open_keys and not meaning.startswith("OPEN"):
                meaning = "OPEN (free-form keys): " + meaning
            yield dotted, value, meaning


def _fmt(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    text = "null" if v is None else text
    return "`" + text.replace("|", "\\|") + "`"


def _table(rows: Iterator[tuple[str, Any, str]]) -> list[str]:
    out = ["| key | default | meaning |", "|---|---|---|"]
    for key, value, meaning in rows:
        default = "(section)" if value is _SECTION else _fmt(value)
        out.append(f"| `{key}` | {default} | {meaning.replace('|', '/')} |")
    return out


def render() -> str:
    from omnisource import config as train_config
    from omnisource.pipeline import config as run_config

    tc = _comments(train_config, "DEFAULTS")
    rc = _comments(run_config, "RUN_DEFAULTS")
    sc = _comments(train_config, "SOURCE_DEFAULTS")
    lines = [
        "# Configuration reference",
        "",
        "Generated from the defaults in `omnisource/config.py` and `omnisource/pipeline/config.py`",
        "(`python -m omnisource.pipeline.config_doc > docs/config.md`; a test keeps this page in sync).",
        "Configs are YAML data, never executed: defaults <- file (`_base_`: one level) <- `--set KEY=VALUE`.",
        "An unknown key is an error naming the closest valid one; a value of the wrong type names its line.",
        "",
        "## Training config (`omnisource train | test | predict | bench-infer | flops CONFIG`)",
        "",
        *_table(_rows(train_config.DEFAULTS, tc, set(train_config.OPEN_KEYS))),
        "",
        "### Items of `sources:` (joint training; `omnisource.data.multisource` owns the rest)",
        "",
        *_table(_rows(train_config.SOURCE_DEFAULTS, sc, set())),
        "",
        "## Run config (`omnisource run --config FILE --set KEY=VALUE`)",
        "",
        *_table(_rows(run_config.RUN_DEFAULTS, rc, set(run_config.OPEN))),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
