"""Task-specific crawling queries from class names (paper section 3.3).

The paper uses the class names themselves as search keywords ("no extra query expansion"),
because keywords that are the labels give much stronger supervision than generic hashtags.
Search engines get the plain name. Tag-based systems (Instagram-style) cannot search phrases,
so the paper generates tags "by automatic permutation and stemming", e.g. ``beekeeping`` ->
``beekeep`` and ``keeping bee``. This module does exactly that, with a real stemmer (Snowball,
the Porter2 English stemmer) rather than ad-hoc suffix stripping:

* **cleaning** - lower case; parenthesised qualifiers that *exclude* something
  (``skiing (not slalom or crosscountry)``) are dropped, because searching for the excluded
  word would fetch exactly the wrong data; other qualifiers (``hurling (sport)``) become plain
  words. If cleaning makes two classes' queries collide, both keep their full names;
* **permutations** - all orders of the content words (stop words such as "with" or "on" are
  kept in the original phrase only), up to ``max_perm_words`` content words;
* **stemming** - each content word replaced by its Snowball stem when the stem is the word minus
  an inflectional ending (``playing`` -> ``play``, ``beekeeping`` -> ``beekeep``); other Porter2
  outputs such as ``archery`` -> ``archeri`` or ``horse`` -> ``hors`` are no tags anybody types;
* **compound splitting** - a one-word name that is the concatenation of two known words is split
  and permuted (``bookbinding`` -> ``binding book``). Known words are those of the label map
  itself plus an optional vocabulary file (one word per line, e.g. ``/usr/share/dict/words``),
  so the behaviour is deterministic and needs no downloaded language model.

Tags are written with words separated by ``join`` (a space by default, as in the paper's
example; use ``join=""`` for hashtag systems that forbid spaces).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from omnisource.errors import InputError
from omnisource.utils.io import atomic_open

STYLES = ("search", "tags")

# short function words: kept in the phrase, not permuted or stemmed (a fixed list on purpose -
# query output must not depend on which NLP corpora happen to be installed)
STOP_WORDS = frozenset("""a an and at by for from in into of off on onto or out over the to up
    with without""".split())

# a stem is used as a tag only when it is the word minus an inflectional ending
# ("playing" -> "play"); Porter2 truncations such as "horse" -> "hors" are no tags anyone types
_INFLECTIONS = frozenset({"ing", "ings", "ed", "s", "es", "er", "ers", "ly"})

_PAREN = re.compile(r"\(([^()]*)\)")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Query:
    class_index: int
    class_name: str
    query: str


def read_label_map_names(path: str | Path) -> list[str]:
    """Class names, one per line (delegates to annotations.read_label_map when present)."""
    try:
        from omnisource.data.annotations import read_label_map
    except ImportError:  # pragma: no cover - only while the annotations module is being written
        read_label_map = None
    if read_label_map is not None:
        return list(read_label_map(path))
    path = Path(path)
    if not path.is_file():
        raise InputError("label map not found", path)
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [n for n in names if n]


def clean_name(name: str, keep_qualifiers: bool = False) -> str:
    """Lower-cased class name for searching; negative "(not ...)" qualifiers removed."""
    def repl(m: re.Match) -> str:
        inner = m.group(1).strip()
        if not keep_qualifiers and re.match(r"(?i)^(not|no|except|excluding)\b", inner):
            return " "
        return f" {inner} "

    text = _PAREN.sub(repl, name.lower())
    text = text.replace("_", " ").replace("/", " ")
    words = _WORD.findall(text)
    return " ".join(words)


class _Stemmer:
    def __init__(self, language: str = "english"):
        import snowballstemmer

        self._s = snowballstemmer.stemmer(language)

    def __call__(self, word: str) -> str:
        return self._s.stemWord(word)


def split_compound(word: str, vocab: set[str], min_part: int = 3) -> list[str] | None:
    """``word`` as two known words (longest known head first), or None."""
    for cut in range(len(word) - min_part, min_part - 1, -1):
        head, tail = word[:cut], word[cut:]
        if head in vocab and tail in vocab:
            return [head, tail]
    return None


def tag_queries(name: str, stem: _Stemmer, vocab: set[str], max_perm_words: int = 3,
                join: str = " ", keep_qualifiers: bool = False) -> list[str]:
    """Tags for one class name: phrase, permutations, stemmed forms, compound splits (deduplicated,
    in a stable order: the plain phrase first)."""
    words = clean_name(name, keep_qualifiers).split()
    if not words:
        return []
    variants: list[list[str]] = [words]
    content = [w for w in words if w not in STOP_WORDS]
    if len(content) == 1 and len(words) == 1:
        parts = split_compound(words[0], vocab)
        if parts:
            variants.append(parts)
            content = parts
    if 1 < len(content) <= max_perm_words:
        variants += [list(p) for p in itertools.permutations(content)]

    def stemmed(ws: Sequence[str]) -> list[str]:
        out = []
        for w in ws:
            s = stem(w) if w not in STOP_WORDS else w
            ok = len(s) >= 3 and w.startswith(s) and w[len(s):] in _INFLECTIONS
            out.append(s if ok else w)
        return out

    variants += [stemmed(v) for v in list(variants)]
    seen: dict[str, None] = {}
    for v in variants:
        seen.setdefault(join.join(v), None)
    return list(seen)


def year_periods(spec: str) -> list[tuple[str, str]]:
    """``"2015-2019"`` -> one (after, before) ISO date pair per year."""
    m = re.fullmatch(r"\s*(\d{4})\s*(?:-\s*(\d{4}))?\s*", spec)
    if not m:
        raise InputError(f"expected YEAR or FIRST-LAST years, got {spec!r}")
    a = int(m.group(1))
    b = int(m.group(2) or a)
    if b < a:
        raise InputError(f"year range {spec!r} ends before it starts")
    return [(f"{y}-01-01", f"{y + 1}-01-01") for y in range(a, b + 1)]


def make_queries(class_names: Sequence[str], style: str = "search", *, vocab_words: Iterable[str] = (),
                 max_perm_words: int = 3, join: str = " ", keep_qualifiers: bool = False,
                 language: str = "english", periods: Sequence[tuple[str, str]] = ()) -> list[Query]:
    """Queries for every class, in label-map order (several rows per class for ``tags``).

    ``periods`` (search style): one query per class and ``(after, before)`` date pair, with
    the ``after:`` / ``before:`` operators of web search engines. The paper splits each query
    by time period because a search engine returns a bounded number of results per query.
    """
    if style not in STYLES:
        raise InputError(f"unknown query style {style!r}; choose one of {', '.join(STYLES)}")
    cleaned = [clean_name(n, keep_qualifiers) for n in class_names]
    # a cleaned name shared by several classes would map one query to two labels: keep full names
    clash = {c for c in cleaned if cleaned.count(c) > 1}
    full = [clean_name(n, True) if c in clash else c for n, c in zip(class_names, cleaned)]
    rows: list[Query] = []
    if style == "search":
        for i, (n, q) in enumerate(zip(class_names, full)):
            if not q:
                continue
            if periods:
                rows += [Query(i, n, f"{q} after:{a} before:{b}") for a, b in periods]
            else:
                rows.append(Query(i, n, q))
        return rows
    if periods:
        raise InputError("time periods apply to the 'search' style only")
    stem = _Stemmer(language)
    vocab = {w for c in full for w in c.split() if len(w) >= 3}
    vocab |= {w.strip().lower() for w in vocab_words if len(w.strip()) >= 3 and w.strip().isalpha()}
    taken: dict[str, int] = {}
    for i, n in enumerate(class_names):
        q_name = n if cleaned[i] not in clash else f"{n}"
        for q in tag_queries(q_name, stem, vocab, max_perm_words, join, keep_qualifiers or cleaned[i] in clash):
            if taken.setdefault(q, i) != i:    # a tag already claimed by another class is ambiguous
                continue
            rows.append(Query(i, n, q))
    return rows


def write_queries(path: str | Path, rows: Iterable[Query]) -> int:
    """TSV ``class<TAB>query`` with a header line, written atomically; returns the row count."""
    n = 0
    with atomic_open(path, "w") as fh:
        fh.write("class\tquery\n")
        for r in rows:
            if "\t" in r.class_name or "\n" in r.class_name:
                raise InputError(f"class name {r.class_name!r} contains a tab or newline")
            fh.write(f"{r.class_name}\t{r.query}\n")
            n += 1
    return n


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """Rows ``(class name, query)`` of a queries TSV (header optional, ``#`` comments allowed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("queries file not found", path)
    rows = []
    for ln, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise InputError(f"expected 'class<TAB>query', got {len(parts)} column(s)", path, ln)
        if ln == 1 and parts == ["class", "query"]:
            continue
        rows.append((parts[0], parts[1]))
    return rows
