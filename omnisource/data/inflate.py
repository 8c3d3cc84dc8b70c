"""Web image -> pseudo clip (paper section 3.5, Table 8), at dataset time.

Three ways to turn one image into ``T`` frames, all returning uint8 ``[T, H, W, 3]`` of the
input's size:

``still``
    the image replicated ``T`` times (what mmaction2 ships). Cheap, but static clips differ
    visibly from natural videos, which change over time.
``translate``
    a window of the input's size moving across the image enlarged by ``1 + 2*margin`` - a camera
    panning at constant speed (``speed='constant'``: one random direction and speed, the
    whole travel fits in the margin) or at random speed (``speed='random'``: a new velocity
    every frame, a bounded random walk). Sub-pixel positions via ``cv2.warpAffine`` so slow pans
    are smooth. The paper found translation does not mimic camera motion well (Table 8).
``perspective``
    the paper's method (Eq. 2): ``J_1 = I``, ``J_i = H_i(J_{i-1})`` with ``H_i ~ N(mu, Sigma)`` over
    the 8 free homography parameters, composed cumulatively. ``mu`` and ``Sigma`` come from
    ``omnisource fit-motion`` (a :class:`~omnisource.data.motion_model.MotionStats` file), class-agnostic
    by default (the paper's better variant) or per class when a label is passed. Homographies
    live in the canonical frame of :mod:`omnisource.data.motion_model` (centred, long half side = 1) and
    are mapped to the image's pixel grid, so a model fitted on 340x256 videos warps a 1800x1200
    photo by the same relative motion. Consecutive frames of the output are related exactly by
    the sampled ``H_i`` (re-estimating them recovers ``N(mu, Sigma)``; see the tests).
    Borders uncovered by the warp are filled by reflection (``border='reflect'``, default),
    replication (``'replicate'``) or black (``'constant'``); ``border='crop'`` instead warps an
    image enlarged by ``1 + 2*margin`` and views its centre, so uncovered borders rarely show.

Use :func:`inflate_image` directly, or :func:`make_inflater` to get the
``inflate(image, num_frames, rng)`` callable that ``ImageDataset(inflate=...)`` takes
(``build_inflater(config_dict)`` builds it from a YAML config section).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from omnisource.errors import ConfigError

MODES = ("still", "translate", "perspective")
_BORDERS = ("reflect", "replicate", "constant", "crop")


def _cv2():
    import cv2

    from omnisource.data.workers import configure_opencv

    configure_opencv()
    return cv2


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 image, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def still(img: np.ndarray, num_frames: int) -> np.ndarray:
    """The image repeated ``num_frames`` times (a real copy: callers may write into frames)."""
    img = _check_image(img)
    return np.repeat(img[None], num_frames, axis=0)


def translate(img: np.ndarray, num_frames: int, rng: np.random.Generator, *, margin: float = 0.1,
              speed: str = "constant", max_speed: float | None = None) -> np.ndarray:
    """A window panning across the image enlarged by ``1 + 2*margin`` (module docstring).

    ``max_speed``: largest step per frame in pixels of the output (default: the speed that
    crosses the whole margin over the clip).
    """
    cv2 = _cv2()
    img = _check_image(img)
    if speed not in ("constant", "random"):
        raise ConfigError(f"translate speed must be 'constant' or 'random', got {speed!r}")
    h, w = img.shape[:2]
    s = 1.0 + 2.0 * margin
    room = np.array([(s - 1.0) * w, (s - 1.0) * h])          # window offsets range over [0, room]
    steps = max(1, num_frames - 1)
    vmax = float(max_speed) if max_speed is not None else float(np.linalg.norm(room)) / steps
    if speed == "constant":
        ang = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(ang), np.sin(ang)])
        v = direction * rng.uniform(0.25, 1.0) * vmax
        travel = np.abs(v) * steps
        v = v * np.min(np.where(travel > room, room / np.maximum(travel, 1e-9), 1.0))  # fit in the margin
        span = np.abs(v) * steps
        lo = np.where(v >= 0, 0.0, span)
        start = lo + rng.uniform(0, 1, 2) * (room - span)
        pos = start[None] + np.arange(num_frames)[:, None] * v[None]
    else:
        pos = np.empty((num_frames, 2))
        pos[0] = rng.uniform(0, 1, 2) * room
        for t in range(1, num_frames):
            v = rng.uniform(-1, 1, 2) * vmax / np.sqrt(2)
            pos[t] = np.clip(pos[t - 1] + v, 0, room)
    out = np.empty((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        # output pixel x samples the enlarged image at x + pos, i.e. the input at (x + pos) / s
        M = np.array([[1 / s, 0, pos[t, 0] / s], [0, 1 / s, pos[t, 1] / s]], dtype=np.float64)
        cv2.warpAffine(img, M, (w, h), dst=out[t], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REFLECT_101)
    return out


def perspective(img: np.ndarray, num_frames: int, rng: np.random.Generator, motion: Any = None, *,
                label: int | str | None = None, border: str = "reflect", margin: float = 0.1,
                max_corner_shift: float = 0.5) -> np.ndarray:
    """Frames ``J_i = (H_i o ... o H_2)(I)``, ``H_i ~ N(mu, Sigma)`` (paper Eq. 2).

    ``motion``: a :class:`~omnisource.data.motion_model.MotionModel`, a ``MotionStats`` (its per-class
    model for ``label`` when present, else the global one) or a path to ``motion.json``.
    """
    from omnisource.data.motion_model import MotionModel, MotionStats, from_canonical

    cv2 = _cv2()
    img = _check_image(img)
    if border not in _BORDERS:
        raise ConfigError(f"border must be one of {', '.join(_BORDERS)}, got {border!r}")
    if motion is None:
        raise ConfigError("the perspective transform needs a motion model (omnisource fit-motion)")
    if isinstance(motion, (str, Path)):
        motion = _cached_motion(str(motion))
    if isinstance(motion, MotionStats):
        motion = motion.model(label)
    if not isinstance(motion, MotionModel):
        raise ConfigError(f"motion must be a MotionModel, MotionStats or a path, got {type(motion).__name__}")
    h, w = img.shape[:2]
    steps = motion.sample(rng, max(0, num_frames - 1), aspect=w / h, max_corner_shift=max_corner_shift)
    if border == "crop":
        # warp an enlarged image and look at its centre window of the input size: the window
        # is the camera frame, so H_i (canonical for the window) maps to the enlarged grid
        s = 1.0 + 2.0 * margin
        big = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
        ox, oy = (big.shape[1] - w) / 2.0, (big.shape[0] - h) / 2.0
        C = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], dtype=np.float64)   # big -> window pixels
        src, mode = big, cv2.BORDER_REFLECT_101
    else:
        C = np.eye(3)
        src = img
        mode = {"reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE,
                "constant": cv2.BORDER_CONSTANT}[border]
    out = np.empty((num_frames, h, w, 3), np.uint8)
    Mc = np.eye(3)   # cumulative canonical homography
    for t in range(num_frames):
        if t > 0:
            Mc = steps[t - 1] @ Mc
        # window pixel coordinates: J_t(x) = J_1(M^-1 x); with crop the source is the enlarged
        # image seen through C, so the full map source -> output is M_pix @ C
        M = from_canonical(Mc, w, h) @ C
        cv2.warpPerspective(src, M, (w, h), dst=out[t], flags=cv2.INTER_LINEAR, borderMode=mode)
    return out


_MOTION_CACHE: dict[str, Any] = {}


def _cached_motion(path: str) -> Any:
    """Motion files are loaded once per process (dataset workers call this per sample)."""
    from omnisource.data.motion_model import load_motion

    m = _MOTION_CACHE.get(path)
    if m is None:
        m = _MOTION_CACHE[path] = load_motion(path)
    return m


def inflate_image(img: np.ndarray, num_frames: int, mode: str = "still", rng: np.random.Generator | None = None,
                  motion: Any = None, **kw: Any) -> np.ndarray:
    """One image -> uint8 ``[num_frames, H, W, 3]`` by ``mode`` (``still|translate|perspective``).

    ``rng`` drives the random motion (a fresh unseeded generator when None); ``motion`` is the
    perspective model (MotionModel / MotionStats / path); other keywords go to the mode's
    function (``margin``, ``speed``, ``max_speed``, ``border``, ``label``, ``max_corner_shift``).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    rng = rng if rng is not None else np.random.default_rng()
    if mode == "still":
        if kw:
            raise ConfigError(f"still inflation takes no options, got {sorted(kw)}")
        return still(img, num_frames)
    if mode == "translate":
        return translate(img, num_frames, rng, **kw)
    if mode == "perspective":
        return perspective(img, num_frames, rng, motion, **kw)
    raise ConfigError(f"unknown inflation mode {mode!r}; choose one of {', '.join(MODES)}")


