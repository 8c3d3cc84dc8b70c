"""Teacher filtering and pseudo-labelling of web data (OmniSource paper, section 3.4).

Two passes, because some rules need every score before anything can be decided:

1. **score** (:func:`score_stage`): a resumable, shardable :func:`~omnisource.web.stage.run_stage`
   over the web manifest. Every readable record is written back with ``label`` = teacher
   argmax, ``score`` = its probability, and ``meta.teacher.topk`` = the top classes
   (``meta.teacher.probs``: all probabilities, float16 base64, when dense soft labels are
   wanted). Unreadable files are counted drops. This is the expensive pass.
2. **select** (:func:`select_stage`): cheap. Thresholds are global, per source, and/or a rank
   rule per class (top-k, or top fraction); ``agree`` also demands teacher argmax == query class.
   Rank cut-offs come from a streaming pre-pass (:func:`rank_cutoffs`, a bounded heap per
   class), then a second run_stage applies the rule record by record, so the selection is
   also resumable, sharded and reported in ``meta.json`` like every other stage.

Ranks are by (score desc, path, line): ties are broken the same way on every run and every
rank. Per-class counts before / after filtering (the paper's Fig. 3) are written as a CSV table,
printed, and drawn as a PNG (:func:`write_class_counts`).
"""
from __future__ import annotations

import csv
import functools
import heapq
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from omnisource.errors import ConfigError, InputError
from omnisource.utils.io import atomic_open, atomic_write_bytes
from omnisource.web import features as F
from omnisource.web.stage import Outcome, StageResult, run_stage

log = logging.getLogger("omnisource.web.filter")

SOFT_MODES = ("none", "topk", "dense")


# --------------------------------------------------------------------------------------------
# pass 1: scores
# --------------------------------------------------------------------------------------------
def _reader(label_map: Sequence[str] | None):
    from omnisource.data.annotations import iter_manifest

    return functools.partial(iter_manifest, label_map=label_map) if label_map else iter_manifest


def score_process_fn(ensemble: Any, topk: int = 5, keep_probs: bool = False):
    """``process_fn`` for the score stage: one teacher pass over a chunk of records."""
    from omnisource.web.teacher import topk_sparse

    def process(chunk: list[Any]) -> list[Outcome]:
        results = ensemble.score(chunk)
        out = []
        for rec, res in zip(chunk, results):
            if isinstance(res, str):
                out.append(Outcome(None, "unreadable", {"error": res}))
                continue
            top = topk_sparse(res, topk)
            teacher: dict[str, Any] = {"topk": top}
            if keep_probs:
                teacher["probs"] = F.encode_f16(res)
            meta = dict(rec.meta or {})
            meta["teacher"] = teacher
            out.append(Outcome(replace(rec, label=int(top[0][0]), score=float(top[0][1]), meta=meta)))
        return out

    return process


def score_stage(input_manifest: str | Path, output_dir: str | Path, ensemble: Any, *, topk: int = 5,
                keep_probs: bool = False, label_map: Sequence[str] | None = None, chunk_size: int = 256,
                strict: bool = False, progress: bool | None = None, force: bool = False) -> StageResult:
    config = {"ensemble": ensemble.describe(), "data_root": ensemble.plan.data_root, "topk": int(topk),
              "keep_probs": bool(keep_probs), "label_map": list(label_map) if label_map else None}
    from omnisource.web.teacher import unwrap_setup_errors

    with unwrap_setup_errors():
        return run_stage("filter-score", input_manifest, output_dir, score_process_fn(ensemble, topk, keep_probs),
                         config, chunk_size=chunk_size, strict=strict, reader=_reader(label_map),
                         progress=progress, force=force)


# --------------------------------------------------------------------------------------------
# pass 2: selection
# --------------------------------------------------------------------------------------------
@dataclass
class SelectRule:
    """Which scored records are kept (every given criterion must pass)."""

    threshold: float | None = None                         # global minimum teacher confidence
    source_thresholds: dict[str, float] = field(default_factory=dict)  # per source (replaces global)
    topk_per_class: int | None = None                      # keep the k most confident per class
    top_fraction_per_class: float | None = None            # keep this share of each class (by rank)
    rank_group: str = "label"                              # rank within 'label' (teacher) or 'query' class
    agree: bool = False                                    # teacher argmax must equal the query class
    soft_labels: str = "none"                              # none | topk (meta.soft_label) | dense (label = probs)
    soft_topk: int = 5

    def validate(self) -> "SelectRule":
        for name, v in [("threshold", self.threshold), *[(f"threshold of source {k!r}", v)
                                                          for k, v in self.source_thresholds.items()]]:
            if v is not None and not 0.0 <= float(v) <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {v}")
        if self.topk_per_class is not None and self.topk_per_class < 1:
            raise ConfigError(f"top-k per class must be >= 1, got {self.topk_per_class}")
        if self.top_fraction_per_class is not None and not 0 < self.top_fraction_per_class <= 1:
            raise ConfigError(f"top fraction per class must be in (0, 1], got {self.top_fraction_per_class}")
        if self.topk_per_class is not None and self.top_fraction_per_class is not None:
            raise ConfigError("give either a top-k or a top-fraction per class, not both")
        if self.rank_group not in ("label", "query"):
            raise ConfigError(f"rank group must be 'label' or 'query', got {self.rank_group!r}")
        if self.soft_labels not in SOFT_MODES:
            raise ConfigError(f"soft labels must be one of {SOFT_MODES}, got {self.soft_labels!r}")
        if (self.threshold is None and not self.source_thresholds and self.topk_per_class is None
                and self.top_fraction_per_class is None and not self.agree):
            raise ConfigError("no selection rule: give a threshold, a per-source threshold, a top-k / "
                              "top-fraction per class, or --agree")
        return self

    @property
    def ranked(self) -> bool:
        return self.topk_per_class is not None or self.top_fraction_per_class is not None

    def threshold_for(self, source: str) -> float | None:
        return self.source_thresholds.get(source, self.threshold)


