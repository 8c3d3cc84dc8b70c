"""What a test run got wrong, as a page: ``omnisource test CONFIG CKPT --report DIR``.

The metrics say how good a checkpoint is; this says where it fails, which is what a researcher
looks at next: accuracy per class (a sorted plot and a table naming each class's most frequent
wrong answer), the class pairs confused most often, and the most confident mistakes as
thumbnails (a wrong label in the test list looks exactly like that). Written beside
``index.html``: ``per_class.csv`` and ``confusions.csv`` for other tools.

Only single-label samples are scored (multi-label or unlabelled samples are counted and left
out, as :func:`omnisource.engine.evaluate.compute_metrics` does). Class accuracy is top-1
recall, the quantity :func:`omnisource.engine.metrics.mean_class_accuracy` averages.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from omnisource.engine.metrics import format_metric, topk_applicable
from omnisource.utils.html_report import Writer, class_bars_png, table
from omnisource.utils.io import atomic_write_text

__all__ = ["per_class_stats", "confused_pairs", "write_eval_report"]


def _probabilities(scores: np.ndarray, average: str) -> np.ndarray:
    """[N, C] class probabilities from the test's averaged scores (for confidences)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 3 or average == "score":       # per-view scores or averaged logits: softmax
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
        return p.mean(axis=1) if p.ndim == 3 else p
    return s


def per_class_stats(probs: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """One row per class that has test videos: videos, top-1 / top-5 hits, the most frequent
    wrong prediction and how often it was made. Sorted by top-1 accuracy, worst first. Top-5 is
    None with 5 classes or fewer (not applicable: see :func:`~omnisource.engine.metrics.topk_applicable`)."""
    pred = probs.argmax(axis=1)
    has5 = topk_applicable(5, probs.shape[1])
    k = min(5, probs.shape[1])
    top5 = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = []
    for c in np.unique(labels):
        m = labels == c
        wrong = pred[m][pred[m] != c]
        common, count = (None, 0)
        if len(wrong):
            vals, cnts = np.unique(wrong, return_counts=True)
            common, count = int(vals[np.argmax(cnts)]), int(cnts.max())
        n = int(m.sum())
        hit1 = int((pred[m] == c).sum())
        hit5 = int((top5[m] == c).any(axis=1).sum())
        rows.append({"class": int(c), "videos": n, "top1": hit1 / n, "top5": hit5 / n if has5 else None,
                     "correct": hit1,
                     "confused_with": common, "confused_count": count})
    rows.sort(key=lambda r: (r["top1"], -r["videos"], r["class"]))
    return rows


def confused_pairs(probs: np.ndarray, labels: np.ndarray, limit: int = 30) -> list[dict[str, Any]]:
    """(true class, predicted class) pairs of the mistakes, most frequent first."""
    pred = probs.argmax(axis=1)
    wrong = pred != labels
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([labels[wrong], pred[wrong]], axis=1), axis=0, return_counts=True)
    per_class = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:limit]
    return [{"true": int(pairs[i, 0]), "pred": int(pairs[i, 1]), "count": int(counts[i]),
             "share": counts[i] / per_class[int(pairs[i, 0])]} for i in order]


def _accuracy_png(w: Writer, rows: list[dict[str, Any]], names: Sequence[str] | None, mean: float) -> str:
    srt = sorted(rows, key=lambda r: -r["top1"])
    top5 = ("top-5", [r["top5"] for r in srt]) if srt and srt[0]["top5"] is not None else None
    return w.png_bytes("per_class_accuracy.png", class_bars_png(
        [_name(r["class"], names) for r in srt], top5, ("top-1", [r["top1"] for r in srt]), ylabel="accuracy", xlabel="classes (sorted by top-1 accuracy)",
        hline=(f"mean over these classes {mean:.3f}", mean), ylim=(0, 1.02), legend_above=True))


def _name(c: int | None, names: Sequence[str] | None) -> str:
    if c is None:
        return ""
    return names[c] if names is not None and 0 <= c < len(names) else str(c)


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    wr.writeheader()
    wr.writerows(rows)
    return buf.getvalue()


