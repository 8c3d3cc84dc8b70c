"""Joint multi-source training data: one batch per source per iteration (paper Eq. 1).

Semantics (paper section 3.6, DESIGN.md):

* the **target** source defines the epoch: an epoch is one pass over its (resampled) sampler;
* every other (auxiliary) source cycles forever with its own sampler and reshuffles on every
  pass -- a small web source is repeated, a large one is streamed through over several epochs;
* ``step_mode='joint'`` (default) yields one multi-source batch per iteration
  ``{'sources': {name: {'inputs', 'label', 'weight', 'index'}}}``: the trainer takes one optimizer
  step on the weighted sum of the per-source losses;
* ``step_mode='alternate'`` reproduces mmaction2 0.x's ``OmniSourceRunner``: one step on the
  target batch; every ``train_ratio[0]``-th target iteration also one step on each of
  ``train_ratio[k]`` batches of auxiliary source ``k``. It yields the same batch shape with a
  single source inside, so the trainer's rule "one step per yielded batch" covers both modes;
* class resampling per source (Table 10): ``none``; ``clip: N_c`` (every class above ``N_c``
  samples contributes a fresh random ``N_c`` of them each pass); ``power: p`` (a class with ``N``
  samples is drawn with probability proportional to ``N**p``, then a sample uniformly inside the
  class; with replacement, pass length = source length unless ``num_samples`` is given).
  The sequence of a pass is a pure function of ``(seed, source, pass)``; under DDP each rank
  takes a disjoint stride of it, so resampling works in single-process and distributed runs
  alike (mmaction2's distributed-only sampler silently did nothing in single-process runs).

All sources share one ``torch.utils.data.DataLoader``: a batch sampler in the main process lays
out each step as ``(source, key)`` pairs (the schedule), and every worker decodes and collates a
whole step. A joint run therefore uses the same processes, prefetch queue and transfers as a
single-source run of the same total batch (``benchmarks/joint_training.py`` compares them).
Auxiliary streams are positioned from the epoch number (``set_epoch``), so a run resumed at an
epoch boundary sees exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import logging
import math
import weakref
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from omnisource.data.parallelism import fetch_many
from omnisource.data.workers import worker_init_fn
from omnisource.errors import ConfigError

log = logging.getLogger("omnisource.data.multisource")

__all__ = [
    "Resample",
    "parse_resample",
    "class_probabilities",
    "pass_indices",
    "EpochSampler",
    "StreamSampler",
    "Source",
    "MultiSourceLoader",
    "labels_of",
    "SoftLabelDataset",
]


# ----------------------------------------------------------------------------- resampling

@dataclass(frozen=True)
class Resample:
    """Class resampling policy of one source (see module docstring)."""

    mode: str = "none"              # 'none' | 'clip' | 'power'
    clip: int | None = None         # N_c for mode 'clip'
    power: float = 0.2              # p for mode 'power' (paper's recommended default)
    num_samples: int | None = None  # pass length for 'power' (default: the source's length)

    def describe(self) -> str:
        if self.mode == "clip":
            return f"clip({self.clip})"
        if self.mode == "power":
            return f"power({self.power})"
        return "none"


def parse_resample(spec: Any, where: str = "resample") -> Resample:
    """``None | 'none' | 'power' | {'clip': N} | {'power': p, 'num_samples': n}`` -> Resample."""
    if spec is None or spec is False or spec == "none":
        return Resample()
    if spec == "power":
        return Resample("power")
    if spec == "clip":
        raise ConfigError(f"{where}: 'clip' needs a threshold, e.g. {{clip: 5000}}")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected none, power, {{clip: N}} or {{power: p}}, got {spec!r}")
    keys = set(spec)
    unknown = keys - {"clip", "power", "num_samples", "mode"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: clip, power, num_samples")
    if "clip" in spec and "power" in spec:
        raise ConfigError(f"{where}: give either clip or power, not both")
    num = spec.get("num_samples")
    if num is not None and (not isinstance(num, int) or num <= 0):
        raise ConfigError(f"{where}.num_samples must be a positive integer, got {num!r}")
    if "clip" in spec:
        n_c = spec["clip"]
        if not isinstance(n_c, int) or isinstance(n_c, bool) or n_c <= 0:
            raise ConfigError(f"{where}.clip must be a positive integer, got {n_c!r}")
        return Resample("clip", clip=n_c)
    if "power" in spec:
        p = spec["power"]
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"{where}.power must be a number in [0, 1], got {p!r}")
        return Resample("power", power=float(p), num_samples=num)
    mode = spec.get("mode", "none")
    if mode == "none":
        return Resample()
    raise ConfigError(f"{where}: unknown mode {mode!r}")


def _class_of(label: Any) -> int:
    """Class used for resampling: the id, the first positive of a multi-hot, argmax of soft."""
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, (list, tuple)):
        if label and all(isinstance(x, float) for x in label):
            return int(np.argmax(label))            # a soft label row (teacher probabilities)
        return int(label[0]) if label else -1
    t = torch.as_tensor(label)
    if t.dim() == 0:
        return int(t)
    return int(t.argmax())


def labels_of(dataset: Dataset) -> np.ndarray:
    """Per-index class ids of a dataset, read from its metadata (no decoding).

    Looks for ``dataset.labels`` then ``dataset.samples[i].label`` (omnisource datasets keep the
    annotation rows there). Unlabelled rows give ``-1`` (their own "class" for resampling).
    """
    labels = getattr(dataset, "labels", None)
    if labels is None:
        samples = getattr(dataset, "samples", None)
        if samples is None:
            raise ConfigError(f"cannot resample {type(dataset).__name__}: it exposes neither "
                              "`labels` nor `samples`")
        labels = [getattr(s, "label", None) if getattr(s, "label", None) is not None
                  else getattr(s, "soft_label", None) for s in samples]
    return np.array([-1 if lab is None else _class_of(lab) for lab in labels], dtype=np.int64)


def class_probabilities(labels: np.ndarray, power: float) -> dict[int, float]:
    """Power-law class distribution ``P(c) = N_c**p / sum_k N_k**p`` (paper section 3.6)."""
    classes, counts = np.unique(labels, return_counts=True)
    w = counts.astype(np.float64) ** power
    w /= w.sum()
    return {int(c): float(x) for c, x in zip(classes, w)}


def _seed_rng(seed: int, name: str, pass_idx: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF,
                                                         zlib.crc32(name.encode()),
                                                         pass_idx]))


def pass_indices(labels: np.ndarray, resample: Resample, seed: int, name: str, pass_idx: int,
                 shuffle: bool = True) -> np.ndarray:
    """The global (all ranks) index sequence of one pass over a source: deterministic."""
    n = len(labels)
    rng = _seed_rng(seed, name, pass_idx)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if resample.mode == "none":
        return rng.permutation(n) if shuffle else np.arange(n)
    if resample.mode == "clip":
        keep = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            if len(idx) > resample.clip:
                idx = rng.choice(idx, size=resample.clip, replace=False)
            keep.append(idx)
        out = np.concatenate(keep)
        return rng.permutation(out) if shuffle else np.sort(out)
    if resample.mode == "power":
        # per-sample probability: P(class) / N_class = N**p / Z / N
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        w = counts.astype(np.float64) ** (resample.power - 1.0)
        p = w[inverse]
        p /= p.sum()
        size = resample.num_samples or n
        return rng.choice(n, size=size, replace=True, p=p)
    raise ValueError(f"unknown resample mode {resample.mode!r}")


def _rank_slice(seq: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Pad to a multiple of ``world_size`` (wrapping, like DistributedSampler) and stride."""
    if world_size == 1 or len(seq) == 0:
        return seq
    total = math.ceil(len(seq) / world_size) * world_size
    if total > len(seq):
        seq = np.concatenate([seq, np.resize(seq, total - len(seq))])
    return seq[rank::world_size]


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """Finite sampler of one pass per epoch (the target source): ``set_epoch`` picks the pass.

    ``keyed=True`` yields ``(index, epoch)`` pairs for datasets that take them (omnisource's
    ClipDataset): with persistent workers the workers' dataset copies never see ``set_epoch``,
    so the epoch has to travel with the index for augmentation to change between epochs.
    """

    def __init__(self, labels: np.ndarray, resample: Resample = Resample(), seed: int = 0,
                 name: str = "target", shuffle: bool = True, rank: int | None = None,
                 world_size: int | None = None, keyed: bool = False):
        self.labels = np.asarray(labels)
        self.resample, self.seed, self.name, self.shuffle = resample, seed, name, shuffle
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self.epoch = 0
        self.keyed = keyed
        self.start = 0              # first position to yield (resume in the middle of an epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        seq = pass_indices(self.labels, self.resample, self.seed, self.name, self.epoch,
                           self.shuffle)
        return _rank_slice(seq, self.rank, self.world_size)

    def __iter__(self) -> Iterator[Any]:
        idx = self.indices()[self.start:].tolist()
        if self.keyed:
            return iter([(i, self.epoch) for i in idx])
        return iter(idx)

    def __len__(self) -> int:
        n = _pass_length(self.labels, self.resample)
        return math.ceil(n / self.world_size) if n else 0


