"""End-to-end training on generated data: learning, bf16, resume after kill -9, non-finite loss,
multi-source batches, gradient accumulation, checkpoints readable with weights_only=True."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_testkit import ToyVideos, TinyRecognizer, run_toy, tiny_config  # noqa: E402

from omnisource.engine.train import NonFiniteLossError, train  # noqa: E402

KIT = Path(__file__).parent / "engine_testkit.py"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread (and the subprocess runs use one too)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(tmp, sets=(), model=None, train_data=None, val_data=None, **kw):
    cfg = tiny_config(list(sets))
    torch.manual_seed(cfg.train.seed)
    return train(cfg, tmp, model=model or TinyRecognizer(), validate=True,
                 train_data=train_data if train_data is not None else ToyVideos(64),
                 val_data=val_data if val_data is not None else ToyVideos(48, test_mode=True, seed=1), **kw)


AMPS = ("none", "bf16")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict:
    """The tiny end-to-end run once in fp32 and once in bf16 autocast: same seed, data, recipe."""
    runs = {}
    for amp in AMPS:
        tmp = tmp_path_factory.mktemp(f"learn_{amp}")
        out = _run(tmp, ["schedule.epochs=6", "schedule.steps=[5]", f"train.amp={amp}",
                         "optim.no_decay_norm_bias=true"])
        runs[amp] = (tmp, out)
    return runs


@pytest.mark.parametrize("amp", AMPS)
def test_tiny_training_learns(tiny_runs, amp):
    tmp_path, out = tiny_runs[amp]
    acc = out["last_val"]["top1_acc"]
    assert acc >= 0.6, f"{amp}: val top-1 {acc} (chance 0.25)"
    assert out["last_val"]["mean_class_accuracy"] >= 0.5
    ckpt = torch.load(tmp_path / "best.pth", weights_only=True)      # plain containers only
    assert ckpt["meta"]["best"]["value"] >= acc - 1e-9
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch", "cuda"}
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["mode"] == "train"]
    assert {"loss", "lr", "data_time", "eta_s", "grad_norm"} <= set(train_lines[0])
    assert sum(x["mode"] == "val" for x in lines) == 6
    assert (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")   # drawn when the run ended
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pth")) == ["epoch_4.pth", "epoch_5.pth", "epoch_6.pth"]


def test_bf16_autocast_reaches_fp32_accuracy(tiny_runs):
    """Issue 3: bf16 autocast must reach the accuracy of fp32 on this run. The tolerance is
    3 of the 48 validation videos (bf16 rounds activations to 8 mantissa bits, so the two runs
    drift apart over 48 SGD steps and may flip a borderline video or two, not more)."""
    fp32, bf16 = tiny_runs["none"][1]["last_val"], tiny_runs["bf16"][1]["last_val"]
    assert bf16["top1_acc"] >= fp32["top1_acc"] - 3 / 48, (fp32, bf16)
    assert bf16["mean_class_accuracy"] >= fp32["mean_class_accuracy"] - 0.1, (fp32, bf16)
    # accuracy saturates on this toy task, so also compare the training loss of the last epoch
    # (mean of its logged records): the same within 25% (measured: 0.2 % apart)
    losses = {}
    for amp in AMPS:
        lines = [json.loads(x) for x in (tiny_runs[amp][0] / "log.jsonl").read_text().splitlines()]
        last = [x["loss"] for x in lines if x["mode"] == "train" and x["epoch"] == 6]
        losses[amp] = sum(last) / len(last)
    assert abs(losses["bf16"] - losses["none"]) <= 0.25 * losses["none"] + 0.02, losses


def test_kill9_then_resume_equals_uninterrupted(tmp_path):
    sets = ["train.deterministic=true", "train.save_every_iters=3", "model.overrides={sleep: 0.004}",
            "schedule.epochs=2", "train.val_interval=2",
            "train.mixup.alpha=0.2", "train.mixup.cutmix_alpha=1.0"]
    env = dict(os.environ, OMNISOURCE_PROGRESS="0")
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_toy(str(full), None, sets)          # uninterrupted reference, in this process (1 thread)
    proc = subprocess.Popen([sys.executable, str(KIT), str(killed), *sets], env=env)
    latest = killed / "latest.pth"
    while not latest.exists() and proc.poll() is None:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    meta = torch.load(latest, weights_only=True)["meta"]
    assert meta["global_iter"] < 16
    subprocess.run([sys.executable, str(KIT), str(killed), "resume", *sets], check=True, env=env)
    a = torch.load(full / "latest.pth", weights_only=True)
    b = torch.load(killed / "latest.pth", weights_only=True)
    assert a["meta"]["global_iter"] == b["meta"]["global_iter"] == 16
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    log = [json.loads(x) for x in (killed / "log.jsonl").read_text().splitlines()]
    assert any(x["mode"] == "resume" for x in log)


class _PoisonAt(torch.utils.data.Dataset):
    """Returns NaN inputs for one sample index."""

    def __init__(self, base, bad):
        self.base, self.bad = base, bad

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        if i == self.bad:
            item["inputs"] = torch.full_like(item["inputs"], float("nan"))
        return item


def test_nonfinite_loss_stops_without_poisoned_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"iteration \d+ \(global iteration \d+\)"):
        _run(tmp_path, ["schedule.epochs=2"], train_data=_PoisonAt(ToyVideos(64), 5))
    assert not (tmp_path / "latest.pth").exists()
    # skip mode: counted, training finishes, and every saved weight is finite
    out = _run(tmp_path / "skip", ["schedule.epochs=2", "train.nonfinite=skip"],
               train_data=_PoisonAt(ToyVideos(64), 5))
    assert out["skipped_nonfinite"] == 2  # one poisoned batch per epoch
    sd = torch.load(tmp_path / "skip" / "latest.pth", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


class _MultiSource:
    """A loader yielding {'sources': {...}} batches: target + an auxiliary source with another
    shape (3 views) and weight, exercising the separate-forward path."""

    def __init__(self):
        self.a, self.b = ToyVideos(32), ToyVideos(32, views=3, seed=5)
        self.epoch = 0

    def set_epoch(self, e):
        self.epoch = e

    def __len__(self):
        return 4

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        for i in range(4):
            ia = torch.randint(0, 32, (8,), generator=g)
            ib = torch.randint(0, 32, (4,), generator=g)
            ba = [self.a[int(j)] for j in ia]
            bb = [self.b[int(j)] for j in ib]
            yield {"sources": {
                "target": {"inputs": torch.stack([x["inputs"] for x in ba]),
                           "label": torch.tensor([x["label"] for x in ba])},
                "web": {"inputs": torch.stack([x["inputs"] for x in bb]),
                        "label": torch.nn.functional.one_hot(torch.tensor([x["label"] for x in bb]), 4).float(),
                        "weight": 0.5}}}


def test_multi_source_batches_log_per_source(tmp_path):
    out = _run(tmp_path, ["schedule.epochs=4", "schedule.steps=[3]"], train_data=_MultiSource())
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    tr = [x for x in lines if x["mode"] == "train"]
    assert {"loss_target", "loss_web", "acc_target", "acc_web"} <= set(tr[0])
    assert out["global_iter"] == 16
    assert out["last_val"]["top1_acc"] > 0.4


def test_gradient_accumulation_matches_large_batch(tmp_path):
    """2 x batch 4 accumulated == 1 x batch 8 (no BN noise: eval-free linear model)."""
    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 8 * 8, 4)
            self.meta = {"layout": "2d", "num_classes": 4}

        def forward(self, x):
            return self.fc(x.flatten(2)).mean(1)

    class Fixed(torch.utils.data.Dataset):
        def __init__(self):
            self.d = ToyVideos(16, test_mode=True)

        def __len__(self):
            return 16

        def __getitem__(self, i):
            return self.d[i]

    res = {}
    for name, sets in {"big": ["data.batch_size=8"],
                       "acc": ["data.batch_size=4", "train.accum_steps=2"]}.items():
        torch.manual_seed(0)
        m = Lin()
        cfg = tiny_config(sets + ["schedule.epochs=1", "optim.scale_lr=false", "optim.grad_clip=null",
                                  "train.val_interval=1", "optim.momentum=0"])
        # same sample order for both: shuffle follows the seed, batches are consecutive positions
        train(cfg, tmp_path / name, model=m, train_data=Fixed(), validate=False)
        res[name] = m.fc.weight.detach().clone()
    assert torch.allclose(res["big"], res["acc"], atol=1e-6)


def test_run_logger_prints_a_readable_line_per_record(tmp_path, caplog):
    # a batch job's log (no terminal, no progress bar) must still show loss / lr every
    # log_interval and the validation metrics of every epoch, as mmaction2 prints them
    import logging

    from omnisource.engine.logging_utils import RunLogger, format_record

    caplog.set_level(logging.INFO, logger="omnisource.engine")
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.write({"mode": "train", "epoch": 2, "iter": 20, "iters": 50, "global_iter": 70,
                  "lr": 0.01, "data_time": 0.034, "eta_s": 3725.2, "top1_acc": 0.5,
                  "loss": 1.23456, "loss_web_images": 0.5})
    logger.write({"mode": "val", "epoch": 2, "global_iter": 100, "top1_acc": 0.6125})
    logger.close()
    train, val = [r.getMessage() for r in caplog.records if r.name == "omnisource.engine"]
    assert train.startswith("epoch 2 iter 20/50: loss 1.2346, loss_web_images 0.5000, lr 1.000e-02")
    assert "data 0.03s" in train and "eta 1:02:05" in train and "top1_acc 0.5000" in train
    assert val == "val after epoch 2: top1_acc 0.6125"
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2   # JSON unchanged
    assert format_record({"mode": "done", "global_iter": 9, "time_s": 61.0}) == \
        "done: 9 iterations: time 61.00s"
    assert format_record({"mode": "train", "epoch": 1, "iter": 2, "memory_mb": 10240.4}) == \
        "epoch 1 iter 2: memory 10240 MB"
    # rank != 0: nothing written, nothing printed
    caplog.clear()
    RunLogger(tmp_path / "r1", enabled=False).write({"mode": "val", "epoch": 1, "top1_acc": 1.0})
    assert not caplog.records and not (tmp_path / "r1").exists()
