"""Tiny stand-ins for engine tests: a 2D/3D toy recognizer and a generated, learnable dataset.

Kept independent of omnisource.models / omnisource.data so the engine's tests exercise only the
engine (the real models and datasets have their own tests). Importable by the subprocess
scripts of the resume / distributed tests (``python engine_testkit.py ...``).
"""
from __future__ import annotations

import sys
import time

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyRecognizer(nn.Module):
    """2D: [N, S, 3, H, W] -> [N, C] (mean over S); 3D: [N, V, 3, T, H, W] -> [N*V, C]."""

    def __init__(self, num_classes: int = 4, layout: str = "2d", width: int = 8, dropout: float = 0.2):
        super().__init__()
        conv = nn.Conv2d if layout == "2d" else nn.Conv3d
        bn = nn.BatchNorm2d if layout == "2d" else nn.BatchNorm3d
        self.backbone = nn.Sequential(conv(3, width, 3, padding=1), bn(width), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1) if layout == "2d" else nn.AdaptiveAvgPool3d(1))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)
        self.meta = {"layout": layout, "num_classes": num_classes}
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "2d":
            n, s = x.shape[:2]
            f = self.backbone(x.reshape(n * s, *x.shape[2:])).flatten(1)
            return self.fc(self.drop(f)).reshape(n, s, -1).mean(1)
        if x.dim() == 6:
            x = x.reshape(-1, *x.shape[2:])
        return self.fc(self.drop(self.backbone(x).flatten(1)))


class ToyVideos(Dataset):
    """Class c -> colour pattern c plus noise; training items get random noise (augmentation)
    drawn from torch's global RNG, which the engine seeds per sample."""

    def __init__(self, n: int = 64, num_classes: int = 4, layout: str = "2d", size: int = 8,
                 views: int = 1, test_mode: bool = False, seed: int = 0, sleep: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        # class prototypes are shared by every split (fixed seed); samples differ by `seed`
        self.proto = torch.randn(num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(99)) * 1.5
        self.base = torch.randn(n, 3, size, size, generator=g) * 0.8
        self.layout, self.views, self.test_mode, self.sleep = layout, views, test_mode, sleep
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if self.sleep:
            time.sleep(self.sleep)
        img = self.base[i] + self.proto[self.labels[i]]
        if not self.test_mode:
            img = img + 0.3 * torch.randn_like(img)
        if self.layout == "2d":
            x = img.unsqueeze(0).repeat(2 * self.views, 1, 1, 1)           # [S, 3, H, W]
        else:
            x = img.unsqueeze(1).repeat(1, 2, 1, 1).unsqueeze(0).repeat(self.views, 1, 1, 1, 1)
        return {"inputs": x, "label": int(self.labels[i]), "index": i}


def tiny_config(overrides: list[str] | None = None):
    from omnisource.config import load_config

    base = ["model.name=tiny", "model.num_classes=4", "data.batch_size=8", "data.num_workers=0",
            "optim.lr=0.1", "optim.grad_clip=10", "schedule.epochs=3", "schedule.steps=[2]",
            "train.log_interval=2", "train.seed=3", "train.tensorboard=false",
            "train.channels_last=false"]
    return load_config(None, base + list(overrides or []))


class Recording(Dataset):
    """Remembers which indices this process loaded (to check that DDP ranks see different data)."""

    def __init__(self, base: Dataset):
        self.base, self.seen = base, []

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        self.seen.append(int(i if not isinstance(i, tuple) else i[0]))
        return self.base[i]


def dist_worker(rank: int, world: int, port: int, work: str) -> None:
    """One rank of the 2-process gloo test (torch.multiprocessing.spawn target)."""
    import json
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMNISOURCE_PROGRESS="0")
    torch.set_num_threads(1)
    from omnisource.engine import distributed as D
    from omnisource.engine.evaluate import run_inference
    from omnisource.engine.loaders import eval_loader
    from omnisource.engine.train import train

    cfg = tiny_config(["schedule.epochs=2", "data.batch_size=4", "dist.sync_bn=true"])
    torch.manual_seed(100 + rank)          # different init per rank: DDP must broadcast rank 0's
    model = TinyRecognizer()
    data = Recording(ToyVideos(32))
    train(cfg, work, model=model, train_data=data, validate=False, device="cpu")
    D.init_distributed()
    val = ToyVideos(13, test_mode=True, seed=1)        # 13: uneven shards need padding
    scores, labels = run_inference(model, eval_loader(val, 2, rank=rank, world=world), len(val),
                                   device=torch.device("cpu"), show_progress=False)
    gathered = D.gather_ordered([f"r{rank}-{i}" for i in D.shard_indices(5, rank, world)], 5)
    state = {k: v.tolist() for k, v in model.state_dict().items()}
    with open(f"{work}/rank{rank}.json", "w") as fh:
        json.dump({"seen": data.seen, "state": state, "labels": labels,
                   "val_labels": [int(x) for x in val.labels], "scores": scores.tolist(),
                   "gathered": gathered}, fh)
    D.cleanup()


class EpochKeyed(Dataset):
    """ToyVideos with its own per-(index, epoch) noise generator (the ``rng_for`` protocol of
    omnisource.data.datasets): the loader then leaves the global RNGs alone, so dropout draws
    one continuous torch stream per rank, which only a per-rank RNG checkpoint can restore."""

    def __init__(self, base: ToyVideos):
        self.base = base

    def rng_for(self, index: int, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(1_000_003 * epoch + index)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.base[index]
        noise = torch.randn(item["inputs"].shape, generator=self.rng_for(index, epoch))
        return {**item, "inputs": item["inputs"] + 0.3 * noise}


def dist_resume_worker(rank: int, world: int, port: int, work: str, resume: str | None) -> None:
    """One rank of the 2-process resume test: 2 epochs, or the second one resumed from ``resume``."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMNISOURCE_PROGRESS="0")
    torch.set_num_threads(1)
    from omnisource.engine import distributed as D
    from omnisource.engine.train import train

    cfg = tiny_config(["schedule.epochs=2", "data.batch_size=4", "train.deterministic=true",
                       "train.save_interval=1", "train.max_keep_ckpts=2"])
    torch.manual_seed(cfg.train.seed)
    model = TinyRecognizer(dropout=0.5)
    train(cfg, work, resume=resume, model=model, validate=False, device="cpu",
          train_data=EpochKeyed(ToyVideos(32, test_mode=True)))
    D.cleanup()


def main(argv: list[str]) -> int:
    """``python engine_testkit.py WORK_DIR [resume] [--set k=v ...]``: train the toy model."""
    torch.set_num_threads(1)
    work = argv[0]
    resume = "auto" if len(argv) > 1 and argv[1] == "resume" else None
    run_toy(work, resume, [a for a in argv[1:] if "=" in a])
    return 0


def run_toy(work: str, resume: str | None, sets: list[str]) -> dict:
    """The toy training run used by the resume test (in-process or as a subprocess)."""
    from omnisource.engine.train import train

    cfg = tiny_config(sets)
    sleep = float(cfg.model.overrides.get("sleep", 0.0)) if cfg.model.overrides else 0.0
    torch.manual_seed(cfg.train.seed)  # the model is built here, outside train()
    return train(cfg, work, resume=resume, model=TinyRecognizer(),
                 train_data=ToyVideos(64, sleep=sleep), val_data=ToyVideos(32, test_mode=True, seed=1),
                 validate=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
