"""Turn crawled files into a validated manifest (paper section 3.3: "we first remove invalid or
corrupted data").

Three ways in, one way out:

* **folders** ``<root>/<class name or query>/<files...>`` (files may sit in sub-folders);
* **a list** of ``path<TAB>query`` rows (paths relative to ``root``);
* **a URL list** of ``url<TAB>query`` rows, downloaded first (:mod:`omnisource.web.download`)
  into ``<out>/files`` by the ``download`` stage.

Queries map to classes through the queries TSV written by ``omnisource queries`` (any of a
class's queries) or directly through the label map (the folder is named after the class).
Matching ignores case and treats ``_`` / ``-`` / runs of spaces alike, so ``playing_guitar``,
``Playing Guitar`` and ``playing guitar`` are one class.

Every candidate then goes through the ``ingest`` stage (:mod:`omnisource.web.stage`:
streaming, resumable, sharded), which

* sniffs the real format from the first bytes (never trusting the extension),
* decodes it: images fully (``read_image``; EXIF orientation applied) with a minimum short
  side; videos are probed and one frame is decoded, with a minimum frame count,
* hashes the content (sha1) and records size / width / height / frames / fps / format in
  ``meta``.

Unreadable, too small or unmapped files are drops with a reason (``corrupt_image``,
``corrupt_video``, ``too_small``, ``too_short``, ``unknown_format``, ``empty``, ``missing``,
``unknown_query``, ``ambiguous_query``). Finally exact duplicates (same sha1) are dropped in a
streaming pass on rank 0, keeping the first occurrence in input order; their pairs go to
``duplicates.jsonl``. The pass keeps one sha1 per kept file in memory (~100 bytes each), the
only state that grows with the number of files.

Output folder::

    listing.jsonl          the candidates (folders / list input)
    download/              the download stage (URL input) and files/ with the downloads
    validate/              the validation stage (manifest.jsonl, dropped.jsonl, meta.json)
    manifest.jsonl         final manifest (paths relative to meta.json's data_root)
    duplicates.jsonl       {"path", "duplicate_of", "sha1"} for every exact duplicate dropped
    meta.json              counts (in / out / dropped by reason, per class and source), hashes
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from omnisource.errors import DataError, InputError
from omnisource.utils.io import atomic_open, atomic_write_json, sha1_file, sha1_json
from omnisource.data.decode.sniff import SNIFF_BYTES, media_kind
from omnisource.web.stage import (Outcome, dist_group, wait_for, dist_info, hash_and_count, manifest_header,
                                  record_class, record_source, run_stage)

log = logging.getLogger("omnisource.web.ingest")

_SEP = re.compile(r"[\s_\-]+")


def normalise_query(q: str) -> str:
    """Case- and separator-insensitive key for matching folder names / queries to classes."""
    return _SEP.sub(" ", q.strip().lower()).strip()


@dataclass
class QueryMap:
    """query text -> class index, with ambiguous queries remembered (they become drops)."""

    index: dict[str, int] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)
    num_classes: int = 0            # a bare class index (mmaction2 lists: ``path label``) is its class

    def add(self, query: str, cls: int) -> None:
        k = normalise_query(query)
        if k in self.ambiguous:
            return
        prev = self.index.setdefault(k, cls)
        if prev != cls:
            del self.index[k]
            self.ambiguous.add(k)

    def lookup(self, query: str | None) -> tuple[int | None, str | None]:
        """(class index, None) or (None, drop reason)."""
        if query is None:
            return None, "unknown_query"
        k = normalise_query(query)
        if k in self.ambiguous:
            return None, "ambiguous_query"
        if k in self.index:
            return self.index[k], None
        q = query.strip()
        if q.isdigit() and int(q) < self.num_classes:
            return int(q), None
        return None, "unknown_query"

    def digest(self) -> str:
        return sha1_json([sorted(self.index.items()), sorted(self.ambiguous)])


def build_query_map(class_names: Sequence[str], queries: Sequence[tuple[str, str]] | None = None) -> QueryMap:
    """Class names map to themselves; queries (class name, query) rows map to their class."""
    by_name = {}
    for i, n in enumerate(class_names):
        by_name.setdefault(normalise_query(n), i)
    qm = QueryMap(num_classes=len(class_names))
    for i, n in enumerate(class_names):
        qm.add(n, i)
    for cls_name, q in queries or ():
        i = by_name.get(normalise_query(cls_name))
        if i is None:
            raise InputError(f"queries file names class {cls_name!r}, which is not in the label map")
        # a query identical to another class's name would otherwise be silently ambiguous
        qm.add(q, i)
    return qm


# --------------------------------------------------------------------------------------------
# candidate listings
# --------------------------------------------------------------------------------------------
def _walk_sorted(top: Path) -> Iterator[Path]:
    """Files under ``top`` in a deterministic order (sorted per folder; hidden entries skipped).

    Symlinked folders are followed (crawls are often assembled from links) but each real
    folder is visited once, so a symlink cycle cannot loop forever.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and not f.endswith((".part", ".fail", ".tmp")):
                yield Path(dirpath) / f


