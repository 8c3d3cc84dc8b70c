"""Ingest on real files from ../shared/data laid out as a crawl, plus list and URL inputs."""
from __future__ import annotations

import json
import os
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from omnisource.cli import main
from omnisource.data.annotations import iter_manifest
from omnisource.errors import InputError
from omnisource.web.ingest import build_query_map, ingest, normalise_query

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
IMG = SHARED / "pillow" / "Tests" / "images"
MM = SHARED / "mmaction2"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not available")

CLASSES = ["abseiling", "arm wrestling", "cleaning pool", "playing guitar"]

# (folder, file in shared data, name in the crawl, expected outcome)
LAYOUT = [
    ("abseiling", IMG / "hopper.jpg", "a.jpg", "image"),
    ("abseiling", IMG / "pil_sample_cmyk.jpg", "cmyk.jpg", "image"),
    ("abseiling", IMG / "truncated_jpeg.jpg", "trunc.jpg", "corrupt_image"),
    ("abseiling", IMG / "broken.png", "broken.png", "corrupt_image"),
    ("abseiling", IMG / "tiny.png", "tiny.png", "too_small"),
    ("abseiling", IMG / "hopper.png", "hopper_png_named.mp4", "image"),       # extension lies
    ("Arm_Wrestling", MM / "demo" / "demo.mp4", "clip.mp4", "video"),
    ("Arm_Wrestling", MM / "demo" / "demo.mp4", "sub/same_clip.mp4", "duplicate"),
    # one damaged packet mid-stream: opens and decodes its first frame (kept by default;
    # --full-decode drops it, see test_full_decode)
    ("Arm_Wrestling", SHARED / "decord" / "tests" / "test_data" / "corrupted.mp4", "corrupted.mp4", "video"),
    ("Arm_Wrestling", "TRUNCATED", "half.mp4", "corrupt_video"),      # demo.mp4 cut in half
    ("cleaning pool", MM / "tests" / "data" / "rawvideo_dataset" / "part_0.mp4", "p0.mp4", "video"),
    ("cleaning pool", MM / "tests" / "data" / "rawvideo_dataset" / "part_1.mp4", "p1.mp4", "duplicate"),
    ("cleaning pool", MM / "tests" / "data" / "annotations" / "video_test_list.txt", "notes.jpg", "unknown_format"),
    ("guitar playing", IMG / "flower.jpg", "f.jpg", "image"),                # query, not class name
    ("underwater hockey", IMG / "hopper.gif", "h.gif", "unknown_query"),
]


