"""Image -> pseudo clip: still / translate / perspective (paper 3.5, Table 8)."""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from omnisource.data.inflate import Inflater, build_inflater, inflate_image, make_inflater
from omnisource.errors import ConfigError
from omnisource.data.motion_model import IDENTITY8, MotionModel, MotionStats, save_motion
from omnisource.web.motion import Estimator


def textured(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """Blurred noise plus random rectangles: plenty of corners for ORB at every scale."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 1.5)
    for _ in range(60):
        x, y = int(rng.integers(0, max(1, w - 10))), int(rng.integers(0, max(1, h - 10)))
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 40)), y + int(rng.integers(5, 40))), c, -1)
    return img


MU = IDENTITY8 + np.array([0.004, -0.003, 0.012, 0.002, -0.004, -0.008, 0.004, -0.003])
SD = np.array([0.008, 0.006, 0.015, 0.006, 0.008, 0.015, 0.008, 0.008])
MODEL = MotionModel(MU, np.diag(SD ** 2))


def test_still_is_a_writable_copy():
    img = textured(20, 30)
    clip = inflate_image(img, 5, "still")
    assert clip.shape == (5, 20, 30, 3) and clip.dtype == np.uint8
    assert all(np.array_equal(f, img) for f in clip)
    clip[0, 0, 0, 0] ^= 255
    assert not np.array_equal(clip[0], clip[1])


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
    return np.array([dx, dy])


def test_translate_constant_and_random_speed():
    img = textured()
    rng = np.random.default_rng(1)
    clip = inflate_image(img, 8, "translate", rng, margin=0.1, speed="constant")
    assert clip.shape == (8,) + img.shape
    shifts = np.array([_shift(clip[i], clip[i + 1]) for i in range(7)])
    assert np.linalg.norm(shifts[0]) > 0.5                      # it moves
    assert np.allclose(shifts, shifts[0], atol=0.35)            # at one constant velocity
    # the whole travel stays inside the enlarged image (window never leaves it)
    total = np.abs(shifts.sum(axis=0))
    assert total[0] <= 0.2 * 1.2 * 320 + 1 and total[1] <= 0.2 * 1.2 * 240 + 1

    clip = inflate_image(img, 8, "translate", np.random.default_rng(2), speed="random")
    shifts = np.array([_shift(clip[i], clip[i + 1]) for i in range(7)])
    assert np.std(shifts, axis=0).max() > 0.5                   # velocity changes
    with pytest.raises(ConfigError):
        inflate_image(img, 4, "translate", rng, speed="warp")


def _sampled_steps(seed: int, n: int, img: np.ndarray) -> np.ndarray:
    """The H_i perspective() draws for ``seed`` (it samples them first, from the same rng)."""
    h, w = img.shape[:2]
    return MODEL.sample(np.random.default_rng(seed), n, aspect=w / h)


@pytest.mark.parametrize("border", ["reflect", "crop"])
def test_perspective_consecutive_homographies_are_the_sampled_ones(border):
    img = textured()
    est = Estimator()
    errs = []
    for seed in range(2):
        clip = inflate_image(img, 5, "perspective", np.random.default_rng(seed), motion=MODEL, border=border)
        assert clip.shape == (5,) + img.shape
        if border == "reflect":
            assert np.array_equal(clip[0], img)                 # J_1 = I
        truth = _sampled_steps(seed, 4, img)
        for i in range(4):
            vec, why, _ = est.estimate(clip[i], clip[i + 1])
            assert why == "ok"
            errs.append(vec - truth[i].reshape(-1)[:8])
    # estimator error is far below the spread of the motion itself
    assert np.all(np.abs(np.mean(errs, axis=0)) < SD / 3)
    assert np.all(np.sqrt(np.mean(np.square(errs), axis=0)) < SD / 2)


def test_perspective_reestimated_distribution_matches_fitted_model(tmp_path):
    """Paper Eq. 2 round trip: fit N(mu, Sigma) on the re-estimated steps of generated clips."""
    img = textured(seed=3)
    path = tmp_path / "motion.json"
    save_motion(path, MotionStats(MODEL))
    inflate = make_inflater("perspective", motion=path)
    est = Estimator()
    vecs = []
    for seed in range(6):
        clip = inflate(img, 7, np.random.default_rng(100 + seed))
        for i in range(6):
            v, _, _ = est.estimate(clip[i], clip[i + 1])
            if v is not None:
                vecs.append(v)
    assert len(vecs) >= 34
    fit = MotionModel.fit(np.stack(vecs))
    se = SD / np.sqrt(len(vecs))
    assert np.all(np.abs(fit.mu - MU) < 4 * se + 1e-3), (fit.mu - MU) / se
    ratio = np.sqrt(np.diag(fit.sigma)) / SD
    assert np.all((ratio > 0.55) & (ratio < 1.5)), ratio
    # the independent axes stay (nearly) uncorrelated
    corr = fit.sigma / np.sqrt(np.outer(np.diag(fit.sigma), np.diag(fit.sigma)))
    assert np.abs(corr - np.eye(8)).max() < 0.6


def test_motion_transfers_across_resolutions():
    """The same draw warps a 2x larger image by the same relative motion."""
    small = textured(120, 160, seed=5)
    big = cv2.resize(small, (320, 240), interpolation=cv2.INTER_LINEAR)
    a = inflate_image(small, 3, "perspective", np.random.default_rng(7), motion=MODEL)
    b = inflate_image(big, 3, "perspective", np.random.default_rng(7), motion=MODEL)
    b_down = cv2.resize(b[2], (160, 120), interpolation=cv2.INTER_AREA)
    inner = (slice(15, -15), slice(20, -20))
    assert np.abs(a[2][inner].astype(int) - b_down[inner].astype(int)).mean() < 12


def test_inflater_config_and_pickling(tmp_path):
    with pytest.raises(ConfigError, match="motion"):
        build_inflater({"mode": "perspective"})
    with pytest.raises(ConfigError, match="unknown option"):
        build_inflater({"mode": "translate", "borderz": 1})
    with pytest.raises(ConfigError, match="unknown inflation mode"):
        build_inflater("zoom")
    path = tmp_path / "m.json"
    save_motion(path, MotionStats(MODEL, {"3": MotionModel(IDENTITY8, np.zeros((8, 8)))}))
    inf = build_inflater({"mode": "perspective", "motion": str(path), "border": "crop"})
    inf = pickle.loads(pickle.dumps(inf))                       # dataset workers
    assert isinstance(inf, Inflater)
    img = textured(40, 60)
    out = inf(img, 4, np.random.default_rng(0))
    assert out.shape == (4, 40, 60, 3)
    # per-class model: class 3 has zero motion -> a static clip
    static = inf(img, 4, np.random.default_rng(0), label=3)
    assert all(np.array_equal(static[0], f) for f in static)
    assert build_inflater(None)(img, 2, None).shape == (2, 40, 60, 3)
