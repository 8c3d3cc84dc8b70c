"""Annotation files: every mmaction2 list format plus omnisource's JSONL manifest.

Existing datasets must work unchanged, so the mmaction2 text formats are read exactly as
mmaction2 reads them (whitespace separated, first field the path relative to the data root):

==================  ==========================================================================
``video``           ``path [label ...]``                      (VideoDataset; >1 label = multi-label)
``image``           ``path [label ...]``                      (same syntax, the path is an image)
``rawframes``       ``frame_dir total_frames [label ...]``    (RawframeDataset)
                    ``frame_dir offset total_frames [label ...]``   (``with_offset=True``)
``audio``           ``features.npy total_frames [label ...]`` (AudioDataset: log-mel spectrograms,
                    ``total_frames`` of the video they come from)
``untrimmed``       ``video_dir label num_clips [pos_clip_ind ...]`` (0.x RawVideoDataset, OmniSource)
``untrimmed_json``  ``[{"video_dir", "label", "num_clips", "positive_clip_inds"}, ...]``
``manifest``        JSONL, one :class:`ManifestRecord` per line (schema below)
==================  ==========================================================================

Note on ``untrimmed``: mmaction2's ``RawVideoDataset`` reads ``video_dir label num_clips
pos...`` (label *before* num_clips; see its docstring and ``rawvideo_test_anno.txt`` =
``rawvideo_dataset 1 2 0`` next to the JSON form with ``label: 1, num_clips: 2``). That order
is used here.

A line with no label (mmaction2 writes ``-1`` or nothing, for unlabelled test lists) gives
``label=None``. Blank lines and lines starting with ``#`` are skipped. Back-slashes in paths
(lists written on Windows) are read as ``/``.

Why several formats share one syntax, and how :func:`detect_format` tells them apart
-----------------------------------------------------------------------------------
``test.mp4 0 3`` (a multi-label video line) and ``abseiling/x.mp4 300 0`` (a rawframe line
whose folder name ends in .mp4, as in PaddleVideo's lists) have the same shape; so do
``imgs 2 5 127`` (rawframes with offset) and ``rawvideo_dataset 1 2 0`` (untrimmed). mmaction2
avoids the question by making the user pick the dataset class and ``with_offset`` /
``multi_class`` flags. Here the format is guessed from content (rules in :func:`detect_format`;
looking at the data root when one is given settles every case) and can always be forced with
``format=`` / ``with_offset=`` / ``multi_label=``.

Manifest schema (``schema_version`` 1)
-------------------------------------
Each line is a JSON object carrying ``"schema_version": 1`` and the fields of
:class:`ManifestRecord`. A line holding *only* ``schema_version`` (and optionally ``format`` /
``meta``) is a header: it sets the version of the lines after it, so files can be concatenated
(``cat shard-*.jsonl``). A record with no version anywhere is read as version 1. Unknown keys
are errors (a typo such as ``"lable"`` must not silently drop a label); a newer version than
this omnisource understands is an error asking for an upgrade.

``label`` is an ``int`` (hard pseudo-label) or a list of floats (soft label, one per class);
absent means "not labelled yet" (consumers fall back to ``query_label``). ``frame_inds`` are
absolute frame numbers of the selected frames, ``segment`` a ``[start, end]`` window in
seconds, ``clips`` the indices of the chosen clips for ``kind: untrimmed`` records whose
``path`` is a folder of pre-cut clips (``meta.num_clips`` optional).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import posixpath
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from omnisource.errors import InputError
from omnisource.utils.io import atomic_open

logger = logging.getLogger("omnisource.data.annotations")

SCHEMA_VERSION = 1
FORMATS = ("video", "rawframes", "image", "audio", "untrimmed", "untrimmed_json", "manifest")
MANIFEST_KINDS = ("image", "video", "untrimmed")

VIDEO_EXTS = frozenset(
    ".mp4 .avi .mkv .webm .mov .m4v .mpg .mpeg .flv .wmv .3gp .ogv .ts .mts .m2ts .gif .vob".split())
IMAGE_EXTS = frozenset(".jpg .jpeg .png .bmp .webp .tif .tiff .ppm .pgm .jfif .mpo".split())
AUDIO_EXTS = frozenset({".npy"})     # spectrogram features (omnisource extract-audio, mmaction2's tool)


class DuplicateEntryWarning(UserWarning):
    """The same sample appears more than once in an annotation file (kept, but usually a bug)."""


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One row of any annotation file, normalised.

    ``path`` is relative to the data root (forward slashes). ``label`` is a list only for
    multi-label files; ``soft_label`` (manifest only) holds a per-class distribution.
    """

    path: str
    label: int | list[int] | None
    kind: str
    total_frames: int | None = None
    offset: int = 0
    num_clips: int | None = None
    pos_clip_inds: list[int] | None = None
    frame_inds: list[int] | None = None
    segment: tuple[float, float] | None = None
    source: str | None = None
    score: float | None = None
    line: int | None = None
    file: str | None = None
    soft_label: list[float] | None = None  # additive to the contract: manifest soft labels

    @property
    def where(self) -> str:
        """``file:line`` for messages."""
        if self.file is None:
            return self.path
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass
class ManifestRecord:
    """One web sample in an omnisource JSONL manifest (see the module docstring for the schema).

    ``file`` / ``line`` say where the record was read from; they are not written back.
    """

    path: str
    source: str
    kind: str
    query_label: int | str | None
    label: int | list[float] | None = None
    score: float | None = None
    frame_inds: list[int] | None = None
    clips: list[int] | None = None
    segment: tuple[float, float] | None = None
    sha1: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written for this record (``None`` optional fields are omitted)."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "path": self.path,
                               "source": self.source, "kind": self.kind,
                               "query_label": self.query_label}
        for key in ("label", "score", "frame_inds", "clips", "segment", "sha1"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if key == "segment" else value
        if self.meta:
            out["meta"] = self.meta
        return out

    def to_sample(self) -> Sample:
        """A :class:`Sample` view (``label`` falls back to ``query_label`` when unlabelled)."""
        hard: int | None = None
        soft: list[float] | None = None
        if isinstance(self.label, list):
            soft = list(self.label)
        elif self.label is not None:
            hard = self.label
        elif isinstance(self.query_label, int):
            hard = self.query_label
        num_clips = self.meta.get("num_clips") if isinstance(self.meta, dict) else None
        return Sample(path=self.path, label=hard, kind=self.kind, num_clips=num_clips,
                      pos_clip_inds=None if self.clips is None else list(self.clips),
                      frame_inds=None if self.frame_inds is None else list(self.frame_inds),
                      segment=self.segment, source=self.source, score=self.score,
                      line=self.line, file=self.file, soft_label=soft)


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def normalise_rel_path(rel: str, file: str | Path | None = None, line: int | None = None) -> str:
    """Check that ``rel`` stays inside the data root and return it with ``/`` separators.

    Rejected (InputError naming file:line): absolute paths (``/x``, ``C:\\x``, ``\\\\server``),
    and paths whose ``..`` components climb out of the root. ``a/../b`` is fine (it stays in).
    """
    if not rel:
        raise InputError("empty path", file, line)
    p = rel.replace("\\", "/")
    if p.startswith("/") or _DRIVE.match(rel) or rel.startswith("\\\\"):
        raise InputError(f"absolute path {rel!r} not allowed: paths are relative to the data root",
                         file, line)
    norm = posixpath.normpath(p)
    if norm == ".." or norm.startswith("../"):
        raise InputError(f"path {rel!r} escapes the data root ('..')", file, line)
    return p


def resolve_path(data_root: str | Path, rel: str, file: str | Path | None = None,
                 line: int | None = None) -> Path:
    """``data_root / rel`` after checking ``rel`` cannot escape the root (see above).

    Symlinks inside the root are followed as-is: data roots are commonly links to storage.
    """
    return Path(data_root) / posixpath.normpath(normalise_rel_path(rel, file, line))


# --------------------------------------------------------------------------------------------
# web lists (omnisource run --data DIR: DIR/web/{images,videos,untrimmed}/list.txt)
# --------------------------------------------------------------------------------------------
@dataclass
class WebRow:
    """One ``path query_label`` row of a web list, the query label resolved to a class."""

    path: str          # relative to the list's folder, '/'-separated
    label: int         # the class index the query label names
    line: int          # 1-based line in the list


def read_web_list(path: str | Path, class_names: Sequence[str]) -> list[WebRow]:
    """Rows of a web list: ``path query_label`` where the query label is a class index or a
    class name (tab-separated, or separated by the last run of spaces so paths may hold spaces).

    Why one parser: the check, ingest and training stages of ``omnisource run`` read the same
    lists, and the check stage used to reject names the others accepted. Errors name file:line:
    a missing label, an index outside the label map, a name that is no class."""
    path = Path(path)
    names = list(class_names)
    by_name: dict[str, int] = {}
    for i, n in enumerate(names):
        by_name.setdefault(n, i)
        by_name.setdefault(n.strip().lower(), i)
    rows: list[WebRow] = []
    with open(path, encoding="utf-8") as fh:
        for ln, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split("\t") if "\t" in line else line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].strip():
                raise InputError("expected 'path query_label' (a class index or name after the path)", path, ln)
            rel, q = parts[0].strip(), parts[1].strip()
            rel = normalise_rel_path(rel, path, ln)
            if q.lstrip("-").isdigit():
                k = int(q)
                if not 0 <= k < len(names):
                    raise InputError(f"query label {k} outside the label map (0..{len(names) - 1})", path, ln)
            else:
                k = by_name.get(q, by_name.get(q.lower(), -1))
                if k < 0:
                    near = difflib.get_close_matches(q, names, n=1)
                    hint = f" (did you mean {near[0]!r}?)" if near else ""
                    raise InputError(f"query label {q!r} is not a class of the label map{hint}", path, ln)
            rows.append(WebRow(rel, k, ln))
    return rows


