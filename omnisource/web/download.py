"""Downloading crawled URLs: concurrent, bounded, resumable, and safe with hostile servers.

Web crawls are full of dead links, slow hosts, HTML error pages served as ``.jpg`` and
multi-GB files behind innocent names. Each URL therefore goes through:

* **safe names** - the file is stored as ``<out>/<h[:2]>/<h>.<ext>`` with ``h = sha1(url)`` and
  ``ext`` from the sniffed content: nothing from the URL or the server (``Content-Disposition``,
  path segments such as ``../../etc``) reaches the file system, and the resolved target is
  checked to lie inside the output folder;
* **timeouts** - ``timeout`` seconds for the connection and for every read, plus ``max_time`` as a
  deadline on the whole request -- connection, status line, headers, body and redirects (a
  server trickling one byte per second passes a read timeout forever, in its headers too);
* **hostile answers and rows** - a malformed response (bad status line, over 100 headers, a
  70 kB header line, bad chunked encoding) or an unusable URL row (bad port, unbalanced
  brackets, control characters, ``file:`` / ``ftp:`` / ``javascript:``) is that row's failure,
  reported with a reason (``bad_response``, ``bad_url``, ``truncated``); the job goes on;
* **retries** - connection errors, timeouts, HTTP 5xx / 408 / 429 are retried ``retries`` times
  with exponential backoff (``backoff * 2**attempt``, +-25 % jitter seeded by the URL so runs are
  reproducible, capped at ``max_backoff``; a ``Retry-After`` header is honoured up to the cap).
  Other 4xx answers are permanent;
* **size cap** - a ``Content-Length`` above ``max_bytes`` is refused before reading; bodies are
  streamed to a ``.part`` file and the transfer is aborted as soon as it passes the cap (so a
  lying or absent ``Content-Length`` cannot fill the disk);
* **content sniffing** - the kind (image / video) and format come from the first bytes (magic
  numbers), never from the extension or ``Content-Type``; anything else (an HTML login page)
  is refused as ``not_media``;
* **resumable** - finished files are atomically renamed from ``.part``; a re-run finds them and
  does not download again (``status == "cached"``). Permanent failures leave a small ``.fail``
  marker so dead links are not hammered again (delete the markers, or ``retry_failed=True``,
  to try again); transient failures are retried on the next run;
* **redirects** - followed (up to 10, http/https only; urllib's handler).

The stdlib ``urllib`` is used on purpose: no extra dependency, and everything needed here
(streaming reads, timeouts, redirects) is there. Use :func:`download_many` for a thread pool
over many URLs (results in input order); ``omnisource ingest --urls`` runs it chunk by chunk
inside the resumable, sharded stage runner.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

# content sniffing lives in the data layer: one rule for what a video is, used by every stage
from omnisource.data.decode.sniff import SNIFF_BYTES, sniff, sniff_file  # noqa: F401
from omnisource.errors import InputError

log = logging.getLogger("omnisource.web.download")

USER_AGENT = "omnisource-downloader/0.1 (+https://github.com/omnisource)"

# --------------------------------------------------------------------------------------------
# one URL
# --------------------------------------------------------------------------------------------
@dataclass
class DownloadResult:
    url: str
    status: str                     # 'ok' (downloaded now) | 'cached' (found on disk) | 'failed'
    path: str | None = None         # relative to the download folder, '/'-separated
    reason: str | None = None       # failure reason: http_404, timeout, too_large, not_media, ...
    kind: str | None = None         # 'image' | 'video'
    format: str | None = None       # sniffed container / codec family
    bytes: int = 0
    http_status: int | None = None
    content_type: str | None = None
    attempts: int = 0
    detail: str | None = None       # human-readable error text

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "cached")


class _Permanent(Exception):
    def __init__(self, reason: str, detail: str = "", http_status: int | None = None):
        super().__init__(detail or reason)
        self.reason, self.detail, self.http_status = reason, detail, http_status


class _Transient(Exception):
    def __init__(self, reason: str, detail: str = "", http_status: int | None = None, retry_after: float | None = None):
        super().__init__(detail or reason)
        self.reason, self.detail, self.http_status, self.retry_after = reason, detail, http_status, retry_after


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib API
        if not newurl.lower().startswith(("http://", "https://")):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-http URL refused: {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """A deadline on one whole request (connect, status line, headers, body, redirects).

    Why: socket timeouts restart at every byte, so a server sending its headers one byte a
    second never timed out (``max_time`` was checked only in the body loop). Every connection
    the request opens registers its socket here (:class:`_DeadlineConnection`); a timer shuts
    them down at the deadline, which wakes whatever read is blocked, in any phase."""

    def __init__(self, seconds: float):
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        _ACTIVE.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _ACTIVE.deadline = None

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._socks:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_ACTIVE = threading.local()   # the deadline of the request running on this thread


class _DeadlineConnection:
    """Mixin for http.client connections: register the connected socket with the deadline."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        d = getattr(_ACTIVE, "deadline", None)
        if d is not None:
            d.attach(self.sock)  # type: ignore[attr-defined]


