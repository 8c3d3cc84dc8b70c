"""Content-based de-duplication of web data against the target validation / test sets.

The OmniSource paper (section 3.3) removes web samples that look like target evaluation
samples, so that the reported accuracy stays fair:

1. frame-level features from an image backbone (any 2D model of ours with user weights, e.g.
   an ImageNet ResNet-50);
2. PCA-whitening fitted on the *target* features, keeping the leading ``pca_dim`` directions
   (default 256; ``full``: all), then cosine similarity in that space;
3. threshold = mean similarity between different crops of the same target frame, measured in
   the same whitened (projected) space (a web copy of a target frame is at least as similar as
   two crops of it); overridable;
4. a web sample is a suspected duplicate when any of its frames passes the threshold against
   any frame of a target sample (videos: a few frames each, max over frame pairs).

Layout of ``output_dir``::

    target/<k>/            run_stage over target list k: features (float16) in side.jsonl
    target_index.npz       whitening, whitened target frames, owners, threshold (+ its stats)
    manifest.jsonl         kept web records          } run_stage over the web manifest:
    dropped.jsonl          duplicates (+ unreadable)  } resumable, sharded, meta.json
    side.jsonl             per web record: max similarity, pairs
    pairs.jsonl, pairs.csv suspected duplicate pairs with scores, for inspection

Every step is resumable: the feature stages through the stage runner, the index through an
atomically written file keyed by a hash of everything it depends on.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from omnisource.errors import ConfigError, DataError, InputError
from omnisource.utils.io import atomic_open, sha1_json
from omnisource.web import features as F
from omnisource.web.similarity import (CovarianceAccumulator, SimilarityIndex, Whitening, aggregate_pairs,
                                       crop_similarity, fit_whitening, l2_normalize)
from omnisource.web.stage import Outcome, StageResult, dist_info, progress_bar, run_stage

log = logging.getLogger("omnisource.web.dedup")

INDEX_NAME = "target_index.npz"


@dataclass
class DedupSettings:
    """Everything that changes the result (hashed into the stages' identity)."""

    frames_per_video: int = 3          # frames per target / web video (max over frame pairs)
    # leading whitened dimensions kept (None or "full": all non-degenerate). 256 by default: the
    # projection of every web feature (2048 -> d) and the search cost ~d, and PCA-whitening with
    # dimensionality reduction retrieves near-duplicates better, not worse (Jegou & Chum, ECCV 2012)
    pca_dim: int | str | None = 256
    threshold: float | None = None     # None: mean same-frame crop similarity of target frames
    threshold_frames: int = 200        # target frames used to calibrate the threshold
    num_crops: int = 5                 # random crops per calibration frame
    crop_min_area: float = 0.4         # smallest crop, as a share of the frame area
    backend: str = "auto"              # auto | faiss | torch
    ivf_lists: int = 0                 # > 0: approximate faiss IVF index (faster, may miss pairs)
    nprobe: int = 16
    max_pairs_per_sample: int = 10     # pairs listed per web sample (all are counted)
    seed: int = 0

    def validate(self) -> "DedupSettings":
        if self.frames_per_video < 1:
            raise ConfigError(f"frames per video must be >= 1, got {self.frames_per_video}")
        if self.pca_dim == "full":
            self.pca_dim = None
        if self.pca_dim is not None and (isinstance(self.pca_dim, (str, bool)) or int(self.pca_dim) < 1):
            raise ConfigError(f"pca dim must be >= 1 or 'full', got {self.pca_dim!r}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ConfigError(f"a cosine threshold lies in [-1, 1], got {self.threshold}")
        if self.num_crops < 2:
            raise ConfigError("the crop threshold needs at least 2 crops per frame")
        if not 0.05 <= self.crop_min_area <= 1.0:
            raise ConfigError(f"crop min area must be in [0.05, 1], got {self.crop_min_area}")
        if self.backend not in ("auto", "faiss", "torch"):
            raise ConfigError(f"backend must be auto, faiss or torch, got {self.backend!r}")
        return self


# --------------------------------------------------------------------------------------------
# features of records (decoding in workers, backbone in the main process)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameSpec:
    data_root: str | None
    frames_per_video: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    backend: str = "pyav"

    @property
    def short_side(self) -> int:
        return int(round(self.input_size * 256 / 224))


def load_feature_input(rec: Any, spec: FrameSpec) -> np.ndarray:
    """Normalised centre crops ``[F, 3, H, W]`` of a record's frames (worker function)."""
    frames = F.load_record_frames(rec, spec.data_root, spec.frames_per_video, min_side=spec.short_side,
                                  backend=spec.backend)
    crops = np.stack([F.center_crop(f, spec.input_size, spec.short_side) for f in frames])
    return F.to_input(crops, spec.mean, spec.std)


class FeatureExtractor:
    """records -> per-record frame features ``[F, D]`` (or an error string), batched."""

    def __init__(self, model: Any, data_root: str | Path | None, frames_per_video: int, *, batch_size: int = 64,
                 num_workers: int = 0, device: str = "cpu", backend: str = "pyav"):
        mean, std, size = F.model_norm(model)
        self.model = model
        self.spec = FrameSpec(None if data_root is None else str(data_root), int(frames_per_video), size,
                              tuple(float(m) for m in mean), tuple(float(s) for s in std), backend)
        self.batch_size = int(batch_size)
        self.device = device
        self.pool = F.OrderedPool(num_workers, window=max(8, 2 * batch_size // max(1, frames_per_video)))

    def close(self) -> None:
        self.pool.close()

    def __call__(self, records: Sequence[Any]) -> list[np.ndarray | str]:
        fn = functools.partial(load_feature_input, spec=self.spec)
        out: list[Any] = [None] * len(records)
        pending: list[tuple[int, np.ndarray]] = []
        n_frames = 0

        def flush() -> None:
            nonlocal pending, n_frames
            if not pending:
                return
            x = np.concatenate([a for _, a in pending])
            feats = F.frame_features(self.model, x, self.batch_size, self.device)
            o = 0
            for pos, a in pending:
                out[pos] = feats[o:o + len(a)]
                o += len(a)
            pending, n_frames = [], 0

        for pos, loaded in enumerate(self.pool.imap(fn, records)):
            if loaded.error is not None:
                out[pos] = loaded.error
                continue
            pending.append((pos, loaded.payload))
            n_frames += len(loaded.payload)
            if n_frames >= self.batch_size:
                flush()
        flush()
        return out


# --------------------------------------------------------------------------------------------
# target side
# --------------------------------------------------------------------------------------------
def _target_reader(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of any target list (mmaction2 lists or a manifest) as small dicts."""
    from omnisource.data.annotations import detect_format, iter_manifest, load_annotations

    fmt = detect_format(path)
    if fmt == "manifest":
        for r in iter_manifest(path):
            yield {"path": r.path, "kind": r.kind, "label": r.label if not isinstance(r.label, list) else None,
                   "frame_inds": r.frame_inds, "segment": list(r.segment) if r.segment else None}
        return
    for s in load_annotations(path, format=fmt):
        kind = s.kind
        if kind == "untrimmed":
            raise InputError("untrimmed lists of pre-cut clips are not supported as de-dup targets; "
                             "list the clips as a video list", path)
        yield {"path": s.path, "kind": kind, "label": s.label, "frame_inds": s.frame_inds,
               "segment": list(s.segment) if s.segment else None}


def _encode_row(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"))


def target_feature_stage(target_list: str | Path, data_root: str | Path | None, out_dir: str | Path,
                         extractor: FeatureExtractor, model_id: dict[str, Any], *, chunk_size: int = 128,
                         strict: bool = False, progress: bool | None = None, force: bool = False) -> StageResult:
    """Frame features of a target list, as float16 in side.jsonl (resumable, sharded)."""
    def process(chunk: list[dict[str, Any]]) -> list[Outcome]:
        res = []
        for rec, feats in zip(chunk, extractor(chunk)):
            if isinstance(feats, str):
                res.append(Outcome(None, "unreadable", {"error": feats}))
            else:
                res.append(Outcome(rec, None, {"path": rec["path"], "kind": rec["kind"], "dim": int(feats.shape[1]),
                                               "feats": F.encode_f16(feats)}))
        return res

    config = {"model": model_id, "frames": asdict(extractor.spec) | {"data_root": str(data_root)}}
    return run_stage("dedup-target-features", target_list, out_dir, process, config, chunk_size=chunk_size,
                     strict=strict, reader=_target_reader, encode=_encode_row, progress=progress, force=force)


def _iter_side(paths: Sequence[Path]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(list number, input index, row) over the side files of the target stages, in order."""
    for k, p in enumerate(paths):
        with open(p, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if "feats" in row:
                    yield k, int(row["index"]), row


@dataclass
class TargetIndex:
    whitening: Whitening
    feats: np.ndarray            # [M, d] whitened target frames
    owner: np.ndarray            # [M] ordinal of the target record each row belongs to
    frame: np.ndarray            # [M] frame number within its record's sampled frames
    paths: list[str]             # per target record
    lists: list[int]             # per target record: which --target list
    threshold: float
    threshold_stats: dict[str, Any]
    ident: str

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, mean=self.whitening.mean, proj=self.whitening.proj, eig=self.whitening.eigenvalues,
                 feats=self.feats, owner=self.owner, frame=self.frame,
                 info=np.frombuffer(json.dumps({"paths": self.paths, "lists": self.lists, "threshold": self.threshold,
                                                "threshold_stats": self.threshold_stats,
                                                "ident": self.ident}).encode(), dtype=np.uint8))
        with atomic_open(path, "wb") as fh:
            fh.write(buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> "TargetIndex":
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(bytes(z["info"]).decode())
            return cls(Whitening(z["mean"], z["proj"], z["eig"]), z["feats"], z["owner"], z["frame"],
                       info["paths"], info["lists"], float(info["threshold"]), info["threshold_stats"], info["ident"])


def build_target_index(side_files: Sequence[Path], settings: DedupSettings, ident: str,
                       calibrate: Any | None) -> TargetIndex:
    """Fit whitening on all target frames (streaming), whiten them, calibrate the threshold.

    ``calibrate(whitening) -> (threshold, stats)`` computes the crop threshold (None when the
    user gave one).
    """
    acc: CovarianceAccumulator | None = None
    for _, _, row in _iter_side(side_files):
        f = F.decode_f16(row["feats"], row["dim"])
        if acc is None:
            acc = CovarianceAccumulator(f.shape[1])
        acc.update(l2_normalize(f))
    if acc is None or acc.n < 2:
        raise DataError(str(side_files[0]) if side_files else "target", "fewer than 2 readable target frames: "
                        "cannot fit the whitening")
    wh = fit_whitening(acc, dim=settings.pca_dim)
    feats, owner, frame, paths, lists = [], [], [], [], []
    for k, _, row in _iter_side(side_files):
        f = wh.apply(F.decode_f16(row["feats"], row["dim"]))
        feats.append(f)
        owner.append(np.full(len(f), len(paths), dtype=np.int64))
        frame.append(np.arange(len(f), dtype=np.int64))
        paths.append(row["path"])
        lists.append(k)
    if settings.threshold is not None:
        thr, stats = float(settings.threshold), {"source": "user"}
    else:
        thr, stats = calibrate(wh)
    return TargetIndex(wh, np.concatenate(feats), np.concatenate(owner), np.concatenate(frame), paths, lists,
                       thr, stats, ident)


def calibration_records(side_files: Sequence[Path], n: int) -> list[tuple[int, dict[str, Any]]]:
    """``n`` target records spread evenly over the target lists: (list number, record)."""
    rows = [(k, {"path": row["path"], "kind": row.get("kind", "video")}) for k, _, row in _iter_side(side_files)]
    if not rows:
        return []
    if len(rows) <= n:
        return rows
    pick = np.linspace(0, len(rows) - 1, n).round().astype(int)
    return [rows[i] for i in sorted(set(pick.tolist()))]


def crop_threshold(model: Any, records: Sequence[dict[str, Any]], data_roots: Sequence[str | None],
                   whitening: Whitening, settings: DedupSettings, batch_size: int = 64, device: str = "cpu",
                   backend: str = "pyav", progress: bool | None = None) -> tuple[float, dict[str, Any]]:
    """Mean cosine similarity (after whitening) between random crops of the same target frame.

    Decodes one frame per record and runs the backbone on its crops batch by batch (not all at
    the end), so the progress bar moves with the actual work: with the default 200 frames x 5
    crops this is a ResNet-50 pass over 1000 crops, minutes on a CPU.
    """
    mean, std, size = F.model_norm(model)
    short = int(round(size * 256 / 224))
    feats: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    used = 0

    def flush(final: bool = False) -> None:
        # whole batches only (the rest waits): the batches are the same as for one big call
        x = np.concatenate(pending) if pending else np.zeros((0,))
        n = len(x) if final else len(x) // batch_size * batch_size
        if n:
            feats.append(F.frame_features(model, x[:n], batch_size, device))
        pending[:] = [x[n:]] if n < len(x) else []

    with progress_bar(total=len(records), desc="dedup-threshold", enabled=progress, unit="frame") as bar:
        for i, (rec, root) in enumerate(zip(records, data_roots)):
            bar.update(1)
            try:
                frame = F.load_record_frames(rec, root, 1, min_side=short, backend=backend)[0]
            except (DataError, InputError, OSError, ValueError, RuntimeError) as err:
                log.warning("threshold calibration: skipping %s (%s)", rec.get("path"), err)
                continue
            rng = np.random.default_rng([settings.seed, i])
            pending.append(F.to_input(F.random_crops(frame, settings.num_crops, size, rng, settings.crop_min_area),
                                      mean, std))
            used += 1
            if sum(len(p) for p in pending) >= batch_size:
                flush()
        flush(final=True)
    if not used:
        raise DataError("target", "no readable target frame to calibrate the threshold; pass --threshold")
    mean_sim, std_sim, per_frame = crop_similarity(whitening.apply(np.concatenate(feats)), settings.num_crops)
    stats = {"source": "crops", "frames": used, "crops_per_frame": settings.num_crops, "mean": mean_sim,
             "std": std_sim, "min_frame_mean": float(per_frame.min()), "max_frame_mean": float(per_frame.max())}
    log.info("de-dup threshold from %d target frames x %d crops: %.4f (std %.4f)", used, settings.num_crops,
             mean_sim, std_sim)
    return mean_sim, stats


# --------------------------------------------------------------------------------------------
# web side
# --------------------------------------------------------------------------------------------
def web_process_fn(extractor: FeatureExtractor, index: TargetIndex, search: SimilarityIndex, max_pairs: int):
    def process(chunk: list[Any]) -> list[Outcome]:
        feats = extractor(chunk)
        rows, owners = [], []
        for pos, f in enumerate(feats):
            if isinstance(f, np.ndarray):
                rows.append(index.whitening.apply(f))
                owners.append(np.full(len(f), pos, dtype=np.int64))
        if rows:
            q = np.concatenate(rows)
            q_owner = np.concatenate(owners)
            q_frame = np.concatenate([np.arange(len(r)) for r in rows])
            qi, ti, sims, best = search.search(q, index.threshold)
            pairs = aggregate_pairs(qi, ti, sims, q_owner, index.owner)
            rec_best = np.full(len(chunk), -np.inf)
            np.maximum.at(rec_best, q_owner, best)
        else:
            pairs, rec_best = {}, np.full(len(chunk), -np.inf)
        by_rec: dict[int, list[tuple[float, int, int, int]]] = {}
        for (pos, tgt), (s, qrow, trow) in pairs.items():
            by_rec.setdefault(pos, []).append((s, tgt, int(q_frame[qrow]), int(index.frame[trow])))
        out = []
        for pos, rec in enumerate(chunk):
            f = feats[pos]
            if isinstance(f, str):
                out.append(Outcome(None, "unreadable", {"error": f}))
                continue
            max_sim = round(float(rec_best[pos]), 4)
            hits = sorted(by_rec.get(pos, []), key=lambda h: (-h[0], h[1]))
            if not hits:
                out.append(Outcome(rec, None, {"max_sim": max_sim}))
                continue
            listed = [{"target": index.paths[t], "target_list": int(index.lists[t]), "target_index": int(t),
                       "score": round(s, 6), "web_frame": wf, "target_frame": tf}
                      for s, t, wf, tf in hits[:max_pairs]]
            out.append(Outcome(None, "duplicate", {"max_sim": max(max_sim, listed[0]["score"]),
                                                   "n_pairs": len(hits), "pairs": listed}))
        return out

    return process


def export_pairs(web_dir: Path, threshold: float) -> tuple[Path, Path, int]:
    """pairs.jsonl / pairs.csv from the web stage's dropped rows (input order, then score)."""
    from omnisource.web.stage import DROPPED_NAME

    rows = []
    with open(web_dir / DROPPED_NAME, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if d.get("reason") != "duplicate":
                continue
            for p in d["extra"]["pairs"]:
                rows.append({"web": d["path"], "web_index": d["index"], "source": d.get("source"),
                             "query_label": d.get("query_label"), **p, "threshold": round(threshold, 6)})
    jl, cs = web_dir / "pairs.jsonl", web_dir / "pairs.csv"
    with atomic_open(jl, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    fields = ["web", "web_index", "source", "query_label", "target", "target_list", "target_index", "score",
              "web_frame", "target_frame", "threshold"]
    with atomic_open(cs, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return jl, cs, len(rows)


def _sync_index(path: Path, ident: str, rank: int, timeout: float = 7 * 24 * 3600.0) -> "TargetIndex | None":
    """All ranks meet after rank 0 wrote the index (a barrier, or polling the file)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        return TargetIndex.load(path) if rank else None
    if rank == 0:
        return None
    t0 = time.monotonic()
    while True:
        if path.exists():
            try:
                idx = TargetIndex.load(path)
            except (OSError, ValueError, KeyError):
                idx = None
            if idx is not None and idx.ident == ident:
                return idx
        if time.monotonic() - t0 > timeout:
            raise DataError(path, "timed out waiting for rank 0 to write the target index")
        time.sleep(0.5)


def run_dedup(web_manifest: str | Path, targets: Sequence[tuple[str | Path, str | Path | None]],
              output_dir: str | Path, model: Any, model_id: dict[str, Any], settings: DedupSettings, *,
              web_root: str | Path | None = None, batch_size: int = 64, num_workers: int = 0,
              device: str = "cpu", decode_backend: str = "pyav", chunk_size: int = 256, strict: bool = False,
              progress: bool | None = None, force: bool = False) -> dict[str, Any]:
    """The whole de-duplication (see the module docstring); returns a summary dict."""
    settings.validate()
    output_dir = Path(output_dir)
    if not targets:
        raise ConfigError("give at least one target list (--target)")
    rank, world = dist_info()

    # 1. target features (one resumable stage per target list)
    side_files, roots = [], []
    for k, (tlist, troot) in enumerate(targets):
        ex = FeatureExtractor(model, troot, settings.frames_per_video, batch_size=batch_size,
                              num_workers=num_workers, device=device, backend=decode_backend)
        try:
            res = target_feature_stage(tlist, troot, output_dir / "target" / str(k), ex, model_id,
                                       chunk_size=chunk_size, strict=strict, progress=progress, force=force)
        finally:
            ex.close()
        side_files.append(res.side)
        roots.append(None if troot is None else str(troot))
        if res.meta["counts"]["dropped"]["total"]:
            log.warning("target list %s: %d unreadable samples are not checked against", tlist,
                        res.meta["counts"]["dropped"]["total"])

    # 2. whitening + threshold + target matrix (rank 0 builds, the others wait for the file)
    from omnisource.utils.io import sha1_file

    ident = sha1_json({"model": model_id, "settings": {k: v for k, v in asdict(settings).items()
                                                       if k not in ("backend", "ivf_lists", "nprobe",
                                                                    "max_pairs_per_sample")},
                       "targets": [sha1_file(p) for p in side_files], "roots": roots})
    index_path = output_dir / INDEX_NAME
    index = None
    if rank == 0:
        with contextlib.suppress(OSError, ValueError, KeyError):
            index = None if force or not index_path.exists() else TargetIndex.load(index_path)
        if index is None or index.ident != ident:
            def calibrate(wh: Whitening) -> tuple[float, dict[str, Any]]:
                picked = calibration_records(side_files, settings.threshold_frames)
                return crop_threshold(model, [r for _, r in picked], [roots[k] for k, _ in picked], wh, settings,
                                      batch_size, device, decode_backend, progress=progress)

            index = build_target_index(side_files, settings, ident, calibrate)
            index.save(index_path)
    if world > 1:
        loaded = _sync_index(index_path, ident, rank)
        index = index if rank == 0 else loaded
    log.info("target index: %d frames of %d samples, %d dims, threshold %.4f", len(index.feats), len(index.paths),
             index.feats.shape[1], index.threshold)

    # 3. web stage
    search = SimilarityIndex(index.feats, backend=settings.backend, ivf_lists=settings.ivf_lists,
                             nprobe=settings.nprobe, seed=settings.seed)
    ex = FeatureExtractor(model, web_root, settings.frames_per_video, batch_size=batch_size,
                          num_workers=num_workers, device=device, backend=decode_backend)
    config = {"index": ident, "threshold": index.threshold, "data_root": None if web_root is None else str(web_root),
              "search": {"backend": search.backend if not search.exact else "exact", "ivf_lists": settings.ivf_lists,
                         "nprobe": settings.nprobe if settings.ivf_lists else None},
              "max_pairs_per_sample": settings.max_pairs_per_sample}
    try:
        res = run_stage("dedup", web_manifest, output_dir,
                        web_process_fn(ex, index, search, settings.max_pairs_per_sample), config,
                        chunk_size=chunk_size, strict=strict, progress=progress, force=force)
    finally:
        ex.close()

    # 4. pairs for inspection
    n_pairs = 0
    if rank == 0:
        _, _, n_pairs = export_pairs(output_dir, index.threshold)
    c = res.meta["counts"]
    return {"kept": c["out"]["total"], "input": c["in"]["total"], "dropped": c["dropped"]["by_reason"],
            "pairs": n_pairs, "threshold": index.threshold, "threshold_stats": index.threshold_stats,
            "target_frames": int(len(index.feats)), "dims": int(index.feats.shape[1]), "backend": search.backend,
            "manifest": str(res.manifest)}
