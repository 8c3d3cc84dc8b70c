"""Every family is a student of joint training: one tiny network per family (from the registry)
takes two optimizer steps on batches of two sources -- the target's hard labels and a web
source's soft pseudo-labels at a lower loss weight -- and every parameter that should learn gets
a finite gradient (TPN's auxiliary head included)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from omnisource.models import (create_model, example_input, get_family, get_model_preset, list_families,
                               list_models, missing_requirements)
from omnisource.engine.train import train

sys.path.insert(0, str(Path(__file__).parent))
from engine_testkit import tiny_config  # noqa: E402


def _row(family: str) -> str:
    return next(n for n in list_models(family=family) if get_model_preset(n).module.startswith("omnisource."))


FAMILIES = [f for f in list_families() if get_family(f).module.startswith("omnisource.") and list_models(family=f)]


class _TwoSources:
    """Target batches of 2 with hard labels, web batches of 2 with soft labels (weight 0.3)."""

    def __init__(self, model, steps: int = 2):
        self.model, self.steps, self.epoch = model, steps, 0

    def set_epoch(self, e):
        self.epoch = e

    def __len__(self):
        return self.steps

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        for _ in range(self.steps):
            soft = torch.softmax(torch.randn(2, 3, generator=g), 1)
            yield {"sources": {
                "target": {"inputs": example_input(self.model, 2), "label": torch.randint(0, 3, (2,), generator=g)},
                "web": {"inputs": example_input(self.model, 2), "label": soft, "weight": 0.3}}}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_as_a_joint_student(family, tmp_path):
    name = _row(family)
    if missing_requirements(name):
        pytest.skip(f"needs {missing_requirements(name)} (an optional extra), not installed here")
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **get_family(family).tiny)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    cfg = tiny_config(["model.num_classes=3", "schedule.epochs=1", "train.log_interval=1"])
    out = train(cfg, tmp_path, model=model, train_data=_TwoSources(model), validate=False, device="cpu")
    assert out["global_iter"] == 2
    changed = [k for k, v in model.named_parameters() if v.requires_grad and not torch.equal(v.detach(), before[k])]
    assert changed, f"{family}: no parameter moved"
    assert any("cls_head" in k or "fc" in k for k in changed)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    import json

    logs = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    tr = [r for r in logs if r.get("mode") == "train"]
    assert tr and {"loss_target", "loss_web"} <= set(tr[-1])
