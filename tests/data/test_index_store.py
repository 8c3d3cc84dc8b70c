"""The on-disk store of demux indexes: exact round trips, readers that never demux twice,
stale and damaged stores, the DataLoader's worker processes, and ``omnisource probe``."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from helpers.media import encode_video  # noqa: E402
from omnisource.cli import main  # noqa: E402
from omnisource.data.decode import open_video  # noqa: E402
from omnisource.data.decode import pyav_reader  # noqa: E402
from omnisource.data.decode.index_store import (IndexStore, decode_index, encode_index,  # noqa: E402
                                                get_store)
from omnisource.data.decode.pyav_index import StreamIndex, clear_index_cache, file_key  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    clear_index_cache()
    yield
    clear_index_cache()


def _frame(i: int) -> np.ndarray:
    img = np.zeros((64, 96, 3), np.uint8)
    img[:] = ((37 * i) % 200 + 30, (91 * i) % 200 + 30, (13 * i) % 200 + 30)
    img[:8, : 8 + (i % 40)] = 255
    return img


def _write(path: Path, n: int, codec: str = "libx264", options: dict | None = None,
           **ctx) -> Path:
    return encode_video(path, n, codec, options, frame=_frame, **ctx)


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


X264_B = {"x264-params": "keyint=10:min-keyint=10:scenecut=0:bframes=2"}
KINDS = {  # one file per kind of index the reader builds
    "mp4-bframes.mp4": dict(codec="libx264", options=X264_B),                  # pts
    "mjpeg.avi": dict(codec="mjpeg"),                                          # pts, verify
    "h264-bframes.avi": dict(codec="libx264", options=X264_B),                 # ordinal + keys
    "mpeg2-ps.mpg": dict(codec="mpeg2video", options={"g": "12", "bf": "2",
                                                      "sc_threshold": "1000000000"},
                         bit_rate=1_500_000),                                   # pts, key sizes
}


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_of_index_round_trips_exactly(tmp_path, name):
    path = _write(tmp_path / name, 60, **KINDS[name])
    with open_video(path, cache_index=False) as r:
        index = r._build_index()
    back = decode_index(encode_index(index))
    for field in ("mode", "num_frames", "key_dpos", "key_pts", "key_seek", "key_size", "reason",
                  "verify"):
        assert getattr(back, field) == getattr(index, field), field
    assert np.array_equal(back.pts, index.pts) and back.pts.dtype == np.int64
    assert np.array_equal(back.dpos, index.dpos)


def test_the_kinds_cover_each_index_shape(tmp_path):
    shapes = set()
    for name, kw in KINDS.items():
        with open_video(_write(tmp_path / name, 60, **kw), cache_index=False) as r:
            ix = r._build_index()
        shapes.add((ix.mode, bool(ix.key_dpos), ix.verify, bool(ix.key_size)))
    assert shapes == {("pts", True, False, False), ("pts", True, True, False),
                      ("ordinal", True, True, False), ("pts", True, False, True)}
    # the fifth shape, decode order without keyframe jumps, carries only its reason
    plain = StreamIndex("ordinal", 81, reason="avi with packed MPEG-4 B-frames")
    back = decode_index(encode_index(plain))
    assert (back.mode, back.num_frames, back.reason, back.key_dpos) == ("ordinal", 81,
                                                                       plain.reason, [])
    for types in ("", "12332332", None):  # picture types learnt by reads (None: do not skip)
        plain.types = types
        assert decode_index(encode_index(plain)).types == types


def test_malformed_or_foreign_blobs_are_refused():
    good = encode_index(StreamIndex("ordinal", 5, reason="duplicate timestamps"))
    for bad in (b"", b"not zlib", good[:-3]):
        with pytest.raises(ValueError):
            decode_index(bad)
    import json
    import struct
    import zlib

    raw = zlib.decompress(good)
    (n,) = struct.unpack_from("<I", raw)
    head = json.loads(raw[4:4 + n])
    head["v"] = 99
    h = json.dumps(head).encode()
    with pytest.raises(ValueError, match="version"):
        decode_index(zlib.compress(struct.pack("<I", len(h)) + h + raw[4 + n:]))


def test_a_reader_with_a_store_never_demuxes_the_file_again(tmp_path, monkeypatch):
    path = _write(tmp_path / "v.mp4", 60, options=X264_B)
    ref = _frames(path)
    store_file = tmp_path / "idx.sqlite"
    idx = [3, 31, 58]
    with open_video(path, index_store=store_file) as r:
        assert np.array_equal(r.get_frames(idx), np.stack([ref[i] for i in idx]))
    store = get_store(store_file)
    assert len(store) == 1 and store.writes == 2       # the index, then the rotation it saw
    assert store.get(file_key(str(path))).rotation == 0
    clear_index_cache()                        # a new process, a new run: memory is empty

    def no_demux(*args, **kwargs):
        raise AssertionError("the file was demuxed although its index is stored")
    monkeypatch.setattr(pyav_reader, "build_index", no_demux)
    with open_video(path, index_store=store_file) as r:
        assert len(r) == 60 and r.mode == "pts"
        assert np.array_equal(r.get_frames(idx), np.stack([ref[i] for i in idx]))
    assert store.hits == 2                             # the check above, then the reader


def test_a_changed_file_is_indexed_again(tmp_path):
    path = _write(tmp_path / "v.mp4", 60, options=X264_B)
    store = IndexStore(tmp_path / "idx.sqlite")
    with open_video(path, index_store=store) as r:
        assert len(r) == 60
    _write(path, 45, options=X264_B)           # same path, other contents
    clear_index_cache()
    assert store.get(file_key(str(path))) is None
    with open_video(path, index_store=store) as r:
        assert len(r) == 45
        assert np.array_equal(r.get_frames([44]), _frames(path)[44][None])
    assert store.get(file_key(str(path))).num_frames == 45 and len(store) == 1


def test_a_fall_back_to_decode_order_is_remembered(tmp_path, monkeypatch):
    # a file whose timestamps disagreed with its decoder once starts in ordinal mode next time
    path = _write(tmp_path / "v.mp4", 40, options=X264_B)
    ref = _frames(path)
    store = IndexStore(tmp_path / "idx.sqlite")
    real = pyav_reader.PyAVReader._decode_packet

    real_drain = pyav_reader.PyAVReader._drain

    def silent_in_pts_mode(self, packet):
        frames = real(self, packet)
        return [] if self._index.mode == "pts" else frames

    def silent_drain(self):
        frames = real_drain(self)
        return [] if self._index.mode == "pts" else frames

    with monkeypatch.context() as m:
        m.setattr(pyav_reader.PyAVReader, "_decode_packet", silent_in_pts_mode)
        m.setattr(pyav_reader.PyAVReader, "_drain", silent_drain)
        with open_video(path, index_store=store, parallel=False) as r:
            assert np.array_equal(r.get_frames([12]), ref[12][None]) and r.mode == "ordinal"
    clear_index_cache()
    with open_video(path, index_store=store) as r:
        assert r.mode == "ordinal" and "never output" in r._index.reason


def test_a_damaged_store_is_reported_once_and_ignored(tmp_path, caplog):
    path = _write(tmp_path / "v.mp4", 30, options=X264_B)
    ref = _frames(path)
    store_file = tmp_path / "idx.sqlite"
    store_file.write_bytes(b"this is not an SQLite database" * 100)
    store = IndexStore(store_file)
    with caplog.at_level(logging.WARNING, logger="omnisource.data.decode"):
        for _ in range(3):
            clear_index_cache()
            with open_video(path, index_store=store) as r:
                assert np.array_equal(r.get_frames([7, 29]), np.stack([ref[7], ref[29]]))
    warnings = [rec for rec in caplog.records if "index store" in rec.getMessage()]
    assert len(warnings) == 1 and str(store_file) in warnings[0].getMessage()
    assert len(store) == 0


def test_the_environment_names_the_default_store(tmp_path, monkeypatch):
    path = _write(tmp_path / "v.mp4", 30, options=X264_B)
    monkeypatch.setenv("OMNISOURCE_INDEX_STORE", str(tmp_path / "env.sqlite"))
    with open_video(path) as r:
        assert len(r) == 30
    assert len(get_store(tmp_path / "env.sqlite")) == 1
    monkeypatch.delenv("OMNISOURCE_INDEX_STORE")
    assert get_store(None) is None


def test_dataloader_workers_share_one_store(tmp_path):
    import torch

    from omnisource.data import build_dataset
    from omnisource.data.datasets import build_dataloader

    names = []
    for i in range(6):
        _write(tmp_path / f"v{i}.mp4", 30 + 5 * i, options=X264_B)
        names.append(f"v{i}.mp4 {i % 2}\n")
    ann = tmp_path / "list.txt"
    ann.write_text("".join(names))
    store_file = tmp_path / "idx.sqlite"
    ds = build_dataset(ann, tmp_path, "tsn_1x1x3_train", index_store=store_file, strict=True,
                       num_classes=2)
    loader = build_dataloader(ds, batch_size=2, num_workers=2, shuffle=False,
                              persistent_workers=False)
    seen = sum(batch["inputs"].shape[0] for batch in loader)
    assert seen == 6
    assert len(IndexStore(store_file)) == 6    # written by the worker processes
    assert isinstance(next(iter(loader))["inputs"], torch.Tensor)


def test_probe_fills_a_store(tmp_path, capsys):
    paths = [_write(tmp_path / f"v{i}.mp4", 20, options=X264_B) for i in range(3)]
    store_file = tmp_path / "idx.sqlite"
    assert main(["probe", "--index-store", str(store_file), *map(str, paths)]) == 0
    assert f"index store {store_file}: 3 video(s)" in capsys.readouterr().err
    store = IndexStore(store_file)
    assert all(store.get(file_key(str(p))).num_frames == 20 for p in paths)


def test_data_check_fills_a_store(tmp_path, capsys):
    for i in range(3):
        _write(tmp_path / f"v{i}.mp4", 20 + i, options=X264_B)
    (tmp_path / "list.txt").write_text("".join(f"v{i}.mp4 0\n" for i in range(3)))
    store_file = tmp_path / "idx.sqlite"
    assert main(["data", "check", str(tmp_path / "list.txt"), "--root", str(tmp_path),
                 "--workers", "2", "--index-store", str(store_file)]) == 0
    capsys.readouterr()
    store = IndexStore(store_file)
    assert [store.get(file_key(str(tmp_path / f"v{i}.mp4"))).num_frames for i in range(3)] == [20, 21, 22]


def test_picture_types_learnt_by_a_read_are_stored(tmp_path):
    # a packed-B-frame AVI (decode order): the types its reads learn let later runs skip B-frames
    path = Path(__file__).resolve().parents[2].parent / "shared/data/mmaction2/tests/data/test.avi"
    if not path.exists():
        pytest.skip("not staged")
    store = IndexStore(tmp_path / "idx.sqlite")
    with open_video(path, index_store=store) as r:
        r.get_frames([100])
        learnt = r._index.types
    assert len(learnt) >= 100 and "3" in learnt
    clear_index_cache()
    with open_video(path, index_store=store) as r:
        assert r._build_index().types == learnt


@pytest.mark.filterwarnings("ignore::omnisource.data.annotations.DuplicateEntryWarning")
def test_a_video_list_larger_than_the_memory_cache_asks_for_a_store(tmp_path, monkeypatch, caplog):
    """Past the in-memory cache's bound every read re-indexes its file: build_dataset says so
    (once, naming the list and the setting) unless a store is set."""
    from omnisource.data import build_dataset
    from omnisource.data.decode import pyav_index

    monkeypatch.delenv("OMNISOURCE_INDEX_STORE", raising=False)
    monkeypatch.setattr(pyav_index.INDEX_CACHE, "max_frames", 2 * 300)  # ~2 ten-second clips
    many, few = tmp_path / "many.txt", tmp_path / "few.txt"
    many.write_text("".join(f"v{i}.mp4 0\n" for i in range(3)))
    few.write_text("v0.mp4 0\nv1.mp4 1\nv0.mp4 0\n")  # 3 rows, 2 files

    def warned(ann, **kw) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="omnisource.data"):
            build_dataset(ann, tmp_path, "tsn_1x1x3_train", num_classes=2, **kw)
        return [r.getMessage() for r in caplog.records if "index" in r.getMessage()]

    msgs = warned(many)
    assert len(msgs) == 1 and str(many) in msgs[0] and "3 video files" in msgs[0]
    assert "data.index_store" in msgs[0] and "OMNISOURCE_INDEX_STORE" in msgs[0]
    assert warned(few) == []
    assert warned(many, index_store=tmp_path / "idx.sqlite") == []
    monkeypatch.setenv("OMNISOURCE_INDEX_STORE", str(tmp_path / "env.sqlite"))
    assert warned(many) == []


def test_the_config_names_the_store_for_every_dataset_of_a_run(tmp_path):
    """data.index_store reaches the train / val / test splits and every source of `sources:`."""
    from omnisource.config import load_config
    from omnisource.data.multisource import build_source
    from omnisource.engine.train import build_split

    (tmp_path / "list.txt").write_text("v0.mp4 0\nv1.mp4 1\n")
    store = str(tmp_path / "idx.sqlite")
    split = {"ann_file": str(tmp_path / "list.txt"), "data_root": str(tmp_path), "preset": "tsn_1x1x3_train"}
    cfg = load_config(None, [f"data.index_store={store}", "model.num_classes=2",
                             f"data.train={split}", f"data.test={dict(split, preset='tsn_1x1x3_test')}"])
    assert build_split(cfg, "train", test_mode=False).decode_kwargs["index_store"] == store
    assert build_split(cfg, "test", test_mode=True).decode_kwargs["index_store"] == store
    src = build_source({"name": "web", "ann_file": split["ann_file"], "data_root": str(tmp_path)},
                       cfg, seed=0, batch_size=2)
    assert src.dataset.decode_kwargs["index_store"] == store
    # a split's own override wins
    cfg.data.train.overrides = {"index_store": str(tmp_path / "own.sqlite")}
    assert build_split(cfg, "train", test_mode=False).decode_kwargs["index_store"] == str(tmp_path / "own.sqlite")


def test_data_index_store_reports_and_prunes_stale_entries(tmp_path, capsys):
    # a store outlives datasets: entries of deleted or re-encoded files are never read again
    vids = [_write(tmp_path / f"v{i}.mp4", 30 + 5 * i) for i in range(4)]
    store_path = tmp_path / "idx.sqlite"
    assert main(["probe", *map(str, vids), "--index-store", str(store_path)]) == 0
    vids[0].unlink()                                          # deleted
    _write(vids[1], 50)                                       # re-encoded in place
    capsys.readouterr()

    assert main(["data", "index-store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "4 video(s)" in out and "stale: 2 (missing 1, changed since indexed 1)" in out
    assert f"missing: {vids[0]}" in out and f"changed: {vids[1]}" in out and "--prune" in out
    assert len(IndexStore(store_path)) == 4                   # looking changes nothing

    assert main(["data", "index-store", str(store_path), "--prune"]) == 0
    out = capsys.readouterr().out
    assert "pruned 2 entries: 2 left" in out
    store = IndexStore(store_path)
    assert len(store) == 2 and store.stale_paths() == {}
    for v in vids[2:]:                                        # the live entries still serve reads
        assert store.get(file_key(str(v))) is not None
    store.close()

    assert main(["data", "index-store", str(tmp_path / "nope.sqlite")]) == 2
    assert "no such index store" in capsys.readouterr().err
    assert not (tmp_path / "nope.sqlite").exists()            # inspecting never creates a store
    (tmp_path / "junk.sqlite").write_text("not a database")
    assert main(["data", "index-store", str(tmp_path / "junk.sqlite")]) == 2
    assert "not a readable index store" in capsys.readouterr().err
