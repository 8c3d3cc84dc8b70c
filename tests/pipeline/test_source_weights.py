"""Per-source batch sizes and loss weights from kept counts and calibrated precision."""
from __future__ import annotations

import pytest

from omnisource.pipeline.source_weights import SourceStats, auto_source_weights


def test_worth_follows_size_and_quality():
    w = auto_source_weights({"big_clean": SourceStats(200, 0.9), "small_clean": SourceStats(24, 0.9),
                             "big_noisy": SourceStats(200, 0.3)}, n_target=96, batch_target=16,
                             num_classes=8, max_aux_ratio=10.0)
    assert w["big_clean"].worth == pytest.approx(1.0 * (0.9 * 8 - 1) / 7)       # capped at the target size
    assert w["small_clean"].worth == pytest.approx(0.25 * (0.9 * 8 - 1) / 7)
    assert w["big_clean"].batch_size > w["big_noisy"].batch_size > 0
    assert w["big_clean"].batch_size > w["small_clean"].batch_size
    # loss weight = raw batch / target batch, whatever the rounding
    assert w["small_clean"].loss_weight == pytest.approx(w["small_clean"].worth)


def test_joint_cap_scales_every_source_and_keeps_ratios():
    stats = {"a": SourceStats(96, 1.0), "b": SourceStats(48, 1.0)}
    w = auto_source_weights(stats, 96, 16, 8, max_aux_ratio=0.75)
    assert w["a"].loss_weight + w["b"].loss_weight == pytest.approx(0.75)
    assert w["a"].loss_weight == pytest.approx(2 * w["b"].loss_weight)
    assert (w["a"].batch_size, w["b"].batch_size) == (8, 4)
    assert "scaled" in w["a"].reason


def test_chance_level_source_is_left_out_and_says_so():
    w = auto_source_weights({"junk": SourceStats(500, 0.1), "ok": SourceStats(10, 0.8)}, 96, 16, 8)
    assert w["junk"].batch_size == 0 and w["junk"].loss_weight == 0
    assert "chance" in w["junk"].reason
    assert w["ok"].batch_size == 1 and 0 < w["ok"].loss_weight < 1 / 16 * 16


def test_unknown_precision_counts_by_size_only():
    w = auto_source_weights({"s": SourceStats(48, None)}, 96, 16, 8)
    assert w["s"].batch_size == 8 and "unknown" in w["s"].reason


def test_held_out_check_halves_then_drops_a_source_that_hurts():
    from omnisource.pipeline.source_weights import check_factor

    assert check_factor(40, 41, 64)[0] == 1.0                  # noise: kept
    assert check_factor(40, 38, 64)[0] == 1.0                  # two clips worse of 64: within 1 se
    f, why = check_factor(40, 30, 64)
    assert f == 0.5 and "half weight" in why                  # ~1.8 se worse
    f, why = check_factor(40, 20, 64)
    assert f == 0.0 and "left out" in why and "n=64" in why
    assert check_factor(0, 0, 0) == (1.0, "no held-out samples")
