"""The engine's SGD (fused kernel on CPU) computes the same updates as torch's reference loop."""
from __future__ import annotations

import copy

import pytest
import torch

from omnisource.config import load_config
from omnisource.engine.optim import build_optimizer


@pytest.mark.parametrize("nesterov, no_decay", [(False, False), (True, True)])
def test_engine_sgd_matches_reference_sgd(nesterov, no_decay):
    cfg = load_config(None, ["optim.momentum=0.9", "optim.weight_decay=0.001",
                             f"optim.nesterov={str(nesterov).lower()}",
                             f"optim.no_decay_norm_bias={str(no_decay).lower()}"])
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 4 * 4, 4))
    ref = copy.deepcopy(ours)
    opt = build_optimizer(ours, cfg.optim, 0.05)
    assert opt.param_groups[0]["fused"] is True  # CPU parameters: the fused kernel
    # the same groups (same decay per parameter) for torch's per-parameter reference loop
    index = {id(p): i for i, p in enumerate(ours.parameters())}
    ref_params = list(ref.parameters())
    ref_opt = torch.optim.SGD([{"params": [ref_params[index[id(p)]] for p in g["params"]],
                                "weight_decay": g["weight_decay"]} for g in opt.param_groups],
                              lr=0.05, momentum=0.9, nesterov=nesterov, foreach=False)
    for step in range(4):
        x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(step))
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            o.step()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
