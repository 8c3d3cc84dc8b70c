"""Mixup / CutMix / cross-dataset mixup: label mass, lambda law, pixel-label agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnisource.data.mixup import (BatchMixer, cross_source_mixup, cutmix, mixup, sample_lambda,
                                   soft_target_cross_entropy, to_soft)


def test_to_soft_one_hot_and_soft_rows():
    s = to_soft(torch.tensor([0, 2, 1]), 3)
    assert torch.equal(s, torch.eye(3)[[0, 2, 1]])
    probs = torch.tensor([[2.0, 1.0, 1.0]])
    assert torch.allclose(to_soft(probs, 3), torch.tensor([[0.5, 0.25, 0.25]]))
    sm = to_soft(torch.tensor([1]), 4, smoothing=0.2)
    assert torch.allclose(sm.sum(1), torch.ones(1))
    assert sm[0, 1] == pytest.approx(0.85)
    with pytest.raises(ValueError):
        to_soft(torch.tensor([3]), 3)


def test_mixup_label_mass_and_pixels_agree():
    rng = np.random.default_rng(0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1, 1).expand(4, 1, 3, 2, 4, 4)
    y = torch.tensor([0, 1, 2, 3])
    mx, my = mixup(x.clone(), y, alpha=0.4, rng=rng, num_classes=4)
    assert torch.allclose(my.sum(1), torch.ones(4))
    # the pixel value encodes the class id, so expected value under the soft label == pixel
    expected = (my * torch.arange(4.0)).sum(1)
    assert torch.allclose(mx[:, 0, 0, 0, 0, 0], expected, atol=1e-5)


def test_lambda_follows_beta():
    rng = np.random.default_rng(1)
    alpha = 0.4
    lams = np.array([sample_lambda(alpha, rng) for _ in range(4000)])
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(lams.mean() - 0.5) < 0.03
    assert abs(lams.var() - 1 / (4 * (2 * alpha + 1))) < 0.01
    assert sample_lambda(0.0, rng) == 1.0


def test_cutmix_label_weight_is_pasted_area():
    rng = np.random.default_rng(3)
    x = torch.zeros(2, 3, 2, 8, 8)
    x[1] = 1.0
    y = torch.tensor([0, 1])
    for _ in range(20):
        mx, my = cutmix(x, y, alpha=1.0, rng=rng, num_classes=2)
        assert torch.allclose(my.sum(1), torch.ones(2))
        for i in range(2):
            frac_ones = float(mx[i].mean())       # share of pixels from the class-1 sample
            assert frac_ones == pytest.approx(float(my[i, 1]), abs=1e-6)
            # the same box in every frame
            assert torch.equal(mx[i, :, 0], mx[i, :, 1])


def test_cross_source_mixup_pairs_target_with_auxiliary():
    rng = np.random.default_rng(4)
    batches = {
        "target": {"inputs": torch.zeros(4, 3, 2, 4, 4), "label": torch.tensor([0, 0, 0, 0]),
                   "weight": 1.0},
        "web": {"inputs": torch.ones(3, 3, 2, 4, 4), "label": torch.tensor([1, 1, 1])},
    }
    out = cross_source_mixup(batches, alpha=0.5, rng=rng, num_classes=2)
    assert set(out) == {"target", "web"} and out["target"]["weight"] == 1.0
    assert out["target"]["inputs"].shape[0] == 4 and out["web"]["inputs"].shape[0] == 3
    for name in out:
        lab = out[name]["label"]
        assert torch.allclose(lab.sum(1), torch.ones(len(lab)))
        # every partner comes from the other source: pixel (share of web) == label mass on class 1
        assert torch.allclose(out[name]["inputs"].mean(dim=(1, 2, 3, 4)), lab[:, 1], atol=1e-6)
    # 'cross' pairing: a target sample is never mixed with a target sample
    lam_t = out["target"]["label"][:, 0]
    assert torch.allclose(lam_t, lam_t[0].expand_as(lam_t))


def test_cross_source_mixup_rejects_shape_mismatch():
    batches = {"target": {"inputs": torch.zeros(2, 3, 4, 4, 4), "label": torch.tensor([0, 1])},
               "img": {"inputs": torch.zeros(2, 3, 1, 4, 4), "label": torch.tensor([0, 1])}}
    with pytest.raises(ValueError, match="inflate"):
        cross_source_mixup(batches, 0.2, np.random.default_rng(0), num_classes=2)


def test_soft_ce_matches_hard_ce_and_views():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    assert torch.allclose(soft_target_cross_entropy(logits, to_soft(y, 5)),
                          F.cross_entropy(logits, y), atol=1e-6)
    # 2 views per sample: targets repeated per view
    two_view = soft_target_cross_entropy(logits, to_soft(y[:3], 5))
    assert torch.allclose(two_view, F.cross_entropy(logits, y[:3].repeat_interleave(2)), atol=1e-6)


def test_batch_mixer_reproducible_and_soft():
    x = torch.randn(4, 3, 2, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    a = BatchMixer(num_classes=4, mixup_alpha=0.2, cutmix_alpha=1.0, seed=7)
    b = BatchMixer(num_classes=4, mixup_alpha=0.2, cutmix_alpha=1.0, seed=7)
    for _ in range(5):
        (xa, ya), (xb, yb) = a(x, y), b(x, y)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.allclose(ya.sum(1), torch.ones(4))
    off = BatchMixer(num_classes=4, mixup_alpha=0.0)
    xo, yo = off(x, y)
    assert xo is x and torch.equal(yo, to_soft(y, 4))