def _pass_length(labels: np.ndarray, resample: Resample) -> int:
    """Length of one global pass; constant over passes (so stream positions can be computed)."""
    if resample.mode == "clip":
        _, counts = np.unique(labels, return_counts=True)
        return int(np.minimum(counts, resample.clip).sum())
    if resample.mode == "power":
        return int(resample.num_samples or len(labels))
    return len(labels)


class StreamSampler(Sampler[int]):
    """Endless sampler of an auxiliary source: pass after pass, each reshuffled/resampled.

    ``start`` is the position (in this rank's stream) to begin at; the multi-source loader sets
    it from the epoch so that resumed runs continue the stream where it was.
    """

    def __init__(self, labels: np.ndarray, resample: Resample = Resample(), seed: int = 0,
                 name: str = "aux", rank: int | None = None, world_size: int | None = None,
                 keyed: bool = False):
        self.keyed = keyed
        self.labels = np.asarray(labels)
        self.resample, self.seed, self.name = resample, seed, name
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        n = _pass_length(self.labels, resample)
        if n == 0:
            raise ConfigError(f"source {name!r} is empty: nothing to sample")
        self.per_rank = math.ceil(n / self.world_size)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        pass_idx, offset = divmod(self.start, self.per_rank)
        while True:
            seq = _rank_slice(pass_indices(self.labels, self.resample, self.seed, self.name,
                                           pass_idx), self.rank, self.world_size)
            if self.keyed:
                yield from ((i, pass_idx) for i in seq[offset:].tolist())
            else:
                yield from seq[offset:].tolist()
            offset = 0
            pass_idx += 1


