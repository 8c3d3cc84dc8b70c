"""``omnisource prepare DATASET --src RAW --out DIR``: the zoo's datasets from their official
layouts to our lists (see :mod:`.datasets` for each format, :mod:`.common` for what is shared)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omnisource.data.prepare.common import Prepared
from omnisource.data.prepare.datasets import DOCS, PREPARERS
from omnisource.errors import InputError

__all__ = ["prepare", "list_datasets", "DOCS", "Prepared"]


def list_datasets() -> list[str]:
    return list(PREPARERS)


def prepare(dataset: str, src: str | Path, out: str | Path, force: bool = False, **opts: Any) -> Prepared:
    """Write ``out``'s lists for ``dataset`` from the files under ``src``."""
    import difflib

    key = dataset.lower().replace("-", "_")
    if key not in PREPARERS:
        close = difflib.get_close_matches(key, list(PREPARERS), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(PREPARERS)}"
        raise InputError(f"unknown dataset {dataset!r}{hint}")
    from omnisource.data.prepare import common

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputError("source folder not found", file=src)
    probe = bool(opts.pop("probe", False))
    common.PROBE.update(enabled=probe, workers=int(opts.pop("workers", 4)))
    try:
        return PREPARERS[key](src, out, force=force, **opts)
    finally:
        common.PROBE["enabled"] = False