def write_eval_report(out_dir: str | Path, scores: np.ndarray, labels: Sequence[Any], *,
                      paths: Sequence[str] | None = None, data_root: str | Path | None = None,
                      class_names: Sequence[str] | None = None, average: str = "prob",
                      metrics: dict[str, float] | None = None, meta: dict[str, Any] | None = None,
                      max_items: int = 24, max_rows: int = 60) -> Path:
    """Write ``out_dir/index.html`` (+ PNG, thumbnails, CSVs); returns its path.

    ``scores``: the test's per-video scores ([N, C], or [N, V, C] for ``average='none'``) in the
    order of ``labels`` / ``paths`` (sample paths, relative to ``data_root``, for thumbnails);
    ``average``: how the scores were averaged ('score' = logits, else probabilities)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = Writer(out)
    keep = [i for i, lab in enumerate(labels) if isinstance(lab, (int, np.integer)) and int(lab) >= 0]
    left_out = len(labels) - len(keep)
    probs = _probabilities(np.asarray(scores), average)[keep]
    y = np.asarray([int(labels[i]) for i in keep], dtype=np.int64)
    sample_paths = [paths[i] for i in keep] if paths is not None else None
    body = ["<h1>omnisource test report</h1>"]
    info = [["videos scored", len(keep)]] + ([["left out (multi-label or unlabelled)", left_out]] if left_out else [])
    info += [[k, v] for k, v in (meta or {}).items()]
    info += [[k, format_metric(k, v, probs.shape[1] if probs.ndim == 2 else None)]
             for k, v in (metrics or {}).items()]
    body.append(table(["", "value"], info))
    if not len(keep):
        body.append("<p><i>no single-label samples to score</i></p>")
        return w.write_page("omnisource test report", body)

    rows = per_class_stats(probs, y)
    for r in rows:
        r["name"] = _name(r["class"], class_names)
        r["confused_with_name"] = _name(r["confused_with"], class_names)
    mean = float(np.mean([r["top1"] for r in rows]))
    body.append(f'<section><h2>Accuracy per class</h2><img src="{_accuracy_png(w, rows, class_names, mean)}">')
    shown = rows[:max_rows]
    body.append(f"<p>{len(rows)} classes with test videos, weakest first"
                f"{'' if len(shown) == len(rows) else f'; the {len(shown)} weakest (all in per_class.csv)'}.</p>")
    body.append(table(["class", "name", "videos", "top-1", "top-5", "most often taken for", "times"],
                      [[r["class"], r["name"], r["videos"], f"{r['top1']:.3f}", "n/a" if r["top5"] is None else f"{r['top5']:.3f}",
                        r["confused_with_name"], r["confused_count"] or ""] for r in shown]) + "</section>")
    atomic_write_text(out / "per_class.csv", _csv(rows, ["class", "name", "videos", "correct", "top1", "top5",
                                                         "confused_with", "confused_with_name", "confused_count"]))

    pairs = confused_pairs(probs, y, limit=max_rows)
    for p in pairs:
        p["true_name"], p["pred_name"] = _name(p["true"], class_names), _name(p["pred"], class_names)
    body.append("<section><h2>Most confused class pairs</h2>")
    body.append(table(["true class", "predicted as", "videos", "share of the true class"],
                      [[f"{p['true']} {p['true_name']}", f"{p['pred']} {p['pred_name']}", p["count"],
                        f"{p['share']:.1%}"] for p in pairs]) if pairs else "<p><i>no mistakes</i></p>")
    body.append("</section>")
    atomic_write_text(out / "confusions.csv", _csv(pairs, ["true", "true_name", "pred", "pred_name", "count",
                                                           "share"]))

    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-conf[wrong], kind="stable")][:max_items]
    body.append(f"<section><h2>Most confident mistakes</h2><p>{len(wrong)} of {len(y)} videos wrong (top-1); "
                f"the {len(worst)} the model was surest of (a wrong label in the list looks like this).</p>")
    if sample_paths is not None and len(worst):
        root = Path(data_root) if data_root is not None else None
        items = []
        for i in worst:
            media = Path(sample_paths[i])
            media = media if media.is_absolute() or root is None else root / media
            items.append((media, {"kind": "video"},
                          f"{sample_paths[i]}: true {_name(int(y[i]), class_names)}, predicted "
                          f"{_name(int(pred[i]), class_names)} ({conf[i]:.2f})"))
        body.append(w.grid(items))
    elif len(worst):
        body.append(table(["video #", "true", "predicted", "confidence"],
                          [[int(i), _name(int(y[i]), class_names), _name(int(pred[i]), class_names),
                            f"{conf[i]:.3f}"] for i in worst]))
    body.append("</section>")
    return w.write_page("omnisource test report", body)
