"""Datasets: annotation rows -> decoded, sampled, augmented clips.

Every dataset here maps ``index -> {'inputs', 'label', 'index', 'path', 'skipped'}`` where
``inputs`` is the preset's model input (``[S, 3, H, W]`` for 2D presets, ``[V, 3, T, H, W]``
for 3D) and ``label`` an ``int`` (``-1`` when unlabelled), a multi-hot ``float32`` tensor for
multi-label lists, or a ``float32`` distribution for soft-labelled manifests.

Robustness (a long run must not die on one bad file):

* A sample that cannot be read (missing, empty, corrupt, too few frames...) is *skipped*: the
  item of the next index in a seeded permutation is returned instead (``index`` and ``path``
  then name the sample actually returned; ``skipped`` says how many were passed over). Each
  bad file is logged once per run with its reason (DataLoader workers agree through marker
  files, :meth:`ClipDataset._first_to_log`), remembered so it is not decoded again,
  and counted in :attr:`ClipDataset.skipped` (reason -> count; per process, so with
  DataLoader workers aggregate the items' ``skipped`` field instead). ``strict=True`` raises
  :class:`~omnisource.errors.DataError` naming the file and reason.
* Containers that over-declare their frame count (HMDB51 AVIs declare one frame more than they
  hold) make the reader raise :class:`~omnisource.data.decode.FrameCountError` with the real
  count: the clip is re-sampled with that count, which is remembered. A short clip is never
  returned.

Determinism: randomness (frame offsets, crops, flips, replacements) comes from a generator
seeded with ``(seed, epoch, index)``, never from global state, so an item does not depend on
the number of DataLoader workers or the order items are drawn in. Call :meth:`set_epoch` each
epoch (with ``persistent_workers`` the workers keep their own copy of the dataset: index the
dataset with ``(index, epoch)`` pairs instead, e.g. from :class:`EpochIndexSampler`).

Batches: torch's DataLoader hands a whole batch of keys to :meth:`ClipDataset.__getitems__`,
which fetches the items side by side on threads when the process has cores to spare (0 workers,
or fewer workers than cores; :mod:`omnisource.data.parallelism`). The items are the same as
one by one, since each depends only on its key.

Readers are opened per item and closed before returning, so no decoder state is ever shared
between a parent process and forked DataLoader workers (PyAV objects inherited through fork
can crash workers); :func:`build_dataloader` also runs ``gc.collect()`` before the workers
start and accepts a ``multiprocessing_context`` (``'forkserver'``/``'spawn'``) for full safety.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from omnisource.data.annotations import (Sample, detect_format, load_annotations, read_label_map,
                                         resolve_path)
from omnisource.data.parallelism import fetch_many
from omnisource.data.workers import worker_init_fn
from omnisource.errors import ConfigError, DataError, InputError

logger = logging.getLogger("omnisource.data.datasets")


def _log_marks_dir(token: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"omnisource-logged-{token}")


def _remove_log_marks(folder: str, owner_pid: int) -> None:
    """Finaliser of a dataset: its workers' markers go with it (only in the process that made
    the dataset; a forked worker's copy must not delete the folder under its siblings)."""
    if os.getpid() == owner_pid:
        shutil.rmtree(folder, ignore_errors=True)


_failures_lock = threading.Lock()  # module-level: a dataset must stay picklable for spawned workers
# damaged frames the last read on this thread replaced by a neighbour (read_video -> get_item,
# which run on one thread; module-level for the same picklability reason)
_READ_STATE = threading.local()

__all__ = [
    "ClipDataset", "VideoDataset", "RawframeDataset", "ImageDataset", "UntrimmedClipDataset",
    "ManifestDataset", "build_dataset", "still_clip", "worker_init_fn", "build_dataloader",
    "EpochIndexSampler", "load_probe_cache", "classify_failure",
]

# errors that mean "this sample's data is bad", as opposed to bugs, which must propagate
_DATA_ERRORS: tuple[type[BaseException], ...] = (DataError, OSError, EOFError)
try:  # readers should wrap decoder errors in DataError; a raw PyAV error still means bad data
    import av.error as _averr  # noqa: E402

    _DATA_ERRORS = _DATA_ERRORS + (_averr.FFmpegError,)
except Exception:  # pragma: no cover - PyAV is a core dependency
    pass


def _frame_count_error() -> type[BaseException] | None:
    try:
        from omnisource.data.decode import FrameCountError
    except ImportError:  # pragma: no cover
        return None
    return FrameCountError


