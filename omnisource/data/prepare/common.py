"""What every dataset preparer shares: finding the dataset's files under ``--src``, finding the
videos a split lists, writing the lists and the report, and refusing to overwrite.

A preparer turns the dataset's own annotation files into :class:`Split` objects (rows of
``(path relative to --src, labels)``); :func:`finish` then checks that every listed video (or
frame folder) exists, writes ``OUT/<dataset>_<split>_list_<videos|rawframes>.txt`` (mmaction2's
list formats, paths relative to ``--src``, which is the data root to train with), the label map,
``OUT/missing_<split>.txt`` and ``OUT/prepare_report.json`` (counts per split), each atomically.
A listed video that is not on disk is counted and named, never a traceback; a run that finds
none of a split's videos still writes the report, and says so.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from omnisource.data.annotations import VIDEO_EXTS
from omnisource.errors import InputError

__all__ = ["Split", "Prepared", "find_file", "read_csv_rows", "read_json", "read_lines", "VideoIndex",
           "finish", "label_index", "count_frames"]



@dataclass
class Split:
    """One split of a dataset: rows ``(path, labels, extra)`` in the dataset's order.

    ``labels``: a list of class indices (one for single-label datasets, several for multi-label
    ones, empty for unlabelled test splits). ``kind``: ``video`` (files) or ``rawframes`` (frame
    folders, listed with their frame count)."""

    name: str
    rows: list[tuple[str, list[int]]] = field(default_factory=list)
    kind: str = "video"
    source: str = ""                  # the annotation file the rows come from (for messages)


@dataclass
class Prepared:
    dataset: str
    out: Path
    lists: dict[str, Path]
    report: dict[str, Any]


def find_file(src: Path, names: Sequence[str], what: str, given: Path | None = None) -> Path:
    """The first of ``names`` (glob patterns) found under ``src`` (recursively), or ``given``."""
    if given is not None:
        if not given.is_file():
            raise InputError(f"{what} not found", file=given)
        return given
    for pattern in names:
        hits = sorted(p for p in src.rglob(pattern) if p.is_file())
        if hits:
            return hits[0]
    raise InputError(f"{what} not found under the source folder (looked for {', '.join(names)}); "
                     f"pass its path with --annotations", file=src)


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with 1-based numbers (UTF-8; a BOM and Windows line ends are tolerated)."""
    with open(path, encoding="utf-8-sig", errors="strict", newline="") as fh:
        try:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if line:
                    yield n, line
        except UnicodeDecodeError as err:
            raise InputError(f"not UTF-8 text ({err.reason})", file=path) from None


def read_csv_rows(path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    for n, line in read_lines(path):
        yield n, next(csv.reader(io.StringIO(line), delimiter=delimiter))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON ({err.msg})", file=path, line=err.lineno) from None
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason})", file=path) from None


def label_index(names: Sequence[str], path: Path | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in out:
            raise InputError(f"class {n!r} is listed twice in the label map", file=path)
        out[n] = i
    return out


class VideoIndex:
    """Every media file and frame folder under ``root``, found by relative path or by stem.

    Datasets name videos differently from how they are stored (Kinetics: ``youtube_id`` +
    time window, in class folders or flat; Something-Something: ``id.webm``); an index of stems
    built once makes each lookup O(1) whatever the layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_stem: dict[str, str] = {}
        self.dirs: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
            if rel_dir:
                self.dirs.add(rel_dir)
            for f in filenames:
                stem, ext = os.path.splitext(f)
                if ext.lower() in VIDEO_EXTS:
                    rel = f"{rel_dir}/{f}" if rel_dir else f
                    self.by_stem.setdefault(stem, rel)

    def video(self, stem: str) -> str | None:
        return self.by_stem.get(stem)

    def has_dir(self, rel: str) -> bool:
        return rel in self.dirs


_FRAME = re.compile(r"\.(jpe?g|png)$", re.I)


def count_frames(folder: Path) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if _FRAME.search(e.name))
    except OSError:
        return 0


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError("output folder is not empty (lists of an earlier run?); pass --force to overwrite",
                         file=out)


def _unreadable(src: Path, paths: list[str], workers: int) -> dict[str, str]:
    """Found videos (or frame folders) that cannot be read: ``{path: reason}`` (a fast probe:
    metadata, packet index and the first frame)."""
    from omnisource.data.decode.probe import probe_many

    recs = probe_many([src / p for p in paths], workers=workers, progress=False)
    return {p: str(r.get("reason") or "unreadable") for p, r in zip(paths, recs) if not r.get("readable")}


PROBE: dict[str, Any] = {"enabled": False, "workers": 4}   # set by prepare(..., probe=True)


def finish(dataset: str, src: Path, out: Path, classes: Sequence[str], splits: Iterable[tuple[Split, list[str | None]]],
           force: bool, extra_files: dict[str, str] | None = None, multi_label: bool = False) -> Prepared:
    """Check presence (and, with probing on, readability), write the lists / label map / report.
    ``splits``: each split with the on-disk path of each row (None: not found; the row's own path
    is then reported). Unreadable videos are left out of the lists and named in
    ``unreadable_<split>.txt``."""
    from omnisource.utils.io import atomic_write_json, atomic_write_text

    _check_out(out, force)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "label_map.txt", "".join(c + "\n" for c in classes))
    report: dict[str, Any] = {"dataset": dataset, "data_root": str(src), "classes": len(classes),
                              "multi_label": multi_label, "splits": {}}
    lists: dict[str, Path] = {}
    for split, found in splits:
        lines, missing = [], []
        bad = (_unreadable(src, [d for d in found if d is not None], int(PROBE["workers"]))
               if PROBE["enabled"] else {})
        for (path, labels), disk in zip(split.rows, found):
            if disk is None:
                missing.append(path)
                continue
            if disk in bad:
                continue
            toks = [disk]
            if split.kind == "rawframes":
                toks.append(str(count_frames(src / disk)))
            toks += [str(x) for x in labels]
            lines.append(" ".join(toks))
        name = out / f"{dataset}_{split.name}_list_{'rawframes' if split.kind == 'rawframes' else 'videos'}.txt"
        atomic_write_text(name, "".join(x + "\n" for x in lines))
        atomic_write_text(out / f"missing_{split.name}.txt", "".join(x + "\n" for x in missing))
        if PROBE["enabled"]:
            atomic_write_text(out / f"unreadable_{split.name}.txt", "".join(f"{p}\t{r}\n" for p, r in bad.items()))
        lists[split.name] = name
        report["splits"][split.name] = {"listed": len(split.rows), "found": len(lines), "missing": len(missing),
                                        "list": name.name, "annotations": split.source}
        if PROBE["enabled"]:
            report["splits"][split.name]["unreadable"] = len(bad)
    for fname, text in (extra_files or {}).items():
        atomic_write_text(out / fname, text)
    atomic_write_json(out / "prepare_report.json", report)
    return Prepared(dataset, out, lists, report)
