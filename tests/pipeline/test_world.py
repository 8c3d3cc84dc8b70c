"""The embedded synthetic world: layout, determinism, class design, web noise, untrimmed segments."""
from __future__ import annotations


import av
import numpy as np
import pytest

from omnisource.pipeline.world import (APPEARANCES, WorldSpec, class_table, generate_world,
                                       is_complete, world_hash)

SPEC = WorldSpec.reduced(web_images_per_class=10, web_videos_per_class=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return root, generate_world(root, SPEC)


def test_layout_matches_the_documented_data_layout(world):
    root, summary = world
    names = (root / "label_map.txt").read_text().split()
    assert len(names) == SPEC.num_classes == len(set(names))
    for split, n in (("train", SPEC.train_per_class), ("val", SPEC.val_per_class)):
        rows = (root / "target" / f"{split}.txt").read_text().splitlines()
        assert len(rows) == n * SPEC.num_classes
        for row in rows:
            path, label = row.rsplit(" ", 1)
            assert (root / "target" / path).is_file() and 0 <= int(label) < SPEC.num_classes
    for sub in ("images", "videos", "untrimmed"):
        rows = (root / "web" / sub / "list.txt").read_text().splitlines()
        assert rows and all((root / "web" / sub / r.rsplit(" ", 1)[0]).is_file() for r in rows)


def test_videos_decode_with_the_declared_shape(world):
    root, _ = world
    path = root / "target" / (root / "target" / "train.txt").read_text().split()[0]
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == SPEC.frames and frames[0].shape == (SPEC.size, SPEC.size, 3)
    assert np.std(np.stack(frames).astype(float)) > 5        # not a blank clip


def test_generation_is_deterministic_and_cached(world, tmp_path):
    root, summary = world
    other = generate_world(tmp_path / "w2", SPEC)
    assert other["truth"] == summary["truth"]
    for rel in ("target/train.txt", "web/videos/list.txt", "label_map.txt"):
        assert (root / rel).read_bytes() == (tmp_path / "w2" / rel).read_bytes()
    assert is_complete(root, SPEC)
    assert not is_complete(root, WorldSpec.reduced(seed=1))
    assert world_hash(SPEC) != world_hash(WorldSpec.reduced(seed=1))


def test_some_classes_differ_only_in_motion():
    spec = WorldSpec()
    table = class_table(spec)
    by_app: dict[int, list[dict]] = {}
    for row in table:
        by_app.setdefault(row["appearance"], []).append(row)
    pairs = [rows for rows in by_app.values() if len(rows) == 2]
    assert len(pairs) == spec.motion_pairs
    for a, b in pairs:
        assert a["motion"] != b["motion"]
        # paired classes move vertically, so a horizontal flip never swaps them
        assert {a["motion"], b["motion"]} == {2, 3}
    assert all(r["appearance"] < len(APPEARANCES) for r in table)


def test_web_data_is_noisy_like_a_crawl(world):
    _, summary = world
    truth = summary["truth"]
    kinds = [v["kind"] for d in truth.values() for v in d.values()]
    assert {"relevant", "irrelevant", "mislabelled"} <= set(kinds)
    for d in truth.values():
        for v in d.values():
            if v["kind"] == "relevant":
                assert v["true"] == v["query"]
            elif v["kind"] == "mislabelled":
                assert v["true"] is not None and v["true"] != v["query"]
            else:
                assert v["true"] is None


def test_untrimmed_action_lies_in_a_segment(world):
    root, summary = world
    for rel, v in summary["truth"]["web_untrimmed"].items():
        if v["true"] is None:
            continue
        a, b = v["segment_frames"]
        assert 0 <= a < b <= SPEC.untrimmed_frames and b - a >= SPEC.frames
        assert b - a < SPEC.untrimmed_frames        # there is background around it
        with av.open(str(root / "web" / "untrimmed" / rel)) as c:
            n = sum(1 for _ in c.decode(video=0))
        assert n == SPEC.untrimmed_frames


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError):
        WorldSpec(relevant=0.8, mislabelled=0.5)
    with pytest.raises(ValueError):
        WorldSpec(size=33)
    with pytest.raises(ValueError):
        WorldSpec(num_classes=8, motion_pairs=5)
