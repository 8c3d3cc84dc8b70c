"""Generate crawling queries from a label map (paper section 3.3).

``--style search`` writes one plain, cleaned class name per class (for search engines);
``--style tags`` writes lower-cased tags made by word permutation, Snowball stemming and
compound splitting (for tag-based sites), several per class. The output is a TSV with a
``class<TAB>query`` header, written atomically; ``omnisource ingest --queries`` reads it back
to map crawled folders (named by query) to classes.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

HELP = "make search / tag queries from a label map (paper 3.3)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("label_map", type=Path, help="label map, one class name per line")
    p.add_argument("--style", choices=("search", "tags"), default="search")
    p.add_argument("--out", type=Path, default=None, help="output TSV (default: stdout)")
    p.add_argument("--vocab", type=Path, default=None,
                   help="extra words for splitting compounds, one per line (e.g. /usr/share/dict/words)")
    p.add_argument("--max-perm-words", type=int, default=3,
                   help="permute the content words of names with at most this many (default 3)")
    p.add_argument("--join", default=" ", help="word separator inside a tag (default ' '; '' for hashtags)")
    p.add_argument("--keep-qualifiers", action="store_true",
                   help="keep negative '(not ...)' qualifiers in the queries")
    p.add_argument("--years", default=None, metavar="FIRST-LAST",
                   help="search style: one query per class and year with after:/before: operators "
                        "(search engines cap the results of one query)")
    p.add_argument("--language", default="english", help="Snowball stemmer language")


def run(args: argparse.Namespace) -> int:
    from omnisource.errors import InputError
    from omnisource.web.queries import make_queries, read_label_map_names, write_queries, year_periods

    names = read_label_map_names(args.label_map)
    vocab: list[str] = []
    if args.vocab is not None:
        if not args.vocab.is_file():
            raise InputError("vocabulary file not found", args.vocab)
        vocab = args.vocab.read_text(encoding="utf-8", errors="replace").split()
    rows = make_queries(names, args.style, vocab_words=vocab, max_perm_words=args.max_perm_words,
                        join=args.join, keep_qualifiers=args.keep_qualifiers, language=args.language,
                        periods=year_periods(args.years) if args.years else ())
    if args.out is None:
        sys.stdout.write("class\tquery\n")
        for r in rows:
            sys.stdout.write(f"{r.class_name}\t{r.query}\n")
    else:
        write_queries(args.out, rows)
    per_class = Counter(r.class_index for r in rows)
    missing = len(names) - len(per_class)
    print(f"queries: {len(rows)} {args.style} queries for {len(per_class)}/{len(names)} classes"
          f" (max {max(per_class.values(), default=0)} per class)"
          + (f"; {missing} classes without a query" if missing else "")
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0
