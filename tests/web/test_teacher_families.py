"""Every 2D family scores web images and videos as a teacher, including the ones that mix
segments (TSM, TIN, TRN, TANet, TPN-TSM: a still image becomes a still clip of one group), and
every 3D family scores videos; driven by the registry, one tiny network per family."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnisource.models import create_model, get_family, get_model_preset, list_families, list_models, missing_requirements
from omnisource.utils.video_writer import write_video
from omnisource.web.teacher import ModelSource, TeacherEnsemble


def _one_row(family: str) -> str:
    rows = [n for n in list_models(family=family) if get_model_preset(n).module.startswith("omnisource.")]
    return rows[0]


FAMILIES = [f for f in list_families() if get_family(f).layout in ("2d", "3d")
            and get_family(f).module.startswith("omnisource.") and list_models(family=f)]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher_media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "img.jpg")
    write_video(root / "vid.mp4", (rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(40)),
                codec="mpeg4", fps=8)
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_family_scores_web_media_as_teacher(family, media):
    name = _one_row(family)
    if missing_requirements(name):
        pytest.skip(f"needs {missing_requirements(name)} (an optional extra), not installed here")
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **get_family(family).tiny).eval()
    size = model.meta.get("input_size", 224)
    if family not in ("timesformer", "c3d"):          # fixed-size positional / fc6 inputs keep theirs
        model.meta["input_size"] = 64
    recs = [type("R", (), {"path": "vid.mp4", "kind": "video"})()]
    if model.meta["layout"] == "2d":                 # 3D teachers never score images (paper 3.4)
        recs.append(type("R", (), {"path": "img.jpg", "kind": "image"})())
    with TeacherEnsemble([model], [ModelSource(name, None)], data_root=str(media), batch_size=2) as ens:
        out = ens.score(recs)
    for r, o in zip(recs, out):
        assert not isinstance(o, str), f"{family} ({size}) on {r.kind}: {o}"
        assert o.shape == (3,) and abs(float(o.sum()) - 1) < 1e-4
