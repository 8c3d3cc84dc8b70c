"""Untrimmed videos: 1 fps frames -> 1 positive + 2 negative snippets (2D), positive 10 s-style
windows (3D); records point into the source video and ManifestDataset reads exactly them.

The synthetic video is grey except for a red stretch; a colour "teacher" (recognizer API) is
confident only on red, so the positive frames / windows are known.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from omnisource.errors import ConfigError
from omnisource.utils.video_writer import write_video
from omnisource.web.teacher import ModelSource, TeacherEnsemble
from omnisource.web.untrimmed import UntrimmedSettings, untrimmed_stage, windows_for

FPS = 4


class Colour(nn.Module):
    """Class 0 = red, 1 = green, 2 = blue; confident only on saturated colour."""

    def __init__(self, layout: str = "2d"):
        super().__init__()
        self.meta = {"layout": layout, "num_classes": 3, "input_size": 32, "clip_len": 2, "frame_interval": 1,
                     "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
        self.num_classes = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.meta["layout"] == "2d":
            m = x.mean(dim=(3, 4)).mean(1)
        else:
            m = x.reshape((-1,) + x.shape[-4:]).mean(dim=(2, 3, 4))
        return 24.0 * (m - m.mean(1, keepdim=True))


def make_video(path: Path, seconds: int = 12, red: tuple[float, float] = (4.0, 8.0)) -> None:
    def frames():
        for i in range(seconds * FPS):
            t = i / FPS
            a = np.full((48, 64, 3), 128, np.uint8)
            if red[0] <= t < red[1]:
                a[:] = (220, 20, 20)
            a[:4, : 4 + i % 50] = 0         # a moving bar: frames differ
            yield a

    write_video(path, frames(), fps=FPS, options={"crf": "18", "g": "4"})


@pytest.fixture()
def data(tmp_path):
    make_video(tmp_path / "v" / "long.mp4")
    (tmp_path / "v" / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    man = tmp_path / "untrimmed.jsonl"
    man.write_text(json.dumps({"path": "v/long.mp4", "source": "yt", "kind": "untrimmed", "query_label": 0}) + "\n"
                   + json.dumps({"path": "v/bad.mp4", "source": "yt", "kind": "untrimmed", "query_label": 0}) + "\n")
    return tmp_path, man


def _ens(root: Path, layout: str = "2d") -> TeacherEnsemble:
    return TeacherEnsemble([Colour(layout)], [ModelSource(f"colour-{layout}", None)], data_root=str(root),
                           batch_size=8, segments=3)


def _records(p: Path) -> list[dict]:
    return [r for r in (json.loads(x) for x in p.read_text().splitlines()) if "path" in r]


def test_snippets_one_positive_two_negatives(data):
    root, man = data
    with _ens(root) as ens:
        res = untrimmed_stage(man, root / "out2d", ens, UntrimmedSettings(mode="2d", pos_threshold=0.8),
                              data_root=str(root), progress=False)
    recs = _records(res.manifest)
    red_frames = set(range(4 * FPS, 8 * FPS))
    sampled = [int((k + 0.5) * FPS) for k in range(12)]          # 1 fps: centre of every second
    positives = [f for f in sampled if f in red_frames]
    assert len(recs) == len(positives) == 4
    for r in recs:
        assert r["kind"] == "video" and r["label"] == 0 and r["score"] > 0.8 and "segment" not in r
        assert len(r["frame_inds"]) == 3 and r["frame_inds"] == sorted(r["frame_inds"])
        assert set(r["frame_inds"]) <= set(sampled)
        assert sum(f in red_frames for f in r["frame_inds"]) == 1             # 1 positive + 2 negatives
        assert r["meta"]["untrimmed"]["positive_frames"][0] in red_frames
    assert sorted(r["meta"]["untrimmed"]["positive_frames"][0] for r in recs) == positives
    assert res.meta["counts"]["dropped"]["by_reason"] == {"unreadable": 1}
    side = [json.loads(x) for x in res.side.read_text().splitlines()]
    assert side[0]["frames"] == 12 and side[0]["positives"] == 4 and len(side[0]["frame_scores"]) == 12

    # a 2D student's dataset reads exactly the snippet frames: one red segment, two grey
    from omnisource.data.datasets import build_dataset

    ds = build_dataset(res.manifest, root, "tsn_1x1x3_val", test_mode=True)
    x = ds[0]["inputs"]                                    # [S, 3, H, W], normalised
    redness = (x[:, 0] - x[:, 1]).mean(dim=(1, 2))
    assert int((redness > 1.0).sum()) == 1


def test_snippet_options_and_determinism(data):
    root, man = data
    s = UntrimmedSettings(mode="2d", pos_threshold=0.8, num_pos=2, num_neg=1, max_samples=1, fps=2.0, seed=3)
    with _ens(root) as ens:
        a = untrimmed_stage(man, root / "a", ens, s, data_root=str(root), progress=False)
        b = untrimmed_stage(man, root / "b", ens, s, data_root=str(root), chunk_size=1, progress=False)
    assert a.manifest.read_bytes() == b.manifest.read_bytes()
    (r,) = _records(a.manifest)
    assert len(r["frame_inds"]) == 3 and len(r["meta"]["untrimmed"]["positive_frames"]) == 2
    with pytest.raises(ConfigError):
        UntrimmedSettings(mode="4d").validate()


def test_windows_for_3d_students(data):
    root, man = data
    assert windows_for(12.0, UntrimmedSettings(mode="3d", window=4)) == [(0, 4), (4, 8), (8, 12)]
    assert windows_for(25.0, UntrimmedSettings(mode="3d")) == [(0, 10), (10, 20), (20, 25)]
    assert windows_for(21.0, UntrimmedSettings(mode="3d")) == [(0, 10), (10, 20)]       # 1 s tail < 5 s
    with _ens(root, "3d") as ens:
        res = untrimmed_stage(man, root / "out3d", ens, UntrimmedSettings(mode="3d", window=4, pos_threshold=0.8),
                              data_root=str(root), progress=False)
    (r,) = _records(res.manifest)
    assert r["segment"] == [4.0, 8.0] and r["label"] == 0 and "frame_inds" not in r
    assert r["meta"]["untrimmed"]["frame_range"] == [4 * FPS, 8 * FPS]
    assert (root / "v" / "long.mp4").is_file()                 # the source is never cut or deleted
    with _ens(root, "3d") as ens, pytest.raises(ConfigError):
        untrimmed_stage(man, root / "x", ens, UntrimmedSettings(mode="2d"), data_root=str(root), progress=False)


def test_real_video_from_shared_data(shared_data, tmp_path):
    man = tmp_path / "real.jsonl"
    man.write_text(json.dumps({"path": "mmaction2/demo/demo.mp4", "source": "real", "kind": "video",
                               "query_label": 6}) + "\n")
    with TeacherEnsemble([Colour()], [ModelSource("c", None)], data_root=str(shared_data)) as ens:
        res = untrimmed_stage(man, tmp_path / "o", ens, UntrimmedSettings(mode="2d", pos_threshold=0.0),
                              data_root=str(shared_data), progress=False)
    recs = _records(res.manifest)
    side = json.loads(res.side.read_text().splitlines()[0])
    assert side["frames"] == 10                                # 10 s at 1 fps
    # threshold 0: every frame is positive, so no negatives are left to build snippets
    assert recs == [] and res.meta["counts"]["dropped"]["by_reason"] == {"too_few_negatives": 1}


def test_cli_2d_with_tiny_zoo_teacher(data):
    from omnisource.cli import main

    root, man = data
    rc = main(["untrimmed", str(man), "--mode", "2d", "--data-root", str(root), "--out", str(root / "cli"),
               "--teacher", "tsn_r18_1x1x3_100e_kinetics400_rgb", "none", "--teacher-set",
               "model.overrides.base_channels=8", "--teacher-set", "model.num_classes=3", "--pos-threshold", "0.0",
               "--neg-threshold", "0.0", "--num-neg", "0", "--max-samples", "2", "--workers", "0", "--batch-size", "4"])
    assert rc == 0
    recs = _records(root / "cli" / "manifest.jsonl")
    assert len(recs) == 2 and all(len(r["frame_inds"]) == 1 for r in recs)       # 1 positive + 0 negatives
    meta = json.loads((root / "cli" / "meta.json").read_text())
    assert meta["stage"] == "untrimmed-2d" and meta["counts"]["dropped"]["by_reason"] == {"unreadable": 1}
    assert main(["untrimmed", str(man), "--mode", "2d", "--out", str(root / "x"), "--teacher",
                 "tsn_r18_1x1x3_100e_kinetics400_rgb", "none", "--fps", "0"]) == 2


UNTRIMMED_SHARD_SCRIPT = '''
import sys
import torch.distributed as dist
from test_untrimmed import Colour
from omnisource.web.teacher import ModelSource, TeacherEnsemble
from omnisource.web.untrimmed import UntrimmedSettings, untrimmed_stage

if __name__ == "__main__":
    man, root, out, mode = sys.argv[1:5]
    dist.init_process_group("gloo")
    with TeacherEnsemble([Colour(mode)], [ModelSource("colour-" + mode, None)], data_root=root, batch_size=8,
                         segments=3) as ens:
        untrimmed_stage(man, out, ens, UntrimmedSettings(mode=mode, window=4, pos_threshold=0.8), data_root=root,
                        chunk_size=1, progress=False)
    dist.destroy_process_group()
'''


def test_two_gloo_ranks_equal_single_process(data, mode="2d"):
    """Sharding is the stage runner's (mode-independent): one mode keeps the test short."""
    root, man = data
    make_video(root / "v" / "late.mp4", seconds=9, red=(5.0, 9.0))
    man.write_text(man.read_text() + json.dumps({"path": "v/late.mp4", "source": "yt", "kind": "untrimmed",
                                                 "query_label": 0}) + "\n")
    with _ens(root, mode) as ens:
        untrimmed_stage(man, root / "single", ens, UntrimmedSettings(mode=mode, window=4, pos_threshold=0.8),
                        data_root=str(root), chunk_size=1, progress=False)
    script = root / "shard.py"
    script.write_text(UNTRIMMED_SHARD_SCRIPT)
    _two_ranks().run_two_ranks(script, [str(man), str(root), str(root / "sharded"), mode])
    assert len(_records(root / "single" / "manifest.jsonl")) >= 2      # records from both good videos
    for name in ("manifest.jsonl", "dropped.jsonl", "side.jsonl"):
        assert (root / "sharded" / name).read_bytes() == (root / "single" / name).read_bytes(), name
    single, sharded = (json.loads((root / d / "meta.json").read_text()) for d in ("single", "sharded"))
    assert sharded["world_size"] == 2 and sharded["counts"] == single["counts"]


