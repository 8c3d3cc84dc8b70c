"""The runner behind every offline OmniSource stage (ingest, dedup, filter, untrimmed, ...).

A stage maps an input manifest to an output manifest, one input row at a time, on millions of
web files. The runner gives every stage the same guarantees so that each stage only writes its
``process_fn``:

* **streaming** - input rows are read lazily and handed to ``process_fn`` in chunks of
  ``chunk_size``; finished rows go to disk at once, so memory is flat in the number of samples;
* **resumable** - after each chunk the rows are appended to journal files, fsync'ed, and then a
  checkpoint (input position + journal byte sizes + counters) is replaced atomically. On
  restart (kill -9, OOM, pre-emption) the journals are truncated back to the checkpoint and the
  stage continues from the next unprocessed row: the final output is byte-identical to an
  uninterrupted run, with no duplicated and no lost rows;
* **skippable** - a finished stage (``meta.json`` present, same stage name, config hash and input
  hash) is not run again;
* **sharded** - under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) rank ``r`` takes the
  input rows ``i`` with ``i % world == r`` and journals them tagged with ``i``; rank 0 waits for
  all ranks (``torch.distributed`` barrier when a process group is initialised, marker files
  otherwise - the output folder must be on a file system all ranks see), then merges the rank
  journals in input order. Sharded output == single-process output, byte for byte;
* **robust** - ``process_fn`` reports unreadable inputs as drops with a reason; if it raises an
  :class:`~omnisource.errors.OmniSourceError` or ``OSError`` for a chunk, the runner retries the
  rows one by one and turns each failing row into a drop (``error: ...``). Drops are counted per
  reason, logged (the first few as warnings, all at DEBUG) and written to ``dropped.jsonl``.
  ``strict=True`` raises instead. Any other exception is a bug and propagates.

Files in ``output_dir`` once a stage is finished::

    manifest.jsonl   kept / produced records, in input order (the stage's result)
    dropped.jsonl    one JSON row per dropped input: index, path, source, query_label, label, reason, extra
    side.jsonl       optional per-input extra data (scores, duplicate pairs, ...), {"index": i, ...}
    meta.json        stage, config + config_hash, input + input_hash, counts, wall time

Work in progress lives in ``output_dir/.work/`` and is deleted once ``meta.json`` is written.

API
---
``process_fn(records: list[ManifestRecord]) -> list[result]`` gets a chunk of input records (in
input order) and returns exactly one result per record, in the same order. A result is an
:class:`Outcome` or a tuple ``(out, drop_reason)`` / ``(out, drop_reason, extra)`` where

* ``out`` is a ``ManifestRecord`` (kept / transformed), a ``list`` of records (one input -> many
  outputs, e.g. untrimmed windows; an empty list means "nothing produced" - give a reason), or
  ``None`` (dropped);
* ``drop_reason`` is a short machine-friendly string (``"corrupt"``, ``"too_small"``,
  ``"duplicate"``, ``"low_score"``) required when nothing is produced, otherwise ``None``;
* ``extra`` is an optional JSON-able dict written to ``side.jsonl`` (e.g. teacher scores of
  dropped samples, for the report).

Batch-level processing is the point of the chunk: a teacher can score the whole chunk in one
forward pass. ``process_fn`` must be deterministic per record (same record -> same result
regardless of which chunk it lands in) for resume and sharding to be byte-identical.

Example::

    from omnisource.web.stage import run_stage, Outcome

    def keep_big(chunk):
        return [Outcome(r) if (r.meta.get("width") or 0) >= 64 else Outcome(None, "too_small")
                for r in chunk]

    result = run_stage("size-filter", "in/manifest.jsonl", "out/", keep_big,
                       config={"min_width": 64}, chunk_size=256)
    print(result.manifest, result.meta["counts"]["out"]["total"])

``input_manifest`` may also be any JSONL file whose rows are not ``ManifestRecord``s if a
``reader`` is given (``reader(path) -> Iterator[row]``) together with ``row_key`` (see
:func:`run_stage`); ingest uses this to process a plain file listing.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from omnisource.errors import ConfigError, DataError, OmniSourceError
from omnisource.utils.io import atomic_open, atomic_write_json, sha1_json
from omnisource.utils.progress import progress_enabled

log = logging.getLogger("omnisource.web.stage")

MANIFEST_NAME = "manifest.jsonl"
DROPPED_NAME = "dropped.jsonl"
SIDE_NAME = "side.jsonl"
META_NAME = "meta.json"
WORK_DIR = ".work"
STAGE_FORMAT = 1          # bump when the journal/output layout changes (invalidates old work dirs)
_WARN_DROPS = 20          # how many drops are logged as warnings before switching to DEBUG only


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What ``process_fn`` says about one input record."""

    out: Any = None                     # ManifestRecord | list[ManifestRecord] | None
    drop_reason: str | None = None
    extra: dict[str, Any] | None = None