# --------------------------------------------------------------------------------------------
# label map
# --------------------------------------------------------------------------------------------
_INDEXED = re.compile(r"^(\d+)\s+(\S.*)$")


def read_label_map(path: str | Path) -> list[str]:
    """Class names, one per line, line order = class index (mmaction2 ``label_map*.txt``).

    Also accepts the PaddleVideo form ``<index> <name>`` when *every* line starts with its
    0-based index in order. Blank lines inside the map are errors (they would shift every
    later index); trailing blank lines are ignored. Duplicate names warn.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError("label map not found", path) from None
    except UnicodeDecodeError as err:
        raise InputError(f"label map is not UTF-8 text ({err.reason})", path) from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError("label map is empty", path)
    names = [ln.strip() for ln in lines]
    for i, name in enumerate(names, 1):
        if not name:
            raise InputError("blank line inside the label map (would shift class indices)", path, i)
    matches = [_INDEXED.match(n) for n in names]
    if all(m is not None for m in matches) and all(int(m.group(1)) == i for i, m in enumerate(matches)):
        names = [m.group(2).strip() for m in matches]  # type: ignore[union-attr]
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if name in seen:
            warnings.warn(f"{path}:{i}: class name {name!r} repeats line {seen[name]}",
                          DuplicateEntryWarning, stacklevel=2)
        seen.setdefault(name, i)
    return names


# --------------------------------------------------------------------------------------------
# text reading helpers
# --------------------------------------------------------------------------------------------
def _open_text(path: Path) -> IO[str]:
    try:
        return open(path, encoding="utf-8-sig", newline=None)
    except FileNotFoundError:
        raise InputError("annotation file not found", path) from None
    except IsADirectoryError:
        raise InputError("annotation file is a directory", path) from None


def _text_rows(path: Path, limit: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, whitespace-split fields) for every non-blank, non-comment line."""
    with _open_text(path) as fh:
        n = 0
        try:
            for lineno, raw in enumerate(fh, 1):
                s = raw.strip()
                if not s or s.startswith("#"):
                    continue
                yield lineno, s.split()
                n += 1
                if limit is not None and n >= limit:
                    return
        except UnicodeDecodeError as err:
            raise InputError(f"not UTF-8 text ({err.reason})", path) from None


