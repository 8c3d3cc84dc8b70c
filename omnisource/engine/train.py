"""The training loop: read it top to bottom in :func:`train`.

One iteration = one batch from the loader = one backward pass; every ``accum_steps`` batches one
SGD step. A batch is single-source ``{'inputs', 'label'}`` or multi-source
``{'sources': {name: {'inputs', 'label', 'weight'?}}}``: the loss is the weighted sum of the
per-source losses and one optimizer step is taken for it (paper Eq. 1, docs/ARCHITECTURE.md).

Crash safety: ``latest.pth`` is refreshed at the end of every epoch and every
``train.save_every_iters`` iterations (atomically), numbered ``epoch_N.pth`` files every
``save_interval`` epochs, ``best.pth`` whenever validation top-1 improves. ``--resume auto``
continues from ``latest.pth`` at the exact iteration; with ``--deterministic`` the result is
bit-identical to an uninterrupted run (data order and augmentation are pure functions of
``(seed, epoch, position)``, RNG states are checkpointed, the lr is a function of the iteration).

A non-finite loss stops the run with the iteration named (``train.nonfinite: stop``) or skips
the batch and counts it (``skip``); weights are checked before every save, so a poisoned
checkpoint is never written.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnisource.config import Config, derive, save_resolved
from omnisource.engine import checkpoint_io as ckio
from omnisource.engine.distributed import (DistInfo, all_reduce_mean, average_buffers, barrier,
                                           init_distributed)
from omnisource.engine.evaluate import compute_metrics, run_inference
from omnisource.engine.modeling import (apply_memory_format, autocast_context, build_model,  # noqa: F401
                                         model_layout, model_num_classes, use_channels_last)
from omnisource.engine.hardware import cpu_bf16_support
from omnisource.engine.loaders import TrainLoader, eval_loader
from omnisource.engine.logging_utils import RunLogger, progress
from omnisource.engine.optim import IterLRScheduler, build_optimizer
from omnisource.errors import ConfigError, OmniSourceError

log = logging.getLogger("omnisource.engine.train")


class NonFiniteLossError(OmniSourceError):
    """Training produced NaN/Inf; nothing was saved from the poisoned state."""


# ----------------------------------------------------------------------------------------------
# setup helpers
# ----------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(flag: bool) -> None:
    """Deterministic kernels (bit-exact resume); costs speed on GPU (cuDNN autotuning is off)."""
    if flag:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(flag, warn_only=True)
    torch.backends.cudnn.deterministic = flag
    torch.backends.cudnn.benchmark = not flag


def check_label_map(cfg: Config, num_classes: int, warn: bool = True) -> None:
    """The model's classes against ``data.label_map``, before any batch is drawn.

    Fewer classes than names cannot train (cross-entropy fails at the first batch that holds a
    high label, with an IndexError from deep in torch): a ConfigError naming both numbers. More
    classes train, but ``predict`` later refuses the label map: a warning."""
    lm = cfg.data.label_map
    if not lm:
        return
    from omnisource.data.annotations import read_label_map

    names = read_label_map(lm)
    if num_classes < len(names):
        raise ConfigError(f"model.num_classes is {num_classes} but the label map {lm} has {len(names)} "
                          f"classes: set model.num_classes: {len(names)}", file=cfg.get("_source"))
    if num_classes > len(names) and warn:
        log.warning("model.num_classes is %d but the label map %s has %d classes: the extra %d "
                    "output(s) are never trained, and predict will refuse this label map",
                    num_classes, lm, len(names), num_classes - len(names))


def compile_for_training(net: nn.Module, dev: torch.device, source: Any = None) -> nn.Module:
    """``train.compile: true``: wrap the training module in ``torch.compile`` (inductor).

    Inductor fuses the BatchNorm statistics / ReLU / residual-add chains of a ResNet between the
    oneDNN convolutions, forward and backward (measured about 1.3x on TSN-R50 on the project's
    CPU, see benchmarks/train_step.py --compile). The first iterations pay the compilation
    (minutes on 2 cores), so it is opt-in. Only training is compiled: validation runs the eager
    module, which avoids a second (eval-mode) compilation. The module, its parameters and
    buffers are shared, so checkpoints are unchanged.
    """
    from omnisource.engine.hardware import compile_toolchain_problem

    problem = compile_toolchain_problem(dev)
    if problem is not None:
        raise ConfigError(f"train.compile: {problem} (or set train.compile: false)", file=source)
    return torch.compile(net)


def build_split(cfg: Config, split: str, test_mode: bool, **extra: Any):
    """``build_dataset`` for ``data.<split>`` (None when the split has no ann_file)."""
    s = cfg.data[split]
    if not s.ann_file:
        return None
    if not s.preset:
        raise ConfigError(f"'data.{split}.preset' is required with data.{split}.ann_file",
                          file=cfg.get("_source"))
    from omnisource.data.datasets import build_dataset

    if not s.data_root:   # "" would read from the current folder: every sample missing, one by one
        raise ConfigError(f"'data.{split}.data_root' is not set (the folder the paths of "
                          f"{s.ann_file} are relative to; '.' for the current folder)", file=cfg.get("_source"))
    overrides = dict(s.overrides)
    overrides.update(extra)
    if s.format:
        overrides.setdefault("format", s.format)
    if cfg.data.label_map:
        overrides.setdefault("label_map", cfg.data.label_map)
    if cfg.data.get("index_store"):
        overrides.setdefault("index_store", cfg.data.index_store)
    return build_dataset(s.ann_file, s.data_root, s.preset, test_mode=test_mode,
                         backend=cfg.data.backend, strict=cfg.data.strict, **overrides)


def build_multisource(cfg: Config, info: DistInfo):
    """Hand ``sources:`` to the multi-source module (issue 5), which owns its semantics."""
    from omnisource.data import multisource

    builder = getattr(multisource, "build_from_config", None)
    if builder is None:
        raise ConfigError("'sources:' needs omnisource.data.multisource.build_from_config "
                          "(multi-source training is not available in this build)",
                          file=cfg.get("_source"))
    return builder(cfg, rank=info.rank, world_size=info.world_size, seed=cfg.train.seed)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def _source_batches(batch: dict) -> dict[str, dict]:
    if "sources" in batch:
        return dict(batch["sources"])
    if "inputs" not in batch or "label" not in batch:
        raise ValueError("a batch needs 'inputs' and 'label' (or 'sources')")
    return {"": batch}


def _hard(label: torch.Tensor) -> torch.Tensor:
    return label.argmax(dim=1) if label.is_floating_point() and label.dim() == 2 else label.long()


def source_loss(logits: torch.Tensor, label: torch.Tensor, n: int, smoothing: float,
                multi_label: bool = False) -> tuple[torch.Tensor, float]:
    """Loss and top-1 accuracy for one source. ``logits`` has ``n * V`` rows for ``n`` samples
    (3D models with V views per sample): each view is trained on the sample's label.

    ``multi_label`` (multi-hot rows of a multi-label list: MMiT, HVU): binary cross-entropy per
    class (mmaction2's ``BCELossWithLogits``), and "accuracy" = the top class is a positive."""
    from omnisource.data.mixup import soft_target_cross_entropy, to_soft

    views = logits.shape[0] // n
    if multi_label:
        target = label.float().repeat_interleave(views, dim=0) if views > 1 else label.float()
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        with torch.no_grad():
            top = logits.detach().float().reshape(n, views, -1).mean(1).argmax(1)
            acc = float(label.float().gather(1, top[:, None]).gt(0.5).float().mean())
        return loss, acc
    if label.is_floating_point() and label.dim() == 2:
        target = label
        if smoothing:
            target = to_soft(label, logits.shape[1], smoothing)
        loss = soft_target_cross_entropy(logits.float(), target)
    else:
        lab = label.long().repeat_interleave(views) if views > 1 else label.long()
        loss = F.cross_entropy(logits.float(), lab, label_smoothing=smoothing)
    with torch.no_grad():
        pred = logits.detach().float().reshape(n, views, -1).mean(1).argmax(1)
        acc = float((pred == _hard(label)).float().mean())
    return loss, acc


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------

def train(cfg: Config, work_dir: str | Path, *, resume: str | None = None,
          validate: bool | None = None, model: nn.Module | None = None,
          train_data: Any = None, val_data: Any = None, device: str | None = None) -> dict:
    """Train ``cfg`` into ``work_dir``; returns a summary dict (rank 0 has the full one).

    ``model`` / ``train_data`` (a Dataset or a loader following the protocol in
    :mod:`omnisource.engine.loaders`) / ``val_data`` (a Dataset) may be given directly, which is
    how tests and the OmniSource pipeline inject their own; otherwise they are built from ``cfg``.
    ``validate``: None follows ``train.validate`` (whose None means: when ``data.val`` is set).

    The work dir is locked for the run (rank 0 holds ``WORK/.lock``): a second ``train`` into
    it stops at once with a ConfigError naming the holder, instead of both writing checkpoints.
    """
    from omnisource.utils.lock import WorkDirLock

    # one lock per run, rank 0's (ranks share the work dir); torchrun's RANK is known before
    # the process group is up
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return _train(cfg, Path(work_dir), resume=resume, validate=validate, model=model,
                      train_data=train_data, val_data=val_data, device=device)
    with WorkDirLock(work_dir, what="omnisource train"):
        return _train(cfg, Path(work_dir), resume=resume, validate=validate, model=model,
                      train_data=train_data, val_data=val_data, device=device)


def _train(cfg: Config, work_dir: Path, *, resume: str | None, validate: bool | None,
           model: nn.Module | None, train_data: Any, val_data: Any, device: str | None) -> dict:
    info = init_distributed(cfg.dist.backend, device)
    dev = info.device
    derive(cfg, info.world_size)
    tcfg = cfg.train
    if tcfg.amp == "fp16" and dev.type != "cuda":
        raise ConfigError("train.amp: fp16 needs a CUDA device (use bf16 on CPU)",
                          file=cfg.get("_source"))
    if tcfg.amp == "bf16" and dev.type == "cpu" and info.is_main:
        native, what = cpu_bf16_support()
        if not native:
            log.warning("train.amp: bf16 will be slow here: %s", what)
    set_deterministic(tcfg.deterministic)
    seed_everything(tcfg.seed)  # same on every rank: identical initial weights
    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, work_dir / "config.yaml")
    logger = RunLogger(work_dir, enabled=info.is_main, tensorboard=tcfg.tensorboard)

    # -- model ---------------------------------------------------------------------------------
    if model is None:
        model = build_model(cfg)
    num_classes = model_num_classes(model, cfg)
    check_label_map(cfg, num_classes, warn=info.is_main)
    if info.enabled and cfg.dist.sync_bn:
        if dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif info.is_main:  # torch's SyncBatchNorm needs CUDA tensors
            log.warning("dist.sync_bn ignored: SyncBatchNorm works on GPU only")
    model.to(dev)
    # NHWC / NDHWC lets oneDNN / cuDNN pick their fast convolution paths (see use_channels_last)
    apply_memory_format(model, tcfg.channels_last, dev)
    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if dev.type == "cuda" else None,
            find_unused_parameters=cfg.dist.find_unused_parameters)
    if tcfg.compile:
        net = compile_for_training(net, dev, cfg.get("_source"))

    # -- data ----------------------------------------------------------------------------------
    if train_data is None:
        if cfg.sources:
            train_data = build_multisource(cfg, info)
        else:
            train_data = build_split(cfg, "train", test_mode=False, seed=tcfg.seed)
            if train_data is None:
                raise ConfigError("no training data: set data.train.ann_file (or sources:)",
                                  file=cfg.get("_source"))
    if isinstance(train_data, torch.utils.data.Dataset):
        loader = TrainLoader(train_data, cfg.data.batch_size, seed=tcfg.seed, rank=info.rank,
                             world=info.world_size, num_workers=cfg.data.num_workers,
                             pin_memory=cfg.data.pin_memory and dev.type == "cuda")
    else:
        loader = train_data
    do_val = tcfg.validate if validate is None else validate
    if do_val is None:     # train.validate's default: validate when a val split is configured
        do_val = bool(cfg.data.val.ann_file)
    val_loader = None
    if do_val:
        if val_data is None:
            val_data = build_split(cfg, "val", test_mode=True)
        if val_data is None:
            log.warning("validation requested but data.val.ann_file is not set; skipping it")
        else:
            val_loader = eval_loader(val_data, cfg.derived.val_batch_size, rank=info.rank,
                                     world=info.world_size, num_workers=cfg.data.num_workers)

    iters_per_epoch = len(loader)
    if tcfg.max_iters_per_epoch:
        iters_per_epoch = min(iters_per_epoch, tcfg.max_iters_per_epoch)
    if iters_per_epoch == 0:
        raise ConfigError("the training loader yields no batch (empty set or batch too large)",
                          file=cfg.get("_source"))

    # -- optimisation --------------------------------------------------------------------------
    optimizer = build_optimizer(model, cfg.optim, cfg.derived.lr)
    scheduler = IterLRScheduler(optimizer, cfg.derived.lr, iters_per_epoch, cfg.schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=(tcfg.amp == "fp16"))
    mixer = None
    mx = tcfg.mixup
    if mx.alpha > 0 or mx.cutmix_alpha > 0:
        from omnisource.data.mixup import BatchMixer

        mixer = BatchMixer(num_classes=num_classes, mixup_alpha=mx.alpha, cutmix_alpha=mx.cutmix_alpha,
                           prob=mx.prob, switch_prob=mx.switch_prob, smoothing=0.0, seed=tcfg.seed)

    # -- resume --------------------------------------------------------------------------------
    start_epoch, start_iter, global_iter = 0, 0, 0
    best: dict[str, Any] = {}
    skipped_nonfinite = 0
    # failed reads of unreadable train samples (each replaced by another sample) in this process
    # since it started; summed over ranks when logged
    unreadable = 0
    damaged = 0          # frames of train clips that could not be decoded (replaced by neighbours)
    resume_path = _resolve_resume(resume, work_dir)
    if resume_path is not None:
        ckpt = ckio.load_training_checkpoint(resume_path)
        ckio.load_model_state(model, ckpt["state_dict"], resume_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        meta = ckpt["meta"]
        start_epoch, start_iter, global_iter = meta["epoch"], meta["iter_in_epoch"], meta["global_iter"]
        best = dict(meta.get("best") or {})
        skipped_nonfinite = int((ckpt.get("extra") or {}).get("skipped_nonfinite", 0))
        own = ckio.rank_rng_state(ckpt, info.rank, info.world_size)
        if own is not None:
            ckio.set_rng_state(own)  # this rank's own streams: bit-exact multi-rank resume
        else:
            # older checkpoint or another world size: no state for this rank; keep ranks'
            # dropout streams distinct, but the run will not repeat an uninterrupted one exactly
            ckio.set_rng_state(ckpt["rng"])
            if info.world_size > 1:
                torch.manual_seed(tcfg.seed + info.rank + 7919 * global_iter)
            if info.is_main:
                log.warning("%s holds RNG states for %d rank(s), this run has %d: ranks re-seeded, "
                            "so the resumed run will not repeat an uninterrupted one bit for bit",
                            resume_path, len(ckpt.get("rng_ranks") or [ckpt["rng"]]), info.world_size)
        if info.is_main:
            # counted from 1 like every other line (the checkpoint stores the 0-based epoch)
            log.info("resumed from %s at epoch %d, iteration %d", resume_path, start_epoch + 1, start_iter + 1)
            logger.write({"mode": "resume", "path": str(resume_path), "epoch": start_epoch + 1,
                          "iter": start_iter, "global_iter": global_iter})
    elif info.world_size > 1:
        torch.manual_seed(tcfg.seed + info.rank)  # different dropout per rank

    # -- epochs --------------------------------------------------------------------------------
    plain_cfg = cfg.to_dict()
    total_iters = cfg.schedule.epochs * iters_per_epoch
    t_start = time.time()
    iters_done_here = 0

    def save(name: str, epoch: int, it: int) -> None:
        # every rank reaches each save point together (same iteration / epoch / gathered metrics)
        rng_ranks = ckio.gather_rng_states()
        if not info.is_main:
            return
        if not ckio.assert_finite(model):
            raise NonFiniteLossError(f"weights became non-finite at global iteration {global_iter}; "
                                     f"refusing to write {name}")
        ckio.save_training_checkpoint(
            work_dir / name, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
            epoch=epoch, iter_in_epoch=it, global_iter=global_iter, config=plain_cfg, best=best,
            extra={"skipped_nonfinite": skipped_nonfinite}, rng_ranks=rng_ranks)

    net.train()
    accum = tcfg.accum_steps
    last_metrics: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.schedule.epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        first = start_iter if epoch == start_epoch else 0
        if first and hasattr(loader, "set_start"):
            loader.set_start(first)
            it_src: Iterable = loader
        elif first:
            it_src = _skip(loader, first)
        else:
            it_src = loader
        bar = progress(total=iters_per_epoch, desc=f"epoch {epoch + 1}/{cfg.schedule.epochs}",
                       enabled=info.is_main, initial=first)
        sums: dict[str, float] = {}
        count = 0
        t_data = time.time()
        i = first
        for batch in it_src:
            if i >= iters_per_epoch:
                break
            data_time = time.time() - t_data
            lr = scheduler.step(global_iter)
            host = _source_batches(batch)
            unreadable += _replaced_reads(host)   # before the copy: on a GPU, reading it would sync
            damaged += _replaced_reads(host, "damaged")
            sources = {name: _to_device(b, dev) for name, b in host.items()}
            if mixer is not None:
                mixer.rng = np.random.default_rng([tcfg.seed, info.rank, global_iter])
                if len(sources) > 1:
                    sources = mixer.mix_sources(sources)
                else:
                    (name, b), = sources.items()
                    x, y = mixer(b["inputs"], b["label"])
                    sources = {name: {**b, "inputs": x, "label": y}}
            step_now = (i + 1) % accum == 0 or i + 1 == iters_per_epoch
            # skip mode: a NaN batch must not leave NaN BatchNorm running stats behind
            saved_buffers = ([b.detach().clone() for b in model.buffers()]
                             if tcfg.nonfinite == "skip" else None)
            loss_value, logs = _forward_backward(net, sources, tcfg, dev, accum, step_now, scaler)
            if not math.isfinite(loss_value):
                optimizer.zero_grad(set_to_none=True)
                where = f"epoch {epoch + 1}, iteration {i + 1} (global iteration {global_iter + 1})"
                if tcfg.nonfinite == "stop":
                    bar.close()
                    logger.write({"mode": "error", "epoch": epoch, "iter": i, "global_iter": global_iter,
                                  "error": f"non-finite loss {loss_value}"})
                    logger.close()
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss_value}) at {where}; stopped without saving "
                        f"(set train.nonfinite: skip to skip such batches)")
                skipped_nonfinite += 1
                with torch.no_grad():
                    for b, saved in zip(model.buffers(), saved_buffers or []):
                        b.copy_(saved)
                log.warning("non-finite loss at %s: batch skipped (%d so far)", where, skipped_nonfinite)
            elif step_now:
                grad_norm = _optimizer_step(model, optimizer, scaler, cfg.optim.grad_clip)
                if grad_norm is not None and not math.isfinite(grad_norm) and not scaler.is_enabled():
                    # clip_grad_norm_ saw NaN/Inf gradients: the step above was skipped
                    skipped_nonfinite += 1
                    if tcfg.nonfinite == "stop":
                        raise NonFiniteLossError(
                            f"non-finite gradient norm at epoch {epoch + 1}, iteration {i + 1} "
                            f"(global iteration {global_iter + 1}); stopped without saving")
                logs["grad_norm"] = grad_norm if grad_norm is not None else float("nan")
            global_iter += 1
            iters_done_here += 1
            i += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            elapsed = time.time() - t_start
            eta = elapsed / iters_done_here * (total_iters - global_iter)
            bar.update(1)
            bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}",
                            data=f"{data_time:.2f}s")
            if i % tcfg.log_interval == 0 or i == iters_per_epoch:
                rec = {k: v / count for k, v in sums.items()}
                rec["unreadable"] = float(unreadable)   # every rank has the key: one collective
                rec = all_reduce_mean(rec, dev if dev.type == "cuda" else None)
                total_bad = round(rec.pop("unreadable") * info.world_size)
                if total_bad:
                    rec["unreadable"] = total_bad
                logger.write({"mode": "train", "epoch": epoch + 1, "iter": i, "iters": iters_per_epoch,
                              "global_iter": global_iter, "lr": lr, "data_time": data_time,
                              "eta_s": round(eta, 1), **rec,
                              **({"skipped_nonfinite": skipped_nonfinite} if skipped_nonfinite else {}),
                              **_memory(dev)}, step=global_iter)
                sums, count = {}, 0
            if (tcfg.save_every_iters and global_iter % tcfg.save_every_iters == 0
                    and step_now and i < iters_per_epoch):
                save("latest.pth", epoch, i)
            t_data = time.time()
        bar.close()
        # -- end of epoch: validate, checkpoint ---------------------------------------------
        average_buffers(model)
        done = epoch + 1
        if val_loader is not None and (done % tcfg.val_interval == 0 or done == cfg.schedule.epochs):
            scores, labels = run_inference(model, val_loader,  # eager (not DDP, not compiled)
                                           len(val_loader.dataset), device=dev,
                                           average=cfg.test.average_clips, amp=tcfg.amp,
                                           desc="val", show_progress=info.is_main)
            last_metrics = compute_metrics(scores, labels, cfg.test.metrics, cfg.test.topk)
            logger.write({"mode": "val", "epoch": done, "global_iter": global_iter, **last_metrics},
                         step=global_iter)
            key = "top1_acc" if "top1_acc" in last_metrics else next(iter(last_metrics), None)
            if key is not None and last_metrics[key] > best.get("value", -1.0):
                best = {"metric": key, "value": last_metrics[key], "epoch": done}
                save("best.pth", done, 0)
                if info.is_main:
                    from omnisource.utils.io import atomic_write_json

                    atomic_write_json(work_dir / "best.json", best)
        if done % tcfg.save_interval == 0:
            save(f"epoch_{done}.pth", done, 0)
            _prune(work_dir, tcfg.max_keep_ckpts, info.is_main)
        save("latest.pth", done, 0)
        barrier()
        start_iter = 0
    sums = all_reduce_mean({"n": float(unreadable), "d": float(damaged)}, dev if dev.type == "cuda" else None)
    total_bad = round(sums["n"] * info.world_size)
    total_damaged = round(sums["d"] * info.world_size)
    logger.write({"mode": "done", "global_iter": global_iter, "skipped_nonfinite": skipped_nonfinite,
                  **({"unreadable": total_bad} if total_bad else {}),
                  **({"damaged_frames": total_damaged} if total_damaged else {}),
                  "time_s": round(time.time() - t_start, 2)})
    logger.close()
    if info.is_main and tcfg.plot_curves:
        from omnisource.engine.curves import write_curves_quietly

        write_curves_quietly(work_dir)
    return {"work_dir": str(work_dir), "global_iter": global_iter, "best": best,
            "last_val": last_metrics, "skipped_nonfinite": skipped_nonfinite, "unreadable": total_bad,
            "damaged_frames": total_damaged}