def listing_from_folders(root: str | Path) -> Iterator[dict]:
    root = Path(root)
    if not root.is_dir():
        raise InputError("crawl folder not found", root)
    loose = [p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        log.warning("%s: %d file(s) directly in the crawl folder are ignored (no query folder), e.g. %s",
                    root, len(loose), sorted(loose)[0])
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in _walk_sorted(d):
            yield {"path": f.relative_to(root).as_posix(), "query": d.name}


def listing_from_list(list_file: str | Path, root: str | Path) -> Iterator[dict]:
    """Rows of a ``path<TAB>query`` file, or of an mmaction2 list (``path label``, the label a class
    index: the OmniSource release's image / video lists); paths relative to ``root`` (absolute ones
    inside it)."""
    from omnisource.data.annotations import normalise_rel_path

    list_file, root = Path(list_file), Path(root)
    if not list_file.is_file():
        raise InputError("file list not found", list_file)
    rroot = Path(os.path.abspath(root))   # lexical: symlinked files inside the root are fine
    with open(list_file, encoding="utf-8") as fh:
        for ln, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            # 'path<TAB>query', or an mmaction2 list row 'path label' (the OmniSource release's lists)
            parts = line.split("\t") if "\t" in line else line.rsplit(None, 1)
            if len(parts) != 2:
                raise InputError(f"expected 'path<TAB>query' or 'path label', got {len(parts)} column(s)",
                                 list_file, ln)
            p = parts[0].strip()
            if os.path.isabs(p):
                try:
                    p = Path(os.path.abspath(p)).relative_to(rroot).as_posix()
                except ValueError:
                    raise InputError(f"absolute path {p!r} is outside the data root {root}", list_file, ln) from None
            yield {"path": normalise_rel_path(p, list_file, ln), "query": parts[1].strip()}


def write_listing(path: Path, rows: Iterator[dict], qmap: QueryMap) -> int:
    """Write candidates (with their query label) atomically; returns the row count."""
    n = 0
    with atomic_open(path, "w") as fh:
        for row in rows:
            row["query_label"], why = qmap.lookup(row.get("query"))
            if why is not None:
                row["query_reason"] = why
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_listing(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for ln, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"invalid JSON: {err.msg}", path, ln) from None


# --------------------------------------------------------------------------------------------
# validating one file
# --------------------------------------------------------------------------------------------
@dataclass
class ValidateConfig:
    min_size: int = 32            # minimum short side of images and videos, pixels
    min_frames: int = 1           # minimum number of (declared / probed) frames of videos
    kinds: tuple[str, ...] = ("image", "video")
    source: str = "web"
    full_decode: bool = False     # decode every frame of videos (finds mid-stream damage)

    def to_dict(self) -> dict[str, Any]:
        return {"min_size": self.min_size, "min_frames": self.min_frames, "kinds": list(self.kinds),
                "source": self.source, "full_decode": self.full_decode}


def _read_image(path: Path):
    """decode.read_image: the project's reader (EXIF orientation, CMYK/greyscale -> RGB,
    decompression-bomb guard); DataError when the file cannot be decoded completely."""
    from omnisource.data.decode import read_image

    return read_image(path)


def _probe_video(path: Path, full: bool) -> dict[str, Any]:
    """{frames, fps, width, height, codec, duration}; DataError when broken.

    Default: open + index the packets + decode the first frame (``probe`` without decode) -
    what a dataset needs to sample from the file. ``full`` decodes every frame (damaged packets
    in the middle of a stream are found, at the cost of a full decode).
    """
    from omnisource.data.decode import open_video

    if full:
        # strict: a damaged frame raises instead of being replaced by its neighbour
        with open_video(str(path), strict=True) as reader:
            n = len(reader)
            try:
                for s in range(0, n, 8):
                    reader.get_frames(list(range(s, min(n, s + 8))))
            except DataError:
                raise
            except Exception as err:
                raise DataError(path, f"unreadable video: {type(err).__name__}: {err}") from None
    reader = open_video(str(path))
    try:
        info = reader.info
        n = len(reader)
        if n < 1:
            raise DataError(path, "no decodable frames")
        frame = reader.get_frames([0])
        return {"frames": int(n), "fps": info.fps, "width": int(frame.shape[2]), "height": int(frame.shape[1]),
                "codec": info.codec, "duration": info.duration}
    except DataError:
        raise
    except Exception as err:  # a decoder library error on a hostile file is bad data, not a bug
        raise DataError(path, f"unreadable video: {type(err).__name__}: {err}") from None
    finally:
        reader.close()


def validate_file(root: Path, row: dict, cfg: ValidateConfig, strict: bool = False) -> Outcome:
    """Check one candidate; returns an Outcome with a ManifestRecord or a drop reason.

    ``strict`` raises :class:`DataError` for unreadable files (missing, empty, corrupt) instead
    of dropping them; policy drops (too small, unknown query, not media) are never errors.
    """
    from omnisource.data.annotations import ManifestRecord

    rel = row["path"]
    path = root / rel
    extra = None
    if row.get("query_label") is None:
        reason = row.get("query_reason") or "unknown_query"
        return Outcome(None, reason, {"query": row.get("query")})
    try:
        st = path.stat()
    except OSError as err:
        if strict:
            raise DataError(path, f"missing: {err}") from None
        return Outcome(None, "missing", {"error": str(err)})
    if st.st_size == 0:
        if strict:
            raise DataError(path, "empty file")
        return Outcome(None, "empty")
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as err:
        if strict:
            raise DataError(path, f"unreadable: {err}") from None
        return Outcome(None, "unreadable", {"error": str(err)})
    s = media_kind(path, head)   # the project's one rule: an animated GIF is a video
    if s is None:
        return Outcome(None, "unknown_format")
    kind, fmt, _ = s
    if kind not in cfg.kinds:
        return Outcome(None, f"not_{'_'.join(cfg.kinds)}", {"kind": kind})
    meta: dict[str, Any] = {"query": row.get("query"), "bytes": st.st_size, "format": fmt}
    for k in ("url", "content_type"):
        if row.get(k) is not None:
            meta[k] = row[k]
    try:
        if kind == "image":
            img = _read_image(path)
            h, w = int(img.shape[0]), int(img.shape[1])
            meta.update(width=w, height=h)
        else:
            info = _probe_video(path, cfg.full_decode)
            h, w = info["height"], info["width"]
            meta.update({k: v for k, v in info.items() if v is not None})
            if (info.get("frames") or 0) < cfg.min_frames:
                return Outcome(None, "too_short", {"frames": info.get("frames")})
    except DataError as err:
        if strict:
            raise
        return Outcome(None, f"corrupt_{kind}", {"error": err.reason})
    except MemoryError:
        return Outcome(None, f"corrupt_{kind}", {"error": "out of memory while decoding"})
    if min(h, w) < cfg.min_size:
        return Outcome(None, "too_small", {"width": w, "height": h})
    rec = ManifestRecord(path=rel, source=cfg.source, kind=kind, query_label=int(row["query_label"]),
                         sha1=sha1_file(path), meta=meta)
    return Outcome(rec, None, extra)


# --------------------------------------------------------------------------------------------
# the whole ingest
# --------------------------------------------------------------------------------------------
@dataclass
class IngestResult:
    manifest: Path
    meta: dict[str, Any]
    data_root: Path
    skipped: bool = False


def _download_stage(url_list: Path, out_dir: Path, qmap: QueryMap, dl_kwargs: dict, workers: int,
                    chunk_size: int, strict: bool, progress: bool | None):
    from omnisource.web.download import Downloader, download_many, read_url_list

    files = out_dir / "files"
    downloader = Downloader(files, **dl_kwargs)

    def process(chunk: list[dict]) -> list[Outcome]:
        outs = []
        for row, res in zip(chunk, download_many([r["url"] for r in chunk], downloader, workers)):
            label, why = qmap.lookup(row.get("query"))
            if not res.ok:
                outs.append(Outcome(None, f"download_{res.reason}",
                                    {"url": row["url"], "http_status": res.http_status, "error": res.detail}))
                continue
            outs.append(Outcome({"path": res.path, "query": row.get("query"), "query_label": label,
                                 "query_reason": why, "url": row["url"], "content_type": res.content_type}))
        return outs

    cfg = {"downloader": {k: v for k, v in dl_kwargs.items()}, "queries": qmap.digest()}
    res = run_stage("download", url_list, out_dir / "download", process, cfg, chunk_size=chunk_size,
                    strict=strict, reader=lambda p: read_url_list(p),
                    encode=lambda d: json.dumps(d, ensure_ascii=False), progress=progress)
    return res, files


def ingest(out_dir: str | Path, *, label_map: str | Path, folders: str | Path | None = None,
           list_file: str | Path | None = None, urls: str | Path | None = None, root: str | Path | None = None,
           queries: str | Path | None = None, cfg: ValidateConfig | None = None, workers: int = 4,
           chunk_size: int = 64, strict: bool = False, progress: bool | None = None, force: bool = False,
           download: dict | None = None) -> IngestResult:
    """Run the ingest (see the module docstring). Exactly one of folders / list_file / urls."""
    from omnisource.web.queries import read_label_map_names, read_queries

    t0 = time.time()
    cfg = cfg or ValidateConfig()
    if sum(x is not None for x in (folders, list_file, urls)) != 1:
        raise InputError("give exactly one of --folders, --list, --urls")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = read_label_map_names(label_map)
    qmap = build_query_map(names, read_queries(queries) if queries is not None else None)
    rank, world = dist_info()

    if urls is not None:
        dres, data_root = _download_stage(Path(urls), out_dir, qmap, dict(download or {}), workers,
                                          chunk_size, strict, progress)
        listing = dres.manifest
        dl_counts = dres.meta["counts"]
    else:
        if folders is not None:
            data_root = Path(folders)
            rows = listing_from_folders(data_root)
        else:
            data_root = Path(root) if root is not None else Path(list_file).parent
            rows = listing_from_list(list_file, data_root)
        listing = out_dir / "listing.jsonl"
        write_listing(listing, rows, qmap)      # same bytes on every rank: atomic, deterministic
        dl_counts = None
    data_root = data_root.resolve()

    config = {"validate": cfg.to_dict(), "queries": qmap.digest(), "data_root": str(data_root)}
    ident = {"stage": "ingest", "config_hash": sha1_json(config), "input_hash": hash_and_count(listing)[0]}
    final = out_dir / "manifest.jsonl"
    meta_path = out_dir / "meta.json"

    def finished() -> dict | None:
        try:
            m = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        return m if all(m.get(k) == v for k, v in ident.items()) and final.exists() else None

    if not force and (m := finished()) is not None:
        return IngestResult(final, m, data_root, skipped=True)

    pool = ThreadPoolExecutor(max_workers=max(1, workers)) if workers > 1 else None

    def process(chunk: list[dict]) -> list[Outcome]:
        if pool is None:
            return [validate_file(data_root, r, cfg, strict) for r in chunk]
        return list(pool.map(lambda r: validate_file(data_root, r, cfg, strict), chunk))

    try:
        vres = run_stage("ingest-validate", listing, out_dir / "validate", process, config, chunk_size=chunk_size,
                         strict=strict, reader=read_listing, progress=progress, force=force)
    finally:
        if pool is not None:
            pool.shutdown()

    dist = dist_group() if world > 1 else None
    if rank != 0:
        if dist is not None:
            dist.barrier()
        else:
            wait_for(lambda: finished() is not None, str(meta_path), 7 * 24 * 3600.0)
        m = finished()
        if m is None:
            raise DataError(meta_path, "rank 0 finished without a matching meta.json")
        return IngestResult(final, m, data_root)

    meta = _dedup_exact(vres.manifest, final, out_dir / "duplicates.jsonl", vres.meta, ident, config)
    meta["data_root"] = str(data_root)
    meta["input"] = str(folders or list_file or urls)
    if dl_counts is not None:
        meta["download"] = dl_counts
    meta["wall_time_s"] = round(time.time() - t0, 3)
    atomic_write_json(meta_path, meta)
    if dist is not None:
        dist.barrier()
    return IngestResult(final, meta, data_root)


def _dedup_exact(src: Path, dest: Path, dup_path: Path, vmeta: dict, ident: dict, config: dict) -> dict:
    """Drop records whose sha1 was seen before (first occurrence in input order wins)."""
    from omnisource.data.annotations import iter_manifest
    from omnisource.web.stage import record_to_line

    seen: dict[bytes, str] = {}
    out_class, out_source, dup_class = Counter(), Counter(), Counter()
    n_dup = 0
    with atomic_open(dest, "w") as out, atomic_open(dup_path, "w") as dups:
        out.write(manifest_header() + "\n")
        for rec in iter_manifest(src):
            key = bytes.fromhex(rec.sha1) if rec.sha1 else rec.path.encode()
            first = seen.get(key)
            if first is not None:
                n_dup += 1
                dup_class[record_class(rec)] += 1
                dups.write(json.dumps({"path": rec.path, "duplicate_of": first, "sha1": rec.sha1}) + "\n")
                continue
            seen[key] = rec.path
            out.write(record_to_line(rec) + "\n")
            out_class[record_class(rec)] += 1
            out_source[record_source(rec)] += 1
    counts = json.loads(json.dumps(vmeta["counts"]))
    dropped = counts["dropped"]
    if n_dup:
        dropped["by_reason"]["duplicate"] = n_dup
        dropped["by_reason"] = dict(sorted(dropped["by_reason"].items()))
        for c, n in dup_class.items():
            dropped["by_class"][c] = dropped["by_class"].get(c, 0) + n
        dropped["by_class"] = dict(sorted(dropped["by_class"].items()))
        dropped["total"] += n_dup
    counts["out"] = {"total": sum(out_source.values()), "by_class": dict(sorted(out_class.items())),
                     "by_source": dict(sorted(out_source.items()))}
    return {**ident, "config": config, "output": str(dest), "counts": counts,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
