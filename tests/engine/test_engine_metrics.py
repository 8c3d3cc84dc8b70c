"""Metrics (mmaction2 definitions), view averaging, LR schedules, shard/gather bookkeeping."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from omnisource.engine.distributed import gather_ordered, shard_indices
from omnisource.engine.metrics import (average_clips, evaluate_scores, mean_class_accuracy,
                                       top_k_accuracy)
from omnisource.engine.optim import IterLRScheduler, build_optimizer, lr_factor, param_groups
from omnisource.config import load_config


def test_top_k_accuracy_hand_computed():
    scores = np.array([[0.1, 0.5, 0.4],   # label 2: top1 wrong, top2 right
                       [0.7, 0.2, 0.1],   # label 0: right
                       [0.2, 0.3, 0.5],   # label 0: wrong even at top2
                       [0.3, 0.3, 0.4]])  # label 2: right
    labels = [2, 0, 0, 2]
    assert top_k_accuracy(scores, labels, (1, 2, 3)) == [0.5, 0.75, 1.0]


def test_mean_class_accuracy_counts_predicted_only_classes_as_zero():
    # classes 0 and 1 in ground truth; class 2 only predicted -> mmaction2 averages over 3
    scores = np.eye(3)[[0, 0, 1, 2]]
    labels = [0, 0, 1, 1]
    # per class recall: c0 2/2, c1 1/2, c2 (never true) 0 -> mean 0.5
    assert mean_class_accuracy(scores, labels) == pytest.approx(0.5)
    # a class absent from both is ignored
    scores4 = np.zeros((2, 10))
    scores4[0, 3] = scores4[1, 5] = 1
    assert mean_class_accuracy(scores4, [3, 5]) == 1.0


def test_evaluate_scores_keys():
    s = np.random.default_rng(0).random((20, 7))
    out = evaluate_scores(s, list(range(7)) * 2 + [0] * 6)
    assert set(out) == {"top1_acc", "top5_acc", "mean_class_accuracy"}


def test_average_clips_semantics():
    s = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])                    # 1 video, 2 views
    assert torch.allclose(average_clips(s, "score"), torch.tensor([[1.0, 2.0]]))
    p = torch.softmax(s, dim=2).mean(1)
    assert torch.allclose(average_clips(s, "prob"), p)
    assert average_clips(s, "none").shape == (1, 2, 2)
    with pytest.raises(ValueError):
        average_clips(s, "max")


def _sched_cfg(**kw):
    base = dict(epochs=10, policy="step", steps=[4, 8], gamma=0.1, min_lr=0.0, warmup_epochs=0,
                warmup_iters=0, warmup_ratio=0.1)
    base.update(kw)
    return base


def test_step_schedule_with_linear_warmup():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sch = IterLRScheduler(opt, 1.0, iters_per_epoch=5, schedule_cfg=_sched_cfg(warmup_epochs=1))
    assert sch.step(0) == pytest.approx(0.1)           # warmup starts at ratio
    assert sch.step(2) == pytest.approx(1 - 0.6 * 0.9)  # 1 - (1 - 2/5)(1 - 0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.46)
    assert sch.step(5) == pytest.approx(1.0)
    assert sch.step(19) == pytest.approx(1.0)
    assert sch.step(20) == pytest.approx(0.1)           # epoch 4
    assert sch.step(40) == pytest.approx(0.01)          # epoch 8


def test_cosine_schedule_endpoints():
    kw = dict(iters_per_epoch=10, epochs=4, policy="cosine")
    assert lr_factor(0, **kw) == 1.0
    assert lr_factor(20, **kw) == pytest.approx(0.5)
    assert lr_factor(40, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(20, min_lr_ratio=0.2, **kw) == pytest.approx(0.6)


def test_no_decay_norm_bias_groups():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    groups = param_groups(model, 1e-4, True)
    assert len(groups[0]["params"]) == 2 and groups[1]["weight_decay"] == 0.0
    assert len(groups[1]["params"]) == 4  # conv bias, bn weight+bias, fc bias
    cfg = load_config(None, ["optim.nesterov=true"])
    opt = build_optimizer(model, cfg.optim, 0.3)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["lr"] == 0.3


@pytest.mark.parametrize("n, world", [(10, 3), (7, 2), (2, 4), (8, 2)])
def test_shards_cover_dataset_in_order(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1          # lockstep
    flat = [i for s in shards for i in s]
    assert flat[:n] == list(range(n))                  # concatenation in rank order = dataset order
    assert math.ceil(n / world) == len(shards[0])
    assert gather_ordered(list(range(n)), n) == list(range(n))


REF_PY = Path.home() / ".cache" / "mmaction2-ref" / "bin" / "python"


@pytest.mark.mmaction2
@pytest.mark.skipif(not REF_PY.is_file(), reason="mmaction2 reference venv absent")
def test_metrics_match_mmaction2(tmp_path):
    """Same numbers as mmaction2's own functions on random scores with ties and absent classes."""
    rng = np.random.default_rng(0)
    scores = rng.random((60, 12))
    scores[:20] = rng.integers(0, 5, (20, 12))     # ties: argmax takes the first maximum on both sides
    labels = rng.integers(0, 9, 60)                # classes 9..11 are never the ground truth
    np.save(tmp_path / "s.npy", scores)
    np.save(tmp_path / "l.npy", labels)
    code = (
        "import json, sys, numpy as np\n"
        "import importlib.util as u, glob\n"
        "p = glob.glob(sys.prefix + '/lib/python3*/site-packages/mmaction/evaluation/functional/accuracy.py')[0]\n"
        "spec = u.spec_from_file_location('acc', p); m = u.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"s = np.load('{tmp_path}/s.npy'); l = np.load('{tmp_path}/l.npy')\n"
        "print(json.dumps({'topk': m.top_k_accuracy(s[20:], l[20:], (1, 3, 5)),"
        " 'mca': float(m.mean_class_accuracy(s, l))}))\n")
    out = subprocess.run([str(REF_PY), "-c", code], capture_output=True, text=True, check=True)
    ref = json.loads(out.stdout.strip().splitlines()[-1])
    # top-k on tie-free rows only: np.argsort's tie order differs between numpy versions
    assert top_k_accuracy(scores[20:], labels[20:], (1, 3, 5)) == pytest.approx(ref["topk"], abs=1e-12)
    assert mean_class_accuracy(scores, labels) == pytest.approx(ref["mca"], abs=1e-12)


def test_topk_at_or_above_the_class_count_is_not_applicable():
    """One rule: top-k for k >= classes is None (n/a), never dropped, nan or 1.000."""
    from omnisource.engine.metrics import evaluate_scores, format_metric

    s = np.eye(4)[[0, 1, 2, 3, 0]]
    m = evaluate_scores(s, [0, 1, 2, 3, 3], topk=(1, 3, 4, 5))   # ties: later classes rank higher
    assert m["top1_acc"] == 0.8 and m["top3_acc"] == 1.0
    assert m["top4_acc"] is None and m["top5_acc"] is None
    assert format_metric("top5_acc", None, 4) == "n/a (5 >= 4 classes)"
    assert format_metric("top1_acc", 0.8) == "0.8000"
    assert evaluate_scores(np.eye(6)[[0, 1]], [0, 1])["top5_acc"] == 1.0     # 6 classes: applicable
