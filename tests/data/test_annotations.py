"""Annotation formats: real mmaction2 / PaddleVideo / HMDB lists, round trips, line-numbered errors."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from omnisource.data.annotations import (SCHEMA_VERSION, DuplicateEntryWarning, ManifestRecord, ManifestWriter,
                                         Sample, detect_format, iter_manifest, load_annotations, read_label_map,
                                         resolve_path, write_annotations)
from omnisource.errors import InputError


def _load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateEntryWarning)
        return load_annotations(path, **kw)


@pytest.fixture(scope="module")
def ann(shared_data: Path) -> Path:
    return shared_data / "mmaction2" / "tests" / "data" / "annotations"


# ------------------------------------------------------------------ real files
def test_video_list(ann):
    with pytest.warns(DuplicateEntryWarning, match=r"video_test_list.txt.*line 2 repeats line 1"):
        rows = load_annotations(ann / "video_test_list.txt")
    assert detect_format(ann / "video_test_list.txt") == "video"
    assert [(r.path, r.label, r.kind, r.line) for r in rows] == [("test.mp4", 0, "video", 1), ("test.mp4", 0, "video", 2)]


def test_video_list_multi_label(ann):
    rows = _load(ann / "video_test_list_multi_label.txt")
    assert [r.label for r in rows] == [[0, 3], [0, 2, 4]]
    with pytest.raises(InputError, match=r"video_test_list_multi_label.txt:1: .*label 3 outside"):
        _load(ann / "video_test_list_multi_label.txt", num_classes=3)


def test_rawframe_lists(ann):
    plain = _load(ann / "rawframe_test_list.txt")
    assert [(r.path, r.total_frames, r.offset, r.label) for r in plain] == [("imgs", 5, 0, 127)] * 2
    off = _load(ann / "rawframe_test_list_with_offset.txt")
    assert [(r.path, r.offset, r.total_frames, r.label) for r in off] == [("imgs", 2, 5, 127)] * 2
    multi = _load(ann / "rawframe_test_list_multi_label.txt")
    assert [(r.total_frames, r.label) for r in multi] == [(5, [1]), (5, [3, 5])]
    # the same 4-field rows read as two-label multi-label rows when asked
    forced = _load(ann / "rawframe_test_list_with_offset.txt", with_offset=False, multi_label=True)
    assert [(r.total_frames, r.label) for r in forced] == [(2, [5, 127])] * 2
    for f in ("rawframe_test_list.txt", "rawframe_test_list_with_offset.txt", "rawframe_test_list_multi_label.txt"):
        assert detect_format(ann / f) == "rawframes"


def test_untrimmed_txt_and_json(ann):
    root = ann.parent
    assert detect_format(ann / "rawvideo_test_anno.txt", data_root=root) == "untrimmed"
    assert detect_format(ann / "rawvideo_test_anno.json") == "untrimmed_json"
    txt = load_annotations(ann / "rawvideo_test_anno.txt", data_root=root)
    js = load_annotations(ann / "rawvideo_test_anno.json")
    key = lambda r: (r.path, r.label, r.num_clips, r.pos_clip_inds, r.kind)  # noqa: E731
    assert [key(r) for r in txt] == [key(r) for r in js] == [("rawvideo_dataset", 1, 2, [0], "untrimmed")]
    assert js[0].line == 2  # the line where the JSON object starts


def test_paddlevideo_and_hmdb_lists(shared_data):
    k400 = shared_data / "paddlevideo" / "data" / "k400"
    labels = read_label_map(k400 / "Kinetics-400_label_list.txt")  # "idx name" form
    assert len(labels) == 400 and labels[0] == "abseiling"
    vids = _load(k400 / "val_small_videos.list", label_map=labels)
    frames = _load(k400 / "val_small_frames.list", label_map=labels)
    assert detect_format(k400 / "val_small_videos.list") == "video"
    assert detect_format(k400 / "val_small_frames.list") == "rawframes"  # folder names end in .mp4
    assert len(vids) == 128 and len(frames) == 200
    assert frames[0].path == "abseiling/_4YTwq0-73Y_000044_000054.mp4" and frames[0].total_frames == 300
    hmdb = shared_data / "annotations" / "hmdb51_giocoal" / "hmdb51_val_split_1_rawframes.txt"
    hmdb_map = read_label_map(shared_data / "mmaction2" / "tools" / "data" / "hmdb51" / "label_map.txt")
    rows = _load(hmdb, label_map=hmdb_map)
    assert len(rows) == 1530 and all(r.kind == "rawframes" for r in rows)
    assert rows[0].path.startswith("data/hmdb51/rawframes/brush_hair/")  # Windows separators normalised
    assert {r.label for r in rows} == set(range(51))


def test_k400_label_map(shared_data):
    names = read_label_map(shared_data / "mmaction2" / "tools" / "data" / "kinetics" / "label_map_k400.txt")
    assert len(names) == 400 and names[5] == "archery" and "arm wrestling" in names


# ------------------------------------------------------------------ round trips
SAMPLES = {
    "video": [Sample("a/b.mp4", 3, "video"), Sample("c.avi", None, "video"), Sample("d.mkv", 0, "video")],
    "image": [Sample("x/1.jpg", 2, "image"), Sample("y.png", 1, "image")],
    "rawframes": [Sample("f/v1", 3, "rawframes", total_frames=120), Sample("f/v2", 0, "rawframes", total_frames=7)],
    "untrimmed": [Sample("u/vid", 4, "untrimmed", num_clips=5, pos_clip_inds=[0, 3]),
                  Sample("u/w", 1, "untrimmed", num_clips=1, pos_clip_inds=[0])],
}


def _key(s: Sample):
    return (s.path, s.label, s.kind, s.total_frames, s.offset, s.num_clips, s.pos_clip_inds)


@pytest.mark.parametrize("fmt", ["video", "image", "rawframes", "untrimmed", "untrimmed_json"])
def test_round_trip(tmp_path, fmt):
    samples = SAMPLES["untrimmed" if fmt == "untrimmed_json" else fmt]
    out = tmp_path / ("list.json" if fmt == "untrimmed_json" else "list.txt")
    write_annotations(out, samples, fmt)
    back = load_annotations(out, format=fmt)
    assert [_key(s) for s in back] == [_key(s) for s in samples]
    text = out.read_text().splitlines()
    if fmt == "untrimmed_json":  # each row points at the line where its JSON object starts
        assert [text[s.line - 1].strip() for s in back] == ["{"] * len(samples) and back[0].line == 2
    else:
        assert [s.line for s in back] == list(range(1, len(samples) + 1))
    if fmt != "untrimmed":  # untrimmed txt looks like rawframes+offset without a data root
        assert detect_format(out) == fmt


def test_round_trip_rawframes_offset_and_multilabel(tmp_path):
    off = [Sample("d1", 2, "rawframes", total_frames=50, offset=10), Sample("d2", 1, "rawframes", total_frames=9)]
    write_annotations(tmp_path / "o.txt", off, "rawframes")
    assert (tmp_path / "o.txt").read_text().splitlines() == ["d1 10 50 2", "d2 0 9 1"]
    assert [_key(s) for s in load_annotations(tmp_path / "o.txt")] == [_key(s) for s in off]
    multi = [Sample("v.mp4", [1, 4], "video"), Sample("w.mp4", [0], "video")]
    write_annotations(tmp_path / "m.txt", multi, "video")
    assert [s.label for s in load_annotations(tmp_path / "m.txt")] == [[1, 4], [0]]
    mraw = [Sample("d1", [1, 4], "rawframes", total_frames=9, offset=3), Sample("d2", [2], "rawframes", total_frames=5)]
    write_annotations(tmp_path / "mr.txt", mraw, "rawframes", with_offset=True)
    back = load_annotations(tmp_path / "mr.txt", format="rawframes", with_offset=True, multi_label=True)
    assert [_key(s) for s in back] == [_key(s) for s in mraw]


def test_round_trip_manifest(tmp_path):
    recs = [
        ManifestRecord("img/a.jpg", "web_images", "image", 3, label=3, score=0.91, sha1="a" * 40, meta={"url": "u"}),
        ManifestRecord("vid/b.mp4", "web_videos", "video", 1, label=[0.1, 0.6, 0.2, 0.1], segment=(1.0, 4.5)),
        ManifestRecord("unt/c", "untrimmed", "untrimmed", 2, clips=[0, 4], frame_inds=None, meta={"num_clips": 6}),
        ManifestRecord("vid/d.mp4", "web_videos", "video", "yoga", frame_inds=[3, 9, 27]),
    ]
    write_annotations(tmp_path / "m.jsonl", recs, "manifest")
    assert detect_format(tmp_path / "m.jsonl") == "manifest"
    assert list(iter_manifest(tmp_path / "m.jsonl")) == recs
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["schema_version"] == SCHEMA_VERSION
    samples = load_annotations(tmp_path / "m.jsonl", label_map=["a", "b", "c", "yoga"])
    assert [s.label for s in samples] == [3, None, 2, 3]
    assert samples[1].soft_label == [0.1, 0.6, 0.2, 0.1] and samples[1].segment == (1.0, 4.5)
    assert samples[2].pos_clip_inds == [0, 4] and samples[2].num_clips == 6
    assert samples[3].frame_inds == [3, 9, 27]


# ------------------------------------------------------------------ errors with file:line
@pytest.mark.parametrize("text, fmt, line, match", [
    ("a.mp4 1\nb.mp4 x\n", "video", 2, "label must be an integer, got 'x'"),
    ("a.mp4 1\n\n/abs/b.mp4 2\n", "video", 3, "absolute path"),
    ("a.mp4 1\n../../etc/passwd 2\n", "video", 2, "escapes the data root"),
    ("a.mp4 1\nb.mp4 9\n", "video", 2, r"label 9 outside the label map \(0..4\)"),
    ("d1 10 1\nd2\n", "rawframes", 2, "expected 'frame_dir total_frames label', got 1 field"),
    ("d1 10 1\nd2 ten 1\n", "rawframes", 2, "total_frames must be an integer"),
    ("v 1 3 0\nw 1 2 5\n", "untrimmed", 2, r"positive clip index 5 outside \[0, 2\)"),
    ("v 1 3 0\nw 1\n", "untrimmed", 2, "expected 'video_dir label num_clips"),
    ("a.mp4 1\nC:\\data\\b.mp4 2\n", "video", 2, "absolute path"),
])
def test_malformed_lists_name_file_and_line(tmp_path, text, fmt, line, match):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(InputError, match=match) as exc:
        load_annotations(f, format=fmt, num_classes=5)
    assert str(exc.value).startswith(f"{f}:{line}: ")


@pytest.mark.parametrize("lines, line, match", [
    (['{"path": "a.jpg", "source": "s", "kind": "image", "query_label": 1}', '{"path": "b.jpg", "source": "s"'],
     2, "invalid JSON"),
    (['{"path": "a.jpg", "source": "s", "kind": "image", "query_label": 1, "lable": 2}'], 1, "unknown key.*'lable'"),
    (['{"path": "a.jpg", "source": "s", "kind": "gif", "query_label": 1}'], 1, "'kind' must be one of"),
    (['{"schema_version": 1}', '{"path": "a.jpg", "kind": "image", "query_label": 1}'], 2, "lacks source"),
    (['{"path": "../a.jpg", "source": "s", "kind": "image", "query_label": 1}'], 1, "escapes the data root"),
    (['{"path": "a.jpg", "source": "s", "kind": "image", "query_label": 1, "schema_version": 99}'], 1, "newer"),
    (['{"path": "a.mp4", "source": "s", "kind": "video", "query_label": 1, "segment": [5, 2]}'], 1, "'segment'"),
    (['{"path": "a.jpg", "source": "s", "kind": "image", "query_label": 7}'], 1, "label 7 outside"),
])
def test_malformed_manifest_names_file_and_line(tmp_path, lines, line, match):
    f = tmp_path / "m.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=match) as exc:
        load_annotations(f, num_classes=5)
    assert str(exc.value).startswith(f"{f}:{line}: ")


def test_malformed_untrimmed_json_line(tmp_path):
    f = tmp_path / "u.json"
    f.write_text('[\n {"video_dir": "a", "label": 1, "num_clips": 2, "positive_clip_inds": [0]},\n'
                 ' {"video_dir": "b", "label": 1, "positive_clip_inds": [0]}\n]\n')
    with pytest.raises(InputError, match=r"u.json:3: entry lacks num_clips"):
        load_annotations(f)


def test_unrecognised_list_and_label_map_errors(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("a.mp4 1\nb.mp4 1.5\n")
    with pytest.raises(InputError, match=r"x.txt:2: not a recognised annotation list"):
        detect_format(f)
    lm = tmp_path / "labels.txt"
    lm.write_text("a\n\nb\n")
    with pytest.raises(InputError, match=r"labels.txt:2: blank line inside the label map"):
        read_label_map(lm)
    with pytest.raises(InputError, match="not found"):
        load_annotations(tmp_path / "missing.txt")


def test_duplicates_warn_with_lines(tmp_path):
    f = tmp_path / "d.txt"
    f.write_text("a.mp4 1\nb.mp4 2\na.mp4 1\n")
    with pytest.warns(DuplicateEntryWarning, match=r"d.txt: 1 duplicate entry: line 3 repeats line 1 \(a.mp4\)"):
        rows = load_annotations(f)
    assert len(rows) == 3  # kept: mmaction2 keeps them too


def test_resolve_path(tmp_path):
    assert resolve_path(tmp_path, "a/../b/c.mp4") == tmp_path / "b" / "c.mp4"
    for bad in ("/etc/passwd", "../x", "a/../../x", "\\\\server\\share\\x"):
        with pytest.raises(InputError):
            resolve_path(tmp_path, bad, "list.txt", 4)
    with pytest.raises(InputError, match=r"^list.txt:4: "):
        resolve_path(tmp_path, "../x", "list.txt", 4)


def test_write_rejects_whitespace_paths(tmp_path):
    with pytest.raises(InputError, match="whitespace"):
        write_annotations(tmp_path / "w.txt", [Sample("my video.mp4", 1, "video")], "video")
    assert not (tmp_path / "w.txt").exists()


# ------------------------------------------------------------------ manifest writer
def _rec(i: int) -> ManifestRecord:
    return ManifestRecord(f"img/{i}.jpg", "web_images", "image", i % 3, score=i / 10)


def test_manifest_writer_resume_after_torn_line(tmp_path):
    out = tmp_path / "stage" / "out.jsonl"
    w = ManifestWriter(out)
    for i in range(3):
        assert w.write(_rec(i))
    w.close()  # killed before finalize
    assert not out.exists()
    with open(w.partial, "a") as fh:  # a record torn mid-write
        fh.write('{"schema_version": 1, "path": "img/3.j')
    w2 = ManifestWriter(out)
    assert w2.keys == {"img/0.jpg", "img/1.jpg", "img/2.jpg"} and w2.resumed == 3
    assert "img/1.jpg" in w2 and not w2.write(_rec(1))  # already written: skipped
    for i in range(3, 5):
        w2.write(_rec(i))
    w2.finalize()
    assert not w2.partial.exists()
    assert [r.path for r in iter_manifest(out)] == [f"img/{i}.jpg" for i in range(5)]


def test_manifest_writer_context_manager(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with ManifestWriter(out) as w:
            w.write(_rec(0))
            raise RuntimeError("stage crashed")
    assert not out.exists() and w.partial.exists()
    with ManifestWriter(out) as w:  # resumes
        w.write(_rec(0))
        w.write(_rec(1))
    assert [r.path for r in iter_manifest(out)] == ["img/0.jpg", "img/1.jpg"]
    with ManifestWriter(out, resume=False) as w:  # fresh run replaces the file only when done
        w.write(_rec(7))
    assert [r.path for r in iter_manifest(out)] == ["img/7.jpg"]


def test_manifest_writer_nul_tail_and_validation(tmp_path):
    out = tmp_path / "o.jsonl"
    w = ManifestWriter(out)
    w.write(_rec(0))
    w.close()
    with open(w.partial, "ab") as fh:  # garbage a crash can leave behind, with a newline
        fh.write(b"\x00\x00\x00\n")
    w2 = ManifestWriter(out)
    assert w2.keys == {"img/0.jpg"}
    with pytest.raises(InputError, match="escapes the data root"):
        w2.write(ManifestRecord("../x.jpg", "s", "image", 0))
    w2.finalize()
    assert len(list(iter_manifest(out))) == 1


def test_iter_manifest_streams(tmp_path):
    f = tmp_path / "big.jsonl"
    f.write_text("".join(json.dumps(_rec(i).to_json()) + "\n" for i in range(50)) + "{broken\n")
    it = iter_manifest(f)
    assert next(it).path == "img/0.jpg"  # readable before the broken line is reached
    with pytest.raises(InputError, match=r"big.jsonl:51: invalid JSON"):
        list(it)


# ------------------------------------------------------------------ parity with mmaction2 1.2.0
_MM_PY = Path.home() / ".cache" / "mmaction2-ref" / "bin" / "python"
_MM_SCRIPT = r"""
import json, sys
from mmaction.datasets import VideoDataset, RawframeDataset
out = {}
for spec in json.loads(sys.argv[1]):
    cls = {"video": VideoDataset, "rawframes": RawframeDataset}[spec.pop("cls")]
    ds = cls(pipeline=[], **spec)
    rows = []
    for i in range(len(ds)):
        d = ds.get_data_info(i)
        lb = d["label"]
        lb = [int(j) for j, v in enumerate(lb.tolist()) if v] if hasattr(lb, "tolist") else int(lb)
        rows.append([d.get("filename", d.get("frame_dir")), d.get("offset", 0), d.get("total_frames"), lb])
    out[spec["ann_file"]] = rows
