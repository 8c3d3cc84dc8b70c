"""Teacher calibration on held-out target data: how often is the teacher right at a confidence?

Teacher filtering keeps web samples the teacher is confident about, but a confidence of 0.6 means
"right 90% of the time" for a strong teacher and "right 40% of the time" for a weak one. A fixed
threshold therefore fits one teacher only (issue 19: the recipe's defaults fit the demo world).
Here the teacher's confidence is mapped to its probability of being right, measured on target
samples it never trained on (a held-out split of the *training* set, never the validation set):

* :func:`stratified_holdout` splits the training list per class;
* :func:`fit_calibration` fits Platt scaling, ``P(right | c) = sigmoid(a * logit(c) + b)``, to the
  held-out (confidence, right?) pairs, shrunk towards the identity map, and with the slope fixed
  at 1 below 200 samples: held-out splits of small target sets have a few dozen samples, where a
  binned reliability curve -- or even a free slope -- is mostly noise;
* :meth:`Calibration.threshold` is the confidence at which the teacher is right with a given
  probability (the per-source selection threshold), and :meth:`Calibration.correctness` the
  estimated precision of kept pseudo-labels (which sets a source's weight in joint training).

The estimate assumes the web sample shows one of the target classes. Irrelevant web samples the
teacher accepts lower the real precision below it; on generated worlds the pipeline reports both.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

_EPS = 1e-4


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int) -> list[bool]:
    """Per class, mark ``round(fraction * n)`` samples as held out (True), at random but
    reproducibly. A class keeps at least one sample for fitting, and a class with a single
    sample holds none out (the teacher must see every class)."""
    if not 0 < fraction < 1:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = [False] * len(labels)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    for y in sorted(by_class):
        idx = by_class[y]
        k = min(len(idx) - 1, int(round(fraction * len(idx))))
        for i in rng.permutation(len(idx))[:k]:
            held[idx[int(i)]] = True
    return held


def _logit(c: np.ndarray | float) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(c / (1 - c))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


@dataclass
class Calibration:
    """Platt scaling of one teacher's top-1 confidence."""

    a: float                 # slope on logit(confidence); <= 0: confidence says nothing
    b: float                 # offset
    n: int                   # held-out samples it was fitted on
    accuracy: float          # the teacher's top-1 on them
    mean_confidence: float   # its mean top-1 confidence on them (> accuracy: over-confident)

    def correctness(self, conf: Any) -> np.ndarray:
        """Estimated probability that the teacher's top-1 is right at confidence ``conf``."""
        return _sigmoid(self.a * _logit(conf) + self.b)

    def threshold(self, precision: float) -> float | None:
        """The confidence at which the teacher is right with probability ``precision``; ``None``
        when confidence does not rank right above wrong predictions (slope <= 0)."""
        if self.a <= 1e-6:
            return None
        p = min(max(precision, _EPS), 1 - _EPS)
        z = (math.log(p / (1 - p)) - self.b) / self.a     # a slope near 0 puts it far out: clip
        return float(min(1.0, max(0.0, 1.0 / (1.0 + math.exp(-min(50.0, max(-50.0, z)))))))

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        return cls(a=float(d["a"]), b=float(d["b"]), n=int(d["n"]), accuracy=float(d["accuracy"]),
                   mean_confidence=float(d["mean_confidence"]))


# below this many held-out samples only the offset is fitted (the slope stays 1)
MIN_SAMPLES_FOR_SLOPE = 200


def fit_calibration(conf: Sequence[float], right: Sequence[bool], prior: float = 1.0,
                    min_for_slope: int = MIN_SAMPLES_FOR_SLOPE) -> Calibration:
    """Platt scaling fitted by Newton's method on the held-out pairs, shrunk towards "the
    teacher's confidence is its precision" (a = 1, b = 0).

    Why shrunk and why often offset-only: held-out splits of small target sets hold a few dozen
    samples, and a free two-parameter fit on 16 of them swung thresholds from 0 to 1 between seeds
    (measured on the harness's weak-teacher world: one seed kept a single web video). Below
    ``min_for_slope`` samples the slope is fixed at 1 and only the offset is fitted -- whether the
    teacher is over- or under-confident, the part a small sample can tell -- and a Gaussian prior
    of strength ``prior`` (in samples' worth of curvature) pulls both parameters towards the
    identity map. Platt's smoothed targets ((n+ + 1) / (n+ + 2), 1 / (n- + 2)) keep the fit finite
    when every held-out prediction is right (or wrong)."""
    x = _logit(np.asarray(conf, dtype=np.float64))
    y = np.asarray(right, dtype=bool)
    if x.size == 0:
        raise ValueError("no held-out samples to calibrate on")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    free_slope = x.size >= min_for_slope
    a, b = 1.0, 0.0
    for _ in range(100):
        p = _sigmoid(a * x + b)
        w = p * (1 - p)
        if free_slope:
            X = np.stack([x, np.ones_like(x)], axis=1)
            g = X.T @ (p - t) + prior * np.array([a - 1.0, b])
            H = (X * w[:, None]).T @ X + prior * np.eye(2) + 1e-9 * np.eye(2)
            step = np.linalg.solve(H, g)
        else:
            step = np.array([0.0, (float((p - t).sum()) + prior * b) / (float(w.sum()) + prior + 1e-9)])
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-9:
            break
    c = np.asarray(conf, dtype=np.float64)
    return Calibration(a=float(a), b=float(b), n=int(x.size), accuracy=float(y.mean()),
                       mean_confidence=float(c.mean()))


def above_chance(precision: float, num_classes: int) -> float:
    """Share of a pseudo-label's information above a uniformly random label: 0 at chance
    (1 / classes), 1 when always right, negative below chance."""
    if num_classes < 2:
        return 1.0
    return (precision * num_classes - 1) / (num_classes - 1)
