"""Teachers for the web stages: building models from user weights, and scoring records.

A *teacher* is a recognizer of ours with user-supplied weights, given either as

* ``(CONFIG.yaml, CHECKPOINT)``: a recipe (its ``model:`` section says which network), or
* ``(MODEL_NAME, CHECKPOINT)``: a registered zoo name (``omnisource.models.list_models()``),

plus optional ``--set``-style overrides (``model.overrides.base_channels=8``). ``CHECKPOINT``
``none`` keeps random weights (benchmarks and smoke tests only).

How records are turned into teacher inputs (test-time views, deterministic):

* **image, 2D teacher**: the image at reduced JPEG scale, short side -> ``input_size*256/224``,
  centre crop ``input_size`` (mmaction2's test ``Resize(-1, 256)`` + ``CenterCrop(224)``), one
  segment. 3D teachers never score images: deflating them to 2D hurts (paper section 3.4 and
  5.4), so an ensemble uses only its 2D members for images and a 3D-only ensemble is refused.
* **video, 2D teacher**: ``segments`` frames at the centres of equal segments (TSN test
  sampling), each centre-cropped; the TSN consensus averages the segment scores.
* **video, 3D teacher**: ``clips`` clips of ``clip_len x frame_interval`` frames from the
  model's recipe, placed like mmaction2's test ``SampleFrames`` (v1 offsets), centre-cropped;
  the clip probabilities are averaged.

An ensemble averages the members' softmax probabilities (members must agree on the number of
classes). Decoding runs in :class:`~omnisource.web.features.OrderedPool` workers: each record is
decoded once, and the frames every member needs are cut from that single decode.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from omnisource.errors import ConfigError, DataError, InputError
from omnisource.web import features as F

log = logging.getLogger("omnisource.web.teacher")


# --------------------------------------------------------------------------------------------
# building models from user weights
# --------------------------------------------------------------------------------------------
@dataclass
class ModelSource:
    """Where a model comes from (JSON-able: it goes into the stages' config hash)."""

    spec: str                     # config file or registered model name
    checkpoint: str | None        # weights file; None = random init
    overrides: list[str] = field(default_factory=list)   # --set style key=value
    checkpoint_sha1: str | None = None

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def _model_config(spec: str, overrides: Sequence[str]) -> Any:
    from omnisource.config import load_config

    p = Path(spec)
    if p.suffix.lower() in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise InputError("config file not found", spec)
        return load_config(p, overrides)
    from omnisource.models import list_models

    names = list_models()
    if spec not in names:
        import difflib

        close = difflib.get_close_matches(spec, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{spec!r} is neither a config file nor a registered model{hint} "
                          "(see `omnisource.models.list_models()`)")
    return load_config(None, [f"model.name={spec}", *overrides])


def build_model(src: ModelSource, backbone_only: bool = False, device: str = "cpu") -> Any:
    """Model in eval mode with the user's weights.

    ``backbone_only`` (feature extraction for de-duplication): the weights may be an ImageNet
    ResNet file (torchvision/timm names) or any recognizer checkpoint; only the backbone is used.
    """
    from omnisource.engine.modeling import build_model as build_from_config
    from omnisource.models import load_checkpoint, load_pretrained_backbone
    from omnisource.utils.io import sha1_file

    cfg = _model_config(src.spec, src.overrides)
    if not cfg.model.get("name"):
        raise ConfigError("the config has no model.name", src.spec)
    cfg.model.pretrained = None     # the teacher's own checkpoint (below) holds its weights
    model = build_from_config(cfg)
    if src.checkpoint and src.checkpoint.lower() != "none":
        if not Path(src.checkpoint).is_file():
            raise InputError("checkpoint not found", src.checkpoint)
        if backbone_only:
            load_pretrained_backbone(model, src.checkpoint)
        else:
            load_checkpoint(model, src.checkpoint, strict=True)
        src.checkpoint_sha1 = sha1_file(src.checkpoint)
    else:
        log.warning("%s: no checkpoint given, using RANDOM weights (only useful for smoke tests)", src.spec)
        src.checkpoint = None
    model.eval().to(device)
    return model


# --------------------------------------------------------------------------------------------
# views: how one teacher looks at a record (picklable; runs in decoding workers)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    layout: str                   # '2d' | '3d'
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    segments: int = 8             # 2D teacher on videos
    clip_len: int = 1             # 3D teacher on videos
    frame_interval: int = 1
    clips: int = 1
    group: int = 1                # 2D teachers that mix segments (TSM, TIN, TRN, TANet, TPN-TSM): frames per group

    @property
    def short_side(self) -> int:
        return int(round(self.input_size * 256 / 224))

    def video_indices(self, lo: int, hi: int) -> list[int]:
        """Absolute frame indices this view needs from frames ``[lo, hi)``."""
        n = hi - lo
        if self.layout == "2d":
            return F.uniform_indices(n, self.segments, lo)
        from omnisource.data.sampling import SampleFrames

        sampler = SampleFrames(self.clip_len, self.frame_interval, self.clips, test_mode=True,
                               out_of_bound_opt="repeat_last")
        return [lo + int(i) for i in sampler(n)]

    def crops(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames -> uint8 centre crops ``[F, size, size, 3]`` (cheap to ship between processes)."""
        return np.stack([F.center_crop(f, self.input_size, self.short_side) for f in frames])

    def normalize(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops -> model input: 2D ``[S, 3, H, W]``; 3D ``[V, 3, T, H, W]``."""
        x = F.to_input(crops, self.mean, self.std)            # [F, 3, H, W]
        if self.layout == "2d":
            if self.group > 1 and len(x) % self.group:
                # a still image for a segment-mixing teacher: a still clip of one group (as the
                # image -> pseudo-clip of training), so the shifts / relations see whole groups
                x = np.repeat(x, -(-self.group // len(x)), axis=0)[:self.group * max(1, len(x) // self.group)]
            return x
        t = self.clip_len
        x = x.reshape(-1, t, 3, self.input_size, self.input_size)  # [V, T, 3, H, W]
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3, 4))

    def make_input(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (as listed by :meth:`video_indices`, or one image) -> model input."""
        return self.normalize(self.crops(frames))


def view_for(model: Any, segments: int = 8, clips: int = 1) -> View:
    mean, std, size = F.model_norm(model)
    meta = getattr(model, "meta", {}) or {}
    layout = meta.get("layout", "2d")
    group = int(meta.get("num_segments") or 1) if layout == "2d" else 1
    segments = -(-int(segments) // group) * group          # whole groups of a segment-mixing teacher
    return View(layout=layout, input_size=size, mean=tuple(float(m) for m in mean),
                std=tuple(float(s) for s in std), segments=int(segments), group=group,
                clip_len=int(meta.get("clip_len", 1)) if layout == "3d" else 1,
                frame_interval=int(meta.get("frame_interval", 1)) if layout == "3d" else 1,
                clips=int(clips))


@dataclass(frozen=True)
class InputPlan:
    """Everything a decoding worker needs to turn a record into inputs for every teacher."""

    views: tuple[View, ...]
    data_root: str | None
    backend: str = "pyav"
    reduced_decode: bool = True   # JPEGs decoded at reduced DCT scale (False: full size, benchmarks)


def load_inputs(rec: Any, plan: InputPlan) -> dict[int, np.ndarray]:
    """Decode ``rec`` once; return ``{teacher index: model input}`` for the teachers that apply.

    Runs in worker processes; unreadable media raise DataError (a counted drop upstream).
    """
    path = F.resolve_media(F._get(rec, "path"), plan.data_root)
    kind = F.record_kind(rec)
    out: dict[int, np.ndarray] = {}
    if kind == "image":
        usable = [i for i, v in enumerate(plan.views) if v.layout == "2d"]
        if not usable:
            raise ConfigError("images can only be scored by 2D teachers (3D teachers deflated to 2D "
                              "score images badly, paper section 3.4); add a 2D teacher")
        need = max(plan.views[i].short_side for i in usable)
        img = F.read_image_reduced(path, min_side=need if plan.reduced_decode else None)
        for i in usable:
            out[i] = plan.views[i].make_input(img[None])
        return out
    reader = F.open_reader(path, kind, plan.backend)
    try:
        inds = F._get(rec, "frame_inds")
        if inds:
            # explicit frames (untrimmed snippets): every view sees exactly these frames
            wanted = {i: list(inds) for i in range(len(plan.views))}
            union = sorted(set(inds))
            frames = reader.get_frames(union)
        else:
            wanted = {}

            def pick(lo: int, hi: int) -> list[int]:
                wanted.clear()
                wanted.update({i: v.video_indices(lo, hi) for i, v in enumerate(plan.views)})
                return sorted({j for lst in wanted.values() for j in lst})

            frames, union = F.read_sampled(reader, pick, F._get(rec, "segment"))
    finally:
        reader.close()
    pos = {j: k for k, j in enumerate(union)}
    for i, lst in wanted.items():
        v = plan.views[i]
        sel = frames[[pos[j] for j in lst]]
        if v.layout == "3d" and len(lst) % v.clip_len:
            raise DataError(str(path), f"{len(lst)} frames are not whole clips of {v.clip_len}")
        out[i] = v.make_input(sel)
    return out


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------
class SetupAbort(Exception):
    """Carries a ConfigError out of a stage's process_fn.

    The stage runner turns OmniSourceErrors raised by ``process_fn`` into per-row drops (bad
    data); a wrong setup (e.g. only 3D teachers for images) must instead stop the run with its
    message, so process functions wrap it in this (non-OmniSourceError) type and the stage
    function unwraps it with :func:`unwrap_setup_errors`.
    """

    def __init__(self, err: InputError):
        super().__init__(str(err))
        self.err = err


class unwrap_setup_errors:  # noqa: N801 - used as a context manager
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, SetupAbort):
            raise exc.err from None
        return False


@dataclass
class Timing:
    """Where the scoring time went (benchmarks, logs)."""

    wait_s: float = 0.0       # main process waiting for decoded inputs
    forward_s: float = 0.0    # in the teachers' forward passes
    items: int = 0

    def share_forward(self) -> float:
        tot = self.wait_s + self.forward_s
        return self.forward_s / tot if tot > 0 else 0.0


class TeacherEnsemble:
    """One or more teachers whose softmax probabilities are averaged.

    ``score(records)`` returns, per record, a probability vector ``[C]`` (float32) or an error
    string (unreadable media) -- never raises for bad data.
    """

    def __init__(self, models: Sequence[Any], sources: Sequence[ModelSource] = (), *, data_root: str | None = None,
                 segments: int = 8, clips: int = 1, batch_size: int = 32, num_workers: int = 0,
                 device: str = "cpu", backend: str = "pyav"):
        if not models:
            raise ConfigError("at least one teacher is needed")
        ncls = {int(getattr(m, "meta", {}).get("num_classes") or m.num_classes) for m in models}
        if len(ncls) != 1:
            raise ConfigError(f"ensemble teachers disagree on the number of classes: {sorted(ncls)}")
        self.num_classes = ncls.pop()
        self.models = list(models)
        self.sources = list(sources)
        self.views = tuple(view_for(m, segments, clips) for m in self.models)
        self.plan = InputPlan(self.views, None if data_root is None else str(data_root), backend)
        self.batch_size = int(batch_size)
        self.device = device
        self.pool = F.OrderedPool(num_workers, window=max(2 * self.batch_size, 4 * max(1, num_workers)))
        self.timing = Timing()

    def describe(self) -> dict[str, Any]:
        """JSON-able identity for config hashes and meta.json."""
        return {"teachers": [s.describe() for s in self.sources], "views": [asdict(v) for v in self.views],
                "num_classes": self.num_classes}

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "TeacherEnsemble":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _forward(self, i: int, inputs: list[np.ndarray], pad: bool = True) -> np.ndarray:
        """Mean softmax over views of each item, ``[len(inputs), C]``; inputs grouped by shape.

        Every forward pass has exactly ``batch_size`` items (the last one zero-padded): CPU
        kernels pick their algorithm by batch size, and a sample's scores then differ in the last
        bits depending on how many neighbours it had. With a fixed batch size they do not, so
        sharded and single-process runs write identical bytes. ``pad=False`` for callers whose
        batches do not depend on chunking (untrimmed: one video's frames).
        """
        import torch

        model = self.models[i]
        out = np.zeros((len(inputs), self.num_classes), dtype=np.float64)
        groups: dict[tuple, list[int]] = {}
        for k, x in enumerate(inputs):
            groups.setdefault(x.shape, []).append(k)
        t0 = time.perf_counter()
        bs = self.batch_size
        with torch.inference_mode():
            for shape, ks in groups.items():
                for b0 in range(0, len(ks), bs):
                    part = ks[b0:b0 + bs]
                    x = np.zeros(((bs if pad else len(part)),) + shape, dtype=np.float32)
                    x[:len(part)] = np.stack([inputs[k] for k in part])
                    logits = model(torch.from_numpy(x).to(self.device)).float()   # 2D: [B, C]; 3D: [B*V, C]
                    probs = torch.softmax(logits, dim=-1).reshape(len(x), -1, self.num_classes).mean(1)
                    out[part] = probs[:len(part)].cpu().double().numpy()
        self.timing.forward_s += time.perf_counter() - t0
        return out

    def _flush(self, batch: list[tuple[int, dict[int, np.ndarray]]], results: list[Any]) -> None:
        if not batch:
            return
        acc = {pos: np.zeros(self.num_classes, dtype=np.float64) for pos, _ in batch}
        cnt = {pos: 0 for pos, _ in batch}
        for i in range(len(self.models)):
            items = [(pos, d[i]) for pos, d in batch if i in d]
            if not items:
                continue
            probs = self._forward(i, [x for _, x in items])
            for (pos, _), p in zip(items, probs):
                acc[pos] += p
                cnt[pos] += 1
        for pos, _ in batch:
            results[pos] = (acc[pos] / cnt[pos]).astype(np.float32)

    def score(self, records: Sequence[Any]) -> list[np.ndarray | str]:
        fn = functools.partial(load_inputs, plan=self.plan)
        results: list[Any] = [None] * len(records)
        batch: list[tuple[int, dict[int, np.ndarray]]] = []
        t_wait = time.perf_counter()
        for pos, loaded in enumerate(self.pool.imap(fn, records)):
            self.timing.wait_s += time.perf_counter() - t_wait
            self.timing.items += 1
            if loaded.error is not None:
                if loaded.error.startswith("ConfigError"):   # a setup problem, not bad data
                    raise SetupAbort(ConfigError(loaded.error.split(": ", 1)[-1]))
                results[pos] = loaded.error
            else:
                batch.append((pos, loaded.payload))
            if len(batch) >= self.batch_size:
                self._flush(batch, results)
                batch = []
            t_wait = time.perf_counter()
        self._flush(batch, results)
        return results


def parse_teacher_args(pairs: Iterable[Sequence[str]] | None, overrides: Sequence[str] = ()) -> list[ModelSource]:
    """``--teacher SPEC CHECKPOINT`` pairs (+ shared ``--teacher-set`` overrides) -> sources."""
    out = [ModelSource(spec=str(s), checkpoint=None if str(c).lower() == "none" else str(c),
                       overrides=list(overrides)) for s, c in (pairs or [])]
    if not out:
        raise ConfigError("give at least one teacher: --teacher CONFIG_OR_MODEL CHECKPOINT")
    return out


def build_ensemble(sources: Sequence[ModelSource], device: str = "cpu", **kw: Any) -> TeacherEnsemble:
    models = [build_model(s, device=device) for s in sources]
    return TeacherEnsemble(models, sources, device=device, **kw)


def topk_sparse(probs: np.ndarray, k: int) -> list[list[float]]:
    """``[[class, prob], ...]`` of the ``k`` most probable classes (prob rounded to 6 digits)."""
    k = max(1, min(int(k), probs.shape[-1]))
    idx = np.argsort(-probs, kind="stable")[:k]
    return [[int(c), round(float(probs[c]), 6)] for c in idx]