def _rank_key(rec: Any) -> tuple[float, str, int]:
    """Smaller is better: (negated score, path, line)."""
    return (-float(rec.score), str(rec.path), int(rec.line or 0))


def _query_index(rec: Any) -> int | None:
    q = rec.query_label
    return q if isinstance(q, int) and not isinstance(q, bool) else None


def _basic_verdict(rec: Any, rule: SelectRule) -> str | None:
    """Drop reason from the per-record rules (threshold, agreement), or None."""
    thr = rule.threshold_for(rec.source)
    if thr is not None and float(rec.score) < thr:
        return "low_score"
    if rule.agree:
        q = _query_index(rec)
        if q is None:
            from omnisource.web.teacher import SetupAbort

            raise SetupAbort(InputError("--agree needs integer query labels (pass --label-map to map class "
                                        "names)", rec.file, rec.line))
        if int(rec.label) != q:
            return "disagree"
    return None


def _group(rec: Any, rule: SelectRule) -> str:
    return str(rec.label if rule.rank_group == "label" else rec.query_label)


def rank_cutoffs(scores_manifest: str | Path, rule: SelectRule) -> dict[str, tuple[float, str, int]]:
    """Per class, the worst rank key that is still kept (classes not listed keep everything).

    Streams the scored manifest (twice for a fraction rule: counts first); memory is one heap
    of at most ``k`` keys per class.
    """
    from omnisource.data.annotations import iter_manifest

    if not rule.ranked:
        return {}
    eligible = lambda r: r.score is not None and r.label is not None and _basic_verdict(r, rule) is None  # noqa: E731
    if rule.top_fraction_per_class is not None:
        counts: Counter = Counter(_group(r, rule) for r in iter_manifest(scores_manifest) if eligible(r))
        quota = {g: max(1, int(math.ceil(rule.top_fraction_per_class * n))) for g, n in counts.items()}
    else:
        quota = None
    heaps: dict[str, list] = {}
    for r in iter_manifest(scores_manifest):
        if not eligible(r):
            continue
        g = _group(r, rule)
        k = rule.topk_per_class if quota is None else quota[g]
        h = heaps.setdefault(g, [])
        key = _Worst(_rank_key(r))
        if len(h) < k:
            heapq.heappush(h, key)
        elif key.key < h[0].key:
            heapq.heapreplace(h, key)
    out = {}
    for g, h in heaps.items():
        k = rule.topk_per_class if quota is None else quota[g]
        if len(h) >= k:
            out[g] = h[0].key
    return out