def _crawl(root: Path) -> Path:
    for folder, src, name, _ in LAYOUT:
        dst = root / folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src == "TRUNCATED":
            data = (MM / "demo" / "demo.mp4").read_bytes()
            dst.write_bytes(data[: len(data) // 2])
        else:
            os.symlink(src.resolve(), dst)
    return root


def _files(tmp: Path):
    lm = tmp / "labels.txt"
    lm.write_text("\n".join(CLASSES) + "\n")
    q = tmp / "queries.tsv"
    q.write_text("class\tquery\nplaying guitar\tguitar playing\n")
    return lm, q


def test_query_map():
    qm = build_query_map(CLASSES + ["juggling"], [("juggling", "playing guitar")])
    assert qm.lookup("Arm_Wrestling") == (1, None)
    assert qm.lookup("playing-guitar") == (None, "ambiguous_query")
    assert qm.lookup("nope") == (None, "unknown_query")
    assert normalise_query("  Playing__Guitar ") == "playing guitar"
    with pytest.raises(InputError):
        build_query_map(CLASSES, [("not a class", "x")])


def test_ingest_folders_real_files(tmp_path):
    crawl = _crawl(tmp_path / "crawl")
    lm, q = _files(tmp_path)
    out = tmp_path / "out"
    assert main(["ingest", "--folders", str(crawl), "--label-map", str(lm), "--queries", str(q), "--out", str(out),
                 "--source", "web", "--min-size", "16", "--workers", "2", "--chunk-size", "3"]) == 0
    recs = list(iter_manifest(out / "manifest.jsonl"))
    by_name = {Path(r.path).name: r for r in recs}
    expect_kept = {name.split("/")[-1]: kind for _, _, name, kind in LAYOUT if kind in ("image", "video")}
    assert {n: r.kind for n, r in by_name.items()} == expect_kept
    assert by_name["clip.mp4"].query_label == 1 and by_name["f.jpg"].query_label == 3
    clip = by_name["clip.mp4"].meta
    assert clip["frames"] == 280 and abs(clip["fps"] - 28.0) < 0.01 and (clip["width"], clip["height"]) == (340, 256)
    assert by_name["a.jpg"].meta["width"] > 0 and by_name["a.jpg"].meta["format"] == "jpeg"
    assert by_name["hopper_png_named.mp4"].meta["format"] == "png"
    assert all(len(r.sha1) == 40 and r.meta["bytes"] > 0 and r.source == "web" for r in recs)
    assert all((crawl / r.path).is_file() for r in recs)

    meta = json.loads((out / "meta.json").read_text())
    want = {}
    for _, _, _, kind in LAYOUT:
        if kind not in ("image", "video"):
            want[kind] = want.get(kind, 0) + 1
    assert meta["counts"]["dropped"]["by_reason"] == want
    assert meta["counts"]["in"]["total"] == len(LAYOUT)
    assert meta["counts"]["out"]["total"] == len(recs)
    dups = [json.loads(x) for x in (out / "duplicates.jsonl").read_text().splitlines()]
    assert {Path(d["path"]).name: Path(d["duplicate_of"]).name for d in dups} == {
        "same_clip.mp4": "clip.mp4", "p1.mp4": "p0.mp4"}
    dropped = [json.loads(x) for x in (out / "validate" / "dropped.jsonl").read_text().splitlines()]
    assert all(d["reason"] for d in dropped)

    # the same run again is skipped; another config reruns
    from omnisource.web.ingest import ValidateConfig

    before = (out / "manifest.jsonl").read_bytes()
    res = ingest(out, label_map=lm, folders=crawl, queries=q, cfg=ValidateConfig(min_size=16))
    assert res.skipped and res.manifest.read_bytes() == before
    res = ingest(out, label_map=lm, folders=crawl, queries=q, cfg=ValidateConfig(min_size=16, kinds=("image",)))
    assert not res.skipped and all(r.kind == "image" for r in iter_manifest(res.manifest))
    assert res.meta["counts"]["dropped"]["by_reason"]["not_image"] == 6


def test_full_decode_finds_mid_stream_damage(tmp_path):
    from omnisource.web.ingest import ValidateConfig, validate_file

    row = {"path": "corrupted.mp4", "query": "x", "query_label": 0}
    root = SHARED / "decord" / "tests" / "test_data"
    assert validate_file(root, row, ValidateConfig()).out.kind == "video"
    oc = validate_file(root, row, ValidateConfig(full_decode=True))
    assert oc.out is None and oc.drop_reason == "corrupt_video"
    ok = validate_file(MM / "tests" / "data" / "rawvideo_dataset", dict(row, path="part_0.mp4"),
                       ValidateConfig(full_decode=True))
    assert ok.out.meta["frames"] == 32


def test_ingest_list_and_strict(tmp_path):
    crawl = _crawl(tmp_path / "crawl")
    lm, _ = _files(tmp_path)
    lst = tmp_path / "files.tsv"
    lst.write_text("abseiling/a.jpg\tabseiling\n# comment\nabseiling/trunc.jpg\tabseiling\n"
                   f"{(crawl / 'cleaning pool' / 'p0.mp4')}\tcleaning pool\n")
    res = ingest(tmp_path / "out", label_map=lm, list_file=lst, root=crawl, workers=1)
    assert [Path(r.path).name for r in iter_manifest(res.manifest)] == ["a.jpg", "p0.mp4"]
    assert res.meta["counts"]["dropped"]["by_reason"] == {"corrupt_image": 1}
    from omnisource.errors import DataError
    with pytest.raises(DataError, match="trunc.jpg"):
        ingest(tmp_path / "strict", label_map=lm, list_file=lst, root=crawl, strict=True, workers=1)
    bad = tmp_path / "bad.tsv"
    bad.write_text("/etc/passwd\tabseiling\n")
    with pytest.raises(InputError, match="outside the data root"):
        ingest(tmp_path / "o2", label_map=lm, list_file=bad, root=crawl)


def test_ingest_urls(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(IMG / "hopper.jpg", site / "photo.jpg")
    shutil.copy(MM / "demo" / "demo.mp4", site / "video.bin")
    shutil.copy(IMG / "truncated_jpeg.jpg", site / "trunc.jpg")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        urls = tmp_path / "urls.tsv"
        urls.write_text(f"{base}/photo.jpg\tabseiling\n{base}/video.bin\tarm wrestling\n"
                        f"{base}/trunc.jpg\tabseiling\n{base}/gone.jpg\tabseiling\n{base}/photo.jpg?x=1\tabseiling\n")
        lm, _ = _files(tmp_path)
        res = ingest(tmp_path / "out", label_map=lm, urls=urls, download={"timeout": 5, "retries": 0})
    finally:
        srv.shutdown()
        srv.server_close()
    recs = list(iter_manifest(res.manifest))
    assert [(r.kind, r.query_label) for r in recs] == [("image", 0), ("video", 1)]
    assert all((res.data_root / r.path).is_file() for r in recs)
    assert recs[0].meta["url"].endswith("/photo.jpg")
    assert res.meta["counts"]["dropped"]["by_reason"] == {"corrupt_image": 1, "duplicate": 1}
    assert res.meta["download"]["dropped"]["by_reason"] == {"download_http_404": 1}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def test_ingest_two_ranks_equal_single_process(tmp_path):
    """torchrun-style sharding (RANK/WORLD_SIZE, file barrier): same bytes as one process."""
    import subprocess
    import sys

    crawl = _crawl(tmp_path / "crawl")
    lm, q = _files(tmp_path)
    args = ["--folders", str(crawl), "--label-map", str(lm), "--queries", str(q), "--workers", "1",
            "--chunk-size", "2"]
    assert main(["ingest", *args, "--out", str(tmp_path / "single")]) == 0
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [subprocess.Popen([sys.executable, "-m", "omnisource", "ingest", *args, "--out", str(tmp_path / "sharded")],
                              env={**env, "RANK": str(r), "WORLD_SIZE": "2"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    for name in ("manifest.jsonl", "duplicates.jsonl", "validate/dropped.jsonl"):
        assert (tmp_path / "sharded" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    m1 = json.loads((tmp_path / "single" / "meta.json").read_text())
    m2 = json.loads((tmp_path / "sharded" / "meta.json").read_text())
    assert m1["counts"] == m2["counts"]


def test_an_animated_gif_is_a_video_and_a_still_gif_an_image(tmp_path, shared_data):
    """One rule for what a video is (data.decode.sniff.media_kind), shared with data check and
    probe: ingest of a video crawl keeps animated GIFs, an image crawl keeps one-frame GIFs."""
    from omnisource.data.decode import probe
    from omnisource.web.ingest import ValidateConfig, validate_file

    anim = shared_data / "scikit-image" / "data" / "no_time_for_that_tiny.gif"
    still = shared_data / "pillow" / "Tests" / "images" / "hopper.gif"
    for p in (anim, still):
        os.symlink(p, tmp_path / p.name)
    row = {"query_label": 0, "query": "x"}
    vids = ValidateConfig(min_size=8, kinds=("video",), source="web_videos")
    imgs = ValidateConfig(min_size=8, kinds=("image",), source="web_images")
    out = validate_file(tmp_path, {**row, "path": anim.name}, vids)
    assert out.out is not None and out.out.kind == "video", out
    assert validate_file(tmp_path, {**row, "path": anim.name}, imgs).drop_reason == "not_image"
    assert validate_file(tmp_path, {**row, "path": still.name}, vids).drop_reason == "not_video"
    assert validate_file(tmp_path, {**row, "path": still.name}, imgs).out.kind == "image"
    assert probe(tmp_path / anim.name)["kind"] == "video"
    assert probe(tmp_path / still.name)["kind"] == "image"