@dataclass
class StageResult:
    """Returned by :func:`run_stage` on every rank (after the merge)."""

    name: str
    output_dir: Path
    manifest: Path
    dropped: Path
    side: Path
    meta: dict[str, Any]
    skipped: bool = False               # True when an identical finished run was found


def _as_outcome(res: Any, where: str) -> Outcome:
    if isinstance(res, Outcome):
        return res
    if isinstance(res, tuple) and len(res) in (2, 3):
        return Outcome(*res)
    raise TypeError(f"{where}: process_fn must return Outcome or (out, reason[, extra]) tuples, got {type(res).__name__}")


# --------------------------------------------------------------------------------------------
# record (de)serialisation - thin adapter over omnisource.data.annotations
# --------------------------------------------------------------------------------------------
def record_to_line(rec: Any) -> str:
    """One manifest JSON line (no newline) for ``rec``, exactly as ``ManifestWriter`` writes it.

    Records are validated first, so a stage that produces a malformed record fails loudly at
    the row that produced it instead of leaving a manifest that the next stage rejects.
    """
    from omnisource.data import annotations as ann

    if isinstance(rec, ann.ManifestRecord):
        validate = getattr(ann, "_validate_record", None)
        if validate is not None:
            validate(rec, None, None)
        return json.dumps(rec.to_json(), ensure_ascii=False)
    if isinstance(rec, dict):
        return json.dumps(rec, ensure_ascii=False)
    raise TypeError(f"cannot serialise {type(rec).__name__} as a manifest row")


def manifest_header() -> str:
    """The header line that starts every manifest (``{"schema_version": N}``)."""
    from omnisource.data.annotations import SCHEMA_VERSION

    return json.dumps({"schema_version": SCHEMA_VERSION})


def _rec_get(rec: Any, key: str, default: Any = None) -> Any:
    if isinstance(rec, dict):
        return rec.get(key, default)
    return getattr(rec, key, default)


def record_class(rec: Any) -> str:
    """The class a record counts under in meta.json: its label, else its query label.

    A soft label (a row of probabilities) counts under its argmax class -- keying the counts by
    the probability string made every record its own "class" in meta.json and the report. A
    multi-label record counts under its labels joined by commas."""
    lab = _rec_get(rec, "label")
    if lab is None:
        lab = _rec_get(rec, "query_label")
    if isinstance(lab, (list, tuple)):
        if lab and any(isinstance(x, float) for x in lab):
            return str(max(range(len(lab)), key=lambda i: lab[i]))
        return ",".join(str(x) for x in lab)
    return "none" if lab is None else str(lab)


def record_source(rec: Any) -> str:
    src = _rec_get(rec, "source")
    return "none" if src is None else str(src)


def _default_reader(path: Path) -> Iterator[Any]:
    from omnisource.data.annotations import iter_manifest

    return iter_manifest(path)


# --------------------------------------------------------------------------------------------
# environment: ranks, progress
# --------------------------------------------------------------------------------------------
def dist_info() -> tuple[int, int]:
    """(rank, world_size): from an initialised torch.distributed group, else RANK/WORLD_SIZE env."""
    dist = sys.modules.get("torch.distributed")   # never initialised if nobody imported it
    with contextlib.suppress(Exception):
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"bad RANK={rank} / WORLD_SIZE={world} in the environment")
    return rank, world


def progress_bar(total: int | None = None, desc: str = "", enabled: bool | None = None, **kw: Any):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not progress_enabled(enabled), dynamic_ncols=True, **kw)


def dist_group() -> Any:
    """torch.distributed when a process group is initialised, else None (no torch import)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist
    except Exception:  # pragma: no cover - exotic builds without distributed
        return None
    return None


def wait_for(pred: Callable[[], bool], what: str, timeout: float, poll: float = 0.2) -> None:
    """Poll ``pred`` until true (file-based barrier between ranks without a process group)."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise DataError(what, f"timed out after {timeout:.0f}s waiting for other ranks")
        time.sleep(poll)