def _two_ranks():
    """tests/web/two_ranks.py (pytest runs with --import-mode=importlib: not importable by name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("two_ranks", Path(__file__).with_name("two_ranks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_agree_keeps_only_positives_of_the_queried_class_in_both_modes():
    from omnisource.data.annotations import ManifestRecord
    from omnisource.web.untrimmed import snippets_for, windows_records
    from omnisource.web.teacher import SetupAbort

    rec = ManifestRecord("v/x.mp4", "yt", "untrimmed", query_label=1)
    # rows: confident class 1, confident class 0, unsure, confident class 1, unsure
    probs = np.array([[0.05, 0.95], [0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.45, 0.55]], np.float32)
    inds = [0, 10, 20, 30, 40]
    s = UntrimmedSettings(mode="2d", pos_threshold=0.8, num_neg=1)
    recs, info = snippets_for(rec, inds, probs, s)
    assert info["positives"] == 3 and len(recs) == 3        # without agree, class 0 counts too
    recs, info = snippets_for(rec, inds, probs, UntrimmedSettings(mode="2d", pos_threshold=0.8, num_neg=1,
                                                                  agree=True))
    assert info["positives"] == 2 and {r.label for r in recs} == {1}
    assert all(set(r.meta["untrimmed"]["positive_frames"]) <= {0, 30} for r in recs)
    wins = [(2 * k, 2 * k + 2, 20 * k, 20 * k + 20) for k in range(5)]
    recs, _ = windows_records(rec, wins, probs, UntrimmedSettings(mode="3d", pos_threshold=0.8, agree=True))
    assert [r.segment for r in recs] == [(0.0, 2.0), (6.0, 8.0)] and {r.label for r in recs} == {1}
    with pytest.raises(SetupAbort):  # --agree needs the query as a class index
        windows_records(ManifestRecord("v/y.mp4", "yt", "untrimmed", query_label="skiing"), wins, probs,
                        UntrimmedSettings(mode="3d", agree=True))
