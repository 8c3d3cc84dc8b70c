"""``train.compile: true`` trains the same model as eager mode (tiny model, two iterations).

The cost is inductor's C++ compilation of the tiny graphs (about 20 s of CPU time, cached in
the inductor cache afterwards); skipped where no C++ compiler exists."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_testkit import TinyRecognizer, ToyVideos, tiny_config

from omnisource.engine.hardware import compile_toolchain_problem
from omnisource.engine.train import train


@pytest.mark.skipif(compile_toolchain_problem(torch.device("cpu")) is not None,
                    reason="no C++ compiler for inductor")
def test_compiled_training_matches_eager(tmp_path):
    weights = {}
    for flag in (False, True):
        cfg = tiny_config([f"train.compile={str(flag).lower()}", "schedule.epochs=1",
                           "train.max_iters_per_epoch=2"])
        torch.manual_seed(cfg.train.seed)
        model = TinyRecognizer(dropout=0.0)  # inductor draws its own dropout masks
        train(cfg, tmp_path / str(flag), model=model, train_data=ToyVideos(16), validate=False)
        weights[flag] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(cfg.train.seed)
    start = TinyRecognizer(dropout=0.0)
    assert not torch.allclose(weights[False]["fc.weight"], start.fc.weight)  # it did train
    for k, v in weights[False].items():
        torch.testing.assert_close(weights[True][k], v, rtol=1e-4, atol=1e-5, msg=k)
