"""Layering: lower floors never import higher ones, and engine/ has no import circle.

Floors, low to high: utils / errors / config -> data, models -> engine -> web -> pipeline ->
commands / cli. Two checks: each package imported in a fresh interpreter (what it really pulls
in), and every import statement of every module read with ast (function-level imports too, the
lazy ones the first check cannot see)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "omnisource"

FORBIDDEN = {   # package -> floors it must never import
    "omnisource.data": ("omnisource.models", "omnisource.engine", "omnisource.web", "omnisource.pipeline",
                        "omnisource.commands", "omnisource.cli"),
    "omnisource.models": ("omnisource.engine", "omnisource.web", "omnisource.pipeline", "omnisource.commands",
                          "omnisource.cli", "omnisource.data"),
    "omnisource.engine": ("omnisource.web", "omnisource.pipeline", "omnisource.commands", "omnisource.cli"),
    "omnisource.web": ("omnisource.pipeline", "omnisource.commands", "omnisource.cli"),
    "omnisource.zoo": ("omnisource.engine", "omnisource.web", "omnisource.pipeline", "omnisource.commands",
                       "omnisource.cli"),
    "omnisource.utils": ("omnisource.models", "omnisource.engine", "omnisource.web", "omnisource.pipeline",
                         "omnisource.commands", "omnisource.cli"),
}


def _modules(package: str) -> list[str]:
    root = PKG.parent
    base = root / package.replace(".", "/")
    return sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                  for p in base.rglob("*.py"))


def _imports(module: str) -> set[str]:
    path = PKG.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PKG.parent / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("omnisource")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_higher_floor(package):
    bad = []
    for mod in _modules(package):
        for imp in _imports(mod):
            if imp.startswith(FORBIDDEN[package]) and not (
                    package == "omnisource.data" and imp.startswith("omnisource.data")):
                bad.append(f"{mod} imports {imp}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_a_package_pulls_in_no_higher_floor(package):
    code = ("import importlib, json, sys\n"
            f"for m in {json.dumps(_modules(package))}:\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('omnisource'))))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=PKG.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    bad = [m for m in loaded if m.startswith(FORBIDDEN[package])]
    assert not bad, f"importing {package} loaded {bad}"


def test_engine_has_no_import_circle():
    mods = _modules("omnisource.engine")
    graph = {m: {i for i in _imports(m) if i in mods and i != m} for m in mods}
    seen: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        path.append(m)
        for n in graph[m]:
            if seen.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if n not in seen:
                visit(n)
        path.pop()
        seen[m] = 2

    for m in mods:
        if m not in seen:
            visit(m)


def test_one_model_factory():
    """create_model is called by the registry's users only through engine.modeling.build_model
    (train, test, predict, the web teachers, the pipeline), the flops command aside."""
    callers = []
    for package in ("omnisource.engine", "omnisource.web", "omnisource.pipeline", "omnisource.commands"):
        for mod in _modules(package):
            src = (PKG.parent / (mod.replace(".", "/") + ".py"))
            if not src.exists():
                continue
            for node in ast.walk(ast.parse(src.read_text())):
                f = getattr(node, "func", None) if isinstance(node, ast.Call) else None
                if getattr(f, "id", None) == "create_model" or getattr(f, "attr", None) == "create_model":
                    callers.append(mod)
    assert set(callers) <= {"omnisource.engine.modeling", "omnisource.commands.flops"}, callers