def _int_field(tok: str, what: str, file: Path, line: int) -> int:
    try:
        return int(tok)
    except ValueError:
        raise InputError(f"{what} must be an integer, got {tok!r}", file, line) from None


def _first_char(path: Path) -> str:
    with _open_text(path) as fh:
        try:
            while True:
                ch = fh.read(1)
                if not ch:
                    return ""
                if not ch.isspace():
                    return ch
        except UnicodeDecodeError as err:
            raise InputError(f"not UTF-8 text ({err.reason})", path) from None


def _ext(p: str) -> str:
    return posixpath.splitext(p.replace("\\", "/"))[1].lower()


# --------------------------------------------------------------------------------------------
# format detection
# --------------------------------------------------------------------------------------------
def detect_format(path: str | Path, data_root: str | Path | None = None) -> str:
    """Recognise an annotation file's format from its content.

    Rules, in order (the first that applies wins):

    1. first non-blank character ``{`` -> ``manifest`` (JSONL); ``[`` -> ``untrimmed_json``.
    2. text lists (first 200 rows): every field after the path must be an integer.
    3. every path has an image extension -> ``image``; every path a ``.npy`` -> ``audio``.
    4. ``data_root`` given and a listed path exists there: a file -> ``video`` (``image`` for
       image extensions); a folder holding ``part_0.*`` style clips -> ``untrimmed``; another
       folder -> ``rawframes``.
    5. paths with video extensions -> ``video``, except when every row has exactly three fields
       and some row has ``field1 >= field2`` (a frame count followed by a label, as in
       PaddleVideo's ``val_small_frames.list``; a multi-label row lists distinct labels
       ascending) -> ``rawframes``.
    6. paths without an extension (folders): at most two fields -> ``video``; else ``rawframes``.

    Without a data root, an untrimmed txt list looks like rawframes-with-offset; pass
    ``data_root`` or ``format='untrimmed'`` for those.
    """
    path = Path(path)
    first = _first_char(path)
    if first == "":
        raise InputError("annotation file is empty", path)
    if first == "{":
        return "manifest"
    if first == "[":
        return "untrimmed_json"
    rows = list(_text_rows(path, limit=200))
    for lineno, fields in rows:
        for tok in fields[1:]:
            if not re.fullmatch(r"-?\d+", tok):
                raise InputError(
                    f"not a recognised annotation list: field {tok!r} after the path is not an "
                    "integer (formats: video, rawframes, image, untrimmed, untrimmed_json, manifest)",
                    path, lineno)
    exts = {_ext(f[0]) for _, f in rows}
    if exts and exts <= IMAGE_EXTS:
        return "image"
    if exts and exts <= AUDIO_EXTS:
        return "audio"
    if data_root is not None:
        guess = _detect_from_root(rows, Path(data_root))
        if guess is not None:
            return guess
    if exts and exts <= (VIDEO_EXTS | IMAGE_EXTS):
        if all(len(f) == 3 for _, f in rows) and any(int(f[1]) >= int(f[2]) for _, f in rows):
            return "rawframes"
        return "video"
    if all(len(f) <= 2 for _, f in rows):
        return "video"
    return "rawframes"