def _replaced_reads(sources: dict[str, dict], key: str = "skipped") -> int:
    """Unreadable samples met while building this batch: each item counts the reads that failed
    before it (``skipped``, set by the dataset) -- the only count that holds with DataLoader
    workers, whose datasets' own counters the main process never sees. ``key='damaged'``: the
    frames of the batch's clips that were replaced by a decodable neighbour."""
    return sum(int(b[key].sum()) for b in sources.values() if isinstance(b.get(key), torch.Tensor))


def _forward_backward(net: nn.Module, sources: dict[str, dict], tcfg: Config, dev: torch.device,
                      accum: int, step_now: bool, scaler) -> tuple[float, dict]:
    """Weighted sum of per-source losses; one forward when all sources have the same shape.

    The recognizer returns a dict of losses (``net(x, loss_fn=fn)``: ``loss_cls`` and whatever
    auxiliary heads add); ``fn(scores, head)`` is this batch's criterion -- each source's rows
    get their own targets (hard, soft or mixed), weight and label smoothing -- so an auxiliary
    head's scores are scored against the same targets. Every ``loss_*`` term is summed and
    logged."""
    names = list(sources)
    shapes = {tuple(sources[n]["inputs"].shape[1:]) for n in names}
    weights = {n: float(sources[n].get("weight", 1.0)) for n in names}
    logs: dict[str, float] = {}
    no_sync = getattr(net, "no_sync", None)
    groups = [names] if len(shapes) == 1 else [[n] for n in names]
    total = 0.0
    for gi, group in enumerate(groups):
        last_group = gi == len(groups) - 1
        sizes = [sources[n]["inputs"].shape[0] for n in group]
        x = torch.cat([sources[n]["inputs"] for n in group]) if len(group) > 1 else sources[group[0]]["inputs"]

        def loss_fn(scores: torch.Tensor, head: str, group=group, sizes=sizes, x=x) -> torch.Tensor:
            rows_per = scores.shape[0] // x.shape[0]
            loss = scores.new_zeros((), dtype=torch.float32)
            start = 0
            for n, size in zip(group, sizes):
                part = scores[start * rows_per:(start + size) * rows_per]
                start += size
                ml = sources[n].get("multi_label")
                l_n, acc = source_loss(part, sources[n]["label"], size, tcfg.label_smoothing,
                                       multi_label=bool(ml.any()) if isinstance(ml, torch.Tensor) else bool(ml))
                loss = loss + weights[n] * l_n
                if head == "cls":        # per-source logs of the main classifier
                    if n:
                        logs[f"loss_{n}"] = float(l_n.detach())
                        logs[f"acc_{n}"] = acc
                    else:
                        logs["top1_acc"] = acc
            return loss

        ctx = no_sync() if (no_sync is not None and (not step_now or not last_group)) else _null()
        with ctx:
            with autocast_context(dev, tcfg.amp):
                if _takes_loss_fn(net):
                    losses = net(x, loss_fn=loss_fn)
                else:          # a plain module given to train(model=...): scores only
                    losses = {"loss_cls": loss_fn(net(x), "cls")}
            if not isinstance(losses, dict):
                raise TypeError(f"{type(net).__name__}(x, loss_fn=...) must return a dict of losses, "
                                f"got {type(losses).__name__}")
            terms = {k: v.float() for k, v in losses.items() if k.startswith("loss")}
            loss = sum(terms.values()) if terms else torch.zeros((), device=x.device)
            if len(terms) > 1:          # auxiliary heads: each term logged
                for k, v in terms.items():
                    logs[k] = logs.get(k, 0.0) + float(v.detach())
            lv = float(loss.detach())
            total += lv
            if not _finite_everywhere(lv, dev):
                # every rank skips together: a rank that went on to backward() would wait forever
                # in DDP's gradient all-reduce for the rank that stopped
                return (lv if not math.isfinite(lv) else float("nan")), logs
            scaler.scale(loss / accum).backward()
    logs["loss"] = total
    return total, logs


