"""Untrimmed web videos -> training samples, guided by a teacher (paper section 3.5, Fig. 2).

Nothing is cut or re-encoded: samples point into the source video, and
:class:`omnisource.data.datasets.ManifestDataset` samples inside them.

* **2D students (snippets)**: frames at a low rate (``fps``, 1 by default) are scored by a 2D
  teacher and split into positive (confidence >= ``pos_threshold``, and argmax == query class
  with ``agree``) and negative frames. Each training sample is a snippet of ``num_pos``
  positive + ``num_neg`` negative frames labelled with the (first) positive's class: mixing in
  negative frames gives harder examples than positives alone (the paper's 1 + 2). Records carry
  ``frame_inds`` (absolute frame numbers, in temporal order).
* **3D students (clips)**: the video is split into ``window``-second windows (stride
  ``stride``, 10 s by default), each scored by the teacher on a clip sampled inside it (a 3D
  teacher: clips of its recipe; a 2D teacher: segments). Positive windows are kept with the
  teacher's label; records carry ``segment: [start, end]`` seconds and ``meta.frame_range``.

Runs on the stage framework: resumable after kill -9, sharded under torchrun, unreadable videos
counted as drops. Choices are deterministic (negatives are drawn with a generator seeded by the
video path), so a resumed or sharded run writes the same bytes.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from omnisource.errors import ConfigError
from omnisource.web import features as F
from omnisource.web.stage import Outcome, StageResult, run_stage
from omnisource.web.teacher import SetupAbort, TeacherEnsemble, View, topk_sparse, unwrap_setup_errors

log = logging.getLogger("omnisource.web.untrimmed")


@dataclass
class UntrimmedSettings:
    mode: str = "2d"                   # '2d' snippets | '3d' windows
    fps: float = 1.0                   # 2d: frames scored per second
    pos_threshold: float = 0.5         # teacher confidence of a positive frame / window
    neg_threshold: float | None = None  # 2d: negatives score below this (default: pos_threshold)
    num_pos: int = 1                   # 2d: positive frames per snippet
    num_neg: int = 2                   # 2d: negative frames per snippet
    max_samples: int | None = None     # per video (most confident positives first)
    agree: bool = False                # positives must also match the query class
    window: float = 10.0               # 3d: window length, seconds
    stride: float | None = None        # 3d: window start spacing (default: window)
    min_window: float | None = None    # 3d: shortest tail window kept (default: window / 2)
    seed: int = 0

    def validate(self) -> "UntrimmedSettings":
        if self.mode not in ("2d", "3d"):
            raise ConfigError(f"mode must be '2d' (snippets) or '3d' (windows), got {self.mode!r}")
        if self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")
        if not 0 <= self.pos_threshold <= 1:
            raise ConfigError(f"pos threshold must be in [0, 1], got {self.pos_threshold}")
        if self.neg_threshold is not None and not 0 <= self.neg_threshold <= self.pos_threshold:
            raise ConfigError("neg threshold must be in [0, pos threshold]")
        if self.num_pos < 1 or self.num_neg < 0:
            raise ConfigError("a snippet needs >= 1 positive and >= 0 negative frames")
        if self.window <= 0 or (self.stride is not None and self.stride <= 0):
            raise ConfigError("window and stride must be positive")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError("max samples per video must be >= 1")
        return self


def _rng_for(path: str, seed: int) -> np.random.Generator:
    h = int.from_bytes(hashlib.sha1(path.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, h])


# --------------------------------------------------------------------------------------------
# decoding (workers)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UntrimmedPlan:
    views: tuple[View, ...]
    data_root: str | None
    settings: UntrimmedSettings
    backend: str = "pyav"


def windows_for(duration: float, s: UntrimmedSettings) -> list[tuple[float, float]]:
    """``[start, end]`` windows covering ``[0, duration]``; a short tail is kept when long enough."""
    stride = s.stride or s.window
    min_len = s.window / 2 if s.min_window is None else s.min_window
    out = []
    t = 0.0
    while t < duration - 1e-9:
        end = min(t + s.window, duration)
        if end - t >= min(min_len, s.window) or not out:
            out.append((round(t, 3), round(end, 3)))
        if end >= duration:
            break
        t += stride
    return out


def load_untrimmed(rec: Any, plan: UntrimmedPlan) -> dict[str, Any]:
    """Decode what the teacher needs of one untrimmed video (uint8 crops; normalised later).

    2d: ``{'frames': [F] absolute indices, 'crops': {view: [F, H, W, 3]}}``;
    3d: ``{'windows': [(start, end, lo, hi)], 'crops': {view: [W * frames_per_window, H, W, 3]}}``.
    """
    path = F.resolve_media(F._get(rec, "path"), plan.data_root)
    kind = F.record_kind(rec)
    if kind == "image":
        raise ConfigError(f"{rec.path}: untrimmed processing needs videos, not images")
    s = plan.settings
    reader = F.open_reader(path, kind, plan.backend)
    try:
        n = len(reader)
        fps = float(reader.info.fps or 0)
        if fps <= 0 or n < 1:
            from omnisource.errors import DataError

            raise DataError(str(path), "unknown frame rate or no frames")
        start = int(getattr(reader, "start_index", 0) or 0)
        duration = n / fps
        if s.mode == "2d":
            step = fps / s.fps
            inds = sorted({start + min(n - 1, int((k + 0.5) * step)) for k in range(max(1, int(n / step)))})
            frames = reader.get_frames(inds)
            return {"frames": inds, "fps": fps, "num_frames": n,
                    "crops": {i: v.crops(frames) for i, v in enumerate(plan.views)}}
        wins = []
        wanted: dict[int, list[list[int]]] = {i: [] for i in range(len(plan.views))}
        for (t0, t1) in windows_for(duration, s):
            lo = start + min(n - 1, int(round(t0 * fps)))
            hi = start + max(lo - start + 1, min(n, int(round(t1 * fps))))
            wins.append((t0, t1, lo, hi))
            for i, v in enumerate(plan.views):
                wanted[i].append(v.video_indices(lo, hi))
        union = sorted({j for lists in wanted.values() for lst in lists for j in lst})
        frames = reader.get_frames(union)
    finally:
        reader.close()
    pos = {j: k for k, j in enumerate(union)}
    crops = {i: v.crops(frames[[pos[j] for lst in wanted[i] for j in lst]]) for i, v in enumerate(plan.views)}
    return {"windows": wins, "fps": fps, "num_frames": n, "crops": crops,
            "per_window": {i: len(wanted[i][0]) if wanted[i] else 0 for i in wanted}}


# --------------------------------------------------------------------------------------------
# scoring + sample construction (main process)
# --------------------------------------------------------------------------------------------
def _probs(ens: TeacherEnsemble, crops: dict[int, np.ndarray], n_items: int, per_item: dict[int, int] | None,
           batch: int) -> np.ndarray:
    """Mean teacher probabilities ``[n_items, C]`` (2d: one frame per item; 3d: one window)."""
    acc = np.zeros((n_items, ens.num_classes), dtype=np.float64)
    for i, v in enumerate(ens.views):
        c = crops[i]
        k = 1 if per_item is None else per_item[i]
        for b0 in range(0, n_items, batch):
            b1 = min(n_items, b0 + batch)
            x = v.normalize(c[b0 * k:b1 * k])                  # 2d: [B*k, 3, H, W]; 3d: [B*V, 3, T, H, W]
            if v.layout == "2d":
                x = x.reshape((b1 - b0, k) + x.shape[1:])      # segments of one item
            else:
                x = x.reshape((b1 - b0, -1) + x.shape[1:])     # views of one item
            acc[b0:b1] += ens._forward(i, list(x), pad=False)   # per-video batches: chunk-independent
    return (acc / len(ens.views)).astype(np.float32)


def _confident(rec: Any, probs: np.ndarray, s: UntrimmedSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row confidence, predicted class, and which rows pass ``pos_threshold`` (and, with
    ``agree``, predict the class the video was crawled for) -- the positives of both modes."""
    conf = probs.max(1)
    label = probs.argmax(1)
    q = rec.query_label if isinstance(rec.query_label, int) and not isinstance(rec.query_label, bool) else None
    if s.agree and q is None:
        raise SetupAbort(ConfigError("--agree needs integer query labels (pass --label-map)"))
    positive = conf >= s.pos_threshold
    if s.agree:
        positive &= label == q
    return conf, label, positive