class _HTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):  # noqa: D102 - urllib API
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):  # noqa: D102 - urllib API
        return self.do_open(_HTTPSConnection, req, context=self._context)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects(), _HTTPHandler(), _HTTPSHandler())


def url_hash(url: str) -> str:
    return hashlib.sha1(url.encode("utf-8")).hexdigest()


class Downloader:
    """Fetch single URLs into ``out_dir`` (thread-safe: one instance serves a whole pool)."""

    def __init__(self, out_dir: str | Path, *, timeout: float = 20.0, max_time: float = 600.0,
                 retries: int = 3, backoff: float = 0.5, max_backoff: float = 30.0,
                 max_bytes: int = 200 * 1024 * 1024, user_agent: str = USER_AGENT,
                 kinds: tuple[str, ...] = ("image", "video"), retry_failed: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.root = self.out_dir.resolve()
        self.timeout, self.max_time = float(timeout), float(max_time)
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.max_bytes = int(max_bytes)
        self.user_agent = user_agent
        self.kinds = tuple(kinds)
        self.retry_failed = retry_failed

    # -- names --------------------------------------------------------------------------------
    def _base(self, url: str) -> Path:
        h = url_hash(url)
        base = (self.root / h[:2] / h)
        # hash names cannot escape, but check anyway: this is the one invariant that must hold
        if self.root not in base.parents:
            raise RuntimeError(f"refusing to write outside {self.root}: {base}")
        return base

    def find_existing(self, url: str) -> Path | None:
        """A finished download of ``url`` (any sniffed extension), or None."""
        base = self._base(url)
        if not base.parent.is_dir():
            return None
        for p in sorted(base.parent.glob(base.name + ".*")):
            if p.suffix not in (".part", ".fail") and p.is_file():
                return p
        return None

    # -- fetching -----------------------------------------------------------------------------
    def fetch(self, url: str) -> DownloadResult:
        """Download one URL (with retries); never raises for network or content problems."""
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            return DownloadResult(url, "failed", reason="bad_url", detail="only http(s) URLs are downloaded")
        if any(ord(c) < 33 or ord(c) == 127 for c in url):
            return DownloadResult(url, "failed", reason="bad_url", detail="control characters or spaces in the URL")
        done = self.find_existing(url)
        if done is not None:
            s = sniff_file(done)
            if s is not None:
                return DownloadResult(url, "cached", path=self._rel(done), kind=s[0], format=s[1],
                                      bytes=done.stat().st_size)
        base = self._base(url)
        fail = base.with_name(base.name + ".fail")
        if fail.exists() and not self.retry_failed:
            with contextlib.suppress(OSError, ValueError):
                prev = json.loads(fail.read_text())
                return DownloadResult(**{**prev, "status": "failed", "attempts": 0})
        rng = random.Random(url)
        attempt = 0
        while True:
            attempt += 1
            try:
                res = self._fetch_once(url, base)
                res.attempts = attempt
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(fail)
                return res
            except _Permanent as e:
                res = DownloadResult(url, "failed", reason=e.reason, http_status=e.http_status,
                                     attempts=attempt, detail=e.detail)
                base.parent.mkdir(parents=True, exist_ok=True)
                from omnisource.utils.io import atomic_write_json

                atomic_write_json(fail, {k: v for k, v in asdict(res).items() if k not in ("status", "attempts")})
                return res
            except Exception as e:  # noqa: BLE001 - whatever one URL does, the job goes on
                if isinstance(e, _Transient):
                    pass
                else:
                    log.debug("%s: unexpected %s", url, type(e).__name__, exc_info=True)
                    return DownloadResult(url, "failed", reason="error", attempts=attempt,
                                          detail=f"{type(e).__name__}: {str(e)[:200]}")
                if attempt > self.retries:
                    return DownloadResult(url, "failed", reason=e.reason, http_status=e.http_status,
                                          attempts=attempt, detail=e.detail)
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * rng.uniform(0.75, 1.25)
                if e.retry_after is not None:
                    delay = min(self.max_backoff, max(delay, e.retry_after))
                log.debug("%s: %s, retry %d/%d in %.2fs", url, e.reason, attempt, self.retries, delay)
                time.sleep(delay)

    def _rel(self, p: Path) -> str:
        return p.resolve().relative_to(self.root).as_posix()

    def _fetch_once(self, url: str, base: Path) -> DownloadResult:
        """One attempt under a deadline of ``max_time`` on the whole request."""
        try:
            req = urllib.request.Request(url, headers={"User-Agent": self.user_agent,
                                                       "Accept": "image/*,video/*,*/*"})
        except ValueError as e:    # unparsable URL: this row's problem, not the job's
            raise _Permanent("bad_url", str(e)[:200]) from None
        deadline = _Deadline(self.max_time)
        with deadline:
            try:
                return self._fetch_within(url, base, req, deadline)
            except (_Permanent, _Transient):
                if deadline.fired:
                    raise _Transient("timeout", f"request longer than {self.max_time:.0f}s") from None
                raise
            except (ConnectionError, OSError, http.client.HTTPException) as e:
                if deadline.fired:
                    raise _Transient("timeout", f"request longer than {self.max_time:.0f}s") from None
                raise _Transient("connection", f"{type(e).__name__}: {e}"[:200]) from None

    def _fetch_within(self, url: str, base: Path, req: urllib.request.Request, deadline: _Deadline) -> DownloadResult:
        t0 = time.monotonic()
        part = base.with_name(f"{base.name}.{os.getpid()}.{id(req):x}.part")
        try:
            resp = _OPENER.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            code = e.code
            e.close()
            retry_after = None
            with contextlib.suppress(TypeError, ValueError):
                retry_after = float(e.headers.get("Retry-After")) if e.headers is not None else None
            if code >= 500 or code in (408, 429):
                raise _Transient(f"http_{code}", str(e), code, retry_after) from None
            raise _Permanent(f"http_{code}", str(e), code) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise _Transient("timeout", str(e.reason)) from None
            raise _Transient("connection", str(e.reason)) from None
        except (socket.timeout, TimeoutError) as e:
            raise _Transient("timeout", str(e)) from None
        except http.client.InvalidURL as e:   # bad port, bad host, control characters
            raise _Permanent("bad_url", str(e)[:200]) from None
        except http.client.HTTPException as e:  # bad status line, > 100 headers, huge header line
            raise _Permanent("bad_response", f"{type(e).__name__}: {str(e)[:160]}") from None
        except ValueError as e:                 # urllib's own URL checks
            raise _Permanent("bad_url", str(e)[:200]) from None
        except (ConnectionError, OSError) as e:
            raise _Transient("connection", str(e)) from None
        try:
            status = getattr(resp, "status", 200)
            ctype = resp.headers.get("Content-Type")
            clen = resp.headers.get("Content-Length")
            if clen is not None and clen.isdigit() and int(clen) > self.max_bytes:
                raise _Permanent("too_large", f"Content-Length {clen} > cap {self.max_bytes}", status)
            base.parent.mkdir(parents=True, exist_ok=True)
            n = 0
            head = b""
            with open(part, "wb") as fh:
                while True:
                    if time.monotonic() - t0 > self.max_time:
                        raise _Transient("timeout", f"transfer longer than {self.max_time:.0f}s")
                    try:
                        # read1: return what has arrived (read() would wait for 64 KiB and
                        # let a trickling server run past max_time)
                        block = resp.read1(1 << 16)
                    except (socket.timeout, TimeoutError) as e:
                        raise _Transient("timeout", f"read: {e}") from None
                    except http.client.IncompleteRead as e:   # bad chunked encoding, cut body
                        raise _Transient("truncated", f"read: {type(e).__name__}") from None
                    except http.client.HTTPException as e:
                        raise _Permanent("bad_response", f"read: {type(e).__name__}: {str(e)[:160]}") from None
                    except (ConnectionError, OSError, ValueError) as e:
                        raise _Transient("connection", f"read: {e}") from None
                    if not block:
                        if deadline.fired:   # the watchdog ended the stream, not the server
                            raise _Transient("timeout", f"request longer than {self.max_time:.0f}s")
                        break
                    n += len(block)
                    if n > self.max_bytes:
                        raise _Permanent("too_large", f"body passed the cap of {self.max_bytes} bytes", status)
                    if len(head) < SNIFF_BYTES:
                        head += block[:SNIFF_BYTES - len(head)]
                        if len(head) >= SNIFF_BYTES and sniff(head) is None:
                            raise _Permanent("not_media", f"content is not an image or video (Content-Type {ctype})", status)
                    fh.write(block)
                fh.flush()
                os.fsync(fh.fileno())
            if n == 0:
                raise _Permanent("empty", "empty body", status)
            if clen is not None and clen.isdigit() and n < int(clen):
                raise _Transient("truncated", f"got {n} of {clen} bytes")
            s = sniff(head)
            if s is None:
                raise _Permanent("not_media", f"content is not an image or video (Content-Type {ctype})", status)
            if s[0] not in self.kinds:
                raise _Permanent(f"not_{'_'.join(self.kinds)}", f"got {s[0]} ({s[1]})", status)
            final = base.with_name(base.name + s[2])
            os.replace(part, final)
            return DownloadResult(url, "ok", path=self._rel(final), kind=s[0], format=s[1], bytes=n,
                                  http_status=status, content_type=ctype)
        finally:
            resp.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)


def download_many(urls: Iterable[str], downloader: Downloader, workers: int = 8) -> Iterator[DownloadResult]:
    """Download ``urls`` with a thread pool; yields results in input order.

    At most ``4 * workers`` downloads are in flight or waiting to be yielded, so memory stays
    bounded for arbitrarily long URL lists.
    """
    window = max(1, 4 * workers)
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="dl") as pool:
        for url in urls:
            pending.append(pool.submit(downloader.fetch, url))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def read_url_list(path: str | Path) -> Iterator[dict]:
    """Rows ``{"url", "query", "line"}`` of a URL list: ``URL<TAB>QUERY`` (query optional),
    blank lines and ``#`` comments skipped. Errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("URL list not found", path)
    with open(path, encoding="utf-8") as fh:
        for ln, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) > 2:
                raise InputError(f"expected 'URL<TAB>QUERY', got {len(parts)} columns", path, ln)
            url = parts[0].strip()
            # a row that is no http(s) URL (file:, ftp:, javascript:, garbage) is that row's
            # failure (Downloader.fetch reports it as bad_url), never the whole list's
            yield {"url": url, "query": parts[1].strip() if len(parts) == 2 else None, "line": ln}