# --------------------------------------------------------------------------------------------
# hashing the input (one streaming pass, also counts rows for the progress bar)
# --------------------------------------------------------------------------------------------
def hash_and_count(path: Path) -> tuple[str, int]:
    """sha1 of the file's bytes and its number of non-empty lines."""
    h = hashlib.sha1()
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            n += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        n += 1
    return h.hexdigest(), n


# --------------------------------------------------------------------------------------------
# journal: append-only files + atomically replaced checkpoint
# --------------------------------------------------------------------------------------------
class _Journal:
    """Per-rank work files. Each row is ``<input index>\\t<json>\\n``; the checkpoint is the truth."""

    FILES = ("kept", "dropped", "side")

    def __init__(self, wdir: Path, ident: dict[str, Any]):
        self.wdir = wdir
        self.ident = ident
        self.ckpt_path = wdir / "checkpoint.json"
        self.position = 0          # number of this rank's rows fully processed
        self.counters: dict[str, Counter] = {k: Counter() for k in _COUNTER_KEYS}
        self.sizes = {k: 0 for k in self.FILES}
        wdir.mkdir(parents=True, exist_ok=True)
        self._load()
        self.fh = {k: open(wdir / f"{k}.part", "r+b" if (wdir / f"{k}.part").exists() else "w+b")
                   for k in self.FILES}
        for k, fh in self.fh.items():          # drop any tail written after the last checkpoint
            fh.truncate(self.sizes[k])
            fh.seek(self.sizes[k])

    def _load(self) -> None:
        if not self.ckpt_path.exists():
            for k in self.FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.wdir / f"{k}.part")
            return
        ck = json.loads(self.ckpt_path.read_text())
        if ck.get("ident") != self.ident:
            log.warning("%s: checkpoint is from a different config/input; starting this shard again", self.wdir)
            for k in self.FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.wdir / f"{k}.part")
            os.unlink(self.ckpt_path)
            return
        self.position = int(ck["position"])
        self.sizes = {k: int(ck["sizes"][k]) for k in self.FILES}
        self.counters = {k: Counter(ck["counters"].get(k, {})) for k in _COUNTER_KEYS}
        for k in self.FILES:
            p = self.wdir / f"{k}.part"
            if not p.exists() or p.stat().st_size < self.sizes[k]:
                raise DataError(p, "journal shorter than its checkpoint (work folder damaged); delete "
                                   f"{self.wdir} to start the stage again")
        if self.position:
            log.info("%s: resuming after %d rows", self.wdir, self.position)

    def commit(self, rows: dict[str, list[bytes]], n_done: int, counter_delta: dict[str, Counter]) -> None:
        for k in self.FILES:
            if rows[k]:
                self.fh[k].write(b"".join(rows[k]))
            self.fh[k].flush()
            os.fsync(self.fh[k].fileno())
            self.sizes[k] = self.fh[k].tell()
        self.position += n_done
        for k, c in counter_delta.items():
            self.counters[k].update(c)
        atomic_write_json(self.ckpt_path, {
            "ident": self.ident, "position": self.position, "sizes": self.sizes,
            "counters": {k: dict(v) for k, v in self.counters.items()}, "done": False,
        }, indent=None)

    def mark_done(self) -> None:
        ck = json.loads(self.ckpt_path.read_text()) if self.ckpt_path.exists() else None
        if ck is None:   # a rank with no rows at all
            self.commit({k: [] for k in self.FILES}, 0, {})
            ck = json.loads(self.ckpt_path.read_text())
        ck["done"] = True
        atomic_write_json(self.ckpt_path, ck, indent=None)

    def is_done(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        ck = json.loads(self.ckpt_path.read_text())
        return ck.get("ident") == self.ident and bool(ck.get("done"))

    def close(self) -> None:
        for fh in self.fh.values():
            fh.close()


_COUNTER_KEYS = ("in_class", "in_source", "out_class", "out_source", "drop_reason", "drop_class")


def _read_ckpt(wdir: Path) -> dict[str, Any]:
    return json.loads((wdir / "checkpoint.json").read_text())


def _iter_part(path: Path, size: int) -> Iterator[tuple[int, bytes]]:
    """Rows ``(index, payload-with-newline)`` of a journal file, up to the checkpointed size."""
    with open(path, "rb") as fh:
        remaining = size
        for line in fh:
            if remaining <= 0:
                break
            remaining -= len(line)
            tab = line.index(b"\t")
            yield int(line[:tab]), line[tab + 1:]


# --------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------
def run_stage(
    name: str,
    input_manifest: str | Path,
    output_dir: str | Path,
    process_fn: Callable[[list[Any]], Sequence[Any]],
    config: dict[str, Any],
    *,
    chunk_size: int = 64,
    strict: bool = False,
    reader: Callable[[Path], Iterable[Any]] | None = None,
    encode: Callable[[Any], str] | None = None,
    header_lines: Sequence[str] | None = None,
    progress: bool | None = None,
    force: bool = False,
    barrier_timeout: float = 7 * 24 * 3600.0,
    keep_work: bool = False,
) -> StageResult:
    """Run one stage over ``input_manifest`` into ``output_dir`` (see the module docstring).

    Args:
        name: stage name (``"ingest"``, ``"dedup"``, ...), recorded in meta.json and part of the
            identity of a finished run.
        input_manifest: JSONL manifest (or any JSONL file when ``reader`` is given).
        output_dir: folder for manifest.jsonl / dropped.jsonl / side.jsonl / meta.json.
        process_fn: ``list[record] -> list[result]``, one result per record (module docstring).
        config: JSON-able settings that change the output (thresholds, teacher checkpoint hash,
            ...). Its hash decides whether a finished run / a journal can be reused, so put
            everything that influences results in it (and nothing volatile such as timestamps).
        chunk_size: rows per ``process_fn`` call and per checkpoint (bounded memory; larger =
            fewer fsyncs, bigger teacher batches).
        strict: raise on the first dropped-by-error row instead of counting it.
        reader: ``path -> iterable of rows``; default :func:`omnisource.data.annotations.iter_manifest`.
        encode: ``record -> one JSON line``; default :func:`record_to_line`.
        header_lines: lines written before the records in manifest.jsonl; default: the
            manifest header ``{"schema_version": 1}`` when ``encode`` is the default, else none.
        progress: force the tqdm bar on/off (default: OMNISOURCE_PROGRESS or TTY).
        force: ignore a finished run and its journal; start again.
        barrier_timeout: seconds rank 0 (and the others) wait for the rest when sharded.
        keep_work: keep ``output_dir/.work`` after finishing (debugging).
    """
    from omnisource.utils.lock import WorkDirLock

    # one process per (stage folder, rank): a second run of this stage into the same folder
    # stops at once, naming the holder, instead of interleaving journals
    rank, _ = dist_info()
    with WorkDirLock(output_dir, what=f"stage {name} (rank {rank})", name=f".lock-rank{rank}"):
        return _run_stage(name, input_manifest, output_dir, process_fn, config, chunk_size=chunk_size,
                          strict=strict, reader=reader, encode=encode, header_lines=header_lines,
                          progress=progress, force=force, barrier_timeout=barrier_timeout, keep_work=keep_work)


def _run_stage(name: str, input_manifest: str | Path, output_dir: str | Path,
               process_fn: Callable[[list[Any]], Sequence[Any]], config: dict[str, Any], *, chunk_size: int,
               strict: bool, reader: Callable[[Path], Iterable[Any]] | None, encode: Callable[[Any], str] | None,
               header_lines: Sequence[str] | None, progress: bool | None, force: bool,
               barrier_timeout: float, keep_work: bool) -> StageResult:
    t_start = time.time()
    input_manifest = Path(input_manifest)
    output_dir = Path(output_dir)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    if not input_manifest.is_file():
        raise DataError(input_manifest, "input manifest not found")
    reader = reader or _default_reader
    if header_lines is None:
        header_lines = [manifest_header()] if encode is None else []
    encode = encode or record_to_line
    rank, world = dist_info()

    config_hash = sha1_json(config)
    input_hash, n_rows = hash_and_count(input_manifest)
    ident = {"stage": name, "config_hash": config_hash, "input_hash": input_hash, "format": STAGE_FORMAT}
    paths = {k: output_dir / v for k, v in
             (("manifest", MANIFEST_NAME), ("dropped", DROPPED_NAME), ("side", SIDE_NAME), ("meta", META_NAME))}

    def result(meta: dict[str, Any], skipped: bool) -> StageResult:
        return StageResult(name, output_dir, paths["manifest"], paths["dropped"], paths["side"], meta, skipped)

    def finished_meta() -> dict[str, Any] | None:
        if not paths["meta"].exists():
            return None
        try:
            meta = json.loads(paths["meta"].read_text())
        except (OSError, ValueError):
            return None
        if all(meta.get(k) == v for k, v in ident.items()) and paths["manifest"].exists():
            return meta
        return None

    if not force:
        meta = finished_meta()
        if meta is not None:
            log.info("%s: already finished in %s (same config and input); skipping", name, output_dir)
            return result(meta, True)

    output_dir.mkdir(parents=True, exist_ok=True)
    wroot = output_dir / WORK_DIR / f"world{world}"
    wdir = wroot / f"rank{rank}"
    if force:
        if rank == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths["meta"])
        shutil.rmtree(wdir, ignore_errors=True)

    journal = _Journal(wdir, ident)
    n_mine = len(range(rank, n_rows, world))
    n_warned = 0
    try:
        if not journal.is_done():
            bar = progress_bar(total=n_mine, desc=f"{name}" + (f" [rank {rank}/{world}]" if world > 1 else ""),
                               enabled=progress, unit="row")
            bar.update(journal.position)
            chunk: list[tuple[int, Any]] = []
            mine = 0
            for idx, rec in enumerate(reader(input_manifest)):
                if idx % world != rank:
                    continue
                mine += 1
                if mine <= journal.position:          # done before the restart
                    continue
                chunk.append((idx, rec))
                if len(chunk) >= chunk_size:
                    n_warned = _do_chunk(chunk, process_fn, journal, encode, strict, name, n_warned)
                    bar.update(len(chunk))
                    chunk = []
            if chunk:
                n_warned = _do_chunk(chunk, process_fn, journal, encode, strict, name, n_warned)
                bar.update(len(chunk))
            bar.close()
            journal.mark_done()
    finally:
        journal.close()

    # ---- merge (rank 0) / wait (others) -----------------------------------------------------
    dist = dist_group() if world > 1 else None
    if dist is not None:
        dist.barrier()               # every shard journaled
    if rank != 0:
        if dist is not None:
            dist.barrier()           # rank 0 merged
        else:
            wait_for(lambda: finished_meta() is not None, str(paths["meta"]), barrier_timeout)
        meta = finished_meta()
        if meta is None:
            raise DataError(paths["meta"], "rank 0 finished without a matching meta.json")
        return result(meta, False)

    wdirs = [wroot / f"rank{r}" for r in range(world)]
    if world > 1 and dist is None:
        def all_done() -> bool:
            for w in wdirs:
                try:
                    ck = _read_ckpt(w)
                except (OSError, ValueError):
                    return False
                if ck.get("ident") != ident or not ck.get("done"):
                    return False
            return True
        wait_for(all_done, str(wroot), barrier_timeout)

    ckpts = [_read_ckpt(w) for w in wdirs]
    _merge(paths["manifest"], [(w / "kept.part", c["sizes"]["kept"]) for w, c in zip(wdirs, ckpts)], header_lines)
    _merge(paths["dropped"], [(w / "dropped.part", c["sizes"]["dropped"]) for w, c in zip(wdirs, ckpts)], ())
    _merge(paths["side"], [(w / "side.part", c["sizes"]["side"]) for w, c in zip(wdirs, ckpts)], ())

    totals = {k: Counter() for k in _COUNTER_KEYS}
    for c in ckpts:
        for k in _COUNTER_KEYS:
            totals[k].update(c["counters"].get(k, {}))
    srt = lambda c: dict(sorted(c.items()))  # noqa: E731 - deterministic key order in meta.json
    meta = {
        **ident,
        "config": config,
        "input": str(input_manifest),
        "output": str(paths["manifest"]),
        "counts": {
            "in": {"total": sum(totals["in_source"].values()), "by_class": srt(totals["in_class"]), "by_source": srt(totals["in_source"])},
            "out": {"total": sum(totals["out_source"].values()), "by_class": srt(totals["out_class"]),
                    "by_source": srt(totals["out_source"])},
            "dropped": {"total": sum(totals["drop_reason"].values()), "by_reason": srt(totals["drop_reason"]),
                        "by_class": srt(totals["drop_class"])},
        },
        "world_size": world,
        "wall_time_s": round(time.time() - t_start, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(paths["meta"], meta)
    if not keep_work:
        shutil.rmtree(output_dir / WORK_DIR, ignore_errors=True)
    if dist is not None:
        dist.barrier()
    c = meta["counts"]
    log.info("%s: %d in -> %d out, %d dropped %s (%.1fs)", name, c["in"]["total"], c["out"]["total"],
             c["dropped"]["total"], c["dropped"]["by_reason"], meta["wall_time_s"])
    return result(meta, False)


def _merge(dest: Path, parts: list[tuple[Path, int]], header_lines: Sequence[str]) -> None:
    """k-way merge of rank journals by input index (stable: rows of one index stay in order)."""
    streams = [_iter_part(p, size) for p, size in parts]
    with atomic_open(dest, "wb") as out:
        for h in header_lines:
            out.write(h.rstrip("\n").encode() + b"\n")
        for _, payload in heapq.merge(*streams, key=lambda t: t[0]):
            out.write(payload)


def _process_safely(chunk: list[tuple[int, Any]], process_fn: Callable, strict: bool) -> list[Outcome]:
    recs = [r for _, r in chunk]
    try:
        res = list(process_fn(recs))
    except (OmniSourceError, OSError) as err:
        if strict:
            raise
        if len(chunk) == 1:
            return [Outcome(None, f"error: {type(err).__name__}", {"error": str(err)})]
        log.debug("chunk failed (%s); retrying its %d rows one by one", err, len(chunk))
        out: list[Outcome] = []
        for item in chunk:
            out.extend(_process_safely([item], process_fn, strict))
        return out
    if len(res) != len(recs):
        raise RuntimeError(f"process_fn returned {len(res)} results for {len(recs)} records")
    return [_as_outcome(r, f"row {chunk[i][0]}") for i, r in enumerate(res)]


def _do_chunk(chunk: list[tuple[int, Any]], process_fn: Callable, journal: _Journal,
              encode: Callable[[Any], str], strict: bool, name: str, n_warned: int) -> int:
    outcomes = _process_safely(chunk, process_fn, strict)
    rows: dict[str, list[bytes]] = {k: [] for k in _Journal.FILES}
    delta = {k: Counter() for k in _COUNTER_KEYS}
    for (idx, rec), oc in zip(chunk, outcomes):
        delta["in_class"][record_class(rec)] += 1
        delta["in_source"][record_source(rec)] += 1
        outs = [] if oc.out is None else (list(oc.out) if isinstance(oc.out, (list, tuple)) else [oc.out])
        prefix = f"{idx}\t".encode()
        for o in outs:
            line = encode(o)
            if "\n" in line or "\r" in line:
                raise ValueError(f"encode() must return one line, got a line break for input row {idx}")
            rows["kept"].append(prefix + line.encode("utf-8") + b"\n")
            delta["out_class"][record_class(o)] += 1
            delta["out_source"][record_source(o)] += 1
        if not outs:
            reason = oc.drop_reason or "dropped"
            if strict and reason.startswith("error"):
                raise DataError(_rec_get(rec, "path", f"row {idx}"), reason)
            delta["drop_reason"][reason] += 1
            delta["drop_class"][record_class(rec)] += 1
            drop = {"index": idx, "path": _rec_get(rec, "path"), "source": _rec_get(rec, "source"),
                    "query_label": _rec_get(rec, "query_label"), "label": _rec_get(rec, "label"),
                    "reason": reason}
            if oc.extra:
                drop["extra"] = oc.extra
            rows["dropped"].append(prefix + json.dumps(drop, ensure_ascii=False, default=str).encode() + b"\n")
            level = logging.WARNING if n_warned < _WARN_DROPS else logging.DEBUG
            log.log(level, "%s: dropped %s: %s%s", name, drop["path"], reason,
                    "" if n_warned != _WARN_DROPS - 1 else " (further drops are logged at DEBUG level)")
            n_warned += 1
        if oc.extra is not None:
            side = {"index": idx, **oc.extra}
            rows["side"].append(prefix + json.dumps(side, ensure_ascii=False, default=str).encode() + b"\n")
    journal.commit(rows, len(chunk), delta)
    return n_warned


def load_meta(output_dir: str | Path) -> dict[str, Any]:
    """meta.json of a finished stage (DataError when absent)."""
    p = Path(output_dir) / META_NAME
    if not p.is_file():
        raise DataError(p, "stage not finished (no meta.json)")
    return json.loads(p.read_text())


__all__ = ["Outcome", "StageResult", "run_stage", "record_to_line", "manifest_header", "record_class",
           "record_source", "dist_info", "dist_group", "wait_for", "progress_bar", "progress_enabled",
           "hash_and_count", "load_meta"]