def _detect_from_root(rows: list[tuple[int, list[str]]], root: Path) -> str | None:
    for lineno, fields in rows[:20]:
        try:
            p = root / normalise_rel_path(fields[0])
        except InputError:
            continue
        if p.is_file():
            return "image" if _ext(fields[0]) in IMAGE_EXTS else "video"
        if p.is_dir():
            try:
                names = [e.name for e in os.scandir(p)][:2000]
            except OSError:
                continue
            if any(re.match(r"^[A-Za-z_]*_?0\.[A-Za-z0-9]+$", n) and _ext(n) in VIDEO_EXTS for n in names):
                return "untrimmed"
            return "rawframes"
    return None


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def load_annotations(path: str | Path, format: str | None = None, label_map: Sequence[str] | str | Path | None = None,
                     num_classes: int | None = None, *, with_offset: bool | None = None,
                     multi_label: bool | None = None, data_root: str | Path | None = None) -> list[Sample]:
    """Read any supported annotation file into :class:`Sample` rows.

    ``label_map`` (names, or a label-map file) or ``num_classes`` bound the labels: a label
    outside ``[0, num_classes)`` is an error naming file:line. ``with_offset`` /
    ``multi_label`` settle the rawframe variants (guessed when None: a file whose rows all have
    exactly four fields is read with offsets, since mmaction2's with-offset lists look like
    that; any row with more labels makes the file multi-label). ``data_root`` only helps
    :func:`detect_format`. Duplicate entries warn (:class:`DuplicateEntryWarning`).
    """
    path = Path(path)
    if format is None:
        format = detect_format(path, data_root)
        logger.debug("%s: detected format %r", path, format)
    if format not in FORMATS:
        raise InputError(f"unknown annotation format {format!r} (one of {', '.join(FORMATS)})", path)
    if isinstance(label_map, (str, Path)):
        label_map = read_label_map(label_map)
    if label_map is not None:
        if num_classes is not None and num_classes != len(label_map):
            raise InputError(f"num_classes={num_classes} but the label map has {len(label_map)} names", path)
        num_classes = len(label_map)
    if format in ("video", "image"):
        samples = _load_video_like(path, format, multi_label)
    elif format == "rawframes":
        samples = _load_rawframes(path, with_offset, multi_label)
    elif format == "audio":
        samples = [dataclasses.replace(s, kind="audio") for s in _load_rawframes(path, False, multi_label)]
    elif format == "untrimmed":
        samples = _load_untrimmed_txt(path)
    elif format == "untrimmed_json":
        samples = _load_untrimmed_json(path)
    else:
        samples = [rec.to_sample() for rec in iter_manifest(path, label_map=label_map)]
    _check_labels(samples, num_classes, path)
    _warn_duplicates(samples, path)
    return samples


def _labels(fields: list[str], path: Path, line: int) -> list[int]:
    labels = [_int_field(t, "label", path, line) for t in fields]
    if labels == [-1]:
        return []  # mmaction2's "no label"
    return labels


def _load_video_like(path: Path, kind: str, multi_label: bool | None) -> list[Sample]:
    rows = []
    any_multi = False
    for line, fields in _text_rows(path):
        rel = normalise_rel_path(fields[0], path, line)
        bad = next((t for t in fields[1:] if not t.lstrip("-").isdigit()), None)
        if bad is not None and len(fields) > 2:
            # `my clip.mp4 3` splits into three fields: name the real problem
            raise InputError(f"label must be an integer, got {bad!r}: is this a path with spaces? "
                             f"mmaction2 lists split fields on whitespace (rename the file, or use a "
                             f"JSONL manifest)", path, line)
        labels = _labels(fields[1:], path, line)
        if len(labels) > 1:
            if multi_label is False:
                raise InputError(f"{len(labels)} labels on a line but multi_label=False", path, line)
            any_multi = True
        rows.append((line, rel, labels))
    multi = any_multi if multi_label is None else multi_label
    return [Sample(path=rel, label=_pack_label(labels, multi), kind=kind, line=line, file=str(path))
            for line, rel, labels in rows]


def _pack_label(labels: list[int], multi: bool) -> int | list[int] | None:
    if multi:
        return labels if labels else None
    return labels[0] if labels else None


