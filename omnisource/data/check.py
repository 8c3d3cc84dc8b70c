"""Read every sample of an annotation file and report the ones that cannot be read.

Why through the dataset classes: the check must see exactly what training will see (same path
resolution, same frame-count repair, same rawframe offsets), so each sample goes through
:meth:`ClipDataset.get_item` with a *decode-only* preset: the frames the sampler asks for are
decoded, no augmentation is run. That sampler asks for the first, middle and last frame: the
last one is where over-declared frame counts (HMDB51 AVIs) and truncated files show. With
``preset=`` the preset's own (test-mode) sampler is used instead.

Then, unless ``quick``, every frame of every video is decoded (no colour conversion), because
a check is a check: three frames passed decord's ``corrupted.mp4`` (one damaged packet) as
readable. Damaged packets are counted per file; a file with any is reported ``damaged``
(training would replace those frames by their neighbours). A still image listed in a video
list (a PNG renamed ``.mp4``) is named as such (:func:`omnisource.data.decode.sniff.media_kind`).

Untrimmed rows are expanded: every positive clip (every clip with ``sampling_strategy
='random'``) is checked, since training may pick any of them.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from omnisource.data.annotations import DuplicateEntryWarning, Sample, detect_format, load_annotations, read_label_map, resolve_path
from omnisource.data.datasets import (_DATA_ERRORS, ClipDataset, ImageDataset, ManifestDataset, RawframeDataset,
                                      VideoDataset, classify_failure, failure_reason)
from omnisource.errors import ConfigError, InputError
from omnisource.utils.progress import progress_enabled

logger = logging.getLogger("omnisource.data.check")

__all__ = ["EndsSampler", "DecodeOnly", "check_annotations", "format_summary"]


class EndsSampler:
    """First, middle and last frame: cheap, and the last frame exposes lying frame counts."""

    start_index = 0

    def __call__(self, total_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        n = int(total_frames)
        return np.unique(np.array([0, n // 2, n - 1], dtype=np.int64))


class DecodeOnly:
    """A preset that only samples and decodes: returns the frame array's shape."""

    test_mode = True
    name = "decode-only"

    def __init__(self, sampler: Any):
        self.sampler = sampler

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> tuple[int, ...]:
        return tuple(frames.shape)


_DS: ClipDataset | None = None
_QUICK = False      # only the sampled frames (check_annotations(quick=True)); set with _DS


def _init_worker(ds: ClipDataset, pool_process: bool = True, quick: bool = False) -> None:
    """Hand the dataset to :func:`_check_one`; in a pool process also one torch thread.

    Never in the calling process (``workers=0``): the thread count would stay at 1 for the
    rest of the process, and ``omnisource run`` trains in the same process after its check
    stage (it did: every fresh run trained single-threaded, and numerically differed from a
    resumed run)."""
    global _DS, _QUICK
    _DS, _QUICK = ds, quick
    if not pool_process:
        return
    # SIGTERM is left at its default here (unlike DataLoader workers): Pool.terminate() ends its
    # workers with SIGTERM, and a pool whose workers ignored it hung in join() on exit
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # pragma: no cover
        pass


def _video_sample(ds: ClipDataset, s: Sample) -> bool:
    return isinstance(ds, VideoDataset) or (isinstance(ds, ManifestDataset) and s.kind == "video")


def _still_image(path: Path) -> str | None:
    """'a still image (png), not a video' when the file's bytes are a picture's, else None."""
    from omnisource.data.decode.sniff import media_kind

    try:
        mk = media_kind(path) if path.is_file() else None
    except OSError:
        return None
    if mk is not None and mk.kind == "image":
        return f"a still image ({mk.format}), not a video"
    return None


