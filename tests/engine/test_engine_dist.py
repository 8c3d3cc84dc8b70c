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