def snippets_for(rec: Any, inds: list[int], probs: np.ndarray, s: UntrimmedSettings) -> tuple[list[Any], dict]:
    """Snippet records of one video from its per-frame probabilities (2d mode)."""
    conf, label, positive = _confident(rec, probs, s)
    neg_thr = s.pos_threshold if s.neg_threshold is None else s.neg_threshold
    negative = (~positive) & (conf < neg_thr) if s.neg_threshold is not None else ~positive
    pos_idx = [int(i) for i in np.argsort(-conf[positive], kind="stable")]
    pos_frames = np.nonzero(positive)[0][pos_idx] if positive.any() else np.zeros(0, int)
    neg_frames = np.nonzero(negative)[0]
    info = {"frames": len(inds), "positives": int(positive.sum()), "negatives": int(negative.sum())}
    n_snip = len(pos_frames) // s.num_pos
    if s.max_samples is not None:
        n_snip = min(n_snip, s.max_samples)
    if n_snip == 0:
        info["reason"] = "no_positive"
        return [], info
    if len(neg_frames) < s.num_neg:
        info["reason"] = "too_few_negatives"
        return [], info
    rng = _rng_for(rec.path, s.seed)
    out = []
    for k in range(n_snip):
        ps = pos_frames[k * s.num_pos:(k + 1) * s.num_pos]
        ns = rng.choice(neg_frames, size=s.num_neg, replace=False) if s.num_neg else np.zeros(0, int)
        chosen = sorted(int(inds[j]) for j in [*ps.tolist(), *ns.tolist()])
        lead = int(ps[0])
        meta = dict(rec.meta or {})
        meta["untrimmed"] = {"mode": "2d", "positive_frames": sorted(int(inds[j]) for j in ps),
                             "topk": topk_sparse(probs[lead], 3)}
        out.append(replace(rec, kind="video", label=int(label[lead]), score=round(float(conf[lead]), 6),
                           frame_inds=chosen, segment=None, meta=meta))
    return out, info