def _check_one(i: int) -> dict[str, Any]:
    ds = _DS
    assert ds is not None
    s = ds.samples[i]
    try:
        path = resolve_path(ds.data_root, s.path)
    except InputError:
        path = ds.data_root / s.path
    out: dict[str, Any] = {"index": i}
    video = _video_sample(ds, s)
    if video:
        still = _still_image(path)
        if still:
            out.update(ok=False, category="not a video", reason=still)
            return out
    try:
        item = ds.get_item(i, ds.rng_for(i))
    except _DATA_ERRORS as err:
        reason = failure_reason(path, err)
        out.update(ok=False, category=classify_failure(path, err), reason=reason)
        return out
    out.update(ok=True, shape=list(item["inputs"]))
    if video and not _QUICK:
        from omnisource.data.decode.probe import _full_decode_count

        try:
            got, errors = _full_decode_count(str(path))
        except Exception as err:  # noqa: BLE001 - a check reports whatever the file does
            got, errors = 0, 1
            out["decode_error"] = f"{type(err).__name__}: {err}"
        out["frames_decoded"] = got
        if errors or got == 0:
            out.update(ok=False, category="damaged", damaged_packets=errors,
                       reason=(f"{errors} damaged packet(s); {got} frame(s) decodable"
                               if got else "no frame could be decoded"))
            return out
    slow = _sequential_access(path)
    if slow:
        out["sequential"] = slow
    norm = os.path.normpath(str(path))
    fix = next((v for k, v in ds.frame_count_fixes.items() if k.split("#offset=")[0] == norm), None)
    if fix is not None:
        out["frame_count_fix"] = list(fix)
    return out


def _sequential_access(path: Path) -> str | None:
    """Why every sparse read of this video decodes from its first frame (no usable
    timestamps, see :mod:`.decode.pyav_index`), or None. Read from this process's index
    cache, which the sample's read has just filled (PyAV backend only)."""
    from omnisource.data.decode.pyav_index import INDEX_CACHE, file_key

    index = INDEX_CACHE.get(file_key(str(path)))
    if index is None or index.access != "sequential":
        return None
    return index.reason or "no usable timestamps"


def _expand_untrimmed(samples: list[Sample], strategy: str, clipname_tmpl: str) -> list[Sample]:
    from omnisource.data.sampling import UntrimmedClipSampler

    cs = UntrimmedClipSampler(strategy=strategy, clipname_tmpl=clipname_tmpl)
    out = []
    for s in samples:
        inds = s.pos_clip_inds if strategy == "positive" else list(range(s.num_clips or 0))
        for ind in inds or []:
            out.append(replace(s, path=cs.clip_path(s.path, ind), kind="video"))
    return out


