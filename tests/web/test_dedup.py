"""De-duplication: whitening, crop threshold, faiss == exact search, planted and real duplicates,
resume after a simulated kill, and the CLI with a tiny zoo model.

The feature network in most tests is a fixed colour-layout descriptor (6x6 average pool) with
the 2D ``extract_features`` interface: unlike a randomly initialised CNN it is a meaningful
image descriptor, so which samples are duplicates is known in advance.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from omnisource.errors import ConfigError
from omnisource.web.dedup import DedupSettings, FeatureExtractor, run_dedup
from omnisource.web.similarity import (CovarianceAccumulator, SimilarityIndex, aggregate_pairs, crop_similarity,
                                       fit_whitening, l2_normalize)


class Thumb(torch.nn.Module):
    """Colour layout descriptor: ``[N, 3, H, W] -> [N, 108]``."""

    def __init__(self):
        super().__init__()
        self.meta = {"layout": "2d", "input_size": 64, "num_classes": 3}

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 6).flatten(1)


def texture(seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    img = cv2.resize(r.integers(0, 255, (6, 8, 3)).astype(np.uint8), (160, 120), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        centre = (int(r.integers(0, 160)), int(r.integers(0, 120)))
        cv2.circle(img, centre, int(r.integers(5, 30)), tuple(int(x) for x in r.integers(0, 255, 3)), -1)
    return img


def make_data(tmp: Path, n_target: int = 40, dups=(2, 7, 11), n_new: int = 8) -> tuple[Path, Path]:
    (tmp / "t").mkdir(parents=True, exist_ok=True)
    (tmp / "w").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_target):
        Image.fromarray(texture(i)).save(tmp / "t" / f"{i}.jpg")
        lines.append(f"{i}.jpg {i % 3}")
    (tmp / "target.txt").write_text("\n".join(lines) + "\n")
    rows = []
    for j, i in enumerate(dups):   # web copies: cropped a little, resized, re-encoded at low quality
        a = texture(i)[6:-4, 5:-7]
        Image.fromarray(cv2.resize(a, (200, 150))).save(tmp / "w" / f"dup{j}.jpg", quality=70)
        rows.append({"path": f"w/dup{j}.jpg", "source": "web", "kind": "image", "query_label": 0})
    for j in range(n_new):
        Image.fromarray(texture(1000 + j)).save(tmp / "w" / f"new{j}.jpg")
        rows.append({"path": f"w/new{j}.jpg", "source": "web", "kind": "image", "query_label": 1})
    (tmp / "w" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    rows.insert(4, {"path": "w/broken.jpg", "source": "web", "kind": "image", "query_label": 1})
    web = tmp / "web.jsonl"
    web.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return web, tmp / "target.txt"


def _rows(p: Path) -> list[dict]:
    return [r for r in (json.loads(x) for x in p.read_text().splitlines()) if "path" in r or "web" in r]


# --------------------------------------------------------------------------------------------
# math
# --------------------------------------------------------------------------------------------
def test_whitening_decorrelates_and_streams():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((16, 16)) * np.linspace(3, 0.1, 16)
    x = rng.standard_normal((4000, 16)) @ mix + 5
    wh = fit_whitening(x, reg=0.0)
    y = (l2_normalize(x) - wh.mean) @ wh.proj
    assert np.allclose(np.cov(y.T), np.eye(16), atol=0.05)
    acc = CovarianceAccumulator(16)
    for part in np.array_split(l2_normalize(x), 7):
        acc.update(part)
    wh2 = fit_whitening(acc, reg=0.0)
    assert np.allclose(np.abs(wh2.proj), np.abs(wh.proj), rtol=1e-3, atol=1e-3)
    assert fit_whitening(x, dim=5).out_dim == 5
    assert fit_whitening(x[:4]).out_dim <= 3          # never more directions than samples - 1
    out = wh.apply(x[:3])
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_crop_similarity():
    a = l2_normalize(np.array([[1, 0], [1, 0], [0, 1], [1, 1]], float))
    mean, std, per = crop_similarity(a, 2)
    assert per.tolist() == pytest.approx([1.0, np.sqrt(0.5)])
    assert mean == pytest.approx((1 + np.sqrt(0.5)) / 2)
    with pytest.raises(ValueError):
        crop_similarity(a, 3)


def test_faiss_and_exact_search_give_the_same_pairs():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    targets = rng.standard_normal((1500, 48)).astype(np.float32)
    planted = targets[rng.choice(1500, 60, replace=False)] + 0.4 * rng.standard_normal((60, 48)).astype(np.float32)
    queries = np.concatenate([planted, rng.standard_normal((2000, 48)).astype(np.float32)])
    wh = fit_whitening(targets, dim=32)
    t, q = wh.apply(targets), wh.apply(queries)
    thr = 0.55
    fa = SimilarityIndex(t, backend="faiss").search(q, thr)
    ex = SimilarityIndex(t, backend="torch", block=700).search(q, thr)
    assert len(fa[0]) >= 60                           # every planted copy found, plus chance pairs
    assert set(range(60)) <= set(fa[0].tolist())
    for a, b in zip(fa[:3], ex[:3]):
        assert np.array_equal(a, b)
    assert np.allclose(fa[3], ex[3], atol=1e-5)       # best similarity of every query
    brute = q.astype(np.float64) @ t.T.astype(np.float64)
    assert len(fa[0]) == int((brute >= thr).sum())
    # an approximate IVF index finds a subset, with the same scores
    ivf = SimilarityIndex(t, backend="faiss", ivf_lists=16, nprobe=16).search(q, thr)
    assert np.array_equal(ivf[0], fa[0]) and np.array_equal(ivf[1], fa[1])   # nprobe == lists: exhaustive
    # more IVF lists than target rows: a clear error naming the setting, not faiss's C++ assertion
    with pytest.raises(ConfigError, match=r"ivf_lists=2048 .* has 1500: use ivf_lists <= 38"):
        SimilarityIndex(t, backend="faiss", ivf_lists=2048)


def test_aggregate_pairs_takes_the_best_frame_pair():
    qi, ti = np.array([0, 1, 1, 2]), np.array([0, 0, 3, 2])
    sims = np.array([0.7, 0.9, 0.8, 0.75])
    owner_q = np.array([0, 0, 1])          # rows 0,1 -> web record 0 (a video), row 2 -> record 1
    owner_t = np.array([0, 0, 1, 1])       # target rows 0,1 -> target 0; 2,3 -> target 1
    pairs = aggregate_pairs(qi, ti, sims, owner_q, owner_t)
    assert pairs == {(0, 0): (0.9, 1, 0), (0, 1): (0.8, 1, 3), (1, 1): (0.75, 2, 2)}


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def test_planted_duplicates_found_with_crop_threshold(tmp_path):
    web, target = make_data(tmp_path)
    s = run_dedup(web, [(target, tmp_path / "t")], tmp_path / "out", Thumb(), {"model": "thumb"},
                  DedupSettings(pca_dim=None, threshold_frames=40), web_root=tmp_path, progress=False)
    assert s["threshold_stats"]["source"] == "crops" and 0 < s["threshold"] < 0.9
    pairs = _rows(tmp_path / "out" / "pairs.jsonl")
    assert [(p["web"], p["target"]) for p in pairs] == [("w/dup0.jpg", "2.jpg"), ("w/dup1.jpg", "7.jpg"),
                                                        ("w/dup2.jpg", "11.jpg")]
    assert all(p["score"] >= s["threshold"] for p in pairs)
    kept = [r["path"] for r in _rows(tmp_path / "out" / "manifest.jsonl")]
    assert kept == [f"w/new{j}.jpg" for j in range(8)]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["counts"]["dropped"]["by_reason"] == {"duplicate": 3, "unreadable": 1}
    csv_lines = (tmp_path / "out" / "pairs.csv").read_text().splitlines()
    assert csv_lines[0].startswith("web,web_index") and len(csv_lines) == 4
    # a user threshold overrides the calibration (and 1.0 leaves nothing to drop)
    s2 = run_dedup(web, [(target, tmp_path / "t")], tmp_path / "out2", Thumb(), {"model": "thumb"},
                   DedupSettings(threshold=1.0), web_root=tmp_path, progress=False)
    assert s2["pairs"] == 0 and s2["kept"] == 11


def test_threshold_calibration_shows_progress(tmp_path, capsys):
    from omnisource.web.dedup import crop_threshold

    make_data(tmp_path, n_target=5, dups=(), n_new=0)
    recs = [{"path": f"{i}.jpg", "kind": "image"} for i in range(5)] + [{"path": "missing.jpg", "kind": "image"}]
    wh = fit_whitening(np.random.default_rng(0).standard_normal((200, 108)), dim=16)
    thr, stats = crop_threshold(Thumb(), recs, [str(tmp_path / "t")] * 6, wh, DedupSettings(num_crops=3),
                                batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "dedup-threshold" in err and "6/6" in err             # one step per calibration frame
    assert stats["frames"] == 5 and -1 <= thr <= 1                # the unreadable one is skipped


class _Killed(BaseException):
    """Stands in for kill -9 (escapes all handlers; the journal keeps what was committed)."""


def test_resume_after_kill_is_byte_identical(tmp_path, monkeypatch):
    web, target = make_data(tmp_path, n_target=20, n_new=6)
    settings = DedupSettings(pca_dim=16, threshold_frames=10)
    ref = run_dedup(web, [(target, tmp_path / "t")], tmp_path / "ref", Thumb(), {"m": 1}, settings,
                    web_root=tmp_path, chunk_size=3, progress=False)
    real = FeatureExtractor.__call__
    calls = {"n": 0}

    def dying(self, records):
        calls["n"] += 1
        if calls["n"] == 9:              # target stage: 7 chunks; dies in the web stage's 2nd chunk
            raise _Killed()
        return real(self, records)

    monkeypatch.setattr(FeatureExtractor, "__call__", dying)
    with pytest.raises(_Killed):
        run_dedup(web, [(target, tmp_path / "t")], tmp_path / "run", Thumb(), {"m": 1}, settings,
                  web_root=tmp_path, chunk_size=3, progress=False)
    assert not (tmp_path / "run" / "meta.json").exists()
    monkeypatch.setattr(FeatureExtractor, "__call__", real)
    res = run_dedup(web, [(target, tmp_path / "t")], tmp_path / "run", Thumb(), {"m": 1}, settings,
                    web_root=tmp_path, chunk_size=3, progress=False)
    for name in ("manifest.jsonl", "dropped.jsonl", "side.jsonl", "pairs.jsonl", "pairs.csv"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert res["kept"] == ref["kept"] and res["threshold"] == ref["threshold"]


def test_real_duplicates_in_shared_data(shared_data, tmp_path):
    """Frames of target videos found among real web files; unrelated photos kept."""
    target = tmp_path / "target.txt"
    target.write_text("mmaction2/tests/data/test.avi 0\nmmaction2/tests/data/test.mp4 1\n"
                      "mmaction2/demo/demo.mp4 2\nmmaction2/demo/test_video_structuralize.mp4 3\n")
    web_rows = [("mmaction2/tests/data/test.jpg", "image"), ("mmaction2/tests/data/imgs/img_00005.jpg", "image"),
                ("mmaction2/tests/data/rawvideo_dataset/part_0.mp4", "video"),
                ("pillow/Tests/images/hopper.jpg", "image"), ("pillow/Tests/images/flower.jpg", "image"),
                ("exif-orientation-examples/Landscape_1.jpg", "image"),
                ("pillow/Tests/images/truncated_image.png", "image")]
    web = tmp_path / "web.jsonl"
    web.write_text("".join(json.dumps({"path": p, "source": "web", "kind": k, "query_label": 0}) + "\n"
                           for p, k in web_rows))
    s = run_dedup(web, [(target, shared_data)], tmp_path / "out", Thumb(), {"model": "thumb"},
                  DedupSettings(frames_per_video=8), web_root=shared_data, progress=False)
    pairs = {(p["web"], p["target"]) for p in _rows(tmp_path / "out" / "pairs.jsonl")}
    assert pairs == {("mmaction2/tests/data/test.jpg", "mmaction2/tests/data/test.avi"),
                     ("mmaction2/tests/data/imgs/img_00005.jpg", "mmaction2/tests/data/test.avi"),
                     ("mmaction2/tests/data/rawvideo_dataset/part_0.mp4", "mmaction2/tests/data/test.mp4")}
    assert s["kept"] == 3 and s["dropped"] == {"duplicate": 3, "unreadable": 1}


def test_cli_with_tiny_zoo_model(tmp_path):
    from omnisource.cli import main

    web, target = make_data(tmp_path, n_target=6, dups=(1,), n_new=2)
    rc = main(["dedup", str(web), "--target", str(target), "--target-root", str(tmp_path / "t"),
               "--data-root", str(tmp_path), "--model", "tsn_r18_1x1x3_100e_kinetics400_rgb", "--weights", "none",
               "--set", "model.overrides.base_channels=8", "--threshold-frames", "3", "--num-crops", "3",
               "--workers", "0", "--batch-size", "8", "--out", str(tmp_path / "out")])
    assert rc == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["counts"]["in"]["total"] == 4 and meta["data_root"] == str(tmp_path.resolve())
    assert (tmp_path / "out" / "target_index.npz").is_file()
    rc = main(["dedup", str(web), "--target", str(tmp_path / "missing.txt"), "--model",
               "tsn_r18_1x1x3_100e_kinetics400_rgb", "--out", str(tmp_path / "o2")])
    assert rc == 2


# --------------------------------------------------------------------------------------------
# sharding: 2 ranks == 1 process
# --------------------------------------------------------------------------------------------
DEDUP_SHARD_SCRIPT = '''
import os, sys
from test_dedup import Thumb
from omnisource.web.dedup import DedupSettings, run_dedup

if __name__ == "__main__":
    web, target, troot, root, out = sys.argv[1:6]
    gloo = os.environ.get("SHARD_GLOO") == "1"
    if gloo:
        import torch.distributed as dist
        dist.init_process_group("gloo")
    run_dedup(web, [(target, troot)], out, Thumb(), {"m": 1}, DedupSettings(pca_dim=16, threshold_frames=10),
              web_root=root, chunk_size=3, progress=False)
    if gloo:
        dist.destroy_process_group()
'''


@pytest.mark.parametrize("gloo", [True, False], ids=["gloo", "file-barrier"])
def test_two_ranks_equal_single_process(tmp_path, gloo):
    """Both feature stages shard; rank 0 builds the index, rank 1 waits for it (barrier or file)."""
    web, target = make_data(tmp_path, n_target=20, n_new=6)
    single = run_dedup(web, [(target, tmp_path / "t")], tmp_path / "single", Thumb(), {"m": 1},
                       DedupSettings(pca_dim=16, threshold_frames=10), web_root=tmp_path, chunk_size=3,
                       progress=False)
    assert single["dropped"]["duplicate"] >= 3 and single["dropped"]["unreadable"] == 1
    script = tmp_path / "shard.py"
    script.write_text(DEDUP_SHARD_SCRIPT)
    _two_ranks().run_two_ranks(script, [str(web), str(target), str(tmp_path / "t"), str(tmp_path),
                                        str(tmp_path / "sharded")], SHARD_GLOO="1" if gloo else "0")
    for name in ("target/0/manifest.jsonl", "target/0/side.jsonl", "manifest.jsonl", "dropped.jsonl", "side.jsonl",
                 "pairs.jsonl", "pairs.csv"):
        assert (tmp_path / "sharded" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    for d in ("single", "sharded"):
        assert json.loads((tmp_path / d / "meta.json").read_text())["world_size"] == (2 if d == "sharded" else 1)
    from omnisource.web.dedup import TargetIndex

    a, b = (TargetIndex.load(tmp_path / d / "target_index.npz") for d in ("single", "sharded"))
    assert a.threshold == b.threshold and np.array_equal(a.feats, b.feats) and a.ident == b.ident


def _two_ranks():
    """tests/web/two_ranks.py (pytest runs with --import-mode=importlib: not importable by name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("two_ranks", Path(__file__).with_name("two_ranks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pca_dim_option():
    import argparse

    from omnisource.commands.dedup import _pca_dim
    from omnisource.errors import ConfigError

    assert DedupSettings().pca_dim == 256
    assert DedupSettings(pca_dim="full").validate().pca_dim is None
    assert _pca_dim("full") is None and _pca_dim("0") is None and _pca_dim("128") == 128
    for bad in ("-3", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            _pca_dim(bad)
    with pytest.raises(ConfigError):
        DedupSettings(pca_dim="half").validate()
