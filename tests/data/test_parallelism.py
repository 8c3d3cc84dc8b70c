"""The batch fetcher: the items of a batch side by side on free cores, the same items as one by one."""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch

from omnisource.data import parallelism
from omnisource.data.datasets import build_dataloader, build_dataset
from omnisource.data.multisource import SoftLabelDataset
from omnisource.data.parallelism import decode_parallelism, fetch_many, in_batch_fetch
from omnisource.engine.loaders import SeededDataset
from omnisource.errors import DataError

SMALL = dict(scale=64, crop_size=56)


def test_items_run_side_by_side_and_come_back_in_key_order():
    meet = threading.Barrier(2, timeout=20)  # passes only if two items run at the same time
    seen: list[tuple[int, bool, int]] = []

    def get(k: int) -> int:
        if k < 2:
            meet.wait()
        seen.append((k, in_batch_fetch(), decode_parallelism()))
        return k * 10

    assert fetch_many(get, range(6), ways=2) == [0, 10, 20, 30, 40, 50]
    assert sorted(k for k, _, _ in seen) == list(range(6))
    assert all(busy and ways == 1 for _, busy, ways in seen)  # reads inside keep to one thread
    assert not in_batch_fetch()  # the caller's thread is released afterwards


def test_one_way_or_nested_is_sequential_on_the_calling_thread():
    me = threading.get_ident()
    assert fetch_many(lambda k: (k, threading.get_ident()), [1, 2, 3], ways=1) == [(1, me), (2, me), (3, me)]

    def outer(k: int) -> list[int]:
        here = threading.get_ident()
        inner = fetch_many(lambda j: threading.get_ident(), range(3), ways=2)
        assert inner == [here] * 3  # a batch inside an item does not spread again
        return inner

    assert len(fetch_many(outer, range(4), ways=2)) == 4


def test_the_first_failing_key_is_raised_after_all_threads_stop():
    done: list[int] = []

    def get(k: int) -> int:
        if k in (3, 5):
            raise ValueError(f"bad {k}")
        done.append(k)
        return k

    with pytest.raises(ValueError, match="bad 3"):
        fetch_many(get, range(8), ways=2)
    assert {0, 1, 2} <= set(done)  # everything before the failure was fetched
    with pytest.raises(ValueError, match="bad 3"):
        fetch_many(get, range(8), ways=1)


def test_process_share_divides_the_cores_among_dataloader_workers(monkeypatch):
    monkeypatch.setattr(parallelism, "usable_cpus", lambda: 8)
    assert parallelism.process_share() == 8

    class Info:
        num_workers = 3

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Info())
    assert parallelism.process_share() == 2


# ------------------------------------------------------------------ datasets
@pytest.fixture()
def two_ways(monkeypatch):
    monkeypatch.setattr(parallelism, "process_share", lambda: 2)


def _mixed_list(tmp_path, shared_data):
    mm = shared_data / "mmaction2"
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.mp4").symlink_to(mm / "tests" / "data" / "test.mp4")
    (root / "b.mp4").symlink_to(mm / "demo" / "demo.mp4")
    (root / "c.mp4").symlink_to(mm / "tests" / "data" / "rawvideo_dataset" / "part_0.mp4")
    (root / "d.mp4").symlink_to(mm / "tests" / "data" / "test.mp4")
    (root / "e.mp4").symlink_to(mm / "demo" / "demo.mp4")
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video\n" * 10)
    rows = ["a.mp4 0", "empty.mp4 1", "b.mp4 1", "c.mp4 2", "text.mp4 0", "missing.mp4 2", "d.mp4 1", "e.mp4 0"]
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(rows) + "\n")
    return root, lst


def test_a_batch_fetched_side_by_side_equals_item_by_item(tmp_path, shared_data, two_ways):
    root, lst = _mixed_list(tmp_path, shared_data)
    serial = build_dataset(lst, root, "tsn_1x1x3_train", seed=5, **SMALL)
    side = build_dataset(lst, root, "tsn_1x1x3_train", seed=5, **SMALL)
    keys = [(i, 2) for i in range(len(serial))]
    want = [serial[k] for k in keys]
    got = side.__getitems__(keys)
    for a, b in zip(want, got):
        assert torch.equal(a["inputs"], b["inputs"])
        assert (a["label"], a["index"], a["path"], a["skipped"]) == (b["label"], b["index"], b["path"], b["skipped"])
    assert side.skipped == serial.skipped == Counter({"empty file": 1, "unreadable": 1, "missing": 1})
    assert side.skipped_files.keys() == serial.skipped_files.keys()
    # through a DataLoader (0 workers: torch hands the batch to __getitems__)
    loader = build_dataloader(side, batch_size=4, num_workers=0)
    batches = list(loader)
    side.set_epoch(0)
    assert torch.equal(batches[0]["inputs"], torch.stack([serial[(i, 0)]["inputs"] for i in range(4)]))


def test_strict_batch_raises_the_first_bad_file(tmp_path, shared_data, two_ways):
    root, lst = _mixed_list(tmp_path, shared_data)
    ds = build_dataset(lst, root, "tsn_1x1x3_val", strict=True, **SMALL)
    with pytest.raises(DataError) as exc:
        ds.__getitems__([0, 2, 1, 4])
    assert "empty.mp4" in str(exc.value)


def test_seeded_dataset_batches_use_its_own_keys(tmp_path, shared_data, two_ways):
    """SeededDataset forwards unknown attributes to the dataset it wraps; its batches must not
    reach the wrapped dataset's __getitems__ with (index, seed, epoch) triples."""
    root, lst = _mixed_list(tmp_path, shared_data)
    ds = SeededDataset(build_dataset(lst, root, "tsn_1x1x3_train", seed=1, **SMALL))
    keys = [(0, 123456789, 1), (2, 987654321, 1), (3, 5, 1)]
    got = ds.__getitems__(keys)
    for k, item in zip(keys, got):
        assert torch.equal(item["inputs"], ds[k]["inputs"])

    class Plain(torch.utils.data.Dataset):  # draws from global RNGs: stays one by one
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return float(np.random.rand())

    plain = SeededDataset(Plain())
    assert plain.__getitems__([(0, 7, 0), (1, 7, 0)]) == [plain[(0, 7, 0)], plain[(1, 7, 0)]]


def test_soft_labelled_batches_keep_the_new_labels(tmp_path, shared_data, two_ways):
    root, lst = _mixed_list(tmp_path, shared_data)
    inner = build_dataset(lst, root, "tsn_1x1x3_val", **SMALL)
    ds = SoftLabelDataset(inner, [7, 6, 5, 4, 3, 2, 1, 0])
    got = ds.__getitems__([0, 2, 1])
    assert [it["label"] for it in got] == [7, 5, ds[1]["label"]]  # 1 is bad: its replacement's label
    assert got[2]["index"] != 1 and got[2]["label"] == 7 - got[2]["index"]
