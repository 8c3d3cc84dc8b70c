"""Homography estimation, the canonical frame, the ML Gaussian and `omnisource fit-motion`."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from omnisource.cli import main
from omnisource.errors import InputError
from omnisource.web.motion import (IDENTITY8, Estimator, MotionModel, MotionStats, corner_shift, fit_motion,
                                   from_canonical, load_motion, save_motion, to_canonical, vec8_to_matrix)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
PART0 = SHARED / "mmaction2" / "tests" / "data" / "rawvideo_dataset" / "part_0.mp4"


def _textured(h=240, w=320, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 1.5)
    for _ in range(60):
        x, y = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 40)), y + int(rng.integers(5, 40))),
                      tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    return img


def test_canonical_frame_round_trip_and_resolution_independence():
    rng = np.random.default_rng(0)
    H = np.eye(3) + rng.normal(0, 1e-3, (3, 3))
    H[:2, 2] += [5.0, -3.0]
    vec = to_canonical(H, 640, 480)
    assert np.allclose(from_canonical(vec, 640, 480), H / H[2, 2])
    # a shift of 32 px at 640 wide is 16 px at 320 wide: same canonical parameters
    shift = lambda px: np.array([[1, 0, px], [0, 1, 0], [0, 0, 1.0]])  # noqa: E731
    assert np.allclose(to_canonical(shift(32), 640, 480), to_canonical(shift(16), 320, 240))
    assert np.allclose(to_canonical(shift(32), 640, 480)[2], 0.1)      # fraction of the half long side
    assert np.allclose(to_canonical(np.eye(3), 123, 77), IDENTITY8)


def test_ml_fit_is_mean_and_biased_covariance():
    rng = np.random.default_rng(1)
    A = rng.normal(0, 0.01, (8, 8))
    x = IDENTITY8 + rng.standard_normal((5000, 8)) @ A.T
    m = MotionModel.fit(x)
    assert np.allclose(m.mu, x.mean(0))
    assert np.allclose(m.sigma, np.cov(x.T, bias=True))
    assert np.linalg.norm(m.sigma - A @ A.T) < 0.1 * np.linalg.norm(A @ A.T)
    assert m.count == 5000
    # samples follow the model, folding draws are redrawn
    s = m.sample(np.random.default_rng(2), 1000)
    v = s.reshape(-1, 9)[:, :8]
    assert np.all(np.abs(v.mean(0) - m.mu) < 4 * np.sqrt(np.diag(m.sigma) / 1000))
    wild = MotionModel(IDENTITY8, np.eye(8) * 0.5)
    assert all(corner_shift(h) <= 0.3 for h in wild.sample(np.random.default_rng(3), 50, max_corner_shift=0.3))


def test_estimator_recovers_a_known_warp_and_skips_featureless_frames():
    img = _textured()
    Hc = vec8_to_matrix(IDENTITY8 + np.array([0.01, -0.008, 0.03, 0.005, 0.0, -0.02, 0.01, -0.01]))
    H = from_canonical(Hc, 320, 240)
    warped = cv2.warpPerspective(img, H, (320, 240), borderMode=cv2.BORDER_REFLECT_101)
    est = Estimator()
    vec, why, inliers = est.estimate(img, warped)
    assert why == "ok" and inliers >= 50
    # compare where the frame corners land (the geometric error), in pixels
    corners = np.array([[0, 0, 1], [319, 0, 1], [319, 239, 1], [0, 239, 1.0]])
    land = lambda M: (corners @ M.T)[:, :2] / (corners @ M.T)[:, 2:]  # noqa: E731
    assert np.abs(land(from_canonical(vec, 320, 240)) - land(H)).max() < 1.0
    assert np.allclose(vec, Hc.reshape(-1)[:8], atol=5e-3)
    flat = np.full((240, 320, 3), 128, np.uint8)
    assert est.estimate(flat, flat)[:2] == (None, "few_matches")
    # a scene cut (unrelated frames) is never reported as a plausible camera motion
    vec, why, _ = est.estimate(img, _textured(seed=9))
    assert vec is None and why in ("few_matches", "few_inliers", "implausible")
    with pytest.raises(InputError):
        Estimator(detector="surf")


def test_motion_file_round_trip(tmp_path):
    stats = MotionStats(MotionModel(IDENTITY8, np.eye(8) * 1e-4, 7), {"yoga": MotionModel(IDENTITY8, np.zeros((8, 8)))},
                        {"pairs": {"ok": 7}})
    save_motion(tmp_path / "m.json", stats)
    back = load_motion(tmp_path / "m.json")
    assert np.allclose(back.global_model.sigma, stats.global_model.sigma) and back.global_model.count == 7
    assert back.model("yoga") is back.per_class["yoga"] and back.model("golf") is back.global_model
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="bad.json"):
        load_motion(tmp_path / "bad.json")


@pytest.mark.skipif(not PART0.is_file(), reason="shared data not available")
def test_fit_motion_on_real_videos(tmp_path):
    lst = tmp_path / "list.txt"
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.mp4").symlink_to(PART0.resolve())
    (root / "b.mp4").symlink_to((SHARED / "mmaction2" / "demo" / "demo.mp4").resolve())
    (root / "bad.mp4").write_bytes(b"\x00" * 100)
    lst.write_text("a.mp4 62\nb.mp4 6\nbad.mp4 6\n")
    out = tmp_path / "motion.json"
    assert main(["fit-motion", str(lst), "--root", str(root), "--out", str(out), "--max-pairs", "6",
                 "--min-class-pairs", "4"]) == 0
    stats = load_motion(out)
    g = stats.global_model
    assert g.count >= 8 and stats.info["videos"]["unreadable"] == 1
    assert sum(stats.info["pairs"].values()) == 12
    assert set(stats.per_class) == {"62", "6"}
    # real camera motion between neighbouring frames is small but not zero
    assert np.all(np.abs(g.mu - IDENTITY8) < 0.05) and np.trace(g.sigma) > 0
    # with class names the per-class models are keyed by name
    stats2 = fit_motion([(root / "a.mp4", 62)], Estimator(), max_pairs=4, min_class_pairs=1,
                        class_names=[f"class{i}" for i in range(70)], progress=False)
    assert set(stats2.per_class) == {"class62"}
