"""The embedded default world: a small, deterministic synthetic OmniSource setting.

``omnisource run`` without ``--data`` generates this world so that the README's main command
shows the whole method on a fresh CPU machine in minutes. It mimics what makes the real problem
hard, in miniature:

* **classes are appearance x motion**: an object of a given shape/colour moves in a given
  direction. Some classes share their appearance and differ only in motion (``motion_pairs``),
  so still images alone cannot separate them -- a video model must use time;
* **few labelled target videos per class** (``train_per_class``), plus a balanced val set;
* **web images** and **web videos** found by a class query: only ``relevant`` of them show the
  queried class; the rest are irrelevant (background, clutter, objects of no class) or show
  another class (mislabelled) -- like real crawls, where the teacher rejects 70-80%;
* **untrimmed web videos**: the queried action happens in one segment among background;
* web data has a small **domain gap** (other brightness/noise/background statistics).

Everything is a pure function of ``seed`` and the :class:`WorldSpec`, so a cached world can be
checked (``world.json`` stores the spec and a hash) and regenerated bit-identically. The ground
truth of every web sample (true class or ``None``) is kept in ``world.json`` for reports only
(filter precision/recall); the pipeline itself never reads it for training decisions.

Layout (the data layout ``omnisource run --data DIR`` reads)::

    DIR/label_map.txt
    DIR/target/train.txt, val.txt            videos/train/*.mp4 label (relative to DIR/target/)
    DIR/web/images/list.txt                  imgs/*.jpg query_label  (relative to DIR/web/images/)
    DIR/web/videos/list.txt                  clips/*.mp4 query_label
    DIR/web/untrimmed/list.txt               long/*.mp4 query_label
    DIR/world.json                           spec, seed, ground truth (report only)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnisource.utils.io import atomic_open, atomic_write_json, atomic_write_text, sha1_json
from omnisource.utils.video_writer import write_video

log = logging.getLogger("omnisource.pipeline.world")

WORLD_VERSION = 1

# Appearance palette: (shape, RGB colour). Colours of distinct appearances overlap on purpose
# (two reddish, two blueish ...) so that colour alone is not a shortcut; shape must be seen.
APPEARANCES: list[tuple[str, tuple[int, int, int]]] = [
    ("disc", (220, 60, 50)),
    ("square", (60, 180, 70)),
    ("triangle", (60, 90, 220)),
    ("cross", (225, 200, 50)),
    ("diamond", (210, 70, 200)),
    ("ring", (60, 200, 210)),
    ("bar", (230, 120, 40)),
    ("square", (220, 60, 50)),
    ("disc", (60, 90, 220)),
    ("triangle", (225, 200, 50)),
    ("cross", (60, 180, 70)),
    ("diamond", (60, 200, 210)),
]
# Directions of motion (unit vectors, image coordinates y down): right, left, down, up.
MOTIONS: list[tuple[str, tuple[float, float]]] = [
    ("right", (0.0, 1.0)),
    ("left", (0.0, -1.0)),
    ("down", (1.0, 0.0)),
    ("up", (-1.0, 0.0)),
]
# Objects that belong to no class (irrelevant web results): grey/white shapes.
NON_CLASS_COLOURS = [(150, 150, 150), (235, 235, 235), (90, 90, 90)]


@dataclass(frozen=True)
class WorldSpec:
    """Knobs of the synthetic world. Defaults = the README demo (fits 10 min on 2 CPU cores)."""

    num_classes: int = 8
    motion_pairs: int = 3          # appearances shared by two classes moving in opposite ways
    train_per_class: int = 12
    val_per_class: int = 30
    web_images_per_class: int = 60
    web_videos_per_class: int = 100
    untrimmed_per_class: int = 6
    relevant: float = 0.3          # share of web results that show the queried class
    mislabelled: float = 0.3       # share showing another class (the rest is irrelevant)
    size: int = 64                 # frame side (pixels)
    frames: int = 16               # frames of a trimmed clip
    untrimmed_frames: int = 64     # frames of an untrimmed video
    # length of an untrimmed video's action segment relative to a clip (1.0: one to one and a
    # half clips; 0.5: half a clip to three quarters, shorter than the windows that score it)
    segment_scale: float = 1.0
    fps: int = 8
    clutter: int = 2               # distractor objects per frame
    noise: float = 6.0             # pixel noise (std, 0..255 scale)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(APPEARANCES) + self.motion_pairs:
            raise ValueError(f"num_classes must be in [2, {len(APPEARANCES)}]")
        if not 0 <= self.motion_pairs <= self.num_classes // 2:
            raise ValueError("motion_pairs must be in [0, num_classes // 2]")
        if not (0 <= self.relevant <= 1 and 0 <= self.mislabelled <= 1
                and self.relevant + self.mislabelled <= 1):
            raise ValueError("relevant + mislabelled must be a share in [0, 1]")
        if self.size % 2 or self.size < 16:
            raise ValueError("size must be even and >= 16 (yuv420p)")
        if not 0 < self.segment_scale <= self.untrimmed_frames / (1.5 * self.frames):
            raise ValueError("segment_scale must be > 0 and leave the segment inside the video")
        if self.untrimmed_frames < 2 * self.frames:
            raise ValueError("untrimmed_frames must be at least twice frames")

    @classmethod
    def reduced(cls, **kw: Any) -> "WorldSpec":
        """A tiny world for CI (seconds, not minutes)."""
        base = dict(num_classes=4, motion_pairs=1, train_per_class=4, val_per_class=3,
                    web_images_per_class=6, web_videos_per_class=5, untrimmed_per_class=1,
                    size=32, frames=8, untrimmed_frames=24)
        base.update(kw)
        return cls(**base)


def class_table(spec: WorldSpec) -> list[dict[str, Any]]:
    """Class id -> appearance index, motion index and a readable name.

    The first ``num_classes - motion_pairs`` classes have distinct appearances; each of the last
    ``motion_pairs`` classes reuses the appearance of one of the first ``motion_pairs`` classes
    and moves the opposite way. Paired classes move vertically (down vs up) so that the usual
    horizontal-flip augmentation never turns one class into another; unpaired classes move
    horizontally, where a flip changes nothing about their label.
    """
    n_app = spec.num_classes - spec.motion_pairs
    rows = []
    for c in range(spec.num_classes):
        if c < spec.motion_pairs:          # paired appearance, moving down
            app, mot = c, 2
        elif c < n_app:                    # unique appearance, moving right or left
            app, mot = c, c % 2
        else:                              # same appearance as class c - n_app, moving up
            app, mot = c - n_app, 3
        shape, _ = APPEARANCES[app]
        colour = _colour_name(APPEARANCES[app][1])
        rows.append({"id": c, "appearance": app, "motion": mot,
                     "name": f"{colour}_{shape}_moving_{MOTIONS[mot][0]}"})
    return rows


def _colour_name(rgb: tuple[int, int, int]) -> str:
    names = {(220, 60, 50): "red", (60, 180, 70): "green", (60, 90, 220): "blue",
             (225, 200, 50): "yellow", (210, 70, 200): "magenta", (60, 200, 210): "cyan",
             (230, 120, 40): "orange"}
    return names.get(rgb, "grey")


# ----------------------------------------------------------------------------- rendering

class _Renderer:
    """Vectorised numpy rendering of shapes on textured backgrounds (no per-pixel loops)."""

    def __init__(self, size: int):
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.yy, self.xx = yy, xx

    def mask(self, shape: str, cy: float, cx: float, r: float) -> np.ndarray:
        dy, dx = self.yy - cy, self.xx - cx
        if shape == "disc":
            return dy * dy + dx * dx <= r * r
        if shape == "square":
            return np.maximum(np.abs(dy), np.abs(dx)) <= r * 0.85
        if shape == "triangle":
            return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
        if shape == "cross":
            t = r * 0.35
            return ((np.abs(dx) <= t) & (np.abs(dy) <= r)) | ((np.abs(dy) <= t) & (np.abs(dx) <= r))
        if shape == "diamond":
            return np.abs(dx) + np.abs(dy) <= r * 1.1
        if shape == "ring":
            d2 = dy * dy + dx * dx
            return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
        if shape == "bar":
            return (np.abs(dy) <= r * 0.4) & (np.abs(dx) <= r * 1.1)
        raise ValueError(shape)

    def background(self, rng: np.random.Generator, style: dict) -> np.ndarray:
        """Smooth two-colour gradient plus blobs of low-frequency texture."""
        s = self.size
        c0 = rng.uniform(*style["bg_range"], size=3)
        c1 = rng.uniform(*style["bg_range"], size=3)
        ang = rng.uniform(0, 2 * math.pi)
        t = ((self.xx * math.cos(ang) + self.yy * math.sin(ang)) / s + 1) / 2
        bg = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
        coarse = rng.normal(0, style["texture"], size=(4, 4, 3))
        k = s // 4
        bg += np.kron(coarse, np.ones((k, k, 1)))[:s, :s]
        return bg.astype(np.float32)


def _style(web: bool) -> dict:
    # web data: brighter, noisier, other backgrounds -- a small domain gap to the target
    if web:
        return {"bg_range": (30, 140), "texture": 15.0, "gain": (0.85, 1.2), "noise_mult": 1.4}
    return {"bg_range": (20, 120), "texture": 12.0, "gain": (0.9, 1.1), "noise_mult": 1.0}


def _render_clip(spec: WorldSpec, r: _Renderer, rng: np.random.Generator, frames: int,
                 cls: dict | None, web: bool, active: tuple[int, int] | None = None,
                 non_class_object: bool = False) -> np.ndarray:
    """Render ``frames`` uint8 RGB frames. ``cls`` None -> no class object (background only).

    ``active``: frame range [a, b) in which the class object is visible (untrimmed videos).
    """
    s = spec.size
    style = _style(web)
    bg = r.background(rng, style)
    out = np.empty((frames, s, s, 3), dtype=np.uint8)
    # class object
    obj = None
    if cls is not None:
        shape, colour = APPEARANCES[cls["appearance"]]
        dy, dx = MOTIONS[cls["motion"]][1]
        n_move = frames if active is None else active[1] - active[0]
        speed = rng.uniform(0.8, 1.0) * (0.6 * s) / max(n_move, 1)
        rad = rng.uniform(0.12, 0.17) * s
        travel = speed * (n_move - 1)
        # start so the whole path stays inside the frame along the motion axis
        lo, hi = rad, s - rad
        along0 = rng.uniform(lo, max(lo, hi - travel))
        across = rng.uniform(lo, hi)
        start = (along0 if dy > 0 else s - along0, across) if dy != 0 else (
            across, along0 if dx > 0 else s - along0)
        jitter = rng.uniform(0.8, 1.15, size=3)
        obj = dict(shape=shape, colour=np.clip(np.array(colour) * jitter, 0, 255),
                   start=start, vel=(dy * speed, dx * speed), rad=rad)
    elif non_class_object:
        shape = ["disc", "square", "triangle", "cross", "diamond", "ring", "bar"][rng.integers(7)]
        colour = NON_CLASS_COLOURS[rng.integers(len(NON_CLASS_COLOURS))]
        ang = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0, 0.5 * s / frames)
        obj = dict(shape=shape, colour=np.array(colour, np.float32),
                   start=(rng.uniform(0.25, 0.75) * s, rng.uniform(0.25, 0.75) * s),
                   vel=(math.sin(ang) * speed, math.cos(ang) * speed), rad=rng.uniform(0.11, 0.17) * s)
    # clutter: small grey-ish objects drifting randomly (never class appearances)
    clutter = []
    for _ in range(spec.clutter):
        ang = rng.uniform(0, 2 * math.pi)
        sp = rng.uniform(0, 0.8)
        clutter.append(dict(shape=["disc", "square", "bar"][rng.integers(3)],
                            colour=rng.uniform(60, 200) * np.ones(3) + rng.normal(0, 15, 3),
                            start=(rng.uniform(0, s), rng.uniform(0, s)),
                            vel=(math.sin(ang) * sp, math.cos(ang) * sp),
                            rad=rng.uniform(0.05, 0.09) * s))
    gain = rng.uniform(*style["gain"])
    noise = spec.noise * style["noise_mult"]
    for f in range(frames):
        img = bg.copy()
        for c in clutter:
            m = r.mask(c["shape"], c["start"][0] + c["vel"][0] * f, c["start"][1] + c["vel"][1] * f,
                       c["rad"])
            img[m] = c["colour"]
        if obj is not None:
            if active is None:
                t = f
                visible = True
            else:
                t = f - active[0]
                visible = active[0] <= f < active[1]
            if visible:
                m = r.mask(obj["shape"], obj["start"][0] + obj["vel"][0] * t,
                           obj["start"][1] + obj["vel"][1] * t, obj["rad"])
                img[m] = obj["colour"]
        img = img * gain + rng.normal(0, noise, size=img.shape)
        out[f] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def encode_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """Write frames (uint8 [T, H, W, 3]) as near-lossless H.264 (mpeg4 if no x264), atomically."""
    import av

    if "libx264" in av.codecs_available:
        write_video(path, frames, codec="libx264", fps=fps, options={"crf": "17", "preset": "ultrafast"})
    else:
        write_video(path, frames, codec="mpeg4", fps=fps, options={"qscale": "2"})


def encode_image(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    with atomic_open(path, "wb") as fh:
        Image.fromarray(frame).save(fh, format="JPEG", quality=92)


# ----------------------------------------------------------------------------- generation

def _web_kind(rng: np.random.Generator, spec: WorldSpec) -> str:
    u = rng.random()
    if u < spec.relevant:
        return "relevant"
    if u < spec.relevant + spec.mislabelled:
        return "mislabelled"
    return "irrelevant"


def _sub_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def world_hash(spec: WorldSpec) -> str:
    return sha1_json({"version": WORLD_VERSION, "spec": dataclasses.asdict(spec)})


def is_complete(root: Path, spec: WorldSpec) -> bool:
    """A world is reused only when it was fully written for exactly this spec."""
    meta = Path(root) / "world.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("hash") == world_hash(spec)
    except (OSError, ValueError):
        return False


def generate_world(root: str | Path, spec: WorldSpec = WorldSpec(), progress: bool = False
                   ) -> dict[str, Any]:
    """Write the world under ``root`` (skipped when already complete); returns its summary.

    ``world.json`` is written last, so an interrupted generation is simply redone.
    """
    root = Path(root)
    if is_complete(root, spec):
        return json.loads((root / "world.json").read_text())
    root.mkdir(parents=True, exist_ok=True)
    classes = class_table(spec)
    r = _Renderer(spec.size)
    truth: dict[str, dict[str, Any]] = {"web_images": {}, "web_videos": {}, "web_untrimmed": {}}
    atomic_write_text(root / "label_map.txt", "".join(c["name"] + "\n" for c in classes))

    from tqdm import tqdm
    total = spec.num_classes * (spec.train_per_class + spec.val_per_class + spec.web_images_per_class
                                + spec.web_videos_per_class + spec.untrimmed_per_class)
    bar = tqdm(total=total, desc="generating world", disable=not progress, unit="file")

    # target train / val
    for split_id, (split, n) in enumerate([("train", spec.train_per_class),
                                           ("val", spec.val_per_class)]):
        lines = []
        for c in classes:
            for k in range(n):
                rng = _sub_rng(spec.seed, 1, split_id, c["id"], k)
                rel = f"videos/{split}/{c['id']:02d}_{k:03d}.mp4"
                encode_video(root / "target" / rel,
                             _render_clip(spec, r, rng, spec.frames, c, web=False), spec.fps)
                lines.append(f"{rel} {c['id']}\n")
                bar.update()
        # shuffle the list order deterministically (real lists are not sorted by class)
        order = _sub_rng(spec.seed, 2, split_id).permutation(len(lines))
        atomic_write_text(root / "target" / f"{split}.txt", "".join(lines[i] for i in order))

    def pick_content(rng: np.random.Generator, query: int) -> tuple[str, int | None]:
        kind = _web_kind(rng, spec)
        if kind == "relevant":
            return kind, query
        if kind == "mislabelled":
            other = int(rng.integers(spec.num_classes - 1))
            return kind, other + (other >= query)
        return kind, None

    # web images: one frame of a clip (a still photo of the class appearance, no motion)
    lines = []
    for q in range(spec.num_classes):
        for k in range(spec.web_images_per_class):
            rng = _sub_rng(spec.seed, 3, q, k)
            kind, true = pick_content(rng, q)
            clip = _render_clip(spec, r, rng, spec.frames, None if true is None else classes[true],
                                web=True, non_class_object=rng.random() < 0.6)
            rel = f"imgs/{q:02d}_{k:03d}.jpg"
            encode_image(root / "web" / "images" / rel, clip[int(rng.integers(spec.frames))])
            lines.append(f"{rel} {q}\n")
            truth["web_images"][rel] = {"query": q, "true": true, "kind": kind}
            bar.update()
    atomic_write_text(root / "web" / "images" / "list.txt", "".join(lines))

    # web videos: short clips, same length as the target clips
    lines = []
    for q in range(spec.num_classes):
        for k in range(spec.web_videos_per_class):
            rng = _sub_rng(spec.seed, 4, q, k)
            kind, true = pick_content(rng, q)
            frames = _render_clip(spec, r, rng, spec.frames, None if true is None else classes[true],
                                  web=True, non_class_object=rng.random() < 0.6)
            rel = f"clips/{q:02d}_{k:03d}.mp4"
            encode_video(root / "web" / "videos" / rel, frames, spec.fps)
            lines.append(f"{rel} {q}\n")
            truth["web_videos"][rel] = {"query": q, "true": true, "kind": kind}
            bar.update()
    atomic_write_text(root / "web" / "videos" / "list.txt", "".join(lines))

    # untrimmed: background with the queried action in one segment
    lines = []
    for q in range(spec.num_classes):
        for k in range(spec.untrimmed_per_class):
            rng = _sub_rng(spec.seed, 5, q, k)
            kind, true = pick_content(rng, q)
            seg_len = spec.frames + int(rng.integers(0, spec.frames // 2 + 1))
            if spec.segment_scale != 1.0:   # (the demo's draws stay as they were)
                seg_len = max(2, int(round(seg_len * spec.segment_scale)))
            start = int(rng.integers(0, spec.untrimmed_frames - seg_len + 1))
            frames = _render_clip(spec, r, rng, spec.untrimmed_frames,
                                  None if true is None else classes[true], web=True,
                                  active=(start, start + seg_len))
            rel = f"long/{q:02d}_{k:03d}.mp4"
            encode_video(root / "web" / "untrimmed" / rel, frames, spec.fps)
            lines.append(f"{rel} {q}\n")
            truth["web_untrimmed"][rel] = {
                "query": q, "true": true, "kind": kind,
                "segment_frames": [start, start + seg_len] if true is not None else None,
                "segment_seconds": ([start / spec.fps, (start + seg_len) / spec.fps]
                                    if true is not None else None)}
            bar.update()
    atomic_write_text(root / "web" / "untrimmed" / "list.txt", "".join(lines))
    bar.close()

    summary = {
        "version": WORLD_VERSION,
        "hash": world_hash(spec),
        "spec": dataclasses.asdict(spec),
        "classes": classes,
        "counts": {
            "target_train": spec.num_classes * spec.train_per_class,
            "target_val": spec.num_classes * spec.val_per_class,
            "web_images": spec.num_classes * spec.web_images_per_class,
            "web_videos": spec.num_classes * spec.web_videos_per_class,
            "web_untrimmed": spec.num_classes * spec.untrimmed_per_class,
        },
        "relevant_share": {k: float(np.mean([v["kind"] == "relevant" for v in d.values()]))
                           if d else 0.0 for k, d in truth.items()},
        "truth": truth,
    }
    atomic_write_json(root / "world.json", summary, indent=None)
    return summary


def load_truth(root: str | Path) -> dict[str, Any] | None:
    """Ground truth of a generated world (None for user data): for reports only."""
    meta = Path(root) / "world.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("truth")
    except (OSError, ValueError):
        return None
