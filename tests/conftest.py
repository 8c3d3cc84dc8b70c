"""Shared test fixtures.

Real media live in ``../shared/data`` beside the repository (see its INVENTORY.md); tests that
need them skip cleanly when that folder is absent.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OMNISOURCE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test media not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    """Registry-driven tests run for every model row; rows of a family whose optional extra is
    not installed here (``Family.requires``, e.g. the timm backbones) are skipped, saying which
    extra would run them (one rule here instead of a filter in every parametrised test)."""
    try:
        from omnisource.models import list_models, missing_requirements
    except ImportError:
        return
    rows = set(list_models())
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = params.get("name")
        if isinstance(name, str) and name in rows:
            missing = missing_requirements(name)
            if missing:
                item.add_marker(pytest.mark.skip(
                    reason=f"needs {', '.join(missing)} (pip install 'omnisource[{missing[0]}]'), not installed here"))