def _takes_loss_fn(net: nn.Module) -> bool:
    """Whether the (unwrapped) model's forward accepts ``loss_fn`` (our recognizers do)."""
    import inspect

    from omnisource.models.checkpoint import unwrap_model

    m = unwrap_model(net)
    cached = getattr(m, "_omnisource_takes_loss_fn", None)
    if cached is None:
        try:
            cached = "loss_fn" in inspect.signature(m.forward).parameters
        except (TypeError, ValueError):
            cached = False
        try:
            object.__setattr__(m, "_omnisource_takes_loss_fn", cached)
        except AttributeError:
            pass
    return cached


def _finite_everywhere(value: float, dev: torch.device) -> bool:
    """Whether ``value`` is finite on every rank (one tiny all-reduce under DDP)."""
    import torch.distributed as dist

    ok = math.isfinite(value)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([0.0 if ok else 1.0], device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        ok = float(t) == 0.0
    return ok


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _optimizer_step(model: nn.Module, optimizer, scaler, grad_clip: float | None) -> float | None:
    norm = None
    if grad_clip:
        scaler.unscale_(optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        if not math.isfinite(norm) and not scaler.is_enabled():
            optimizer.zero_grad(set_to_none=True)
            return norm
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm


def _skip(loader: Iterable, n: int) -> Iterable:
    """Mid-epoch resume for loaders without ``set_start``: draw and discard ``n`` batches."""
    it = iter(loader)
    for _ in range(n):
        next(it, None)
    return it


def _memory(dev: torch.device) -> dict[str, float]:
    if dev.type == "cuda":
        return {"memory_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)}
    return {}


def _resolve_resume(resume: str | None, work_dir: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        p = work_dir / "latest.pth"
        if p.is_file():
            return p
        log.info("--resume auto: no %s yet, starting from scratch", p)
        return None
    return Path(resume)


def _prune(work_dir: Path, keep: int, is_main: bool) -> None:
    if not is_main or keep <= 0:
        return
    ckpts = sorted(work_dir.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    for p in ckpts[:-keep]:
        p.unlink(missing_ok=True)
