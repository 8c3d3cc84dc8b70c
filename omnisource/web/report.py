"""Static HTML report of a run's web stages (``omnisource report WORK_DIR``).

Finds every finished stage under WORK_DIR (a folder with ``meta.json`` naming a ``stage``) and
writes ``WORK_DIR/report/index.html`` plus PNGs and JPEG thumbnails beside it:

* every stage: counts in / out / dropped (by reason), per source, per class;
* filter: per-class counts before/after (the paper's Fig. 3), score histograms of kept and
  rejected samples, grids of kept and rejected samples of every class (or of one, ``--class``)
  with their scores and labels;
* dedup: histogram of each web sample's best similarity against the threshold, and the
  suspected duplicate pairs side by side;
* untrimmed: histograms of frame / window scores, kept samples.

Nothing is read beyond what the stages wrote (manifests, dropped.jsonl, side.jsonl,
meta.json) and the media for thumbnails; unreadable media get a placeholder. All files are
written atomically; the HTML only references files that exist.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from omnisource.utils.html_report import Writer, escape as _e, table as _table

log = logging.getLogger("omnisource.web.report")


@dataclass
class StageDir:
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta.get("stage", "?"))


def find_stages(work_dir: Path, order: Sequence[str] | None = None) -> list[StageDir]:
    """Finished stages under ``work_dir``, skipping the report folder itself.

    Ordered as ``order`` lists their top folders under ``work_dir`` (``omnisource run`` passes
    its pipeline order), else by when each stage finished (meta.json's time), so the page reads
    in the order the work was done. A stage nested in another whose counts are the same (the
    ingest runner's ``validate`` inside ``ingest``) is dropped: one section says it."""
    out = []
    for meta_path in sorted(work_dir.rglob("meta.json")):
        if "report" in meta_path.relative_to(work_dir).parts[:1] or ".work" in meta_path.parts:
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            log.warning("%s: unreadable meta.json, skipped", meta_path)
            continue
        if isinstance(meta, dict) and "stage" in meta and "counts" in meta:
            out.append(StageDir(meta_path.parent, meta))

    def top(st: StageDir) -> str:
        parts = st.path.relative_to(work_dir).parts
        return parts[1] if len(parts) > 1 and parts[0] == "stages" else (parts[0] if parts else "")

    def key(st: StageDir) -> tuple:
        rank = list(order).index(top(st)) if order and top(st) in order else len(order or ())
        return (rank, (st.path / "meta.json").stat().st_mtime, str(st.path))

    out.sort(key=key)
    keep = []
    for st in out:
        same = [o for o in out if o is not st and o.meta.get("counts") == st.meta.get("counts")
                and o.path in st.path.parents]
        if not same:
            keep.append(st)
    return keep


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                row = json.loads(line)
                if isinstance(row, dict) and set(row) - {"schema_version", "format", "meta"}:
                    yield row


def _hist(writer: Writer, name: str, series: dict[str, list[float]], title: str, vline: float | None = None,
          xlabel: str = "score") -> str | None:
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    lo = min(min(v) for v in series.values())
    hi = max(max(v) for v in series.values())
    bins = np.linspace(min(lo, 0.0), max(hi, 1.0) if hi <= 1 else hi, 41)
    for k, v in series.items():
        ax.hist(v, bins=bins, alpha=0.6, label=f"{k} ({len(v)})")
    if vline is not None:
        ax.axvline(vline, color="k", ls="--", lw=1, label=f"threshold {vline:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return writer.png(name, fig)


def _seconds(v: Any) -> str:
    try:
        return f"{float(v):.1f} s"
    except (TypeError, ValueError):
        return "?"


def _counts_html(meta: dict[str, Any], class_names: Sequence[str] | None, max_classes: int = 30) -> str:
    c = meta["counts"]
    reasons = c["dropped"].get("by_reason", {}) or {}
    why = ", ".join(f"{_e(k)} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
    parts = [f"<p>in <b>{c['in']['total']}</b> &rarr; out <b>{c['out']['total']}</b>, dropped "
             f"<b>{c['dropped']['total']}</b>{' (' + why + ')' if why else ''}; "
             f"{_seconds(meta.get('wall_time_s'))}</p>"]
    srcs = sorted(set(c["in"]["by_source"]) | set(c["out"]["by_source"]))
    parts.append(_table(["source", "in", "out"], [[s, c["in"]["by_source"].get(s, 0), c["out"]["by_source"].get(s, 0)]
                                                  for s in srcs]))
    classes = sorted(set(c["in"]["by_class"]) | set(c["out"]["by_class"]),
                     key=lambda k: -(c["in"]["by_class"].get(k, 0) + c["out"]["by_class"].get(k, 0)))
    rows = [[k, _name(k, class_names), c["in"]["by_class"].get(k, 0), c["out"]["by_class"].get(k, 0)]
            for k in classes[:max_classes]]
    more = f"<p>({len(classes) - max_classes} more classes)</p>" if len(classes) > max_classes else ""
    parts.append(_table(["class", "name", "in", "out"], rows) + more)
    return "\n".join(parts)


def _name(k: Any, names: Sequence[str] | None) -> str:
    s = str(k)
    if names is not None and s.isdigit() and int(s) < len(names):
        return names[int(s)]
    return s


def _root_of(stage: StageDir) -> Path | None:
    for key in ("data_root",):
        if stage.meta.get(key):
            return Path(stage.meta[key])
        if isinstance(stage.meta.get("config"), dict) and stage.meta["config"].get(key):
            return Path(stage.meta["config"][key])
    return None


def _media(root: Path | None, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() or root is None else root / p


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------
def _filter_section(w: Writer, st: StageDir, k: int, cls: int | None, names: Sequence[str] | None, n: int) -> str:
    root = _root_of(st)
    kept = [r for r in _jsonl(st.path / "manifest.jsonl")]
    rejected = [r for r in _jsonl(st.path / "dropped.jsonl") if r.get("extra", {}).get("score") is not None]
    parts = []
    csvp = st.path / "class_counts.csv"
    from omnisource.web.filter import class_count_png, class_count_rows

    if csvp.is_file():          # written by `omnisource filter` (query counts of the crawl)
        import csv

        with open(csvp, encoding="utf-8") as fh:
            rows = [{**r, "before": int(r["before"]), "after": int(r["after"])} for r in csv.DictReader(fh)]
    else:                       # from the stage's own counts: scored (by query) -> kept (by label)
        c = st.meta["counts"]
        rows = class_count_rows(c["in"].get("by_class", {}), c["out"].get("by_class", {}), names)
    if rows:
        name = f"s{k}_class_counts.png"
        w.png_bytes(name, class_count_png(rows, "per-class counts"))
        parts.append(f'<h3>Per-class counts before / after filtering</h3><img src="{name}">')
    by_src: dict[str, list[float]] = {}
    for r in kept:
        by_src.setdefault(f"kept {r.get('source')}", []).append(float(r.get("score") or 0))
    for r in rejected:
        by_src.setdefault(f"rejected {r.get('source')}", []).append(float(r["extra"]["score"]))
    h = _hist(w, f"s{k}_scores.png", by_src, "teacher confidence")
    if h:
        parts.append(f'<h3>Score histograms</h3><img src="{h}">')
    if cls is not None:
        classes, per = [cls], n
    else:   # every class of the crawl, a few samples each (the most confident kept / rejected)
        classes = sorted({int(r["query_label"]) for r in kept + rejected
                          if isinstance(r.get("query_label"), int)})[:max_grid_classes]
        per = max(1, min(n, 6))
    for c in classes:
        ks = sorted([r for r in kept if _hard(r.get("label")) == c],
                    key=lambda r: -float(r.get("score") or 0))[:per]
        rs = sorted([r for r in rejected if r.get("query_label") == c or r["extra"].get("label") == c],
                    key=lambda r: -float(r["extra"]["score"]))[:per]
        cname = _name(c, names)
        parts.append(f"<h3>Class {c} ({_e(cname)}): kept</h3>")
        parts.append(w.grid([(_media(root, r["path"]), r, f"{float(r.get('score') or 0):.3f} label {_label_text(r)} "
                                                            f"q {r.get('query_label')}") for r in ks])
                     if ks else "<p><i>none kept</i></p>")
        parts.append(f"<h3>Class {c} ({_e(cname)}): rejected</h3>")
        parts.append(w.grid([(_media(root, r["path"]), {"kind": _kind_guess(r["path"])},
                                f"{float(r['extra']['score']):.3f} teacher {r['extra'].get('label')} "
                                f"q {r.get('query_label')} [{r.get('reason')}]") for r in rs])
                     if rs else "<p><i>none rejected</i></p>")
    return "\n".join(parts)


max_grid_classes = 40   # classes with sample grids on the default page (--class shows any one)


def _hard(lab: Any) -> int | None:
    if isinstance(lab, list):
        return int(np.argmax(lab)) if lab else None
    return None if lab is None else int(lab)


def _label_text(r: dict[str, Any]) -> str:
    lab = r.get("label")
    return f"{int(np.argmax(lab))} (soft)" if isinstance(lab, list) else str(lab)


def _kind_guess(path: str) -> str:
    from omnisource.data.annotations import IMAGE_EXTS

    return "image" if Path(path).suffix.lower() in IMAGE_EXTS else "video"


def _dedup_section(w: Writer, st: StageDir, k: int, n: int) -> str:
    root = _root_of(st)
    thr = st.meta.get("threshold", (st.meta.get("config") or {}).get("threshold"))
    best = [float(r["max_sim"]) for r in _jsonl(st.path / "side.jsonl") if r.get("max_sim") is not None
            and np.isfinite(r["max_sim"])]
    parts = []
    h = _hist(w, f"s{k}_maxsim.png", {"web samples": best}, "best similarity to any target frame", thr,
              xlabel="cosine similarity (whitened)")
    if h:
        parts.append(f'<h3>Best similarity per web sample</h3><img src="{h}">')
    troots: dict[int, Path | None] = {}
    for tm in sorted((st.path / "target").glob("*/meta.json")):
        try:
            cfg = json.loads(tm.read_text()).get("config", {})
            root_ = cfg.get("frames", {}).get("data_root")
            troots[int(tm.parent.name)] = Path(root_) if root_ and root_ != "None" else None
        except (OSError, ValueError, KeyError):
            pass
    pairs = sorted(_jsonl(st.path / "pairs.jsonl"), key=lambda r: -float(r["score"]))[:n]
    rows = []
    for p in pairs:
        wt = w.thumb(_media(root, p["web"]), {"kind": _kind_guess(p["web"]), "frame": None})
        tt = w.thumb(_media(troots.get(int(p.get("target_list", 0))), p["target"]),
                     {"kind": _kind_guess(p["target"]), "frame": None})
        rows.append(f'<tr><td><img src="{_e(wt)}"><br>{_e(p["web"])}</td><td><img src="{_e(tt)}"><br>'
                    f'{_e(p["target"])}</td><td>{float(p["score"]):.4f}</td></tr>')
    parts.append(f"<h3>Suspected duplicate pairs (top {len(pairs)} by score; threshold {thr})</h3>")
    parts.append("<table><tr><th>web</th><th>target</th><th>similarity</th></tr>" + "".join(rows) + "</table>"
                 if rows else "<p><i>no pairs</i></p>")
    return "\n".join(parts)


def _untrimmed_section(w: Writer, st: StageDir, k: int, n: int) -> str:
    root = _root_of(st)
    scores: list[float] = []
    for r in _jsonl(st.path / "side.jsonl"):
        scores += r.get("frame_scores", []) + r.get("window_scores", [])
    parts = []
    h = _hist(w, f"s{k}_untrimmed.png", {"frames / windows": scores}, "teacher confidence")
    if h:
        parts.append(f'<h3>Teacher confidence of frames / windows</h3><img src="{h}">')
    kept = sorted(_jsonl(st.path / "manifest.jsonl"), key=lambda r: -float(r.get("score") or 0))[:n]
    parts.append("<h3>Most confident samples</h3>")
    def shown(r: dict[str, Any]) -> dict[str, Any]:      # thumbnail of the positive frame
        pos = r.get("meta", {}).get("untrimmed", {}).get("positive_frames")
        return {**r, "frame_inds": pos or r.get("frame_inds")}

    parts.append(w.grid([(_media(root, r["path"]), shown(r),
                            f"{r.get('score', 0):.3f} label {r.get('label')} "
                            f"{r.get('segment') or r.get('frame_inds')}") for r in kept]))
    return "\n".join(parts)


def build_report(work_dir: str | Path, out_dir: str | Path | None = None, class_index: int | None = None,
                 label_map: Sequence[str] | None = None, max_items: int = 24,
                 order: Sequence[str] | None = None, results_page: str | None = None) -> Path:
    """Write the report; returns the path of index.html. ``order``: stage folders in pipeline
    order (see :func:`find_stages`); ``results_page``: a page beside index.html to link first
    (``omnisource run``'s accuracy table, results.html)."""
    import matplotlib

    matplotlib.use("Agg")
    work_dir = Path(work_dir)
    out = Path(out_dir) if out_dir is not None else work_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    w = Writer(out)
    stages = find_stages(work_dir, order)
    link = (f'<p><a href="{_e(results_page)}"><b>Accuracy of every trained run</b></a> (the table of '
            f'results.json, per-class test pages)</p>' if results_page else "")
    body = [f"<h1>omnisource report: {_e(work_dir)}</h1>" + link,
            f"<p>{len(stages)} finished stages"
            + (f"; samples shown for class {class_index} ({_e(_name(class_index, label_map))})"
               if class_index is not None else "") + "</p>"]
    toc = []
    for k, st in enumerate(stages):
        rel = st.path.relative_to(work_dir) if st.path != work_dir else Path(".")
        anchor = f"s{k}"
        toc.append(f'<li><a href="#{anchor}">{_e(st.name)}</a> &mdash; {_e(rel)}</li>')
        sec = [f'<section id="{anchor}"><h2>{_e(st.name)} <small>({_e(rel)})</small></h2>',
               _counts_html(st.meta, label_map)]
        try:
            if st.name == "filter-select":
                sec.append(_filter_section(w, st, k, class_index, label_map, max_items))
            elif st.name == "dedup":
                sec.append(_dedup_section(w, st, k, max_items))
            elif st.name.startswith("untrimmed"):
                sec.append(_untrimmed_section(w, st, k, max_items))
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: section incomplete (%s)", st.path, err)
            sec.append(f"<p><i>section incomplete: {_e(err)}</i></p>")
        sec.append("</section>")
        body.append("\n".join(sec))
    body.insert(2, "<ul>" + "".join(toc) + "</ul>")
    return w.write_page("omnisource report", body)