def failure_reason(path: Path, err: BaseException) -> str:
    """The words a report gives for ``err`` on ``path``: a DataError's reason (Pillow's, for a GIF
    FFmpeg cannot decode: see :func:`~omnisource.data.decode.images.gif_reason`), else the
    exception itself."""
    if isinstance(err, DataError):
        from omnisource.data.decode.images import gif_reason

        return gif_reason(path) or err.reason
    return getattr(err, "reason", None) or f"{type(err).__name__}: {err}"


def classify_failure(path: Path, err: BaseException) -> str:
    """Short reason key for counting (``missing``, ``empty file``, ``frame count``, ``unreadable``...)."""
    from omnisource.data.decode.base import file_problem

    bad = file_problem(path)
    if bad is not None and bad[0] != "folder":
        return bad[0]
    try:
        if path.is_dir() and not any(os.scandir(path)):
            return "empty folder"
    except OSError:
        return "inaccessible"
    fce = _frame_count_error()
    if fce is not None and isinstance(err, fce):
        return "frame count"
    name = type(err).__name__
    if name == "EmptyVideoError":
        return "no frames"
    if isinstance(err, PermissionError):
        return "permission denied"
    return "unreadable"


def still_clip(image: np.ndarray, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Image -> clip: ``num_frames`` copies of the image (the default image inflation).

    A separate function so that smarter inflation (translation, perspective warps; see
    ``omnisource.data.inflate``) can replace it: pass ``inflate=`` to :class:`ImageDataset`.
    """
    return np.repeat(image[None], num_frames, axis=0)


def load_probe_cache(path: str | Path, data_root: str | Path | None = None) -> dict[str, dict]:
    """Read a probe manifest (``omnisource probe --out``) into ``{absolute path: record}``.

    Why: counting frames exactly costs a pass over each file; a dataset must not probe 300k
    clips at every start. Records of files changed since probing (size / mtime) are dropped.
    Relative paths are taken relative to ``data_root``.
    """
    from omnisource.data.decode import load_probe_cache as _load

    root = Path(data_root) if data_root is not None else Path(".")
    out: dict[str, dict] = {}
    for key, rec in _load(path, check_stale=True).items():
        p = Path(rec.get("abspath") or key)
        out[os.path.abspath(p if p.is_absolute() else root / p)] = rec
    return out


def _probe_frames(entry: dict) -> int | None:
    """The cached frame count, only when the probe established it exactly."""
    v = entry.get("frames")
    if entry.get("frames_exact") and isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    return None


class EpochIndexSampler(Sampler):
    """Yields ``(index, epoch)`` pairs (shuffled per epoch with ``seed``) for persistent workers."""

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        return iter([(int(i), self.epoch) for i in order])


class ClipDataset(Dataset):
    """Base class: replacement of bad samples, deterministic rngs, label packing.

    Subclasses implement :meth:`load_frames` (``Sample`` -> uint8 ``[T, H, W, 3]`` in the order
    the preset's sampler asked for).
    """

    kind = "video"

    def __init__(self, samples: Sequence[Sample], data_root: str | Path, preset: Any, *,
                 test_mode: bool = False, backend: str = "pyav", strict: bool = False, seed: int = 0,
                 num_classes: int | None = None, probe_cache: str | Path | dict | None = None,
                 max_tries: int = 32, decode_kwargs: dict | None = None):
        self.samples = list(samples)
        self.data_root = Path(data_root)
        self.preset = preset
        self.test_mode = bool(test_mode)
        self.backend = backend
        self.strict = bool(strict)
        self.seed = int(seed)
        self.max_tries = int(max_tries)
        self.decode_kwargs = dict(decode_kwargs or {})
        self.epoch = 0
        if isinstance(probe_cache, (str, Path)):
            probe_cache = load_probe_cache(probe_cache, self.data_root)
        self.probe_cache: dict[str, dict] = probe_cache or {}
        self.skipped: Counter[str] = Counter()
        self.skipped_files: dict[str, str] = {}
        self._bad: dict[int, str] = {}
        # names this dataset's folder of "already logged" markers, shared by its DataLoader
        # workers (a random name, nothing on disk until a worker logs a bad file)
        self._log_token = uuid.uuid4().hex
        weakref.finalize(self, _remove_log_marks, _log_marks_dir(self._log_token), os.getpid())
        self._frame_counts: dict[str, int] = {}
        self.frame_count_fixes: dict[str, tuple[int, int]] = {}  # path -> (count used first, real count)
        self._perm: np.ndarray | None = None
        self._pos: np.ndarray | None = None
        self.multi_label = any(isinstance(s.label, list) for s in self.samples)
        self.soft_label = any(s.soft_label is not None for s in self.samples)
        if num_classes is None and self.soft_label:
            num_classes = len(next(s.soft_label for s in self.samples if s.soft_label is not None))  # type: ignore[arg-type]
        if (self.multi_label or self.soft_label) and num_classes is None:
            raise InputError("a multi-label list needs num_classes= (or label_map=) to build multi-hot labels",
                             self.samples[0].file if self.samples else None)
        self.num_classes = num_classes
        for s in self.samples:
            if s.soft_label is not None and len(s.soft_label) != num_classes:
                raise InputError(f"soft label has {len(s.soft_label)} values, expected {num_classes}", s.file, s.line)
        preset_test = getattr(preset, "test_mode", None)
        if preset_test and not self.test_mode:
            self.test_mode = True  # a val/test preset means evaluation: no epoch-dependent draws
        elif preset_test is False and self.test_mode:
            logger.warning("test_mode=True with the train preset %s: evaluation inputs will be randomly "
                           "augmented", getattr(preset, "name", preset))

    # ---------------------------------------------------------------- sizing / epochs / rng
    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds train-mode randomness (items differ between epochs)."""
        self.epoch = int(epoch)

    def rng_for(self, index: int, epoch: int | None = None, attempt: int = 0) -> np.random.Generator:
        """The generator for one item: a function of ``(seed, epoch, index)`` only.

        Test mode ignores the epoch (evaluation must not change between epochs).
        """
        ep = 0 if self.test_mode else (self.epoch if epoch is None else epoch)
        return np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, ep, int(index), attempt])

    def _replacement(self, index: int, k: int) -> int:
        if self._perm is None:
            self._perm = np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, 0x5EED]).permutation(len(self.samples))
            self._pos = np.empty_like(self._perm)
            self._pos[self._perm] = np.arange(len(self._perm))
        return int(self._perm[(self._pos[index] + k) % len(self._perm)])  # type: ignore[index]

    # ---------------------------------------------------------------- items
    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[dict[str, Any]]:
        """The items of a batch (what torch's DataLoader asks for when it batches), fetched
        side by side when cores are free (:func:`~omnisource.data.parallelism.fetch_many`)."""
        return fetch_many(self.__getitem__, keys)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, epoch = int(key[0]), int(key[1])
        else:
            index, epoch = int(key), None
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n}")
        index %= n
        skipped = 0
        last_reason = ""
        for k in range(min(self.max_tries, n)):
            cand = index if k == 0 else self._replacement(index, k)
            if cand in self._bad:
                skipped += 1
                last_reason = self._bad[cand]
                continue
            rng = self.rng_for(cand, epoch, attempt=k)
            try:
                item = self.get_item(cand, rng)
            except _DATA_ERRORS as err:
                last_reason = self._record_failure(cand, err)
                skipped += 1
                continue
            item["skipped"] = skipped
            if self.multi_label:       # the trainer scores multi-hot targets with BCE, not softmax CE
                item["multi_label"] = True
            return item
        raise DataError(self.samples[index].path,
                        f"no readable sample found after {skipped} attempt(s); last failure: {last_reason}")

    def _record_failure(self, i: int, err: BaseException) -> str:
        s = self.samples[i]
        try:
            path = resolve_path(self.data_root, s.path)
        except InputError:
            path = self.data_root / s.path
        reason_text = failure_reason(path, err)
        if self.strict:   # one line naming the file, why, and the list line that named it
            raise DataError(path, f"{reason_text} (listed at {s.where})") from None
        key = classify_failure(path, err)
        with _failures_lock:  # the items of a batch may fail on several threads at once
            first = i not in self._bad
            self._bad[i] = f"{key}: {reason_text}"
            if first:  # two threads given the same bad sample count it once
                self.skipped[key] += 1
            log_it = str(path) not in self.skipped_files
            if log_it:
                self.skipped_files[str(path)] = reason_text
        if log_it and self._first_to_log(str(path)):
            logger.warning("skipping %s (%s; listed at %s): %s", path, key, s.where, reason_text)
        return self._bad[i]

    def _first_to_log(self, path: str) -> bool:
        """Whether this process is the first of the run to report ``path``.

        Why: each DataLoader worker has its own copy of the dataset (and non-persistent workers
        get a fresh one every epoch), so "once per process" meant one identical warning per
        worker and epoch for the same file. Workers agree through an exclusively created marker
        file per path in a folder named by the dataset's token; the main process (no workers)
        needs none. Any filesystem trouble errs on the side of logging."""
        if get_worker_info() is None:
            return True
        folder = _log_marks_dir(self._log_token)
        try:
            os.makedirs(folder, exist_ok=True)
            os.close(os.open(os.path.join(folder, hashlib.sha1(path.encode()).hexdigest()),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError:
            return True
        return True

    def get_item(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        """The item of sample ``i`` (no replacement); raises on unreadable data."""
        s = self.samples[i]
        _READ_STATE.damaged = 0
        frames = self.load_frames(s, rng)
        damaged = int(getattr(_READ_STATE, "damaged", 0))
        swap = getattr(self.preset, "flip_label_map", None)
        info: dict[str, Any] = {}
        inputs = self.preset(frames, rng, info=info) if swap else self.preset(frames, rng)
        label = self.pack_label(s)
        if swap and info.get("flipped") and isinstance(label, int):
            label = swap.get(label, label)   # a mirrored "pushing left" is "pushing right"
        # `damaged`: frames of this clip that could not be decoded and were replaced by the
        # nearest decodable one; the trainer counts them like replaced samples
        return {"inputs": inputs, "label": label, "index": i, "path": s.path, "damaged": damaged}

    def pack_label(self, s: Sample) -> int | torch.Tensor:
        if self.soft_label:
            out = torch.zeros(self.num_classes, dtype=torch.float32)  # type: ignore[arg-type]
            if s.soft_label is not None:
                out = torch.tensor(s.soft_label, dtype=torch.float32)
            elif isinstance(s.label, int):
                out[s.label] = 1.0
            return out
        if self.multi_label:
            out = torch.zeros(self.num_classes, dtype=torch.float32)  # type: ignore[arg-type]
            labels = s.label if isinstance(s.label, list) else ([] if s.label is None else [s.label])
            if labels:
                out[torch.tensor(labels)] = 1.0
            return out
        return -1 if s.label is None else int(s.label)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- decoding helpers
    def load_frames(self, s: Sample, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    @property
    def sampler(self) -> Callable[..., np.ndarray]:
        return self.preset.sampler

    def sample_indices(self, total: int, rng: np.random.Generator) -> np.ndarray:
        """0-based frame offsets from the preset's sampler (whatever its ``start_index``)."""
        sampler = self.sampler
        inds = np.asarray(sampler(int(total), rng), dtype=np.int64)
        return inds - int(getattr(sampler, "start_index", 0))

    def _resolve(self, s: Sample) -> Path:
        return resolve_path(self.data_root, s.path, s.file, s.line)

    def _cached_count(self, path: Path) -> int | None:
        entry = self.probe_cache.get(os.path.abspath(path)) if self.probe_cache else None
        if entry is None:
            return None
        if entry.get("readable") is False:
            raise DataError(path, f"probe cache: {entry.get('reason', 'unreadable')}")
        return _probe_frames(entry)

    def read_video(self, path: Path, rng: np.random.Generator, pool: np.ndarray | None = None,
                   backend: str | None = None, base: int = 0, total: int | None = None,
                   count_shift: int = 0, open_kwargs: dict | None = None) -> np.ndarray:
        """Sample and decode frames of one video (or frame folder).

        ``pool``: the absolute frames allowed (manifest ``frame_inds`` / ``segment``); the
        sampler then runs over ``len(pool)``. ``base`` is added to sampled offsets (rawframe
        ``start_index + offset``). ``total``: a known frame count (rawframe lists). A
        :class:`FrameCountError` re-samples with the real count (minus ``count_shift``, the
        rawframe offset, since the reader counts the whole folder), which is remembered.
        """
        from omnisource.data.decode import FrameCountError, open_video

        if not path.exists():
            raise DataError(path, "file not found")
        key = os.path.normpath(str(path)) + (f"#offset={count_shift}" if count_shift else "")
        count = self._frame_counts.get(key)
        if count is None:
            count = self._cached_count(path) if total is None else total
        reader = open_video(path, backend=backend or self.backend, **{**self.decode_kwargs, **(open_kwargs or {})})
        try:
            if count is None:
                count = len(reader)
            # every attempt samples from the same generator state: the clip (and the augmentation
            # drawn after it) must not depend on whether this process already knew the real
            # frame count (learnt by an earlier item, a cached index, or another worker's history)
            state = rng.bit_generator.state
            for _ in range(4):
                rng.bit_generator.state = state
                avail = None if pool is None else pool[pool < count]
                n = count if avail is None else len(avail)
                if n < 1:
                    raise DataError(path, f"no frames to sample (frame count {count})")
                rel = self.sample_indices(n, rng)
                inds = rel + base if avail is None else avail[rel]
                try:
                    frames = reader.get_frames(inds)
                except FrameCountError as err:
                    actual = int(err.actual) - count_shift
                    if actual >= count or actual < 1:
                        raise DataError(path, f"frame count error ({err.reason})") from err
                    logger.debug("%s: container declares %d frames, holds %d; re-sampling", path, count, actual)
                    self.frame_count_fixes.setdefault(key, (count, actual))
                    count = actual
                    self._frame_counts[key] = actual
                    continue
                if frames.shape[0] != len(inds):
                    raise DataError(path, f"decoder returned {frames.shape[0]} frames for {len(inds)} indices")
                _READ_STATE.damaged = int(getattr(reader, "damaged_frames", 0) or 0)
                return frames
            raise DataError(path, "frame count kept changing while decoding")
        finally:
            reader.close()


class VideoDataset(ClipDataset):
    """Video files (mmaction2 ``VideoDataset`` lists)."""

    kind = "video"

    def load_frames(self, s: Sample, rng: np.random.Generator) -> np.ndarray:
        return self.read_video(self._resolve(s), rng)


class RawframeDataset(ClipDataset):
    """Folders of extracted frames (mmaction2 ``RawframeDataset``: ``img_{:05}.jpg`` from 1).

    ``total_frames`` comes from the list (as in mmaction2); with offsets, frame ``k`` of the
    clip is file ``start_index + offset + k``.
    """

    kind = "rawframes"

    def __init__(self, samples: Sequence[Sample], data_root: str | Path, preset: Any, *,
                 filename_tmpl: str = "img_{:05}.jpg", start_index: int = 1, **kw: Any):
        kw.setdefault("backend", "rawframes")
        if kw["backend"] != "rawframes":
            kw["backend"] = "rawframes"
        super().__init__(samples, data_root, preset, **kw)
        self.filename_tmpl = filename_tmpl
        self.start_index = int(start_index)

    def load_frames(self, s: Sample, rng: np.random.Generator) -> np.ndarray:
        path = self._resolve(s)
        if not path.is_dir():
            raise DataError(path, "frame folder not found" if not path.exists() else
                            "is a file, not a folder of frames (a video list? read it as videos: "
                            "--format video, or data.<split>.format: video)")
        if not s.total_frames:
            raise DataError(path, "total_frames is 0 in the list")
        open_kwargs: dict[str, Any] = {"template": self.filename_tmpl, "start_index": self.start_index,
                                       "num_frames": s.total_frames}
        if getattr(getattr(self.preset, "spec", None), "modality", "rgb") == "flow":
            # mmaction2's flow template '{}_{:05d}.jpg' names x_ and y_ files; the RGB default
            # 'img_{:05}.jpg' means "not set": the x_/y_ layout of its extraction tools
            tmpl = self.filename_tmpl if "{}" in self.filename_tmpl else "{}_{:05d}.jpg"
            open_kwargs.update(template=None, modality="flow",
                               flow_templates=(tmpl.replace("{}", "x", 1), tmpl.replace("{}", "y", 1)))
        return self.read_video(path, rng, backend="rawframes", base=self.start_index + s.offset,
                               total=s.total_frames, count_shift=s.offset, open_kwargs=open_kwargs)


class ImageDataset(ClipDataset):
    """Still images as clips: the sampler's frame count of copies (``inflate`` can replace it)."""

    kind = "image"

    def __init__(self, samples: Sequence[Sample], data_root: str | Path, preset: Any, *,
                 inflate: Callable[[np.ndarray, int, np.random.Generator | None], np.ndarray] | None = None,
                 **kw: Any):
        super().__init__(samples, data_root, preset, **kw)
        self.inflate = inflate or still_clip

    def num_frames(self, rng: np.random.Generator) -> int:
        """How many frames the preset's sampler asks for (clips x clip_len, x2 twice_sample)."""
        n = getattr(self.preset, "frames_per_sample", None)
        return int(n) if n else int(len(self.sampler(1, rng)))

    def image_to_frames(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The single image -> frames step; override (or pass ``inflate=``) to change it."""
        return self.inflate(image, self.num_frames(rng), rng)

    def load_frames(self, s: Sample, rng: np.random.Generator) -> np.ndarray:
        from omnisource.data.decode import read_image

        path = self._resolve(s)
        if not path.exists():
            raise DataError(path, "file not found")
        return self.image_to_frames(read_image(path), rng)


class UntrimmedClipDataset(ClipDataset):
    """Pre-cut parts of untrimmed videos (mmaction2 0.x ``RawVideoDataset``, OmniSource).

    Each row names a folder of clips ``part_0.mp4 ... part_{n-1}.mp4``. A part is chosen per
    item by ``sampling_strategy`` (``'positive'``: uniformly among the positive parts -- rows
    without positives are dropped, as in mmaction2; ``'random'``: any part). mmaction2 draws
    the part with the global ``random`` module in train *and* test mode; here the draw uses the
    item's generator, so test mode is the same distribution but reproducible.
    """

    kind = "untrimmed"

    def __init__(self, samples: Sequence[Sample], data_root: str | Path, preset: Any, *,
                 sampling_strategy: str = "positive", clipname_tmpl: str = "part_{}.mp4", **kw: Any):
        from omnisource.data.sampling import UntrimmedClipSampler

        self.clip_sampler = UntrimmedClipSampler(strategy=sampling_strategy, clipname_tmpl=clipname_tmpl)
        kept = [s for s in samples if self.clip_sampler.keeps(s.num_clips or 0, s.pos_clip_inds)]
        if len(kept) < len(samples):
            logger.info("dropped %d untrimmed video(s) without positive clips (strategy=%r)",
                        len(samples) - len(kept), sampling_strategy)
        super().__init__(kept, data_root, preset, **kw)

    def clip_path(self, s: Sample, rng: np.random.Generator) -> str:
        ind = self.clip_sampler.choose(s.num_clips or 0, s.pos_clip_inds, rng)
        return self.clip_sampler.clip_path(s.path, ind)

    def load_frames(self, s: Sample, rng: np.random.Generator) -> np.ndarray:
        rel = self.clip_path(s, rng)
        return self.read_video(resolve_path(self.data_root, rel, s.file, s.line), rng)


class ManifestDataset(ClipDataset):
    """Web samples from a JSONL manifest: ``kind`` image / video / untrimmed per record.

    ``frame_inds`` restrict sampling to those frames (a snippet chosen by the teacher), a
    ``segment`` to that time window; an ``untrimmed`` record with ``clips`` is a folder of
    pre-cut parts from which one of the listed clips is drawn (as :class:`UntrimmedClipDataset`).
    Images become clips with ``inflate`` (default: still copies).
    """

    kind = "manifest"

    def __init__(self, samples: Sequence[Sample], data_root: str | Path, preset: Any, *,
                 inflate: Callable | None = None, clipname_tmpl: str = "part_{}.mp4",
                 sparse_soft: Any = None, **kw: Any):
        from omnisource.data.sampling import UntrimmedClipSampler

        super().__init__(samples, data_root, preset, **kw)
        self.inflate = inflate or still_clip
        self.clip_sampler = UntrimmedClipSampler(strategy="positive", clipname_tmpl=clipname_tmpl)
        # sparse top-k teacher labels (omnisource.data.soft_labels): every item's label becomes a
        # float [num_classes] distribution (rows without one: one-hot of their hard label)
        self.sparse_soft = sparse_soft if sparse_soft is not None and sparse_soft.count else None
        if sparse_soft is not None and self.sparse_soft is None:
            logger.warning("soft labels asked for, but no manifest row carries meta.soft_label: hard labels used")
        if self.sparse_soft is not None:
            if self.num_classes is None:
                self.num_classes = self.sparse_soft.num_classes
            self.soft_label = True

    def get_item(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        item = super().get_item(i, rng)
        if self.sparse_soft is not None and self.sparse_soft.has(i):
            item["label"] = self.sparse_soft.dense(i)
        return item

    def load_frames(self, s: Sample, rng: np.random.Generator) -> np.ndarray:
        from omnisource.data.decode import read_image

        path = self._resolve(s)
        if s.kind == "image":
            if not path.exists():
                raise DataError(path, "file not found")
            n = getattr(self.preset, "frames_per_sample", None) or len(self.sampler(1, rng))
            return self.inflate(read_image(path), int(n), rng)
        if s.kind == "untrimmed" and s.pos_clip_inds and (s.num_clips or path.is_dir()):
            n = s.num_clips or max(s.pos_clip_inds) + 1
            ind = self.clip_sampler.choose(n, s.pos_clip_inds, rng)
            path = resolve_path(self.data_root, self.clip_sampler.clip_path(s.path, ind), s.file, s.line)
        pool = None
        if s.frame_inds:
            pool = np.asarray(sorted(s.frame_inds), dtype=np.int64)
        elif s.segment is not None:
            pool = self._segment_pool(path, s.segment)
        return self.read_video(path, rng, pool=pool)

    def _segment_pool(self, path: Path, segment: tuple[float, float]) -> np.ndarray:
        from omnisource.data.decode import open_video

        if not path.exists():
            raise DataError(path, "file not found")
        reader = open_video(path, backend=self.backend, **self.decode_kwargs)
        try:
            fps = reader.info.fps or 0
            n = len(reader)
        finally:
            reader.close()
        if not fps:
            raise DataError(path, "unknown frame rate: cannot map the segment to frames")
        start = int(np.floor(segment[0] * fps))
        stop = min(int(np.ceil(segment[1] * fps)), n)
        if stop <= start:
            raise DataError(path, f"segment {segment} holds no frames (video has {n} at {fps:.3f} fps)")
        return np.arange(start, stop, dtype=np.int64)


# ------------------------------------------------------------------------------------------
# construction
# ------------------------------------------------------------------------------------------
_DATASET_OPTIONS = {"format", "label_map", "num_classes", "with_offset", "multi_label", "seed", "probe_cache",
                    "filename_tmpl", "start_index", "clipname_tmpl", "sampling_strategy", "max_tries",
                    "decode_kwargs", "inflate", "soft_labels", "index_store"}


def _require_labels(samples: Sequence[Sample], ann_file: str | Path) -> None:
    """A training split needs a label on every row: one without (no label field, or mmaction2's
    ``-1``) is an error naming its line now, not an IndexError at the batch that reaches it."""
    bad = [s for s in samples if _unlabelled(s)]
    if bad:
        more = f" ({len(bad)} such rows; the first is named)" if len(bad) > 1 else ""
        raise InputError(f"no label on this row ({bad[0].path!r}): every row of a training list needs one "
                         f"(-1 or a missing label means unlabelled){more}", bad[0].file or ann_file, bad[0].line)


def _unlabelled(s: Sample) -> bool:
    if getattr(s, "soft_label", None) is not None:
        return False
    return s.label is None or (isinstance(s.label, list) and not s.label)


def build_dataset(ann_file: str | Path, data_root: str | Path, preset: Any, test_mode: bool = False,
                  backend: str = "pyav", strict: bool = False, **overrides: Any) -> ClipDataset:
    """A dataset for any annotation file (format recognised from content, or ``format=``).

    ``preset`` is a preset name (``overrides`` not listed below go to
    ``omnisource.data.presets.get_preset``, e.g. ``clip_len=``, ``num_clips=``) or a Preset.
    Dataset options: ``format``, ``label_map`` (file or names), ``num_classes``, ``with_offset``,
    ``multi_label``, ``seed``, ``probe_cache`` (``omnisource probe --out`` file), rawframe
    ``filename_tmpl`` / ``start_index``, untrimmed ``clipname_tmpl`` / ``sampling_strategy``,
    ``max_tries``, ``decode_kwargs``, image ``inflate``, manifest ``soft_labels`` (train on the
    sparse top-k ``meta.soft_label`` of filtered rows: see :mod:`omnisource.data.soft_labels`),
    ``index_store`` (a file of video demux indexes shared by the workers and kept between runs:
    see :mod:`omnisource.data.decode.index_store`).
    """
    if not Path(data_root).is_dir():   # else every sample fails, one by one, at read time
        raise InputError(f"data root folder not found (samples of {ann_file} are read from it)",
                         file=data_root)
    ds_kw = {k: overrides.pop(k) for k in list(overrides) if k in _DATASET_OPTIONS}
    store = ds_kw.pop("index_store", None)
    if store:
        ds_kw["decode_kwargs"] = {**(ds_kw.get("decode_kwargs") or {}), "index_store": str(store)}
    if isinstance(preset, str):
        from omnisource.data.presets import get_preset

        preset = get_preset(preset, **overrides)
    elif overrides:
        raise ConfigError(f"unknown dataset option(s) {', '.join(sorted(overrides))}; preset overrides need a "
                          f"preset name, dataset options are {', '.join(sorted(_DATASET_OPTIONS))}")
    fmt = ds_kw.pop("format", None) or detect_format(ann_file, data_root)
    label_map = ds_kw.pop("label_map", None)
    if isinstance(label_map, (str, Path)):
        label_map = read_label_map(label_map)
    num_classes = ds_kw.pop("num_classes", None)
    if num_classes is None and label_map is not None:
        num_classes = len(label_map)
    samples = load_annotations(ann_file, format=fmt, label_map=label_map, num_classes=num_classes,
                               with_offset=ds_kw.pop("with_offset", None),
                               multi_label=ds_kw.pop("multi_label", None), data_root=data_root)
    if not samples:
        raise InputError("annotation file lists no samples", ann_file)
    if not test_mode:
        _require_labels(samples, ann_file)
    common = dict(test_mode=test_mode, backend=backend, strict=strict, num_classes=num_classes,
                  **{k: ds_kw.pop(k) for k in ("seed", "probe_cache", "max_tries", "decode_kwargs") if k in ds_kw})
    if fmt == "video":
        cls: type[ClipDataset] = VideoDataset
        allowed: tuple[str, ...] = ()
    elif fmt == "rawframes":
        cls, allowed = RawframeDataset, ("filename_tmpl", "start_index")
    elif fmt == "image":
        cls, allowed = ImageDataset, ("inflate",)
    elif fmt == "audio":
        from omnisource.data.audio import AudioFeatureDataset   # imports this module

        cls, allowed = AudioFeatureDataset, ()
    elif fmt in ("untrimmed", "untrimmed_json"):
        cls, allowed = UntrimmedClipDataset, ("clipname_tmpl", "sampling_strategy")
    else:
        cls, allowed = ManifestDataset, ("inflate", "clipname_tmpl")
    if ds_kw.pop("soft_labels", False):
        if cls is not ManifestDataset:
            raise ConfigError(f"soft labels (teacher top-k in meta.soft_label) come from manifests; "
                              f"{fmt!r} annotation files carry none")
        from omnisource.data.soft_labels import read_sparse_soft_labels

        ds_kw["sparse_soft"] = read_sparse_soft_labels(ann_file, samples, num_classes, label_map)
        allowed += ("sparse_soft",)
    extra = {k: ds_kw.pop(k) for k in allowed if k in ds_kw}
    if ds_kw:
        raise ConfigError(f"option(s) {', '.join(sorted(ds_kw))} do not apply to {fmt!r} annotation files")
    dataset = cls(samples, data_root, preset, **common, **extra)
    _warn_if_indexes_outgrow_memory(dataset, ann_file)
    return dataset


# A ten-second clip at 30 fps: what the in-memory index cache's frame bound is counted in.
_TYPICAL_CLIP_FRAMES = 300


def _warn_if_indexes_outgrow_memory(dataset: ClipDataset, ann_file: str | Path) -> None:
    """Say so when a video dataset has more files than each process's in-memory demux-index cache
    holds and no index store is set: past that bound every read demuxes its file again, in every
    epoch and every worker (measured: 7-14% of a sparse read, README). Nothing changes by itself --
    where a store may live (a local disk, not a network file system) is the user's call."""
    from omnisource.data.decode.index_store import ENV_VAR
    from omnisource.data.decode.pyav_index import INDEX_CACHE

    if dataset.backend != "pyav" or dataset.kind == "image" or dataset.kind == "rawframes":
        return
    if (dataset.decode_kwargs or {}).get("index_store") or os.environ.get(ENV_VAR):
        return
    capacity = INDEX_CACHE.max_frames // _TYPICAL_CLIP_FRAMES
    if capacity <= 0:
        return
    files = len({s.path for s in dataset.samples if s.kind != "image"})  # manifests mix kinds
    if files > capacity:
        logger.warning("%s: %d video files, more than the ~%d ten-second clips whose demux indexes "
                       "each process keeps in memory: reads past that re-index their file (7-14%% "
                       "slower). Keep the indexes in a file on a local disk: data.index_store: PATH "
                       "(or %s=PATH; `omnisource probe --index-store PATH` fills it ahead of training)",
                       ann_file, files, capacity, ENV_VAR)


# ------------------------------------------------------------------------------------------
# DataLoader helpers
# ------------------------------------------------------------------------------------------
def build_dataloader(dataset: Dataset, batch_size: int, num_workers: int = 0, shuffle: bool = False,
                     seed: int = 0, multiprocessing_context: str | None = None, **kw: Any) -> DataLoader:
    """A DataLoader with deterministic shuffling and safe worker start.

    ``gc.collect()`` runs first so that no PyAV object left over from the parent (e.g. after
    probing) is finalised inside a forked worker, which can crash it. Pass
    ``multiprocessing_context='forkserver'`` (or ``'spawn'``) to avoid fork altogether.
    Workers are persistent unless ``persistent_workers=False``: each keeps its cache of video
    indexes (:mod:`.decode.pyav_index`) from one epoch to the next instead of demuxing every
    file again, as the trainer's loaders do.
    """
    gc.collect()
    gen = torch.Generator()
    gen.manual_seed(seed)
    if num_workers > 0:
        kw.setdefault("worker_init_fn", worker_init_fn)
        kw.setdefault("persistent_workers", True)
        if multiprocessing_context is not None:
            kw["multiprocessing_context"] = multiprocessing_context
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=shuffle,
                      generator=gen, **kw)
