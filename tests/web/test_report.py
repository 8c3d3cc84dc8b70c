"""The HTML report renders from small stage outputs and references only files that exist."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omnisource.web import filter as flt
from omnisource.web.dedup import DedupSettings, run_dedup
from omnisource.web.report import build_report, find_stages
from omnisource.web.runopts import annotate_meta


class Thumb(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.meta = {"layout": "2d", "input_size": 32, "num_classes": 3}

    def extract_features(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def _img(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 5, 3)).astype(np.uint8)
    Image.fromarray(small).resize((80, 60), Image.BICUBIC).save(path)


def make_run(tmp: Path) -> Path:
    work = tmp / "work"
    media = tmp / "media"
    media.mkdir()
    for i in range(10):
        _img(media / f"{i}.jpg", i)
    # filter: scored manifest -> select stage (+ class counts), as `omnisource filter` leaves it
    scored = tmp / "scored.jsonl"
    with open(scored, "w") as fh:
        for i in range(10):
            sc = round(0.1 + 0.09 * i, 3)
            fh.write(json.dumps({"path": f"{i}.jpg", "source": "web" if i % 2 else "ig", "kind": "image",
                                 "query_label": i % 2, "label": i % 2, "score": sc,
                                 "meta": {"teacher": {"topk": [[i % 2, sc]]}}}) + "\n")
    sel = flt.select_stage(scored, work / "filter", flt.SelectRule(threshold=0.5), progress=False)
    rows = flt.class_count_rows(flt.query_counts(scored), flt.label_counts(sel.manifest), ["run", "jump"])
    flt.write_class_counts(rows, work / "filter")
    annotate_meta(work / "filter", data_root=media)
    # dedup: targets are 0..5, the web holds re-saved copies of 1 and 4 plus new pictures
    (tmp / "target.txt").write_text("".join(f"{i}.jpg 0\n" for i in range(6)))
    web = tmp / "web.jsonl"
    (tmp / "web").mkdir()
    for j, i in enumerate((1, 4)):
        Image.open(media / f"{i}.jpg").resize((100, 75)).save(tmp / "web" / f"copy{j}.jpg", quality=80)
    for i in (6, 7):
        Image.open(media / f"{i}.jpg").save(tmp / "web" / f"new{i}.jpg")
    web.write_text("".join(json.dumps({"path": p, "source": "web", "kind": "image", "query_label": 0}) + "\n"
                           for p in ("copy0.jpg", "new6.jpg", "copy1.jpg", "new7.jpg")))
    run_dedup(web, [(tmp / "target.txt", media)], work / "dedup", Thumb(), {"m": "thumb"},
              DedupSettings(threshold=0.9, pca_dim=None), web_root=tmp / "web", progress=False)
    annotate_meta(work / "dedup", data_root=tmp / "web", threshold=0.9)
    return work


def test_report_renders_and_references_existing_files(tmp_path):
    work = make_run(tmp_path)
    names = [s.name for s in find_stages(work)]     # in the order they finished
    assert names == ["filter-select", "dedup-target-features", "dedup"]
    order = [s.name for s in find_stages(work, order=["dedup", "filter"])]   # a pipeline's order
    assert order[-1] == "filter-select"
    index = build_report(work, class_index=1, label_map=["run", "jump"], max_items=10)
    html = index.read_text()
    refs = re.findall(r'src="([^"]+)"', html)
    assert refs and all((index.parent / r).is_file() for r in refs)
    assert any(r.startswith("thumbs/") for r in refs) and any(r.endswith(".png") for r in refs)
    for r in refs:
        if r.endswith(".png"):
            assert (index.parent / r).read_bytes()[:4] == b"\x89PNG"
    # kept and rejected grids of class 1 with their scores; duplicate pairs side by side
    assert "Class 1 (jump): kept" in html and "Class 1 (jump): rejected" in html
    assert "Class 0 (run)" not in html                                  # --class shows that class only
    kept_scores = [f"{0.1 + 0.09 * i:.3f}" for i in (5, 7, 9)]
    assert all(s in html for s in kept_scores)
    assert "0.370 teacher 1 q 1 [low_score]" in html                   # 3.jpg rejected
    pairs = [json.loads(x) for x in (work / "dedup" / "pairs.jsonl").read_text().splitlines()]
    assert {"copy0.jpg", "copy1.jpg"} <= {p["web"] for p in pairs}
    pairs_table = html.split("Suspected duplicate pairs")[1].split("</table>")[0]
    assert pairs_table.count("<tr>") == 1 + len(pairs)                  # header + one row per pair
    assert all(f"{p['score']:.4f}" in pairs_table for p in pairs)
    assert not list((index.parent).glob(".*.tmp"))                      # atomic writes left no temp files


def test_default_report_shows_every_class_counts_plot_and_links_results(tmp_path):
    work = make_run(tmp_path)
    index = build_report(work, label_map=["run", "jump"], results_page="results.html")
    html = index.read_text()
    assert "Class 0 (run): kept" in html and "Class 1 (jump): rejected" in html
    assert "Per-class counts before / after filtering" in html          # drawn from the stage's counts
    assert '<a href="results.html">' in html


def test_a_nested_stage_with_the_same_counts_is_one_section(tmp_path):
    import shutil

    work = make_run(tmp_path)
    nested = work / "filter" / "validate"
    shutil.copytree(work / "filter", nested, ignore=shutil.ignore_patterns("validate"))
    names = [s.path for s in find_stages(work)]
    assert work / "filter" in names and nested not in names


def test_report_cli(tmp_path):
    from omnisource.cli import main

    work = make_run(tmp_path)
    assert main(["report", str(work), "--class", "jump", "--label-map", str(_labels(tmp_path))]) == 0
    assert (work / "report" / "index.html").is_file()
    assert main(["report", str(tmp_path / "media")]) == 2                # no stages there
    assert main(["report", str(work), "--class", "swim", "--label-map", str(_labels(tmp_path))]) == 2


def _labels(tmp: Path) -> Path:
    p = tmp / "labels.txt"
    p.write_text("run\njump\n")
    return p