def _load_rawframes(path: Path, with_offset: bool | None, multi_label: bool | None) -> list[Sample]:
    rows = list(_text_rows(path))
    if with_offset is None:
        with_offset = bool(rows) and all(len(f) == 4 for _, f in rows) and multi_label is not True
        if with_offset:
            logger.info("%s: every row has 4 fields, reading 'frame_dir offset total_frames label' "
                        "(pass with_offset=False for two-label multi-label rows)", path)
    need = 3 if with_offset else 2
    parsed = []
    any_multi = False
    for line, fields in rows:
        if len(fields) < need:
            layout = "frame_dir offset total_frames label" if with_offset else "frame_dir total_frames label"
            raise InputError(f"expected '{layout}', got {len(fields)} field(s)", path, line)
        rel = normalise_rel_path(fields[0], path, line)
        offset = _int_field(fields[1], "offset", path, line) if with_offset else 0
        total = _int_field(fields[need - 1], "total_frames", path, line)
        if total < 0 or offset < 0:
            raise InputError("offset and total_frames must be >= 0", path, line)
        labels = _labels(fields[need:], path, line)
        if len(labels) > 1:
            if multi_label is False:
                raise InputError(f"{len(labels)} labels on a line but multi_label=False", path, line)
            any_multi = True
        parsed.append((line, rel, offset, total, labels))
    multi = any_multi if multi_label is None else multi_label
    return [Sample(path=rel, label=_pack_label(labels, multi), kind="rawframes", total_frames=total,
                   offset=offset, line=line, file=str(path))
            for line, rel, offset, total, labels in parsed]


def _untrimmed_sample(rel: str, label: int, num_clips: int, pos: list[int], path: Path, line: int) -> Sample:
    if num_clips < 1:
        raise InputError(f"num_clips must be >= 1, got {num_clips}", path, line)
    bad = [i for i in pos if not 0 <= i < num_clips]
    if bad:
        raise InputError(f"positive clip index {bad[0]} outside [0, {num_clips})", path, line)
    return Sample(path=rel, label=None if label == -1 else label, kind="untrimmed", num_clips=num_clips,
                  pos_clip_inds=pos, line=line, file=str(path))


def _load_untrimmed_txt(path: Path) -> list[Sample]:
    out = []
    for line, fields in _text_rows(path):
        if len(fields) < 3:
            raise InputError(f"expected 'video_dir label num_clips [pos_clip_ind ...]', got {len(fields)} field(s)",
                             path, line)
        rel = normalise_rel_path(fields[0], path, line)
        label = _int_field(fields[1], "label", path, line)
        num_clips = _int_field(fields[2], "num_clips", path, line)
        pos = [_int_field(t, "pos_clip_ind", path, line) for t in fields[3:]]
        out.append(_untrimmed_sample(rel, label, num_clips, pos, path, line))
    return out


