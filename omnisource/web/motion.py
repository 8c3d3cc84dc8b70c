"""Camera-motion statistics of real videos, for inflating web images into pseudo clips
(paper section 3.5, Eq. 2; ``omnisource fit-motion``).

The paper warps an image with homographies ``H_i ~ N(mu, Sigma)`` "estimated using maximum
likelihood estimation on the original video source". This module does the estimation:

1. for frame pairs ``(t, t + interval)`` of each target video, match features (OpenCV ORB by
   default, SIFT optionally) between the two frames and fit ``H`` with RANSAC
   (``cv2.findHomography``), ``x_{t+interval} ~ H x_t``;
2. skip pairs the estimator cannot be trusted on, and count why: too few features or matches
   (``few_matches``), too few RANSAC inliers (``few_inliers``), or a warp no camera makes
   between neighbouring frames (``implausible``: a corner moves by more than
   ``max_corner_shift`` of the frame, orientation flips - typically a scene cut);
3. express every ``H`` in a **canonical frame** so statistics transfer across resolutions and
   aspect ratios: pixel coordinates are centred on the frame centre and divided by half the
   longer side, ``x_c = (x - w/2) / s, y_c = (y - h/2) / s, s = max(w, h) / 2``; then
   ``H_c = T H T^-1`` normalised so ``H_c[2, 2] = 1``. Its 8 free entries (row-major, without
   ``H[2,2]``) are the random vector: identity = ``[1, 0, 0, 0, 1, 0, 0, 0]``, translations
   are fractions of the half long side, ``H_c[2, :2]`` the perspective terms;
4. the maximum-likelihood Gaussian is the sample mean and the *biased* (1/N) covariance of
   those vectors, class-agnostic and per class.

The model, the canonical frame and the file format live in :mod:`omnisource.data.motion_model`
(re-exported here): :mod:`omnisource.data.inflate` samples from them for the ``perspective``
transform without importing this stage.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from omnisource.data.motion_model import (FORMAT, IDENTITY8, PARAM_NAMES, VERSION,
                                         MotionModel, MotionStats, canonical_transform, corner_shift,
                                         from_canonical, load_motion, save_motion, to_canonical,
                                         vec8_to_matrix)
from omnisource.errors import DataError, InputError

log = logging.getLogger("omnisource.web.motion")

# the model and its file are re-exported: `from omnisource.web.motion import MotionStats` keeps working
__all__ = ["FORMAT", "IDENTITY8", "PARAM_NAMES", "VERSION", "Estimator", "MotionModel", "MotionStats",
           "canonical_transform", "corner_shift", "fit_motion", "from_canonical", "load_motion",
           "save_motion", "to_canonical", "vec8_to_matrix", "video_homographies"]


# --------------------------------------------------------------------------------------------
# homography estimation
# --------------------------------------------------------------------------------------------
@dataclass
class Estimator:
    """Feature matching + RANSAC homography between two frames (OpenCV)."""

    detector: str = "orb"           # 'orb' | 'sift'
    max_features: int = 2000
    min_matches: int = 20
    min_inliers: int = 15
    ransac_thresh: float = 2.0      # pixels, at the working resolution
    ratio: float = 0.8              # Lowe's ratio test
    work_side: int = 320            # frames are resized so their long side is this (speed + scale invariance)
    max_corner_shift: float = 0.5   # canonical units (1 = half the long side)

    def __post_init__(self) -> None:
        import cv2

        if self.detector == "orb":
            self._det = cv2.ORB_create(nfeatures=self.max_features, fastThreshold=10)
            self._norm = cv2.NORM_HAMMING
        elif self.detector == "sift":
            self._det = cv2.SIFT_create(nfeatures=self.max_features)
            self._norm = cv2.NORM_L2
        else:
            raise InputError(f"unknown feature detector {self.detector!r} (orb | sift)")
        self._matcher = cv2.BFMatcher(self._norm)

    def _prep(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        g = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        h, w = g.shape
        scale = self.work_side / max(h, w)
        if scale < 1:
            g = cv2.resize(g, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        else:
            scale = 1.0
        return g, scale

    def features(self, frame: np.ndarray):
        g, scale = self._prep(frame)
        kp, desc = self._det.detectAndCompute(g, None)
        return kp, desc, scale, g.shape

    def estimate(self, a: np.ndarray, b: np.ndarray, fa=None, fb=None) -> tuple[np.ndarray | None, str, int]:
        """Canonical 8-vector of ``x_b ~ H x_a`` or None; plus the reason ('ok' | skip reason)
        and the RANSAC inlier count. ``fa``/``fb`` reuse :meth:`features` results."""
        import cv2

        kpa, da, sa, shape = fa if fa is not None else self.features(a)
        kpb, db, _, _ = fb if fb is not None else self.features(b)
        if da is None or db is None or len(kpa) < self.min_matches or len(kpb) < self.min_matches:
            return None, "few_matches", 0
        knn = self._matcher.knnMatch(da, db, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]
        if len(good) < self.min_matches:
            return None, "few_matches", 0
        pa = np.float32([kpa[m.queryIdx].pt for m in good])
        pb = np.float32([kpb[m.trainIdx].pt for m in good])
        H, mask = cv2.findHomography(pa, pb, cv2.RANSAC, self.ransac_thresh, maxIters=2000, confidence=0.995)
        inliers = int(mask.sum()) if mask is not None else 0
        if H is None or inliers < self.min_inliers:
            return None, "few_inliers", inliers
        h, w = shape
        if abs(H[2, 2]) < 1e-12:
            return None, "implausible", inliers
        vec = to_canonical(H, w, h)
        if corner_shift(vec8_to_matrix(vec), w / h) > self.max_corner_shift:
            return None, "implausible", inliers
        return vec, "ok", inliers


def video_homographies(path: str | Path, estimator: Estimator, interval: int = 1, max_pairs: int = 64,
                       backend: str = "pyav") -> tuple[list[np.ndarray], Counter]:
    """Canonical homographies between frames ``t`` and ``t + interval`` of one video, for up to
    ``max_pairs`` pairs spread evenly over it. Returns (vectors, counts by reason)."""
    from omnisource.data.decode import open_video

    counts: Counter = Counter()
    with open_video(str(path), backend=backend) as reader:
        n = len(reader)
        if n <= interval:
            counts["too_short"] += 1
            return [], counts
        starts = np.unique(np.linspace(0, n - 1 - interval, num=min(max_pairs, n - interval)).round().astype(int))
        out = []
        for t in starts:
            a, b = reader.get_frames([int(t), int(t + interval)])
            vec, why, _ = estimator.estimate(a, b)
            counts[why] += 1
            if vec is not None:
                out.append(vec)
    return out, counts


def fit_motion(videos: Iterable[tuple[str | Path, Any]], estimator: Estimator | None = None, *, interval: int = 1,
               max_pairs: int = 64, min_class_pairs: int = 10, class_names: Sequence[str] | None = None,
               progress: bool | None = None, strict: bool = False) -> MotionStats:
    """Fit the class-agnostic and per-class Gaussians over ``(path, label)`` videos.

    An unreadable video is a counted, logged skip (``strict`` raises). Classes with fewer than
    ``min_class_pairs`` usable pairs get no per-class model (they fall back to the global one).
    """
    from omnisource.web.stage import progress_bar

    est = estimator or Estimator()
    videos = list(videos)
    per_class: dict[str, list[np.ndarray]] = {}
    everything: list[np.ndarray] = []
    pairs = Counter()
    vids = Counter()
    bar = progress_bar(total=len(videos), desc="fit-motion", enabled=progress, unit="video")
    for path, label in videos:
        try:
            vecs, counts = video_homographies(path, est, interval, max_pairs)
        except DataError as err:
            if strict:
                raise
            log.warning("skipping unreadable video %s: %s", path, err.reason)
            vids["unreadable"] += 1
            bar.update(1)
            continue
        vids["used" if vecs else "no_pairs"] += 1
        pairs.update(counts)
        everything += vecs
        if label is not None and vecs:
            key = class_names[label] if (class_names is not None and isinstance(label, int)) else str(label)
            per_class.setdefault(key, []).extend(vecs)
        bar.update(1)
    bar.close()
    if not everything:
        raise DataError("fit-motion", f"no usable frame pairs (pairs: {dict(pairs)}, videos: {dict(vids)})")
    info = {"videos": dict(vids), "pairs": dict(pairs), "interval": interval, "max_pairs_per_video": max_pairs,
            "estimator": {k: v for k, v in est.__dict__.items() if not k.startswith("_")},
            "classes_without_model": sorted(k for k, v in per_class.items() if len(v) < min_class_pairs)}
    models = {k: MotionModel.fit(np.stack(v)) for k, v in per_class.items() if len(v) >= min_class_pairs}
    return MotionStats(MotionModel.fit(np.stack(everything)), models, info)