print(json.dumps(out))
"""


@pytest.mark.mmaction2
def test_lists_parse_like_mmaction2(ann, shared_data):
    import subprocess

    if not _MM_PY.exists():
        pytest.skip("mmaction2 reference venv not found")
    k400 = shared_data / "paddlevideo" / "data" / "k400"
    hmdb = shared_data / "annotations" / "hmdb51_giocoal" / "hmdb51_val_split_1_rawframes.txt"
    specs = [  # (mmaction2 dataset kwargs, our load_annotations kwargs)
        ({"cls": "video", "ann_file": ann / "video_test_list.txt"}, {}),
        ({"cls": "video", "ann_file": ann / "video_test_list_multi_label.txt", "multi_class": True,
          "num_classes": 5}, {"num_classes": 5}),
        ({"cls": "rawframes", "ann_file": ann / "rawframe_test_list.txt"}, {}),
        ({"cls": "rawframes", "ann_file": ann / "rawframe_test_list_with_offset.txt", "with_offset": True}, {}),
        ({"cls": "rawframes", "ann_file": ann / "rawframe_test_list_multi_label.txt", "multi_class": True,
          "num_classes": 6}, {"num_classes": 6}),
        ({"cls": "video", "ann_file": k400 / "val_small_videos.list"}, {}),
        ({"cls": "rawframes", "ann_file": k400 / "val_small_frames.list"}, {}),
        ({"cls": "rawframes", "ann_file": hmdb}, {}),
    ]
    arg = [{**{k: str(v) if isinstance(v, Path) else v for k, v in mm.items()},
            "data_prefix": {"video": ""} if mm["cls"] == "video" else {"img": ""}} for mm, _ in specs]
    res = subprocess.run([str(_MM_PY), "-c", _MM_SCRIPT, json.dumps(arg)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    for mm, ours_kw in specs:
        rows = _load(mm["ann_file"], **ours_kw)
        ours = [[r.path, r.offset, r.total_frames, r.label] for r in rows]
        want = [[p.replace("\\", "/"), off, tot, lb] for p, off, tot, lb in theirs[str(mm["ann_file"])]]
        assert ours == want, mm["ann_file"]
