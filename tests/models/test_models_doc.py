"""docs/models.md's presets table is generated from the registry and must match it."""
from __future__ import annotations

from omnisource.models.docs import DOC, render


def test_presets_table_is_up_to_date():
    text = DOC.read_text()
    assert text == render(text), "docs/models.md is out of date: python -m omnisource.models.docs"
