"""Teacher calibration on held-out target data (web/calibration.py)."""
from __future__ import annotations

import numpy as np
import pytest

from omnisource.web.calibration import Calibration, above_chance, fit_calibration, stratified_holdout


def test_holdout_is_stratified_reproducible_and_keeps_every_class():
    labels = [0] * 12 + [1] * 8 + [2] * 1 + [3] * 2
    held = stratified_holdout(labels, 0.25, seed=3)
    assert held == stratified_holdout(labels, 0.25, seed=3)
    assert held != stratified_holdout(labels, 0.25, seed=4)
    per = {c: sum(h for h, y in zip(held, labels) if y == c) for c in range(4)}
    assert per == {0: 3, 1: 2, 2: 0, 3: 0}
    for c in range(4):   # every class keeps a sample to fit on
        assert any(not h for h, y in zip(held, labels) if y == c)
    with pytest.raises(ValueError):
        stratified_holdout(labels, 1.0, 0)


def test_platt_fit_recovers_a_known_reliability_curve():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 0.99, 4000)
    # truth: right with probability sigmoid(2 * logit(c) - 1) (an over-confident teacher)
    z = 2 * np.log(conf / (1 - conf)) - 1
    right = rng.uniform(size=conf.size) < 1 / (1 + np.exp(-z))
    cal = fit_calibration(conf, right)      # 4000 samples: slope and offset are both fitted
    assert cal.a == pytest.approx(2.0, abs=0.2)
    assert cal.b == pytest.approx(-1.0, abs=0.2)
    assert cal.n == 4000 and cal.accuracy == pytest.approx(right.mean())
    # the threshold for precision p is where the curve crosses p
    t = cal.threshold(0.8)
    assert float(cal.correctness(t)) == pytest.approx(0.8, abs=1e-6)
    assert cal.threshold(0.9) > t


def test_small_samples_fit_the_offset_only_and_shrink_towards_the_identity():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.2, 0.9, 16)
    right = rng.uniform(size=16) < conf - 0.15       # an over-confident teacher
    cal = fit_calibration(conf, right)
    assert cal.a == 1.0 and cal.b < 0                # slope fixed; offset says "over-confident"
    strong = fit_calibration(conf, right, prior=1e6)
    assert abs(strong.b) < 1e-3                      # a huge prior keeps the identity map
    # seeds of the same 16-sample problem give thresholds in a narrow band (the free fit did not)
    thr = []
    for seed in range(20):
        r = np.random.default_rng(seed)
        c = r.uniform(0.2, 0.9, 16)
        thr.append(fit_calibration(c, r.uniform(size=16) < c - 0.15).threshold(0.5))
    assert 0.4 < min(thr) and max(thr) < 0.95


def test_platt_fit_stays_finite_when_every_prediction_is_right():
    cal = fit_calibration([0.4, 0.6, 0.9, 0.95], [True] * 4)
    assert np.isfinite([cal.a, cal.b]).all()
    assert float(cal.correctness(0.9)) < 1.0      # smoothed targets: never certain
    assert float(cal.correctness(0.9)) > 0.5


def test_a_nearly_flat_curve_gives_a_threshold_at_an_end():
    # seen on a weak teacher: slope 1e-5 put the crossing at logit 1e5 (math.exp overflowed)
    flat = Calibration(a=1e-5, b=-1.0, n=16, accuracy=0.3, mean_confidence=0.4)
    assert flat.threshold(0.5) == 1.0
    assert Calibration(a=1e-5, b=1.0, n=16, accuracy=0.7, mean_confidence=0.6).threshold(0.5) < 1e-20


def test_uninformative_confidence_has_no_threshold():
    cal = Calibration(a=-0.5, b=0.0, n=10, accuracy=0.5, mean_confidence=0.6)
    assert cal.threshold(0.5) is None
    assert Calibration.from_dict(cal.to_dict()) == cal


def test_above_chance():
    assert above_chance(1 / 8, 8) == pytest.approx(0.0)
    assert above_chance(1.0, 8) == pytest.approx(1.0)
    assert above_chance(0.05, 8) < 0
