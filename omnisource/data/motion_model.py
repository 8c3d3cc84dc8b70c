"""The camera-motion model that perspective inflation samples from, and its file
(paper section 3.5, Eq. 2).

Why in the data layer: :mod:`omnisource.data.inflate` warps web images into pseudo clips with
homographies drawn from this model, at training time, in DataLoader workers; fitting the model
on real videos is a web stage (:mod:`omnisource.web.motion`, ``omnisource fit-motion``) that
writes the file this module reads.

**Canonical frame**, so statistics transfer across resolutions and aspect ratios: pixel
coordinates are centred on the frame centre and divided by half the longer side,
``x_c = (x - w/2) / s, y_c = (y - h/2) / s, s = max(w, h) / 2``; then ``H_c = T H T^-1``
normalised so ``H_c[2, 2] = 1``. Its 8 free entries (row-major, without ``H[2,2]``) are the
random vector: identity = ``[1, 0, 0, 0, 1, 0, 0, 0]``, translations are fractions of the half
long side, ``H_c[2, :2]`` the perspective terms.

``MotionModel`` holds one Gaussian over those vectors (maximum likelihood: sample mean and
biased covariance) and samples homographies, rejecting the rare draw that would fold the frame;
``MotionStats`` is the JSON file (atomic write) with the global and per-class models and the
counts of used/skipped pairs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnisource.errors import DataError, InputError
from omnisource.utils.io import atomic_write_json

FORMAT = "omnisource-motion"
VERSION = 1
IDENTITY8 = np.array([1, 0, 0, 0, 1, 0, 0, 0], dtype=np.float64)
PARAM_NAMES = ("h00", "h01", "h02", "h10", "h11", "h12", "h20", "h21")


# --------------------------------------------------------------------------------------------
# canonical frame
# --------------------------------------------------------------------------------------------
def canonical_transform(width: float, height: float) -> np.ndarray:
    """T mapping pixel coordinates to the canonical frame (centre origin, long half side = 1)."""
    s = max(width, height) / 2.0
    return np.array([[1 / s, 0, -width / 2 / s], [0, 1 / s, -height / 2 / s], [0, 0, 1]], dtype=np.float64)


def to_canonical(H: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel homography -> canonical 8-vector."""
    T = canonical_transform(width, height)
    Hc = T @ H @ np.linalg.inv(T)
    Hc = Hc / Hc[2, 2]
    return Hc.reshape(-1)[:8].copy()


def from_canonical(vec: np.ndarray, width: float, height: float) -> np.ndarray:
    """Canonical 8-vector (or 3x3 matrix) -> pixel homography for a ``width x height`` frame."""
    Hc = vec8_to_matrix(vec) if np.asarray(vec).shape != (3, 3) else np.asarray(vec, dtype=np.float64)
    T = canonical_transform(width, height)
    H = np.linalg.inv(T) @ Hc @ T
    return H / H[2, 2]


def vec8_to_matrix(vec: np.ndarray) -> np.ndarray:
    return np.append(np.asarray(vec, dtype=np.float64), 1.0).reshape(3, 3)


def corner_shift(Hc: np.ndarray, aspect: float = 1.0) -> float:
    """Largest displacement of a frame corner under canonical ``Hc`` (in canonical units), or inf
    when a corner goes behind the camera / the quad folds (orientation flip)."""
    ax, ay = (1.0, 1.0 / aspect) if aspect >= 1 else (aspect, 1.0)
    pts = np.array([[-ax, -ay, 1], [ax, -ay, 1], [ax, ay, 1], [-ax, ay, 1]], dtype=np.float64)
    q = pts @ Hc.T
    if np.any(q[:, 2] <= 1e-6):
        return float("inf")
    q = q[:, :2] / q[:, 2:]
    # a proper (non-folded) warp keeps the corners' winding order
    e = np.roll(q, -1, axis=0) - q
    cross = e[:, 0] * np.roll(e, -1, axis=0)[:, 1] - e[:, 1] * np.roll(e, -1, axis=0)[:, 0]
    if not np.all(cross > 0):
        return float("inf")
    return float(np.max(np.linalg.norm(q - pts[:, :2], axis=1)))