@dataclass
class Inflater:
    """``inflate(image, num_frames, rng)`` callable for ``ImageDataset(inflate=...)``.

    Picklable (dataset workers): it keeps the motion *path*, loaded lazily per process.
    """

    mode: str = "still"
    motion: str | None = None
    options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown inflation mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "perspective" and self.motion is None:
            raise ConfigError("inflate mode 'perspective' needs 'motion: <motion.json from omnisource fit-motion>'")
        if self.motion is not None and not Path(self.motion).is_file():
            raise ConfigError(f"motion file not found: {self.motion}")
        allowed = {"still": set(), "translate": {"margin", "speed", "max_speed"},
                   "perspective": {"border", "margin", "max_corner_shift"}}[self.mode]
        unknown = set(self.options or {}) - allowed
        if unknown:
            raise ConfigError(f"unknown option(s) {sorted(unknown)} for inflate mode {self.mode!r}; "
                              f"allowed: {sorted(allowed)}")

    def __call__(self, image: np.ndarray, num_frames: int, rng: np.random.Generator | None = None,
                 label: int | str | None = None) -> np.ndarray:
        kw = dict(self.options or {})
        if self.mode == "perspective" and label is not None:
            kw["label"] = label
        return inflate_image(image, num_frames, self.mode, rng, motion=self.motion, **kw)


def make_inflater(mode: str = "still", motion: str | Path | None = None, **options: Any) -> Callable:
    """The dataset-time callable for ``mode`` (see :class:`Inflater`)."""
    return Inflater(mode, None if motion is None else str(motion), options or None)


def build_inflater(cfg: dict[str, Any] | str | None) -> Callable:
    """From a config section: ``"still"`` or ``{mode: perspective, motion: motion.json, border: crop}``."""
    if cfg is None:
        return make_inflater("still")
    if isinstance(cfg, str):
        return make_inflater(cfg)
    if not isinstance(cfg, dict):
        raise ConfigError(f"inflate config must be a mode name or a mapping, got {type(cfg).__name__}")
    cfg = dict(cfg)
    mode = cfg.pop("mode", "still")
    motion = cfg.pop("motion", None)
    return make_inflater(mode, motion, **cfg)