def _iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """(line where the element starts, element) of a top-level JSON array.

    Elements are decoded one by one so errors and rows keep real line numbers.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason})", path) from None
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()  # type: ignore[union-attr]

    def line_at(p: int) -> int:
        return text.count("\n", 0, p) + 1

    if text[pos:pos + 1] != "[":
        raise InputError("expected a JSON array of objects", path, line_at(pos))
    pos = ws.match(text, pos + 1).end()  # type: ignore[union-attr]
    if text[pos:pos + 1] == "]":
        return
    while True:
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise InputError(f"invalid JSON: {err.msg}", path, err.lineno) from None
        yield line_at(pos), obj
        pos = ws.match(text, end).end()  # type: ignore[union-attr]
        ch = text[pos:pos + 1]
        if ch == "]":
            rest = text[pos + 1:].strip()
            if rest:
                raise InputError("unexpected content after the JSON array", path, line_at(pos + 1))
            return
        if ch != ",":
            raise InputError("invalid JSON: expected ',' or ']'", path, line_at(pos))
        pos = ws.match(text, pos + 1).end()  # type: ignore[union-attr]


def _load_untrimmed_json(path: Path) -> list[Sample]:
    out = []
    for line, obj in _iter_json_array(path):
        if not isinstance(obj, dict):
            raise InputError("each entry must be an object with video_dir/label/num_clips/positive_clip_inds",
                             path, line)
        missing = [k for k in ("video_dir", "label", "num_clips") if k not in obj]
        if missing:
            raise InputError(f"entry lacks {', '.join(missing)}", path, line)
        pos = obj.get("positive_clip_inds", [])
        if not isinstance(pos, list) or not all(_is_int(i) for i in pos):
            raise InputError("positive_clip_inds must be a list of integers", path, line)
        for key in ("label", "num_clips"):
            if not _is_int(obj[key]):
                raise InputError(f"{key} must be an integer, got {obj[key]!r}", path, line)
        if not isinstance(obj["video_dir"], str):
            raise InputError("video_dir must be a string", path, line)
        rel = normalise_rel_path(obj["video_dir"], path, line)
        out.append(_untrimmed_sample(rel, obj["label"], obj["num_clips"], list(pos), path, line))
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_labels(samples: list[Sample], num_classes: int | None, path: Path) -> None:
    if num_classes is None:
        for s in samples:
            labels = s.label if isinstance(s.label, list) else ([] if s.label is None else [s.label])
            if any(lb < 0 for lb in labels):
                raise InputError(f"negative label {min(labels)}", path, s.line)
        return
    for s in samples:
        labels = s.label if isinstance(s.label, list) else ([] if s.label is None else [s.label])
        for lb in labels:
            if not 0 <= lb < num_classes:
                raise InputError(f"label {lb} outside the label map (0..{num_classes - 1})", path, s.line)
        if s.soft_label is not None and len(s.soft_label) != num_classes:
            raise InputError(f"soft label has {len(s.soft_label)} values, expected {num_classes}", path, s.line)


def _dup_key(s: Sample) -> tuple:
    return (s.path, s.offset, tuple(s.frame_inds or ()), s.segment)


def _warn_duplicates(samples: list[Sample], path: Path, show: int = 5) -> None:
    """One warning per file listing the first few repeats (a long list must not flood logs)."""
    first: dict[tuple, int | None] = {}
    dups: list[str] = []
    for s in samples:
        key = _dup_key(s)
        if key in first:
            dups.append(f"line {s.line} repeats line {first[key]} ({s.path})")
        else:
            first[key] = s.line
    if dups:
        more = f" and {len(dups) - show} more" if len(dups) > show else ""
        warnings.warn(f"{path}: {len(dups)} duplicate entr{'y' if len(dups) == 1 else 'ies'}: "
                      + "; ".join(dups[:show]) + more, DuplicateEntryWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _label_tokens(label: int | list[int] | None) -> list[str]:
    if label is None:
        return []
    if isinstance(label, list):
        return [str(int(x)) for x in label]
    return [str(int(label))]


def _check_writable_path(p: str, dest: Path, i: int) -> str:
    if any(ch.isspace() for ch in p):
        raise InputError(f"sample {i}: path {p!r} contains whitespace, which mmaction2 text lists "
                         "cannot hold (use a JSONL manifest)", dest)
    return normalise_rel_path(p, dest)


def write_annotations(path: str | Path, samples: Iterable[Sample | ManifestRecord], format: str, *,
                      with_offset: bool | None = None) -> None:
    """Write ``samples`` in ``format``, atomically (readers never see a half-written list).

    Rawframe lists get the offset column when ``with_offset`` is True, or when it is None and
    some sample has a non-zero offset. Unlabelled samples are written without labels, except in
    rawframe lists with offsets and untrimmed lists, where mmaction2's ``-1`` keeps columns
    aligned.
    """
    path = Path(path)
    if format not in FORMATS:
        raise InputError(f"unknown annotation format {format!r} (one of {', '.join(FORMATS)})", path)
    items = list(samples)
    if format == "manifest":
        with atomic_open(path, "w") as fh:
            for s in items:
                rec = s if isinstance(s, ManifestRecord) else sample_to_record(s)
                _validate_record(rec, path, None)
                fh.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
        return
    samples_ = [s.to_sample() if isinstance(s, ManifestRecord) else s for s in items]
    if format == "untrimmed_json":
        entries = []
        for i, s in enumerate(samples_):
            if s.num_clips is None:
                raise InputError(f"sample {i} ({s.path}) has no num_clips", path)
            entries.append({"video_dir": normalise_rel_path(s.path, path),
                            "label": -1 if s.label is None else int(s.label),  # type: ignore[arg-type]
                            "num_clips": int(s.num_clips),
                            "positive_clip_inds": [int(x) for x in (s.pos_clip_inds or [])]})
        with atomic_open(path, "w") as fh:
            json.dump(entries, fh, indent=2)
            fh.write("\n")
        return
    if format == "rawframes" and with_offset is None:
        with_offset = any(s.offset for s in samples_)
    lines = []
    for i, s in enumerate(samples_):
        p = _check_writable_path(s.path, path, i)
        if format in ("video", "image"):
            toks = [p, *_label_tokens(s.label)]
        elif format in ("rawframes", "audio"):
            if s.total_frames is None:
                raise InputError(f"sample {i} ({s.path}) has no total_frames", path)
            labels = _label_tokens(s.label) or (["-1"] if with_offset else [])
            toks = [p, *([str(s.offset)] if with_offset else []), str(s.total_frames), *labels]
        else:  # untrimmed txt
            if s.num_clips is None:
                raise InputError(f"sample {i} ({s.path}) has no num_clips", path)
            if isinstance(s.label, list):
                raise InputError(f"sample {i} ({s.path}): untrimmed lists are single-label", path)
            toks = [p, str(-1 if s.label is None else s.label), str(s.num_clips),
                    *(str(x) for x in (s.pos_clip_inds or []))]
        lines.append(" ".join(toks))
    with atomic_open(path, "w") as fh:
        fh.write("".join(ln + "\n" for ln in lines))


def sample_to_record(s: Sample, source: str | None = None) -> ManifestRecord:
    """A manifest record for a list row (``query_label`` = its label; multi-label not allowed)."""
    if isinstance(s.label, list):
        raise InputError(f"{s.where}: multi-label rows cannot become manifest records")
    kind = {"rawframes": "video"}.get(s.kind, s.kind)
    if kind not in MANIFEST_KINDS:
        raise InputError(f"{s.where}: kind {s.kind!r} has no manifest equivalent")
    return ManifestRecord(path=s.path, source=source or s.source or "list", kind=kind, query_label=s.label,
                          label=s.soft_label if s.soft_label is not None else s.label, score=s.score,
                          frame_inds=s.frame_inds, clips=s.pos_clip_inds, segment=s.segment,
                          meta={"num_clips": s.num_clips} if s.num_clips is not None else {})


# --------------------------------------------------------------------------------------------
# manifest reading
# --------------------------------------------------------------------------------------------
_RECORD_KEYS = {f.name for f in dataclasses.fields(ManifestRecord)} - {"file", "line"}
_HEADER_KEYS = {"schema_version", "format", "meta"}


def _validate_record(rec: ManifestRecord, file: str | Path | None, line: int | None) -> None:
    def bad(msg: str) -> InputError:
        return InputError(msg, file, line)

    if not isinstance(rec.path, str) or not rec.path:
        raise bad("'path' must be a non-empty string")
    rec.path = normalise_rel_path(rec.path, file, line)
    if not isinstance(rec.source, str) or not rec.source:
        raise bad("'source' must be a non-empty string")
    if rec.kind not in MANIFEST_KINDS:
        raise bad(f"'kind' must be one of {', '.join(MANIFEST_KINDS)}, got {rec.kind!r}")
    if rec.query_label is not None and not (_is_int(rec.query_label) or isinstance(rec.query_label, str)):
        raise bad("'query_label' must be a class index, a class name or null")
    if rec.label is not None:
        if isinstance(rec.label, list):
            if not rec.label or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                        and math.isfinite(x) and x >= 0 for x in rec.label):
                raise bad("soft 'label' must be a non-empty list of finite non-negative numbers")
            rec.label = [float(x) for x in rec.label]
        elif not _is_int(rec.label):
            raise bad(f"'label' must be an integer or a list of per-class weights, got {rec.label!r}")
    if rec.score is not None:
        if isinstance(rec.score, bool) or not isinstance(rec.score, (int, float)) or not math.isfinite(rec.score):
            raise bad(f"'score' must be a finite number, got {rec.score!r}")
        rec.score = float(rec.score)
    for key in ("frame_inds", "clips"):
        v = getattr(rec, key)
        if v is not None and (not isinstance(v, list) or not all(_is_int(x) and x >= 0 for x in v)):
            raise bad(f"'{key}' must be a list of non-negative integers")
    if rec.frame_inds == []:
        raise bad("'frame_inds' is empty")
    if rec.segment is not None:
        seg = rec.segment
        if (not isinstance(seg, (list, tuple)) or len(seg) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in seg)
                or not 0 <= seg[0] < seg[1]):
            raise bad(f"'segment' must be [start, end] seconds with 0 <= start < end, got {seg!r}")
        rec.segment = (float(seg[0]), float(seg[1]))
    if rec.sha1 is not None and not (isinstance(rec.sha1, str) and re.fullmatch(r"[0-9a-f]{40}", rec.sha1)):
        raise bad("'sha1' must be 40 lowercase hex digits")
    if not isinstance(rec.meta, dict):
        raise bad("'meta' must be an object")


def _record_from_obj(obj: Any, file: str, line: int) -> ManifestRecord:
    unknown = sorted(set(obj) - _RECORD_KEYS - {"schema_version"})
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(map(repr, unknown))} in manifest record", file, line)
    missing = [k for k in ("path", "source", "kind") if k not in obj]
    if missing:
        raise InputError(f"manifest record lacks {', '.join(missing)}", file, line)
    rec = ManifestRecord(path=obj["path"], source=obj["source"], kind=obj["kind"],
                         query_label=obj.get("query_label"), label=obj.get("label"), score=obj.get("score"),
                         frame_inds=obj.get("frame_inds"), clips=obj.get("clips"), segment=obj.get("segment"),
                         sha1=obj.get("sha1"), meta=obj.get("meta") or {}, file=file, line=line)
    _validate_record(rec, file, line)
    return rec


def iter_manifest(path: str | Path, label_map: Sequence[str] | None = None) -> Iterator[ManifestRecord]:
    """Stream records of a JSONL manifest (constant memory; errors name file:line).

    With ``label_map``, string ``query_label`` / ``label`` class names are turned into indices.
    """
    path = Path(path)
    index = None if label_map is None else {n: i for i, n in enumerate(label_map)}
    version = None
    with _open_text(path) as fh:
        lineno = 0
        while True:
            try:
                raw = fh.readline()
            except UnicodeDecodeError as err:
                raise InputError(f"not UTF-8 text ({err.reason})", path, lineno + 1) from None
            if not raw:
                break
            lineno += 1
            s = raw.strip()
            if not s:
                continue
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as err:
                hint = " (torn last line of an interrupted write?)" if not raw.endswith("\n") else ""
                raise InputError(f"invalid JSON: {err.msg}{hint}", path, lineno) from None
            if not isinstance(obj, dict):
                raise InputError("each manifest line must be a JSON object", path, lineno)
            v = obj.get("schema_version", version if version is not None else 1)
            if not _is_int(v) or v < 1:
                raise InputError(f"bad schema_version {v!r}", path, lineno)
            if v > SCHEMA_VERSION:
                raise InputError(f"manifest schema_version {v} is newer than this omnisource understands "
                                 f"({SCHEMA_VERSION}); upgrade omnisource", path, lineno)
            if set(obj) <= _HEADER_KEYS and "schema_version" in obj:
                version = v  # header line
                continue
            rec = _record_from_obj(obj, str(path), lineno)
            if index is not None:
                for key in ("query_label", "label"):
                    val = getattr(rec, key)
                    if isinstance(val, str):
                        if val not in index:
                            raise InputError(f"{key} {val!r} is not in the label map", path, lineno)
                        setattr(rec, key, index[val])
            yield rec


# --------------------------------------------------------------------------------------------
# manifest writing: resumable append + atomic finalisation
# --------------------------------------------------------------------------------------------
def _default_key(rec: ManifestRecord) -> str:
    return rec.path


class ManifestWriter:
    """Append records to ``<path>.partial``; :meth:`finalize` renames it onto ``path``.

    Why this shape: offline stages run for hours and get killed. Everything written so far
    lives in the ``.partial`` file, flushed after every record; on re-open (``resume=True``)
    a torn trailing line (no newline, or undecodable JSON at the end) is truncated away and the
    keys of the complete records are loaded into :attr:`keys`, so the stage skips work already
    done (``if key in writer: continue``). ``path`` itself only ever appears complete
    (``os.replace`` after fsync), so "the final file exists" means "the stage finished".

    ``key`` maps a record to its identity (default: its path). Writing a key twice is skipped
    and returns False. Leaving the ``with`` block normally finalises; an exception leaves the
    ``.partial`` file for the next run to resume.
    """

    def __init__(self, path: str | Path, *, resume: bool = True,
                 key: Callable[[ManifestRecord], str] = _default_key, header_meta: dict | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.key = key
        self.keys: set[str] = set()
        self.written = 0  # records written by this writer (not counting resumed ones)
        self.resumed = 0
        self._fh: IO[str] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.partial.exists():
            self._recover()
        else:
            with open(self.partial, "w", encoding="utf-8") as fh:
                header = {"schema_version": SCHEMA_VERSION}
                if header_meta:
                    header["meta"] = header_meta
                fh.write(json.dumps(header) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open(self.partial, "a", encoding="utf-8")

    def _recover(self) -> None:
        with open(self.partial, "rb") as fh:
            data = fh.read()
        good_end = 0
        pos = 0
        lineno = 0
        records: list[tuple[int, bytes]] = []
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # torn last line: no newline
            records.append((lineno + 1, data[pos:nl]))
            lineno += 1
            pos = nl + 1
        # parse complete lines; an undecodable tail (e.g. NUL bytes after a crash) is dropped
        parsed: list[tuple[int, int, dict | None]] = []  # (lineno, end_offset, obj)
        offset = 0
        for ln, raw in records:
            offset += len(raw) + 1
            try:
                obj = json.loads(raw.decode("utf-8")) if raw.strip() else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                obj = Ellipsis  # type: ignore[assignment]
            parsed.append((ln, offset, obj))
        last_good = len(parsed)
        while last_good > 0 and parsed[last_good - 1][2] is Ellipsis:
            last_good -= 1
        for ln, _, obj in parsed[:last_good]:
            if obj is Ellipsis:
                raise InputError("corrupt line in the middle of a partial manifest; remove the file to restart",
                                 self.partial, ln)
        good_end = parsed[last_good - 1][1] if last_good else 0
        if good_end < len(data):
            logger.warning("%s: dropping %d byte(s) of a torn trailing record from an interrupted run",
                           self.partial, len(data) - good_end)
            with open(self.partial, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        if good_end == 0:
            with open(self.partial, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"schema_version": SCHEMA_VERSION}) + "\n")
        for rec in iter_manifest(self.partial):
            self.keys.add(self.key(rec))
            self.resumed += 1
        if self.resumed:
            logger.info("%s: resuming after %d record(s)", self.partial, self.resumed)

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def write(self, record: ManifestRecord) -> bool:
        """Append one record (validated); False when its key is already in the file."""
        if self._fh is None:
            raise RuntimeError("ManifestWriter is closed")
        k = self.key(record)
        if k in self.keys:
            return False
        _validate_record(record, self.partial, None)
        # one write() per complete line: a kill can tear at most the last line
        self._fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        self._fh.flush()
        self.keys.add(k)
        self.written += 1
        return True

    def close(self) -> None:
        """Flush and close without finalising (the ``.partial`` stays for a later resume)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def finalize(self) -> Path:
        """fsync and atomically rename ``.partial`` onto the final path."""
        self.close()
        os.replace(self.partial, self.path)
        try:  # make the rename durable
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        return self.path

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.close()


def read_manifest(path: str | Path, label_map: Sequence[str] | None = None) -> list[ManifestRecord]:
    """All records of a manifest (convenience over :func:`iter_manifest`)."""
    return list(iter_manifest(path, label_map=label_map))


__all__ = [
    "SCHEMA_VERSION", "FORMATS", "MANIFEST_KINDS", "VIDEO_EXTS", "IMAGE_EXTS", "DuplicateEntryWarning",
    "Sample", "ManifestRecord", "ManifestWriter", "read_label_map", "detect_format", "load_annotations",
    "write_annotations", "resolve_path", "normalise_rel_path", "iter_manifest", "read_manifest",
    "sample_to_record",
]