# --------------------------------------------------------------------------------------------
# the Gaussian model
# --------------------------------------------------------------------------------------------
@dataclass
class MotionModel:
    """``N(mu, Sigma)`` over the 8 canonical homography parameters."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int = 0

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64).reshape(8)
        self.sigma = np.asarray(self.sigma, dtype=np.float64).reshape(8, 8)
        if not (np.all(np.isfinite(self.mu)) and np.all(np.isfinite(self.sigma))):
            raise InputError("motion model has non-finite mu/Sigma")
        self.sigma = (self.sigma + self.sigma.T) / 2

    @classmethod
    def fit(cls, vectors: np.ndarray) -> "MotionModel":
        """Maximum-likelihood Gaussian: sample mean and biased (1/N) covariance."""
        x = np.asarray(vectors, dtype=np.float64).reshape(-1, 8)
        if len(x) == 0:
            raise DataError("motion", "no homographies to fit")
        mu = x.mean(axis=0)
        d = x - mu
        return cls(mu, d.T @ d / len(x), len(x))

    @classmethod
    def identity(cls) -> "MotionModel":
        return cls(IDENTITY8.copy(), np.zeros((8, 8)), 0)

    def _factor(self) -> np.ndarray:
        # eigen-factor rather than Cholesky: covariances fitted on few pairs can be singular
        w, v = np.linalg.eigh(self.sigma)
        return v * np.sqrt(np.clip(w, 0, None))

    def sample(self, rng: np.random.Generator, n: int, aspect: float = 1.0,
               max_corner_shift: float = 0.5, max_tries: int = 20) -> np.ndarray:
        """``n`` canonical 3x3 homographies. A draw that folds the frame or moves a corner by more
        than ``max_corner_shift`` is redrawn (at most ``max_tries`` times, then identity)."""
        L = self._factor()
        out = np.empty((n, 3, 3))
        for i in range(n):
            H = np.eye(3)
            for _ in range(max_tries):
                v = self.mu + L @ rng.standard_normal(8)
                cand = vec8_to_matrix(v)
                if corner_shift(cand, aspect) <= max_corner_shift:
                    H = cand
                    break
            out[i] = H
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"count": int(self.count), "mu": [float(x) for x in self.mu],
                "sigma": [[float(x) for x in row] for row in self.sigma]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "motion file") -> "MotionModel":
        try:
            return cls(np.array(d["mu"], dtype=np.float64), np.array(d["sigma"], dtype=np.float64),
                       int(d.get("count", 0)))
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(f"bad motion model ({err})", where) from None


@dataclass
class MotionStats:
    """Contents of ``motion.json``: the class-agnostic model, per-class models, provenance."""

    global_model: MotionModel
    per_class: dict[str, MotionModel] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def model(self, cls: str | int | None = None) -> MotionModel:
        """Per-class model when there is one for ``cls``, else the class-agnostic one."""
        if cls is not None and str(cls) in self.per_class:
            return self.per_class[str(cls)]
        return self.global_model

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION,
                "canonical_frame": "x_c=(x-w/2)/s, y_c=(y-h/2)/s, s=max(w,h)/2; H_c=T H T^-1, H_c[2,2]=1",
                "params": list(PARAM_NAMES), "global": self.global_model.to_dict(),
                "per_class": {k: m.to_dict() for k, m in sorted(self.per_class.items())}, "info": self.info}


def save_motion(path: str | Path, stats: MotionStats) -> None:
    atomic_write_json(path, stats.to_dict())


def load_motion(path: str | Path) -> MotionStats:
    path = Path(path)
    if not path.is_file():
        raise InputError("motion file not found", path)
    try:
        d = json.loads(path.read_text())
    except ValueError as err:
        raise InputError(f"invalid JSON: {err}", path) from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputError(f"not an omnisource motion file (expected format {FORMAT!r})", path)
    if int(d.get("version", 0)) > VERSION:
        raise InputError(f"motion file version {d['version']} is newer than this omnisource", path)
    return MotionStats(MotionModel.from_dict(d["global"], str(path)),
                       {str(k): MotionModel.from_dict(v, str(path)) for k, v in d.get("per_class", {}).items()},
                       d.get("info", {}))
