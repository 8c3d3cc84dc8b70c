"""docs/config.md is generated from the defaults and must stay in sync with them."""
from __future__ import annotations

from pathlib import Path

from omnisource.pipeline.config_doc import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_config_reference_is_up_to_date():
    assert DOC.read_text() == render(), (
        "docs/config.md is out of date: python -m omnisource.pipeline.config_doc > docs/config.md")


def test_every_key_has_a_meaning():
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    empty = [r.split("|")[1].strip() for r in rows if r.rstrip().endswith("|  |")]
    assert not empty, f"keys without a comment beside their default: {empty}"
