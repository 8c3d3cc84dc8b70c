"""A file of demux indexes shared by every process of a run and kept between runs (SQLite).

Why: a sparse read needs the video's :class:`~.pyav_index.StreamIndex` (exact frame count,
keyframes, frame <-> timestamp map), and building it is a demux pass over the whole file plus an
extra FFmpeg open -- about 6 ms per 10 s clip on this machine, 10-15% of a TSN read. The
per-process memory cache (:data:`~.pyav_index.INDEX_CACHE`) removes that only while the dataset
fits in it: its default bound holds ~13k ten-second clips, so on Kinetics-400 (240k clips) every
read of every epoch, in every DataLoader worker, demuxed its file again. With a store the index
of a file is built once -- by ``omnisource probe --index-store`` ahead of training, or by the
first read in any worker -- and afterwards read back in well under a millisecond.

Why SQLite (standard library): random access by path without loading the whole table into every
worker (a JSONL manifest would be; Kinetics' indexes are ~1 GB uncompressed), atomic
transactions (a worker killed mid-write leaves the previous state), and concurrent readers plus
serialised writers across the DataLoader's processes (WAL journal, busy timeout). Entries are
keyed by absolute path and validated against the file's size and mtime, so a changed file is
re-indexed, never read with a stale index. A store that cannot be opened or written (read-only
folder, disk full, a corrupt file) is reported once and then ignored: decoding goes on with
in-memory indexes, exactly as without a store. Keep the file on a local disk of each machine:
SQLite's WAL journal needs shared memory between its users, which network file systems do not
provide (multi-node training: one store per node, e.g. filled by ``omnisource probe`` on each).

Blob format (``STORE_VERSION`` 1): a 4-byte little-endian header length, a JSON header (mode,
frame count, keyframe lists, reason, verify flag, learnt rotation and picture types, array dtypes
and lengths), then the ``pts`` and ``dpos`` arrays, the whole zlib-compressed (regular timestamps
compress ~10x).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import threading
import zlib
from pathlib import Path

import numpy as np

from .pyav_index import StreamIndex

log = logging.getLogger("omnisource.data.decode")

STORE_VERSION = 1
ENV_VAR = "OMNISOURCE_INDEX_STORE"


def encode_index(index: StreamIndex) -> bytes:
    """Compact, versioned bytes of ``index`` (see module docstring)."""
    pts = np.ascontiguousarray(index.pts, dtype=np.int64)
    dpos = np.ascontiguousarray(index.dpos, dtype=np.int32)
    head = json.dumps({
        "v": STORE_VERSION, "mode": index.mode, "num_frames": int(index.num_frames),
        "key_dpos": [int(x) for x in index.key_dpos], "key_pts": [int(x) for x in index.key_pts],
        "key_seek": [int(x) for x in index.key_seek], "key_size": [int(x) for x in index.key_size],
        "reason": index.reason, "verify": bool(index.verify), "fmt": index.fmt,
        "rotation": index.rotation, "types": index.types,
        "n_pts": int(pts.size), "n_dpos": int(dpos.size),
    }, separators=(",", ":")).encode()
    raw = struct.pack("<I", len(head)) + head + pts.tobytes() + dpos.tobytes()
    return zlib.compress(raw, 1)


def decode_index(blob: bytes) -> StreamIndex:
    """Inverse of :func:`encode_index`; raises ``ValueError`` on a malformed or foreign blob."""
    try:
        raw = zlib.decompress(blob)
        (n,) = struct.unpack_from("<I", raw, 0)
        head = json.loads(raw[4:4 + n])
        if head.get("v") != STORE_VERSION:
            raise ValueError(f"index blob version {head.get('v')!r}, expected {STORE_VERSION}")
        off = 4 + n
        pts = np.frombuffer(raw, np.int64, head["n_pts"], off).copy()
        off += pts.nbytes
        dpos = np.frombuffer(raw, np.int32, head["n_dpos"], off).copy()
        if off + dpos.nbytes != len(raw):
            raise ValueError("index blob has trailing bytes")
        return StreamIndex(head["mode"], int(head["num_frames"]), pts=pts, dpos=dpos,
                           key_dpos=list(head["key_dpos"]), key_pts=list(head["key_pts"]),
                           key_seek=list(head["key_seek"]), key_size=list(head["key_size"]),
                           reason=head["reason"], verify=bool(head["verify"]),
                           fmt=str(head.get("fmt", "")),
                           rotation=None if head.get("rotation") is None else int(head["rotation"]),
                           types=head.get("types", ""))
    except (zlib.error, struct.error, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"malformed index blob: {err}") from err


class IndexStore:
    """SQLite file of :class:`StreamIndex` entries keyed by absolute path (see module docstring).

    One connection per process (a connection must not cross ``fork``: the DataLoader's workers
    reopen it); thread-safe within a process. All failures are logged once and turn the store
    off for this process -- a store is an accelerator, never a reason for a read to fail.
    """

    def __init__(self, path: str | Path):
        self.path = os.path.abspath(str(path))
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._broken: str | None = None
        self.hits = self.misses = self.writes = 0

    # -- connection ------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection | None:
        if self._broken is not None:
            return None
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # inherited through fork: never touch the parent's handle
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False,
                                   isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
            try:
                conn.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
                # a cache: an entry lost to a power cut is rebuilt, so no fsync per write
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError:
                pass  # read-only folder: the default journal still reads fine
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS indexes (path TEXT PRIMARY KEY, "
                         "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, blob BLOB NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key='version'").fetchone()
            if row is None:
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(STORE_VERSION),))
            elif row[0] != str(STORE_VERSION):
                raise sqlite3.DatabaseError(f"store version {row[0]}, this build reads "
                                            f"{STORE_VERSION}")
        except (sqlite3.Error, OSError) as err:
            self._disable(f"cannot open: {err}")
            return None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _disable(self, why: str) -> None:
        if self._broken is None:
            log.warning("index store %s %s; going on without it (indexes are built in memory)",
                        self.path, why)
        self._broken = why
        self._conn = None

    # -- entries -----------------------------------------------------------------------------
    def get(self, key: tuple | None) -> StreamIndex | None:
        """The stored index of the file ``key`` names (:func:`~.pyav_index.file_key`), or None
        when absent or made for other file contents."""
        if key is None:
            return None
        with self._lock:
            conn = self._connection()
            if conn is None:
                return None
            try:
                row = conn.execute("SELECT size, mtime_ns, blob FROM indexes WHERE path=?",
                                   (key[0],)).fetchone()
            except sqlite3.Error as err:
                self._disable(f"cannot be read: {err}")
                return None
        if row is None or row[0] != key[1] or row[1] != key[2]:
            self.misses += 1
            return None
        try:
            index = decode_index(row[2])
        except ValueError as err:
            log.debug("%s: stored index ignored: %s", key[0], err)
            self.misses += 1
            return None
        self.hits += 1
        return index

    def put(self, key: tuple | None, index: StreamIndex) -> None:
        """Store (or replace) the index of the file ``key`` names."""
        if key is None:
            return
        blob = encode_index(index)
        with self._lock:
            conn = self._connection()
            if conn is None:
                return
            try:
                conn.execute("INSERT OR REPLACE INTO indexes VALUES (?, ?, ?, ?)",
                             (key[0], key[1], key[2], blob))
                self.writes += 1
            except sqlite3.Error as err:
                self._disable(f"cannot be written: {err}")

    def __len__(self) -> int:
        with self._lock:
            conn = self._connection()
            if conn is None:
                return 0
            try:
                return int(conn.execute("SELECT COUNT(*) FROM indexes").fetchone()[0])
            except sqlite3.Error:
                return 0

    # -- upkeep ------------------------------------------------------------------------------
    def stale_paths(self, progress: bool = False) -> dict[str, str]:
        """Entries no read would use again: ``{path: 'missing' | 'changed'}`` for files that are
        gone or whose size / mtime differ from the stored ones (a changed file is re-indexed on
        its next read and its entry replaced, so 'changed' only stays stale if never read).
        Why: a store outlives datasets -- a re-encoded or deleted video keeps its entry, and a
        store shared by several dataset versions only grows. One ``stat`` per entry."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                raise OSError(f"index store {self.path} cannot be opened: {self._broken}")
            rows = conn.execute("SELECT path, size, mtime_ns FROM indexes").fetchall()
        from tqdm import tqdm

        out: dict[str, str] = {}
        for path, size, mtime_ns in tqdm(rows, desc="stat", unit="file", disable=not progress):
            try:
                st = os.stat(path)
            except OSError:
                out[path] = "missing"
                continue
            if st.st_size != size or st.st_mtime_ns != mtime_ns:
                out[path] = "changed"
        return out

    def prune(self, paths: list[str], vacuum: bool = True) -> int:
        """Delete the entries of ``paths`` (e.g. :meth:`stale_paths`) in one transaction and,
        with ``vacuum``, give the freed pages back to the file system. Safe while training
        reads the store (WAL readers see the old or the new state); VACUUM waits for writers
        up to the busy timeout. Returns the number of entries deleted."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                raise OSError(f"index store {self.path} cannot be opened: {self._broken}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                gone = 0
                for i in range(0, len(paths), 500):
                    chunk = paths[i:i + 500]
                    cur = conn.execute(f"DELETE FROM indexes WHERE path IN ({','.join('?' * len(chunk))})",
                                       chunk)
                    gone += cur.rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if vacuum and gone:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return gone

    def disk_bytes(self) -> int:
        """Bytes the store takes on disk (the database and its WAL journal)."""
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


_stores: dict[str, IndexStore] = {}
_stores_lock = threading.Lock()


def get_store(spec: str | Path | IndexStore | None = None) -> IndexStore | None:
    """The process-wide :class:`IndexStore` for ``spec`` (a path, or a store), falling back to
    the ``OMNISOURCE_INDEX_STORE`` environment variable; None when neither names one. Readers
    of the same file share one store object (and so one connection per process)."""
    if isinstance(spec, IndexStore):
        return spec
    if spec is None or spec == "":
        spec = os.environ.get(ENV_VAR) or None
        if spec is None:
            return None
    path = os.path.abspath(os.path.expanduser(str(spec)))
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = IndexStore(path)
        return store