class _Worst:
    """Heap item ordered in reverse, so that heapq's root is the *worst* kept rank key."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[float, str, int]):
        self.key = key

    def __lt__(self, other: "_Worst") -> bool:
        return self.key > other.key


def select_process_fn(rule: SelectRule, cutoffs: dict[str, tuple[float, str, int]]):
    def process(chunk: list[Any]) -> list[Outcome]:
        out = []
        for rec in chunk:
            if rec.score is None or rec.label is None:
                out.append(Outcome(None, "unscored"))
                continue
            extra = {"score": rec.score, "label": rec.label}
            reason = _basic_verdict(rec, rule)
            if reason is None and rule.ranked:
                cut = cutoffs.get(_group(rec, rule))
                if cut is not None and _rank_key(rec) > cut:
                    reason = "rank"
            if reason is not None:
                out.append(Outcome(None, reason, extra))
                continue
            out.append(Outcome(_with_soft_label(rec, rule)))
        return out

    return process


def _with_soft_label(rec: Any, rule: SelectRule) -> Any:
    teacher = (rec.meta or {}).get("teacher", {})
    if rule.soft_labels == "topk":
        meta = dict(rec.meta)
        meta["soft_label"] = [list(x) for x in teacher.get("topk", [])[: rule.soft_topk]]
        return replace(rec, meta=meta)
    if rule.soft_labels == "dense":
        blob = teacher.get("probs")
        if blob is None:
            from omnisource.web.teacher import SetupAbort

            raise SetupAbort(ConfigError("dense soft labels need teacher probabilities; re-run the score "
                                         "pass with soft labels 'dense' (keep_probs)"))
        probs = F.decode_f16(blob).astype(np.float64)
        probs = probs / max(probs.sum(), 1e-12)
        return replace(rec, label=[round(float(p), 6) for p in probs])
    return rec


def select_stage(scores_manifest: str | Path, output_dir: str | Path, rule: SelectRule, *,
                 chunk_size: int = 1024, strict: bool = False, progress: bool | None = None,
                 force: bool = False) -> StageResult:
    from omnisource.web.stage import hash_and_count
    from omnisource.web.teacher import unwrap_setup_errors

    rule.validate()
    scores_manifest = Path(scores_manifest)
    with unwrap_setup_errors():
        # cut-offs are a pure function of the scores file and the rule: every rank computes the same
        cutoffs = rank_cutoffs(scores_manifest, rule)
        config = {"rule": asdict(rule), "scores_hash": hash_and_count(scores_manifest)[0]}
        return run_stage("filter-select", scores_manifest, output_dir, select_process_fn(rule, cutoffs), config,
                         chunk_size=chunk_size, strict=strict, progress=progress, force=force)


# --------------------------------------------------------------------------------------------
# per-class counts (Fig. 3)
# --------------------------------------------------------------------------------------------
def class_count_rows(before: dict[str, int], after: dict[str, int], class_names: Sequence[str] | None = None
                     ) -> list[dict[str, Any]]:
    """Rows (class, name, before, after, kept %) sorted by class index (names: ``label_map``)."""
    keys = set(before) | set(after)

    def order(k: str) -> tuple[int, Any]:
        return (0, int(k)) if k.lstrip("-").isdigit() else (1, k)

    rows = []
    for k in sorted(keys, key=order):
        name = k
        if class_names is not None and k.isdigit() and int(k) < len(class_names):
            name = class_names[int(k)]
        b, a = int(before.get(k, 0)), int(after.get(k, 0))
        rows.append({"class": k, "name": name, "before": b, "after": a,
                     "kept_pct": round(100.0 * a / b, 2) if b else None})
    return rows


def write_class_counts(rows: list[dict[str, Any]], out_dir: str | Path, title: str = "web data per class",
                       stem: str = "class_counts") -> tuple[Path, Path]:
    """``<stem>.csv`` and ``<stem>.png`` (before/after bars sorted by count, like Fig. 3)."""
    out_dir = Path(out_dir)
    csv_path, png_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.png"
    with atomic_open(csv_path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=["class", "name", "before", "after", "kept_pct"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    atomic_write_bytes(png_path, class_count_png(rows, title))
    return csv_path, png_path


def class_count_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Per-class counts before (light) and after (dark) filtering, sorted by ``before``;
    rows: ``name``, ``before``, ``after``."""
    from omnisource.utils.html_report import class_bars_png

    srt = sorted(rows, key=lambda r: (-r["before"], -r["after"]))
    return class_bars_png([r["name"] for r in srt], ("before filtering", [r["before"] for r in srt]),
                          ("after filtering", [r["after"] for r in srt]), title=title,
                          xlabel="classes (sorted by number of crawled samples)")


def format_table(rows: list[dict[str, Any]], limit: int = 40) -> str:
    """Plain-text table; long tables show the first and last ``limit // 2`` classes."""
    head = f"{'class':>6}  {'name':<28} {'before':>8} {'after':>8} {'kept%':>7}"
    lines = [head, "-" * len(head)]
    show: list[Any] = rows
    if len(rows) > limit:
        show = rows[: limit // 2] + [None] + rows[-(limit // 2):]
    for r in show:
        if r is None:
            lines.append(f"{'...':>6}  ({len(rows) - 2 * (limit // 2)} more classes)")
            continue
        pct = "-" if r["kept_pct"] is None else f"{r['kept_pct']:.1f}"
        lines.append(f"{r['class']:>6}  {str(r['name'])[:28]:<28} {r['before']:>8} {r['after']:>8} {pct:>7}")
    tb, ta = sum(r["before"] for r in rows), sum(r["after"] for r in rows)
    lines.append(f"{'total':>6}  {'':<28} {tb:>8} {ta:>8} {(100.0 * ta / tb if tb else 0):>7.1f}")
    return "\n".join(lines)


def query_counts(manifest: str | Path, label_map: Sequence[str] | None = None) -> dict[str, int]:
    """Records per query class of a manifest (the "before filtering" distribution)."""
    c: Counter = Counter()
    for r in _reader(label_map)(manifest):
        c[str(r.query_label)] += 1
    return dict(c)


def label_counts(manifest: str | Path) -> dict[str, int]:
    from omnisource.data.annotations import iter_manifest

    c: Counter = Counter()
    for r in iter_manifest(manifest):
        lab = r.label
        if isinstance(lab, list):   # dense soft label: count its argmax
            lab = int(np.argmax(lab))
        c[str(lab if lab is not None else r.query_label)] += 1
    return dict(c)


def iter_scored(manifest: str | Path) -> Iterator[Any]:
    from omnisource.data.annotations import iter_manifest

    return iter_manifest(manifest)
