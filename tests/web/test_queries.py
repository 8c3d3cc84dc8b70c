"""Query generation on the real Kinetics-400 label map and on hand-made names."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from omnisource.cli import main
from omnisource.errors import InputError
from omnisource.web.queries import clean_name, make_queries, read_queries

K400 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mmaction2" / "tools" / "data" / "kinetics" / "label_map_k400.txt"


def test_paper_example_beekeeping():
    rows = make_queries(["beekeeping", "reading book"], "tags", vocab_words=["bee", "keeping"])
    tags = [r.query for r in rows if r.class_index == 0]
    assert tags[0] == "beekeeping"
    assert "beekeep" in tags and "keeping bee" in tags        # the paper's footnote 4
    assert all(t == t.lower() for t in tags)
    assert {r.query for r in rows if r.class_index == 1} >= {"reading book", "book reading", "read book"}


def test_clean_name_drops_negative_qualifiers_only():
    assert clean_name("skiing (not slalom or crosscountry)") == "skiing"
    assert clean_name("hurling (sport)") == "hurling sport"
    assert clean_name("Passing American football (in game)") == "passing american football in game"
    assert clean_name("skiing (not slalom)", keep_qualifiers=True) == "skiing not slalom"


def test_colliding_clean_names_keep_full_names():
    rows = make_queries(["juggling (not balls)", "juggling"], "search")
    assert [r.query for r in rows] == ["juggling not balls", "juggling"]


@pytest.mark.skipif(not K400.is_file(), reason="shared data not available")
def test_k400_search_and_tags(tmp_path):
    out = tmp_path / "q.tsv"
    assert main(["queries", str(K400), "--style", "search", "--out", str(out)]) == 0
    rows = read_queries(out)
    assert len(rows) == 400 and len({q for _, q in rows}) == 400          # one unambiguous query per class
    assert ("abseiling", "abseiling") in rows
    assert ("skiing (not slalom or crosscountry)", "skiing") in rows

    out_t = tmp_path / "t.tsv"
    assert main(["queries", str(K400), "--style", "tags", "--out", str(out_t)]) == 0
    tags = read_queries(out_t)
    by_class = defaultdict(list)
    owner = {}
    for c, q in tags:
        by_class[c].append(q)
        assert owner.setdefault(q, c) == c, f"tag {q!r} maps to two classes"
        assert q == q.lower() and "(" not in q
    assert len(by_class) == 400 and len(tags) > 400
    assert {"playing guitar", "guitar playing", "play guitar"} <= set(by_class["playing guitar"])
    assert "bee keep" in by_class["bee keeping"] and "keeping bee" in by_class["bee keeping"]


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError):
        make_queries(["a"], "hashtags")
    bad = tmp_path / "bad.tsv"
    bad.write_text("class\tquery\nonly-one-column\n")
    with pytest.raises(InputError, match=":2:"):
        read_queries(bad)


def test_time_sliced_search_queries():
    from omnisource.web.queries import year_periods

    rows = make_queries(["abseiling", "archery"], "search", periods=year_periods("2018-2019"))
    assert [r.query for r in rows] == [
        "abseiling after:2018-01-01 before:2019-01-01", "abseiling after:2019-01-01 before:2020-01-01",
        "archery after:2018-01-01 before:2019-01-01", "archery after:2019-01-01 before:2020-01-01"]
    with pytest.raises(InputError):
        year_periods("2019-2018")
    with pytest.raises(InputError):
        make_queries(["a"], "tags", periods=year_periods("2019"))
