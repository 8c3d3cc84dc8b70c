"""The downloader against a local HTTP server on 127.0.0.1 (good, corrupt, slow, huge,
redirecting, flaky and missing files)."""
from __future__ import annotations

import io
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnisource.web.download import Downloader, download_many, read_url_list, sniff, sniff_file

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _jpeg(seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def _mp4() -> bytes:
    real = SHARED / "mmaction2" / "tests" / "data" / "rawvideo_dataset" / "part_0.mp4"
    if real.is_file():
        return real.read_bytes()
    return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(2000)


GOOD = _jpeg()
VIDEO = _mp4()
CAP = 200_000


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()

    def log_message(self, *a):  # keep test output clean
        pass

    def _send(self, body: bytes, ctype: str = "image/jpeg", code: int = 200, length: bool = True):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server API
        path = self.path.split("?")[0]
        _Handler.hits[path] += 1
        n = _Handler.hits[path]
        if path.startswith("/good"):
            self._send(GOOD, "text/plain")                      # wrong Content-Type on purpose
        elif path == "/clip.jpg":                                # a video behind an image name
            self._send(VIDEO, "image/jpeg")
        elif path == "/login.jpg":                               # HTML error page served as .jpg
            self._send(b"<!DOCTYPE html><html><body>please log in</body></html>" + b" " * 600, "image/jpeg")
        elif path == "/slow.jpg":
            time.sleep(2.5)
            self._send(GOOD)
        elif path == "/huge.mp4":                                # honest Content-Length above the cap
            self.send_response(200)
            self.send_header("Content-Length", str(10 * CAP))
            self.end_headers()
            try:
                for _ in range(10):
                    self.wfile.write(VIDEO[:1000] + bytes(CAP - 1000))
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/endless.mp4":                             # no Content-Length, never ends
            self.send_response(200)
            self.end_headers()
            try:
                self.wfile.write(VIDEO[:1000])
                for _ in range(100):
                    self.wfile.write(bytes(50_000))
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/trickle.jpg":                             # each read is quick, the whole is not
            self.send_response(200)
            self.end_headers()
            try:
                self.wfile.write(GOOD[:600])
                for i in range(40):
                    time.sleep(0.2)
                    self.wfile.write(GOOD[600 + i:601 + i])
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/good-target.jpg")
            self.end_headers()
        elif path == "/flaky.jpg":
            if n == 1:
                self._send(b"oops", "text/plain", code=500)
            else:
                self._send(GOOD)
        elif path == "/empty.jpg":
            self._send(b"")
        else:
            self._send(b"not found", "text/plain", code=404)


@pytest.fixture()
def server():
    _Handler.hits = Counter()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _dl(out: Path, **kw) -> Downloader:
    args = dict(timeout=1.0, retries=2, backoff=0.01, max_bytes=CAP, max_time=10.0)
    args.update(kw)
    return Downloader(out, **args)


def test_sniffing_ignores_names():
    assert sniff(GOOD)[:2] == ("image", "jpeg")
    assert sniff(VIDEO)[0] == "video"
    assert sniff(b"<html>") is None and sniff(b"") is None
    assert sniff(b"GET / HTTP/1.1\r\n" * 40) is None                 # a lone 'G' is no MPEG-TS
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    assert sniff(png.getvalue())[1] == "png"
    if SHARED.is_dir():
        assert sniff_file(SHARED / "decord" / "tests" / "test_data" / "video_0.mov")[0] == "video"


def test_download_outcomes(server, tmp_path):
    out = tmp_path / "dl"
    names = ["good.jpg", "clip.jpg", "login.jpg", "slow.jpg", "huge.mp4", "endless.mp4", "redirect",
             "flaky.jpg", "missing.jpg", "empty.jpg", "..%2F..%2Fescape.jpg"]
    urls = [f"{server}/{n}" for n in names] + ["ftp://example.com/x.jpg"]
    res = dict(zip(names + ["ftp"], download_many(urls, _dl(out), workers=4)))

    good = res["good.jpg"]
    assert good.status == "ok" and good.kind == "image" and good.format == "jpeg"
    assert (out / good.path).read_bytes() == GOOD and good.path.endswith(".jpg")
    assert res["clip.jpg"].kind == "video" and res["clip.jpg"].path.endswith(".mp4")
    assert res["login.jpg"].reason == "not_media"
    assert res["slow.jpg"].reason == "timeout" and res["slow.jpg"].attempts == 3     # 1 + 2 retries
    assert res["huge.mp4"].reason == "too_large"
    assert res["endless.mp4"].reason == "too_large"
    assert res["redirect"].status == "ok" and (out / res["redirect"].path).read_bytes() == GOOD
    assert res["flaky.jpg"].status == "ok" and res["flaky.jpg"].attempts == 2
    assert res["missing.jpg"].reason == "http_404" and res["missing.jpg"].attempts == 1   # 4xx: no retry
    assert res["empty.jpg"].reason == "empty"
    assert res["..%2F..%2Fescape.jpg"].reason == "http_404"
    assert res["ftp"].reason == "bad_url"
    # nothing outside the output folder, no .part leftovers, names are hashes
    files = [p for p in out.rglob("*") if p.is_file()]
    assert all(out.resolve() in p.resolve().parents for p in files)
    assert not any(p.suffix == ".part" for p in files)
    assert {p.suffix for p in files} <= {".jpg", ".mp4", ".fail"}
    assert all(len(p.stem) == 40 for p in files)


def test_whole_transfer_deadline(server, tmp_path):
    res = _dl(tmp_path / "dl", retries=0, max_time=1.0).fetch(f"{server}/trickle.jpg")
    assert res.status == "failed" and res.reason == "timeout" and "longer than" in res.detail
    assert not list((tmp_path / "dl").rglob("*.part"))


def test_resume_skips_finished_and_permanent_failures(server, tmp_path):
    out = tmp_path / "dl"
    urls = [f"{server}/good.jpg", f"{server}/missing.jpg", f"{server}/flaky.jpg", f"{server}/slow.jpg"]
    first = list(download_many(urls, _dl(out, retries=0), workers=2))
    assert [r.status for r in first] == ["ok", "failed", "failed", "failed"]
    hits = Counter(_Handler.hits)
    second = list(download_many(urls, _dl(out, retries=0), workers=2))
    assert second[0].status == "cached" and second[0].path == first[0].path
    assert second[1].reason == "http_404"                       # from the .fail marker
    assert second[2].status == "ok"                             # transient failure retried next run
    assert _Handler.hits["/good.jpg"] == hits["/good.jpg"]      # not fetched again
    assert _Handler.hits["/missing.jpg"] == hits["/missing.jpg"]
    third = _dl(out, retries=0, retry_failed=True).fetch(f"{server}/missing.jpg")
    assert third.reason == "http_404" and _Handler.hits["/missing.jpg"] == hits["/missing.jpg"] + 1


def test_url_list_errors(tmp_path):
    from omnisource.errors import InputError

    p = tmp_path / "urls.tsv"
    p.write_text("# crawl\nhttp://a/x.jpg\tabseiling\n\nhttps://b/y.mp4\n")
    rows = list(read_url_list(p))
    assert [(r["url"], r["query"], r["line"]) for r in rows] == [
        ("http://a/x.jpg", "abseiling", 2), ("https://b/y.mp4", None, 4)]
    p.write_text("http://a/x.jpg\tq\nfile:///etc/passwd\tq\n")     # that row fails, not the list
    assert [r["line"] for r in read_url_list(p)] == [1, 2]
    p.write_text("http://a/x.jpg\tq\textra\n")
    with pytest.raises(InputError, match=":1:"):
        list(read_url_list(p))


def _raw_server(answer):
    """A TCP server on 127.0.0.1 that writes ``answer(conn)`` bytes, whatever was asked."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            def serve(c=conn):
                try:
                    c.recv(4096)
                    answer(c)
                except OSError:
                    pass
                finally:
                    c.close()
            threading.Thread(target=serve, daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv, stop, f"http://127.0.0.1:{srv.getsockname()[1]}"


@pytest.mark.parametrize("name, payload, reason", [
    ("bad status line", b"HTTP/1.1 OK-ish\r\n\r\n", "bad_response"),
    ("101 headers", b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n",
     "bad_response"),
    ("70 kB header line", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "bad_response"),
    ("bad chunked encoding", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
     "truncated"),
])
def test_malformed_responses_fail_their_row_only(tmp_path, name, payload, reason):
    srv, stop, url = _raw_server(lambda c: c.sendall(payload))
    try:
        res = _dl(tmp_path / "dl", retries=0).fetch(f"{url}/x.jpg")
    finally:
        stop.set()
        srv.close()
    assert res.status == "failed" and res.reason == reason, (name, res)


def test_headers_trickled_one_byte_at_a_time_meet_the_deadline(tmp_path):
    def trickle(c):
        for b in b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Slow: " + b"a" * 100:
            c.sendall(bytes([b]))
            time.sleep(0.05)

    srv, stop, url = _raw_server(trickle)
    try:
        t0 = time.monotonic()
        res = _dl(tmp_path / "dl", retries=0, timeout=5.0, max_time=1.0).fetch(f"{url}/x.jpg")
        took = time.monotonic() - t0
    finally:
        stop.set()
        srv.close()
    assert res.status == "failed" and res.reason == "timeout" and "longer than 1s" in res.detail
    assert took < 4.0


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc/x.jpg", "http://[::1/x.jpg", "http://a\x01b/x.jpg",
                                 "http://a b/x.jpg", "file:///etc/passwd", "ftp://h/x.jpg", "javascript:alert(1)"])
def test_unusable_url_rows_fail_their_row_only(tmp_path, url):
    res = _dl(tmp_path / "dl", retries=0).fetch(url)
    assert res.status == "failed" and res.reason == "bad_url", res