# ----------------------------------------------------------------------------- sources

class SoftLabelDataset(Dataset):
    """Replace the labels of a dataset by given rows (teacher probabilities or hard ids).

    Pseudo-labelled web sources carry their labels outside the decoded sample; wrapping keeps
    the underlying dataset (decode, preset, inflate) untouched.
    """

    def __init__(self, dataset: Dataset, labels: torch.Tensor | Sequence[int]):
        self.dataset = dataset
        self.labels_tensor = torch.as_tensor(labels)
        if len(self.labels_tensor) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"{len(self.labels_tensor)} labels for {len(dataset)} samples")  # type: ignore[arg-type]
        self.labels = [_class_of(x) for x in self.labels_tensor]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> dict:
        i = int(key[0]) if isinstance(key, tuple) else int(key)
        item = dict(self.dataset[key])
        i = int(item.get("index", i))       # the sample actually returned (bad ones are replaced)
        item["label"] = self.labels_tensor[i].float() if self.labels_tensor.dim() == 2 else int(
            self.labels_tensor[i])
        return item

    def __getitems__(self, keys: list) -> list[dict]:
        """Defined so the wrapped dataset's own ``__getitems__`` is never used (it would keep
        the old labels); side by side when the wrapped items depend only on their keys."""
        if _keyed(self.dataset):
            return fetch_many(self.__getitem__, keys)
        return [self.__getitem__(k) for k in keys]