def windows_records(rec: Any, wins: list[tuple], probs: np.ndarray, s: UntrimmedSettings) -> tuple[list[Any], dict]:
    conf, label, keep = _confident(rec, probs, s)
    order = [int(i) for i in np.nonzero(keep)[0]]
    if s.max_samples is not None:
        order = sorted(sorted(order, key=lambda i: -conf[i])[: s.max_samples])
    out = []
    for i in order:
        t0, t1, lo, hi = wins[i]
        meta = dict(rec.meta or {})
        meta["untrimmed"] = {"mode": "3d", "frame_range": [int(lo), int(hi)], "topk": topk_sparse(probs[i], 3)}
        out.append(replace(rec, kind="video", label=int(label[i]), score=round(float(conf[i]), 6),
                           segment=(float(t0), float(t1)), frame_inds=None, meta=meta))
    return out, {"windows": len(wins), "positives": len(order)}


def untrimmed_process_fn(ens: TeacherEnsemble, plan: UntrimmedPlan, batch: int):
    s = plan.settings
    fn = functools.partial(load_untrimmed, plan=plan)

    def process(chunk: list[Any]) -> list[Outcome]:
        out = []
        for rec, loaded in zip(chunk, ens.pool.imap(fn, chunk)):
            if loaded.error is not None:
                if loaded.error.startswith("ConfigError"):
                    raise SetupAbort(ConfigError(loaded.error.split(": ", 1)[-1]))
                out.append(Outcome(None, "unreadable", {"error": loaded.error}))
                continue
            d = loaded.payload
            if s.mode == "2d":
                probs = _probs(ens, d["crops"], len(d["frames"]), None, batch)
                recs, info = snippets_for(rec, d["frames"], probs, s)
                info["frame_scores"] = [round(float(x), 4) for x in probs.max(1)]
            else:
                probs = _probs(ens, d["crops"], len(d["windows"]), d["per_window"], batch)
                recs, info = windows_records(rec, d["windows"], probs, s)
                info["window_scores"] = [round(float(x), 4) for x in probs.max(1)]
            reason = None if recs else info.pop("reason", "no_positive")
            out.append(Outcome(recs, reason, info))
        return out

    return process


def untrimmed_stage(input_manifest: str | Path, output_dir: str | Path, ens: TeacherEnsemble,
                    settings: UntrimmedSettings, *, data_root: str | None, batch_size: int = 32,
                    label_map: Sequence[str] | None = None, chunk_size: int = 4, strict: bool = False,
                    progress: bool | None = None, force: bool = False, backend: str = "pyav") -> StageResult:
    settings.validate()
    if settings.mode == "2d" and any(v.layout != "2d" for v in ens.views):
        raise ConfigError("snippets for 2D students are scored frame by frame: use 2D teachers (mode 2d)")
    plan = UntrimmedPlan(ens.views, data_root, settings, backend)
    from omnisource.web.filter import _reader

    config = {"ensemble": ens.describe(), "settings": asdict(settings), "data_root": data_root,
              "label_map": list(label_map) if label_map else None}
    with unwrap_setup_errors():
        return run_stage(f"untrimmed-{settings.mode}", input_manifest, output_dir,
                         untrimmed_process_fn(ens, plan, batch_size), config, chunk_size=chunk_size, strict=strict,
                         reader=_reader(label_map), progress=progress, force=force)
