#!/usr/bin/env python3
"""Bootstrap + entry point that needs nothing but Python 3.10+.

    python3 dev.py demo     # create/refresh .venv, then run the main job (omnisource run)
    python3 dev.py test     # create/refresh .venv, then run the test suite
    python3 dev.py bench    # run the benchmarks (printing measured numbers)

Why a script and not only a Makefile: a fresh machine may have Python but not make.
torch is installed first and pinned (``torch==2.13.0``, the CPU build on our machines) so the
package's ``torch`` range is already satisfied and pip never pulls a multi-GB CUDA build. A stamp
file holding a hash of pyproject.toml keeps re-runs fast (no pip call when nothing changed).
Set ``OMNISOURCE_TORCH_SPEC`` to install another torch (e.g. a CUDA build on a GPU machine).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("OMNISOURCE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".omnisource-install-stamp"
TORCH_SPEC = os.environ.get("OMNISOURCE_TORCH_SPEC", "torch==2.13.0")
EXTRAS = "decord,faiss,tensorboard,dev"


def _run(cmd: list[str], **kw) -> int:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def _wanted_stamp() -> str:
    h = hashlib.sha1((ROOT / "pyproject.toml").read_bytes())
    h.update(f"{TORCH_SPEC}|{EXTRAS}|{sys.version_info[:2]}".encode())
    return h.hexdigest()


def ensure_venv() -> None:
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = _wanted_stamp()
    if STAMP.exists() and STAMP.read_text().strip() == stamp:
        return
    pip = [PY, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for cmd in (pip + [TORCH_SPEC], pip + ["-e", f".[{EXTRAS}]"]):
        if _run(cmd) != 0:
            sys.exit(f"dev.py: installation failed: {' '.join(map(str, cmd))}")
    STAMP.write_text(stamp + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "bench", "venv"}:
        print(__doc__)
        return 2
    what, rest = argv[0], argv[1:]
    ensure_venv()
    if what == "venv":
        return 0
    if what == "demo":
        return _run([BIN / "omnisource", "run", "--work-dir", "work_dirs/demo", *rest])
    if what == "test":
        args = rest or ["-n", "2", "--dist", "loadfile", "-q", "tests"]
        code = _run([PY, "-m", "pytest", *args])
        return 0 if code == 5 and rest else code  # 5 = nothing collected for a user filter
    benches = sorted((ROOT / "benchmarks").glob("*.py"))
    code = 0
    for b in benches:
        code |= _run([PY, b, *rest])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
