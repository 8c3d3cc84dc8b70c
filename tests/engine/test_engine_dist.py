"""Two CPU processes with gloo (env:// on 127.0.0.1): DDP training and ordered result gathering."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import engine_testkit  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_two_process_gloo_training_and_gather(tmp_path):
    mp.spawn(engine_testkit.dist_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # each rank loads its own half of every epoch (DistributedSampler semantics)
    e0, e1 = set(r0["seen"][:16]), set(r1["seen"][:16])
    assert len(r0["seen"]) == len(r1["seen"]) == 32
    assert not e0 & e1 and len(e0 | e1) == 32
    # identical weights on both ranks at the end (DDP broadcast + all-reduced gradients)
    for k in r0["state"]:
        assert torch.equal(torch.tensor(r0["state"][k]), torch.tensor(r1["state"][k])), k
    # evaluation gathered in dataset order, padding removed, same on every rank
    assert r0["labels"] == r1["labels"] == r0["val_labels"]
    assert len(r0["scores"]) == 13 and r0["scores"] == r1["scores"]
    assert r0["gathered"] == ["r0-0", "r0-1", "r0-2", "r1-3", "r1-4"] == r1["gathered"]
    # only rank 0 writes logs and checkpoints
    assert (tmp_path / "latest.pth").is_file() and (tmp_path / "log.jsonl").is_file()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_two_process_resume_restores_every_ranks_rng(tmp_path):
    """Resuming 2 ranks from the epoch-1 checkpoint ends with the weights of a straight 2-epoch
    2-rank run. Each rank's dropout draws from its own torch stream (the data does not reseed
    the global RNG here), so this needs every rank's RNG state, not only rank 0's."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    mp.spawn(engine_testkit.dist_resume_worker, args=(2, _free_port(), str(full), None), nprocs=2, join=True)
    ckpt1 = torch.load(full / "epoch_1.pth", weights_only=True)
    states = ckpt1["rng_ranks"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    mp.spawn(engine_testkit.dist_resume_worker, args=(2, _free_port(), str(resumed), str(full / "epoch_1.pth")),
             nprocs=2, join=True)
    a = torch.load(full / "latest.pth", weights_only=True)
    b = torch.load(resumed / "latest.pth", weights_only=True)
    assert a["meta"]["global_iter"] == b["meta"]["global_iter"] == 8
    assert not torch.equal(a["state_dict"]["fc.weight"], ckpt1["state_dict"]["fc.weight"])  # epoch 2 trained
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