def _collate(items: list[dict]) -> dict:
    """Stack ``inputs`` and ``label`` (int ids or float rows); keep ``index``, ``skipped`` and ``path``.

    Inside a worker process, ``label`` and ``index`` stay numpy arrays: a torch tensor crossing the
    process boundary costs a shared-memory segment and a file-descriptor hand-off each, numpy is
    pickled in-band. With one loader per source that is 2 transfers saved per source and
    iteration; :meth:`MultiSourceLoader._wrap` turns them back into tensors without a copy.
    """
    in_worker = torch.utils.data.get_worker_info() is not None
    out: dict[str, Any] = {"inputs": torch.stack([torch.as_tensor(it["inputs"]) for it in items])}
    labels = [it["label"] for it in items]
    if isinstance(labels[0], torch.Tensor) and labels[0].dim() >= 1:
        out["label"] = torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in labels])
    else:
        out["label"] = np.asarray([int(x) for x in labels], dtype=np.int64)
    if "index" in items[0]:
        out["index"] = np.asarray([int(it["index"]) for it in items], dtype=np.int64)
    if "skipped" in items[0]:   # reads that failed before each item: the trainer counts them
        out["skipped"] = np.asarray([int(it["skipped"]) for it in items], dtype=np.int64)
    if "damaged" in items[0]:   # frames replaced by a decodable neighbour: counted too
        out["damaged"] = np.asarray([int(it.get("damaged", 0)) for it in items], dtype=np.int64)
    if "path" in items[0]:
        out["path"] = [it["path"] for it in items]
    if in_worker and isinstance(out["label"], torch.Tensor) and out["label"].numel() <= 4096:
        out["label"] = out["label"].numpy()
    if not in_worker:
        out = _as_tensors(out)
    return out