def check_annotations(ann_file: str | Path, root: str | Path, *, backend: str = "pyav", format: str | None = None,
                      workers: int = 0, preset: str | None = None, label_map: Sequence[str] | str | Path | None = None,
                      num_classes: int | None = None, with_offset: bool | None = None,
                      filename_tmpl: str = "img_{:05}.jpg", start_index: int = 1,
                      clipname_tmpl: str = "part_{}.mp4", sampling_strategy: str = "positive",
                      limit: int | None = None, progress: bool | None = None,
                      index_store: str | Path | None = None, quick: bool = False,
                      samples: list[Sample] | None = None) -> dict[str, Any]:
    """Decode every sample of ``ann_file`` and return a JSON-able report (see ``omnisource data check``).

    ``quick``: only the sampled frames (first / middle / last, or the preset's), not every
    frame of every video. ``samples``: rows already parsed from ``ann_file`` (a web list read by
    :func:`omnisource.data.annotations.read_web_list`), checked as ``format`` (default video).

    ``index_store``: keep every video's demux index in this file as it is read, so training
    with the same store never demuxes a file again (see ``omnisource.data.decode.index_store``).
    """
    t0 = time.perf_counter()
    ann_file, root = Path(ann_file), Path(root)
    if not root.is_dir():
        raise InputError("data root is not a folder", root)
    names = read_label_map(label_map) if isinstance(label_map, (str, Path)) else label_map
    if samples is not None:
        fmt = format or "video"
        caught: list = []
    else:
        fmt = format or detect_format(ann_file, root)
        with warnings.catch_warnings(record=True) as caught:  # reported in the summary, not as tracebacks
            warnings.simplefilter("always", DuplicateEntryWarning)
            samples = load_annotations(ann_file, format=fmt, label_map=names, num_classes=num_classes,
                                       with_offset=with_offset, data_root=root)
    notes = [str(w.message) for w in caught if issubclass(w.category, DuplicateEntryWarning)]
    for w in caught:
        if not issubclass(w.category, DuplicateEntryWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if fmt in ("untrimmed", "untrimmed_json"):
        samples = _expand_untrimmed(samples, sampling_strategy, clipname_tmpl)
    if limit is not None:
        samples = samples[:limit]
    if preset is not None:
        from omnisource.data.presets import get_preset

        sampler = get_preset(preset).sampler
    else:
        sampler = EndsSampler()
    decode = DecodeOnly(sampler)
    # labels are not needed to read files; drop them so multi-label lists need no num_classes
    plain = [replace(s, label=None, soft_label=None) for s in samples]
    common = dict(test_mode=True, backend=backend, strict=False,
                  decode_kwargs={"index_store": str(index_store)} if index_store else None)
    ds: ClipDataset
    if fmt == "rawframes":
        ds = RawframeDataset(plain, root, decode, filename_tmpl=filename_tmpl, start_index=start_index, **common)
    elif fmt == "image":
        ds = ImageDataset(plain, root, decode, **common)
    elif fmt == "manifest":
        ds = ManifestDataset(plain, root, decode, clipname_tmpl=clipname_tmpl, **common)
    elif fmt in ("video", "untrimmed", "untrimmed_json"):
        ds = VideoDataset(plain, root, decode, **common)
    else:  # pragma: no cover - load_annotations validated it
        raise ConfigError(f"unsupported format {fmt!r}")
    progress = progress_enabled(progress)
    from tqdm import tqdm

    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(ds), desc=f"check {ann_file.name}", unit="sample", disable=not progress)
    try:
        if workers > 0 and len(ds) > 1:
            gc.collect()  # no leftover decoder objects may be finalised in forked workers
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(ds, True, bool(quick))) as pool:
                for r in pool.imap_unordered(_check_one, range(len(ds)), chunksize=max(1, min(8, len(ds) // (workers * 4)))):
                    results.append(r)
                    bar.update(1)
        else:
            _init_worker(ds, pool_process=False, quick=bool(quick))
            for i in range(len(ds)):
                results.append(_check_one(i))
                bar.update(1)
    finally:
        bar.close()
    results.sort(key=lambda r: r["index"])
    # the reader that really opened the files: --backend only picks the video decoder
    reader = {"rawframes": "rawframes", "image": "image", "manifest": f"{backend} + image"}.get(fmt, backend)
    sampler = preset or "first/middle/last frame"
    if not quick and fmt in ("video", "untrimmed", "untrimmed_json", "manifest"):
        sampler += ", then every frame of every video"
    report = _report(ann_file, root, fmt, reader, samples, results, names, time.perf_counter() - t0,
                     sampler=sampler, workers=workers)
    report["warnings"] = notes
    return report


def _report(ann_file: Path, root: Path, fmt: str, backend: str, samples: list[Sample], results: list[dict],
            names: Sequence[str] | None, seconds: float, sampler: str, workers: int) -> dict[str, Any]:
    by_reason: Counter[str] = Counter()
    by_class: dict[str, Counter[str]] = defaultdict(Counter)
    failures, fixes = [], []
    sequential: Counter[str] = Counter()
    for r in results:
        if r.get("sequential"):
            sequential[r["sequential"]] += 1
        s = samples[r["index"]]
        labels = s.label if isinstance(s.label, list) else ([] if s.label is None else [s.label])
        keys = [names[lb] if names is not None and 0 <= lb < len(names) else str(lb) for lb in labels] or ["(none)"]
        for k in keys:
            by_class[k]["total"] += 1
            if not r["ok"]:
                by_class[k]["failed"] += 1
        if not r["ok"]:
            by_reason[r["category"]] += 1
            failures.append({"path": s.path, "file": s.file, "line": s.line, "category": r["category"],
                             "reason": r["reason"]})
            if r.get("damaged_packets"):
                failures[-1]["damaged_packets"] = r["damaged_packets"]
                failures[-1]["frames_decoded"] = r.get("frames_decoded")
        elif "frame_count_fix" in r:
            fixes.append({"path": s.path, "declared": r["frame_count_fix"][0], "actual": r["frame_count_fix"][1]})
    n_fail = len(failures)
    return {
        "ann_file": str(ann_file), "root": str(root), "format": fmt, "backend": backend, "sampler": sampler,
        "workers": workers, "total": len(results), "ok": len(results) - n_fail, "failed": n_fail,
        "by_reason": dict(sorted(by_reason.items())),
        "by_class": {k: {"total": v["total"], "failed": v["failed"]} for k, v in sorted(by_class.items())},
        "failures": failures, "frame_count_fixes": fixes, "seconds": round(seconds, 3),
        # rows without a label (mmaction2's -1, or none): fine in a test list, an error in training
        "unlabelled": sum(1 for s in samples if s.label is None or s.label == []),
        "first_unlabelled": next(({"file": s.file, "line": s.line, "path": s.path} for s in samples
                                  if s.label is None or s.label == []), None),
        "sequential_access": dict(sequential.most_common()),
    }


def class_counts_png(report: dict[str, Any]) -> bytes:
    """Samples per class of a :func:`check_annotations` report: listed and readable, sorted."""
    from omnisource.utils.html_report import class_bars_png

    srt = sorted(report["by_class"].items(), key=lambda kv: (-kv[1]["total"], kv[1]["failed"]))
    return class_bars_png([k for k, _ in srt], ("listed", [v["total"] for _, v in srt]),
                          ("readable", [v["total"] - v["failed"] for _, v in srt]),
                          title=f"samples per class: {Path(report['ann_file']).name}",
                          xlabel="classes (sorted by number of samples)")


def format_summary(report: dict[str, Any], max_failures: int = 20) -> str:
    """Human-readable summary of a :func:`check_annotations` report."""
    lines = [f"checked {report['total']} sample(s) of {report['ann_file']} "
             f"(format {report['format']}, backend {report['backend']}, sampler: {report['sampler']}) "
             f"in {report['seconds']:.1f} s",
             f"  readable: {report['ok']}   unreadable: {report['failed']}"]
    for reason, n in report["by_reason"].items():
        lines.append(f"    {reason}: {n}")
    if report["frame_count_fixes"]:
        lines.append(f"  frame count over-declared (handled by re-sampling): {len(report['frame_count_fixes'])}")
    slow = report.get("sequential_access") or {}
    if slow:
        lines.append(f"  decoded from the first frame on every read (no usable timestamps; "
                     f"re-encoding, e.g. to H.264 MP4, lets sparse sampling seek): "
                     f"{sum(slow.values())} sample(s)")
        lines += [f"    {why}: {n}" for why, n in slow.items()]
    if report.get("unlabelled"):
        first = report.get("first_unlabelled") or {}
        where = f" (first: {first.get('file')}:{first.get('line')})" if first.get("line") else ""
        lines.append(f"  unlabelled rows (label -1 or none): {report['unlabelled']}{where}; "
                     "fine for testing, training refuses them")
    for note in report.get("warnings", []):
        lines.append(f"  warning: {note}")
    counts = {k: v["total"] for k, v in report["by_class"].items() if k != "(none)"}
    if counts:
        order = sorted(counts, key=lambda k: (counts[k], k))
        med = sorted(counts.values())[len(counts) // 2]
        lines.append(f"  classes: {len(counts)}; samples per class: min {counts[order[0]]} ({order[0]}), "
                     f"median {med}, max {counts[order[-1]]} ({order[-1]})")
    bad_classes = {k: v for k, v in report["by_class"].items() if v["failed"]}
    if bad_classes:
        lines.append("  unreadable / all samples, by class: " +
                     ", ".join(f"{k}: {v['failed']}/{v['total']}" for k, v in bad_classes.items()))
    for f in report["failures"][:max_failures]:
        where = f"{f['file']}:{f['line']}" if f.get("line") else f["path"]
        # "empty file (0 bytes)" under category "empty file": say it once
        why = f["reason"] if str(f["reason"]).startswith(f["category"]) else f"{f['category']}: {f['reason']}"
        lines.append(f"  {where}: {f['path']}: {why}")
    if len(report["failures"]) > max_failures:
        lines.append(f"  ... and {len(report['failures']) - max_failures} more (see --out)")
    return "\n".join(lines)
