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