def _as_tensors(batch: dict) -> dict:
    """numpy arrays of a collated batch -> tensors (zero-copy)."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


@dataclass
class Source:
    """One data source of joint training.

    ``labels`` (class id per index) drives resampling; by default it is read from the dataset's
    metadata. ``num_workers`` is this source's share of the loader's worker pool (the loader's
    pool defaults to the sum of the shares; all workers serve all sources).
    """

    name: str
    dataset: Dataset
    batch_size: int
    weight: float = 1.0
    resample: Resample = field(default_factory=Resample)
    num_workers: int = 0
    labels: np.ndarray | None = None
    prefetch_factor: int = 2
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"source {self.name!r}: batch_size must be positive")
        if self.weight < 0:
            raise ConfigError(f"source {self.name!r}: weight must be >= 0")
        if self.labels is None:
            if self.resample.mode == "none":
                try:
                    self.labels = labels_of(self.dataset)
                except ConfigError:
                    self.labels = np.zeros(len(self.dataset), dtype=np.int64)  # type: ignore[arg-type]
            else:
                self.labels = labels_of(self.dataset)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.dataset):  # type: ignore[arg-type]
            raise ConfigError(f"source {self.name!r}: {len(self.labels)} labels for "
                              f"{len(self.dataset)} samples")  # type: ignore[arg-type]


def _keyed(dataset: Dataset) -> bool:
    """Whether items are addressed by ``(index, epoch)`` (omnisource ClipDataset protocol)."""
    inner = getattr(dataset, "dataset", dataset) if isinstance(dataset, SoftLabelDataset) else dataset
    return hasattr(inner, "set_epoch") and hasattr(inner, "rng_for")


class _JointDataset(Dataset):
    """All sources behind one dataset: key ``(source_id, key)`` -> ``(source_id, item)``.

    Why: one DataLoader (one worker pool) then serves every source, and each worker builds a whole
    joint batch. With a loader per source, a 4-source run kept 4+ pools busy side by side (more
    processes than cores, each with its own prefetch queue and per-batch transfers), and joint
    training cost 9-16% more CPU per iteration than one source at the same total batch.
    """

    def __init__(self, datasets: Sequence[Dataset]):
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, Any]) -> tuple[int, dict]:
        sid, inner = key
        return sid, self.datasets[sid][inner]

    def __getitems__(self, keys: list[tuple[int, Any]]) -> list[tuple[int, dict]]:
        """A joint batch, its items fetched side by side when cores are free."""
        if all(_keyed(self.datasets[sid]) for sid, _ in keys):
            return fetch_many(self.__getitem__, keys)
        return [self.__getitem__(k) for k in keys]  # a plain dataset may rely on global RNGs


def _joint_collate(items: list[tuple[int, dict]]) -> dict[int, dict]:
    """Group a schedule batch by source (first-seen order) and collate each group."""
    groups: dict[int, list[dict]] = {}
    for sid, item in items:
        groups.setdefault(sid, []).append(item)
    return {sid: _collate(group) for sid, group in groups.items()}


class _ScheduleSampler(Sampler[list]):
    """The batch sampler of the joint DataLoader: one list of ``(source_id, key)`` per step.

    It reads the owning loader's epoch / start position when iteration begins (in the main
    process, also with persistent workers), so the schedule is a pure function of
    ``(seed, epoch, start)``. The owner is held weakly: a cycle owner -> DataLoader -> sampler
    -> owner would leave a dropped loader's worker pool to the garbage collector, which may
    then run inside a later loader's forked worker (and fail there to stop the pool).
    """

    def __init__(self, owner: "MultiSourceLoader"):
        self._owner = weakref.ref(owner)

    @property
    def owner(self) -> "MultiSourceLoader":
        owner = self._owner()
        if owner is None:
            raise RuntimeError("the MultiSourceLoader of this DataLoader no longer exists")
        return owner

    def __iter__(self) -> Iterator[list]:
        return self.owner._schedule()

    def __len__(self) -> int:
        """Steps left in this epoch (all of them unless resumed in the middle)."""
        owner = self.owner
        return len(owner) - owner._resumed_steps


def _steps(tkeys: list, tbs: int, aux: list[tuple[int, Iterator, int, int]], first: int, skip: int,
           every: int | None) -> Iterator[list]:
    """The schedule of one epoch (see :meth:`MultiSourceLoader._schedule`).

    ``aux``: ``(source_id, key stream, batch size, train_ratio)`` per auxiliary source;
    ``every=None``: joint mode (one step holds a batch of every source); else alternate mode
    (mmaction2 0.x OmniSourceRunner): a target step, and every ``every``-th target iteration
    ``train_ratio`` steps of each auxiliary source. ``first`` is the first target iteration,
    ``skip`` the steps of it already trained on (resume).
    """
    def aux_batch(sid: int, stream: Iterator, bs: int) -> list:
        return [(sid, next(stream)) for _ in range(bs)]

    for i, at in enumerate(range(0, len(tkeys), tbs), start=first):
        tbatch = [(0, k) for k in tkeys[at:at + tbs]]
        if every is None:
            yield tbatch + [x for sid, st, bs, _ in aux for x in aux_batch(sid, st, bs)]
            continue
        steps = [tbatch]
        if i % every == 0:
            steps += [aux_batch(sid, st, bs) for sid, st, bs, ratio in aux for _ in range(ratio)]
        for j, step in enumerate(steps):
            if i == first and j < skip:
                continue            # resumed inside this iteration: already trained on
            yield step


class MultiSourceLoader:
    """Iterable of training batches over several sources; see the module docstring.

    ``sources[0]`` -- or the source named ``target`` -- is the target set. ``__len__`` is the
    number of batches (= optimizer steps) yielded per epoch. ``num_workers`` worker processes
    (default: the sum of the sources' ``num_workers``) serve all sources together, each worker
    building whole steps.
    """

    def __init__(self, sources: Sequence[Source], target: str | None = None,
                 step_mode: str = "joint", train_ratio: Sequence[int] | None = None,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False, shuffle: bool = True, num_workers: int | None = None):
        if not sources:
            raise ConfigError("joint training needs at least one source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"source names must be unique, got {names}")
        if step_mode not in ("joint", "alternate"):
            raise ConfigError(f"step_mode must be 'joint' or 'alternate', got {step_mode!r}")
        target = target or ("target" if "target" in names else names[0])
        if target not in names:
            raise ConfigError(f"target source {target!r} not among sources {names}")
        self.sources = {s.name: s for s in sources}
        self.target = target
        self.aux = [n for n in names if n != target]
        self.step_mode = step_mode
        if train_ratio is None:
            train_ratio = [1] * len(names)
        train_ratio = [int(r) for r in train_ratio]
        if len(train_ratio) != len(names) or any(r < 0 for r in train_ratio) or train_ratio[0] < 1:
            raise ConfigError(f"train_ratio must list {len(names)} non-negative integers "
                              f"(target first, >= 1), got {train_ratio}")
        self.train_ratio = dict(zip([target] + self.aux, train_ratio))
        self.seed = seed
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self.drop_last = drop_last
        self.epoch = 0
        self._start_batch = 0
        self._skip_inner = 0
        self._resumed_steps = 0     # steps of this epoch done before a mid-epoch resume
        self.num_workers = (sum(s.num_workers for s in sources) if num_workers is None
                            else int(num_workers))

        tsrc = self.sources[target]
        self.target_sampler = EpochSampler(tsrc.labels, tsrc.resample, seed, target, shuffle,
                                           self.rank, self.world_size, keyed=_keyed(tsrc.dataset))
        self.streams = {n: StreamSampler(self.sources[n].labels, self.sources[n].resample, seed, n,
                                         self.rank, self.world_size,
                                         keyed=_keyed(self.sources[n].dataset))
                        for n in self.aux}
        self._order = [target] + self.aux          # source id = position in this list
        self.loader = self._make_loader()

    def _make_loader(self) -> DataLoader:
        gen = torch.Generator()
        gen.manual_seed((self.seed * 1000003 + self.rank) % 2**63)
        extra: dict[str, Any] = {}
        if self.num_workers > 0:
            extra = dict(persistent_workers=True,
                         prefetch_factor=max(s.prefetch_factor for s in self.sources.values()),
                         worker_init_fn=worker_init_fn)
        dataset = _JointDataset([self.sources[n].dataset for n in self._order])
        return DataLoader(dataset, batch_sampler=_ScheduleSampler(self),
                          num_workers=self.num_workers, collate_fn=_joint_collate, generator=gen,
                          pin_memory=any(s.pin_memory for s in self.sources.values()), **extra)

    # -- epoch bookkeeping -------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the target pass and the auxiliary stream positions for ``epoch``."""
        self.epoch = int(epoch)
        self.target_sampler.set_epoch(epoch)
        self.target_sampler.start = 0
        self._start_batch = 0
        self._skip_inner = 0
        self._resumed_steps = 0

    def set_start(self, batch_index: int) -> None:
        """Resume in the middle of an epoch at target batch ``batch_index`` (trainer protocol).

        ``batch_index`` counts yielded batches (= optimizer steps), as the trainer does; in
        ``alternate`` mode it is mapped back to the target iteration and the steps already
        done inside it. The target sampler and every auxiliary stream are positioned directly,
        so nothing skipped is decoded.
        """
        k = int(batch_index)
        self._resumed_steps = k
        t, inner = k, 0
        if self.step_mode == "alternate":
            t = 0
            while True:
                steps = self._steps_of(t)
                if k < steps:
                    inner = k
                    break
                k -= steps
                t += 1
        self._start_batch = t
        self._skip_inner = inner
        self.target_sampler.start = t * self.sources[self.target].batch_size

    def _steps_of(self, target_iter: int) -> int:
        """Batches yielded for one target iteration (alternate mode)."""
        if not self._aux_steps(target_iter):
            return 1
        return 1 + sum(self.train_ratio[n] for n in self.aux)

    def target_batches(self) -> int:
        n = len(self.target_sampler)
        bs = self.sources[self.target].batch_size
        return n // bs if self.drop_last else math.ceil(n / bs)

    def _aux_steps(self, target_iter: int) -> bool:
        """Alternate mode: whether target iteration ``target_iter`` is followed by aux steps."""
        return target_iter % self.train_ratio[self.target] == 0

    def aux_batches_per_epoch(self, name: str) -> int:
        t = self.target_batches()
        if self.step_mode == "joint":
            return t
        with_aux = math.ceil(t / self.train_ratio[self.target])
        return with_aux * self.train_ratio[name]

    def __len__(self) -> int:
        t = self.target_batches()
        if self.step_mode == "joint":
            return t
        return t + sum(self.aux_batches_per_epoch(n) for n in self.aux)

    def _aux_batches_before(self, name: str, target_iter: int) -> int:
        """Auxiliary batches consumed before target iteration ``target_iter`` of this epoch."""
        if self.step_mode == "joint":
            return target_iter
        return math.ceil(target_iter / self.train_ratio[self.target]) * self.train_ratio[name]

    # -- the schedule ------------------------------------------------------------------------
    def _schedule(self) -> Iterator[list]:
        """This epoch's steps as lists of ``(source_id, key)``; state is read now, not lazily.

        The returned generator holds plain values only, never this loader: the DataLoader keeps
        it, and a reference back to the owner would make a cycle (see :class:`_ScheduleSampler`).
        """
        first = self._start_batch
        tbs = self.sources[self.target].batch_size
        tkeys = list(self.target_sampler)
        if self.drop_last:
            tkeys = tkeys[:len(tkeys) // tbs * tbs]
        aux = []
        for sid, n in enumerate(self._order[1:], start=1):
            want = self.epoch * self.aux_batches_per_epoch(n) + self._aux_batches_before(n, first)
            self.streams[n].start = want * self.sources[n].batch_size
            aux.append((sid, iter(self.streams[n]), self.sources[n].batch_size, self.train_ratio[n]))
        every = self.train_ratio[self.target] if self.step_mode == "alternate" else None
        return _steps(tkeys, tbs, aux, first, self._skip_inner, every)

    def _wrap(self, groups: dict[int, dict]) -> dict:
        sources = {}
        for sid, batch in groups.items():
            name = self._order[sid]
            entry = _as_tensors(batch)
            entry["weight"] = float(self.sources[name].weight)
            sources[name] = entry
        return {"sources": sources}

    def __iter__(self) -> Iterator[dict]:
        for groups in self.loader:
            yield self._wrap(groups)
        self.set_epoch(self.epoch + 1)

    def describe(self) -> list[dict]:
        """One row per source (for logs and results.json)."""
        rows = []
        for n, s in self.sources.items():
            rows.append({"name": n, "role": "target" if n == self.target else "auxiliary",
                         "samples": len(s.dataset), "batch_size": s.batch_size,  # type: ignore[arg-type]
                         "weight": s.weight, "resample": s.resample.describe()})
        return rows


# ----------------------------------------------------------------------------- from config

# Keys of a `sources:` item owned by this module, on top of omnisource.config.SOURCE_DEFAULTS
# (name, ann_file, data_root, preset, format, batch_size, loss_weight, resample, inflate,
# overrides).
SOURCE_EXTRA_KEYS: dict[str, str] = {
    "train_ratio": "alternate mode: batches of this source per aux round (target: rounds every N iters)",
    "step_mode": "joint | alternate (only on the first/target source; applies to the whole run)",
    "role": "'target' marks the target source (default: the first source)",
    "pseudo_label": "soft | hard: train on teacher probabilities (dense labels, or the sparse top-k "
                    "meta.soft_label of a filtered manifest) or on their argmax (default: as in the file)",
    "seed": "dataset seed (default: train.seed)",
}
_BASE_KEYS = {"name", "ann_file", "data_root", "preset", "format", "batch_size", "loss_weight",
              "resample", "inflate", "overrides"}


def validate_sources(sources: Sequence[Mapping[str, Any]], file: str | None = None) -> None:
    """Check the multi-source keys of ``sources:`` (hook called by omnisource.config.validate)."""
    import difflib

    targets = []
    modes = set()
    for i, item in enumerate(sources):
        where = f"sources.{i} ({item.get('name')})"
        for key in item:
            if key == "num_workers":
                raise ConfigError(f"{where}.num_workers: sources no longer have their own workers; "
                                  f"all sources share one pool of data.num_workers processes, "
                                  f"each building whole joint batches -- set data.num_workers",
                                  file=file)
            if key not in _BASE_KEYS and key not in SOURCE_EXTRA_KEYS:
                close = difflib.get_close_matches(key, sorted(_BASE_KEYS | set(SOURCE_EXTRA_KEYS)), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: unknown key {key!r}{hint}", file=file)
        parse_resample(item.get("resample"), where=f"{where}.resample")
        if item.get("role") not in (None, "target", "auxiliary"):
            raise ConfigError(f"{where}.role must be 'target' or 'auxiliary'", file=file)
        if item.get("role") == "target":
            targets.append(i)
        ratio = item.get("train_ratio")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 0):
            raise ConfigError(f"{where}.train_ratio must be a non-negative integer", file=file)
        if item.get("pseudo_label") not in (None, "soft", "hard"):
            raise ConfigError(f"{where}.pseudo_label must be 'soft' or 'hard'", file=file)
        if item.get("step_mode") is not None:
            if item["step_mode"] not in ("joint", "alternate"):
                raise ConfigError(f"{where}.step_mode must be 'joint' or 'alternate'", file=file)
            modes.add(item["step_mode"])
        if not item.get("ann_file"):
            raise ConfigError(f"{where}.ann_file is required", file=file)
    if len(targets) > 1:
        raise ConfigError(f"only one source may have role: target (sources {targets})", file=file)
    if len(modes) > 1:
        raise ConfigError(f"conflicting step_mode values {sorted(modes)}", file=file)


def _target_index(items: Sequence[Mapping[str, Any]]) -> int:
    for i, item in enumerate(items):
        if item.get("role") == "target":
            return i
    return 0


def build_source(item: Mapping[str, Any], cfg: Any, *, seed: int, batch_size: int) -> Source:
    """One :class:`Source` from a ``sources:`` item, datasets built by omnisource.data.datasets."""
    from omnisource.data.datasets import build_dataset

    overrides = dict(item.get("overrides") or {})
    if item.get("format"):
        overrides.setdefault("format", item["format"])
    label_map = getattr(cfg.data, "label_map", None) if hasattr(cfg, "data") else None
    num_classes = getattr(cfg.model, "num_classes", None) if hasattr(cfg, "model") else None
    if label_map:
        overrides.setdefault("label_map", label_map)
    elif num_classes:
        overrides.setdefault("num_classes", num_classes)
    if item.get("inflate") is not None:
        from omnisource.data.inflate import build_inflater

        overrides["inflate"] = build_inflater(item["inflate"])
    overrides.setdefault("seed", int(item.get("seed", seed)))
    store = getattr(cfg.data, "index_store", None) if hasattr(cfg, "data") else None
    if store:
        overrides.setdefault("index_store", store)
    if item.get("pseudo_label") == "soft":
        overrides.setdefault("soft_labels", True)      # read meta.soft_label (omnisource.data.soft_labels)
    preset = item.get("preset") or cfg.data.train.preset
    if not preset:
        raise ConfigError(f"source {item['name']!r}: no preset (set sources[].preset or data.train.preset)")
    dataset = build_dataset(item["ann_file"], item.get("data_root") or "", preset, test_mode=False,
                            backend=cfg.data.backend, strict=cfg.data.strict, **overrides)
    if item.get("pseudo_label") == "hard" and getattr(dataset, "soft_label", False):
        hard = [(-1 if s.soft_label is None and s.label is None else
                 int(np.argmax(s.soft_label)) if s.soft_label is not None else int(s.label))
                for s in dataset.samples]
        dataset = SoftLabelDataset(dataset, hard)
    return Source(name=item["name"], dataset=dataset,
                  batch_size=int(item.get("batch_size") or batch_size),
                  weight=float(item.get("loss_weight", 1.0)),
                  resample=parse_resample(item.get("resample"), where=f"sources.{item['name']}.resample"))


def build_from_config(cfg: Any, rank: int | None = None, world_size: int | None = None,
                      seed: int = 0) -> MultiSourceLoader:
    """The trainer's entry point for ``sources:`` (see omnisource.engine.train.build_multisource).

    ``data.num_workers`` worker processes serve all sources together.
    """
    items = [dict(x) for x in cfg.sources]
    validate_sources(items, file=cfg.get("_source") if hasattr(cfg, "get") else None)
    t = _target_index(items)
    items = [items[t]] + items[:t] + items[t + 1:]
    sources = [build_source(it, cfg, seed=seed, batch_size=int(cfg.data.batch_size))
               for it in items]
    mode = next((it["step_mode"] for it in items if it.get("step_mode")), "joint")
    ratio = None
    if mode == "alternate":
        ratio = [int(it.get("train_ratio", 1)) for it in items]
    loader = MultiSourceLoader(sources, target=items[0]["name"], step_mode=mode, train_ratio=ratio,
                               seed=seed, rank=rank, world_size=world_size,
                               num_workers=int(getattr(cfg.data, "num_workers", 0) or 0))
    for row in loader.describe():
        log.info("source %(name)s (%(role)s): %(samples)d samples, batch %(batch_size)d, "
                 "weight %(weight)s, resample %(resample)s", row)
    log.info("%d DataLoader workers serve all %d sources", loader.num_workers, len(sources))
    return loader
