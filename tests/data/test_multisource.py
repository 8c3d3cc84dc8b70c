"""Multi-source loader semantics: composition, epoch length, cycling, resampling, DDP, step modes."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from omnisource.data.multisource import (EpochSampler, MultiSourceLoader, Resample, Source,
                                         SoftLabelDataset, StreamSampler, class_probabilities,
                                         parse_resample, pass_indices)
from omnisource.errors import ConfigError


class Toy(Dataset):
    """Sample i is a 1-element tensor holding i (so batches reveal which indices were drawn)."""

    def __init__(self, labels, tag=0.0):
        self.labels = list(labels)
        self.tag = tag

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"inputs": torch.tensor([float(i), self.tag]), "label": self.labels[i], "index": i}


def _idx(batch):
    return batch["index"].tolist()


def test_joint_batches_have_every_source_and_target_defines_epoch():
    target = Source("target", Toy([0, 1, 2] * 4), batch_size=4)                # 12 -> 3 batches
    web = Source("web", Toy([0] * 5, tag=1.0), batch_size=2, weight=0.5)
    img = Source("img", Toy([1] * 30, tag=2.0), batch_size=3)
    loader = MultiSourceLoader([target, web, img], seed=1)
    assert len(loader) == 3
    batches = list(loader)
    assert len(batches) == 3
    seen = []
    for b in batches:
        assert set(b["sources"]) == {"target", "web", "img"}
        assert b["sources"]["target"]["inputs"].shape == (4, 2)
        assert b["sources"]["web"]["inputs"].shape == (2, 2)
        assert b["sources"]["img"]["inputs"].shape == (3, 2)
        assert b["sources"]["web"]["weight"] == 0.5
        assert torch.all(b["sources"]["img"]["inputs"][:, 1] == 2.0)
        seen += _idx(b["sources"]["target"])
    assert sorted(seen) == list(range(12))           # one epoch = one pass over the target


def test_auxiliary_cycles_and_reshuffles_each_pass():
    target = Source("target", Toy([0] * 40), batch_size=2)                       # 20 iterations
    web = Source("web", Toy(list(range(5))), batch_size=2)                       # 5 samples
    loader = MultiSourceLoader([target, web], seed=3)
    stream = [i for b in loader for i in _idx(b["sources"]["web"])]
    assert len(stream) == 40
    passes = [stream[k:k + 5] for k in range(0, 40, 5)]
    for p in passes:
        assert sorted(p) == list(range(5))           # each pass visits every sample once
    assert len({tuple(p) for p in passes}) > 1       # reshuffled between passes


def test_epochs_differ_and_resume_at_epoch_boundary_is_exact():
    def make():
        return MultiSourceLoader([Source("target", Toy([0, 1] * 5), batch_size=3),
                                  Source("web", Toy([0, 1, 1] * 3), batch_size=2)], seed=5)
    a = make()
    e0 = [(_idx(b["sources"]["target"]), _idx(b["sources"]["web"])) for b in a]
    a.set_epoch(1)
    e1 = [(_idx(b["sources"]["target"]), _idx(b["sources"]["web"])) for b in a]
    assert [t for t, _ in e0] != [t for t, _ in e1]
    b = make()
    b.set_epoch(1)                                   # a resumed run starting at epoch 1
    r1 = [(_idx(x["sources"]["target"]), _idx(x["sources"]["web"])) for x in b]
    assert r1 == e1


def test_power_resampling_matches_formula():
    counts = {0: 400, 1: 100, 2: 20, 3: 5}
    labels = np.array([c for c, n in counts.items() for _ in range(n)])
    spec = Resample("power", power=0.2)
    drawn = np.concatenate([labels[pass_indices(labels, spec, 0, "web", k)] for k in range(40)])
    freq = Counter(drawn.tolist())
    expect = class_probabilities(labels, 0.2)
    total = len(drawn)
    assert total == 40 * len(labels)
    for c in counts:
        p = expect[c]
        sd = np.sqrt(p * (1 - p) / total)
        assert abs(freq[c] / total - p) < 5 * sd, (c, freq[c] / total, p)
    # power 1 reproduces the natural distribution, power 0 a uniform one
    assert class_probabilities(labels, 1.0)[0] == pytest.approx(400 / 525)
    assert class_probabilities(labels, 0.0)[3] == pytest.approx(0.25)


def test_clipped_resampling_caps_classes_and_changes_subset():
    labels = np.array([0] * 50 + [1] * 8 + [2] * 3)
    spec = parse_resample({"clip": 10})
    p0 = pass_indices(labels, spec, 0, "web", 0)
    p1 = pass_indices(labels, spec, 0, "web", 1)
    for p in (p0, p1):
        c = Counter(labels[p].tolist())
        assert c == {0: 10, 1: 8, 2: 3}
        assert len(set(p.tolist())) == len(p)        # without replacement
    assert set(p0.tolist()) != set(p1.tolist())      # a fresh subset of the big class per pass


def test_resampling_works_without_distributed_via_loader():
    labels = [0] * 90 + [1] * 10
    target = Source("target", Toy([0] * 200), batch_size=10)
    web = Source("web", Toy(labels), batch_size=10, resample=Resample("power", power=0.0))
    loader = MultiSourceLoader([target, web], seed=0)
    drawn = [labels[i] for b in loader for i in _idx(b["sources"]["web"])]
    share1 = drawn.count(1) / len(drawn)
    assert abs(share1 - 0.5) < 0.12                  # p=0 balances classes (natural share 0.1)


@pytest.mark.parametrize("mode", [Resample(), Resample("clip", clip=7), Resample("power", power=0.2)])
def test_ddp_ranks_draw_disjoint_deterministic_subsets(mode):
    labels = np.array([0] * 30 + [1] * 10 + [2] * 8)
    world = 4
    for epoch in (0, 1):
        per_rank = []
        for r in range(world):
            s = EpochSampler(labels, mode, seed=9, name="web", rank=r, world_size=world)
            s.set_epoch(epoch)
            per_rank.append(list(s))
            assert list(s) == per_rank[-1]           # deterministic
        glob = pass_indices(labels, mode, 9, "web", epoch)
        lens = {len(p) for p in per_rank}
        assert len(lens) == 1
        # the ranks' positions partition the global sequence (padding only at the tail)
        merged = [per_rank[k % world][k // world] for k in range(world * len(per_rank[0]))]
        assert merged[:len(glob)] == glob.tolist()
        if mode.mode != "power" and len(glob) % world == 0:
            sets = [set(p) for p in per_rank]
            for a in range(world):
                for b in range(a + 1, world):
                    assert not sets[a] & sets[b]


def test_stream_sampler_ranks_disjoint_within_a_pass():
    labels = np.arange(16) % 4
    streams = [StreamSampler(labels, seed=2, name="vid", rank=r, world_size=2) for r in range(2)]
    firsts = []
    for s in streams:
        it = iter(s)
        firsts.append({next(it) for _ in range(8)})
    assert not firsts[0] & firsts[1] and len(firsts[0] | firsts[1]) == 16


def test_alternate_step_mode_matches_mmaction2_order():
    target = Source("target", Toy([0] * 8), batch_size=2)                        # 4 iterations
    a = Source("a", Toy([0] * 6), batch_size=2)
    b = Source("b", Toy([0] * 6), batch_size=1)
    loader = MultiSourceLoader([target, a, b], step_mode="alternate", train_ratio=[2, 1, 2])
    order = [next(iter(x["sources"])) for x in loader]
    # iteration 0: target, a x1, b x2; iteration 1: target only; iteration 2 like 0; 3 like 1
    assert order == ["target", "a", "b", "b", "target", "target", "a", "b", "b", "target"]
    assert len(loader) == len(order)
    for x in loader:
        assert len(x["sources"]) == 1                # one optimizer step per yielded batch


def test_joint_vs_alternate_default_ratio():
    mk = lambda: [Source("target", Toy([0] * 4), batch_size=2), Source("w", Toy([0] * 3), batch_size=2)]
    joint = list(MultiSourceLoader(mk()))
    alt = list(MultiSourceLoader(mk(), step_mode="alternate"))
    assert len(joint) == 2 and len(alt) == 4
    assert [list(x["sources"]) for x in alt] == [["target"], ["w"], ["target"], ["w"]]


def test_soft_pseudo_labels_and_workers():
    probs = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), 1)
    web = Source("web", SoftLabelDataset(Toy([0] * 6), probs), batch_size=3, num_workers=1,
                 resample=Resample("power", power=0.2))
    target = Source("target", Toy([0, 1, 2] * 2), batch_size=3)
    loader = MultiSourceLoader([target, web], seed=0)
    for b in loader:
        lab = b["sources"]["web"]["label"]
        assert lab.dtype == torch.float32 and lab.shape == (3, 3)
        idx = _idx(b["sources"]["web"])
        assert torch.allclose(lab, probs[idx])
        assert b["sources"]["target"]["label"].dtype == torch.long


@pytest.mark.parametrize("mode,ratio", [("joint", None), ("alternate", [1, 2])])
def test_one_worker_pool_serves_all_sources_and_matches_in_process(mode, ratio):
    """Workers build whole steps; the schedule (and so every batch) does not depend on them."""
    def make(workers):
        return MultiSourceLoader([Source("target", Toy([0, 1] * 5), batch_size=3),
                                  Source("web", Toy([0, 1, 1] * 3, tag=1.0), batch_size=2)],
                                 seed=2, step_mode=mode, train_ratio=ratio, num_workers=workers)

    def epochs(loader, n=2):
        return [[(name, _idx(x), x["inputs"].tolist()) for b in loader for name, x in b["sources"].items()]
                for _ in range(n)]

    pooled = make(2)
    assert pooled.loader.num_workers == 2 and pooled.loader.persistent_workers
    assert epochs(pooled) == epochs(make(0))


def test_dropped_loader_stops_its_workers_without_the_garbage_collector():
    import gc
    import time

    loader = MultiSourceLoader([Source("target", Toy([0, 1] * 4), batch_size=2),
                                Source("web", Toy([0] * 3), batch_size=1)], num_workers=1)
    next(iter(loader))
    worker = loader.loader._iterator._workers[0]
    gc.disable()                     # no reference cycle may keep the pool alive
    try:
        del loader
        deadline = time.time() + 10
        while worker.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        assert not worker.is_alive()
    finally:
        gc.enable()


def test_config_errors():
    with pytest.raises(ConfigError, match="clip"):
        parse_resample({"clip": -1})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_resample({"powr": 0.2})
    assert parse_resample({"power": 0.5}).power == 0.5
    assert parse_resample(None).mode == "none"
    with pytest.raises(ConfigError):
        MultiSourceLoader([Source("t", Toy([0]), 1), Source("t", Toy([0]), 1)])
    with pytest.raises(ConfigError, match="train_ratio"):
        MultiSourceLoader([Source("t", Toy([0]), 1), Source("w", Toy([0]), 1)],
                          step_mode="alternate", train_ratio=[1])


@pytest.mark.parametrize("mode,ratio", [("joint", None), ("alternate", [2, 1, 2])])
def test_set_start_resumes_mid_epoch_exactly(mode, ratio):
    def make():
        return MultiSourceLoader([Source("target", Toy([0, 1] * 6), batch_size=2),
                                  Source("a", Toy([0, 1, 2] * 3), batch_size=2),
                                  Source("b", Toy([1] * 5), batch_size=1)],
                                 seed=4, step_mode=mode, train_ratio=ratio)

    def key(b):
        return [(n, _idx(x)) for n, x in b["sources"].items()]

    full = make()
    full.set_epoch(1)
    ref = [key(b) for b in full]
    for k in (1, 3, len(ref) - 1):
        resumed = make()
        resumed.set_epoch(1)
        resumed.set_start(k)
        assert len(resumed.loader) == len(ref) - k        # the DataLoader's own length too
        assert [key(b) for b in resumed] == ref[k:], k
        assert len(resumed.loader) == len(resumed) == len(ref)   # next epoch: whole again


def test_build_from_config_with_real_datasets(tmp_path):
    from omnisource.config import config_from_dict
    from omnisource.pipeline.world import WorldSpec, generate_world

    root = tmp_path / "w"
    generate_world(root, WorldSpec.reduced(train_per_class=2, val_per_class=1, web_images_per_class=3,
                                           web_videos_per_class=2, untrimmed_per_class=1))
    pov = {"clip_len": 4, "frame_interval": 1, "scale": 32, "crop_size": 28}
    cfg = config_from_dict({
        "model": {"name": "slowonly_r50_8x8x1_256e_kinetics400_rgb"},
        "data": {"train": {"preset": "slowonly_8x8x1_train", "overrides": pov},
                 "label_map": str(root / "label_map.txt"), "batch_size": 4, "num_workers": 0},
        "sources": [
            {"name": "target", "ann_file": str(root / "target/train.txt"),
             "data_root": str(root / "target"), "overrides": pov},
            {"name": "img", "ann_file": str(root / "web/images/list.txt"), "data_root": str(root / "web/images"),
             "batch_size": 2, "loss_weight": 0.5, "inflate": "still", "resample": {"power": 0.2},
             "overrides": pov},
        ]})
    from omnisource.data.multisource import build_from_config

    loader = build_from_config(cfg, rank=0, world_size=1, seed=0)
    assert len(loader) == 2                                   # 8 target clips / 4
    batch = next(iter(loader))
    cfg.data.num_workers = 2                                  # decoded in a shared pool: same clips
    pooled = build_from_config(cfg, rank=0, world_size=1, seed=0)
    assert pooled.loader.num_workers == 2
    for name, x in next(iter(pooled))["sources"].items():
        assert torch.equal(x["inputs"], batch["sources"][name]["inputs"]), name
    t, img = batch["sources"]["target"], batch["sources"]["img"]
    assert t["inputs"].shape[0] == 4 and img["inputs"].shape[0] == 2
    assert t["inputs"].shape[1:] == img["inputs"].shape[1:]   # images inflated to clips
    assert img["weight"] == 0.5


def test_validate_sources_hook_rejects_unknown_keys():
    from omnisource.data.multisource import validate_sources

    with pytest.raises(ConfigError, match="resampel"):
        validate_sources([{"name": "t", "ann_file": "x", "resampel": None}])
    with pytest.raises(ConfigError, match="data.num_workers"):
        validate_sources([{"name": "t", "ann_file": "x", "num_workers": 2}])
    with pytest.raises(ConfigError, match="step_mode"):
        validate_sources([{"name": "t", "ann_file": "x", "step_mode": "sometimes"}])
