"""Settings of ``omnisource run`` (the whole OmniSource recipe): defaults <- YAML <- --set.

Like every omnisource config this is YAML data, never executed; an unknown key is an error
naming the file and the closest valid key. The defaults are the README demo: a tiny SlowOnly-
style 3D CNN (ResNet3d-18 with 8 base channels, 8 x 40 x 40 inputs) that trains in about a
minute per run on 2 CPU cores, and a tiny 2D TSN teacher for web images (the paper never scores
images with a 3D teacher). For real data, point ``model`` / ``presets`` at a real recipe.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from omnisource.errors import ConfigError
from omnisource.utils.yaml_io import short

RUN_DEFAULTS: dict[str, Any] = {
    "seed": 0,                    # seeds everything (world, training, filtering)
    "world": {},                  # WorldSpec overrides for the generated world (no --data)
    "model": {                    # teacher and student video network (3D or 2D)
        # a zoo name; the demo's tiny SlowOnly-R18 (models/tiny.py) carries the demo
        # recipe (8x2 frames, 40 px) in its metadata, which the web stages' teacher views use
        "name": "tiny_slowonly_r18_8x2x1_omnisource_world",  # zoo name (omnisource.models.list_models())
        "overrides": {},          # create_model(**overrides) of that model (e.g. depth, base_channels)
    },
    # the video teacher's network when it is not the student's (null: the same network; the
    # target-only baseline is then trained apart, with the student's network)
    "teacher_model": {
        "name": None,             # zoo name of the video teacher (e.g. a tiny X3D)
        "overrides": {},          # create_model(**overrides) of that model
    },
    "image_teacher": {            # 2D network trained on target frames, scores web images
        "name": "tiny_tsn_r18_1x1x3_omnisource_world",  # zoo name of the 2D network
        "overrides": {},          # create_model(**overrides) of that model
        "preset": "tsn_1x1x3_train",    # its training pipeline (omnisource.data.presets)
        "test_preset": "tsn_1x1x3_val",  # its scoring pipeline
        # short side 46 = 40 * 256 / 224: the teachers' test views resize like mmaction2 does
        "preset_overrides": {"scale": 46, "crop_size": 40, "test_crop_size": 40},  # preset keyword overrides
        "epochs": 20,             # training epochs of the 2D teacher
        "batch_size": 16,         # its clips (frame sets) per step
        "lr": 0.02,               # its learning rate (cosine schedule)
    },
    "presets": {                  # data pipelines of the video teacher and students
        "train": "slowonly_8x8x1_train",  # training pipeline (omnisource.data.presets)
        "test": "slowonly_8x8x1_val",     # test pipeline (test stage, teacher scoring views)
        # tiny inputs for the demo: 8 frames every 2nd frame, short side 48, crops of 40
        "overrides": {"clip_len": 8, "frame_interval": 2, "scale": 46, "crop_size": 40,
                      "test_crop_size": 40},
    },
    "train": {                    # teacher (= target-only baseline) and every student run
        "epochs": 40,             # epochs over the target set (auxiliary sources cycle within them)
        "batch_size": 16,         # target clips per iteration
        "lr": 0.05,               # for `batch_size` clips per step (no scaling)
        "weight_decay": 0.0005,   # SGD weight decay
        "warmup_epochs": 1,       # linear warm-up before the cosine schedule
        "num_workers": 2,         # DataLoader workers (shared by all sources of a joint run)
        "mixup_alpha": 0.0,       # intra-dataset mixup of the teacher / cross-dataset of students
        "step_mode": "joint",     # joint (one step on the summed loss) | alternate (mmaction2 0.x)
        "max_iters_per_epoch": None,  # cap iterations per epoch (smoke tests); None: the whole target set
        # auxiliary batches of a joint run (auto batch sizes) add up to at most this times
        # `batch_size`, so the target keeps at least half of every step at 1.0
        "max_aux_ratio": 1.0,
    },
    "filter": {                   # teacher filtering (paper section 3.4)
        # confidence threshold: auto = per source, the confidence at which the teacher (calibrated
        # on a held-out split of the training set) is right with probability min_precision;
        # a number = one global threshold; null = rank rule only
        "threshold": "auto",
        "min_precision": 0.5,     # auto thresholds: calibrated precision of the least confident kept sample
        # share of each class's training samples held out to calibrate the teachers (auto
        # thresholds and auto source weights); calibration teachers train on the rest
        "holdout": 0.25,
        # held-out source check: per source, a student trained on the calibration split (the
        # training set minus the held-out share) + that source, scored on the held-out share
        # against the same network without it; a source that lowers held-out top-1 by more than
        # one standard error gets half its loss weight, by more than two none (reported either way).
        # Costs one training per source + one; never looks at the validation set
        "source_check": False,
        "top_fraction_per_class": 0.5,  # keep the most confident share of each query class
        "agree": True,            # teacher argmax must equal the query class
        "soft_labels": "none",    # none (hard) | topk (the teacher's top-5, renormalised) | dense (all its probabilities) as soft targets
                                  # (sources.<name>.soft_labels overrides it per source)
        # teachers that score web videos, probabilities averaged (paper 3.4: 2D/3D ensembles):
        # the target-only video model and the 2D image teacher. They err on different clips
        # (the 3D teacher is confidently wrong on some irrelevant clips of the query class): on
        # the demo, video pseudo-label precision 82/80/86% -> 83/85/87% for seeds 0/1/2.
        # [teacher] alone is the single-teacher filter.
        "video_teachers": ["teacher", "teacher-2d"],  # teachers averaged on web videos
    },
    # auxiliary sources of the student (absent lists are skipped). batch_size auto: from the
    # source's kept count and calibrated pseudo-label precision (pipeline/source_weights.py:
    # min(1, kept / target size) * precision above chance, times the target batch), with loss
    # weight = that raw batch / target batch. A number = that batch; loss_weight null = batch
    # size / target batch size (the per-source mean losses then add up to the sum over all
    # samples of Eq. 1, divided by the target batch; weight 1.0 per source would let three small
    # web batches outweigh the target).
    "sources": {
        # a still image shows appearance, not motion: the 2D teacher's probabilities (split
        # between classes that look alike) are its honest label, so images get soft labels
        "web_images": {"batch_size": "auto", "loss_weight": None, "resample": {"power": 0.2},
                       "inflate": "still", "soft_labels": "dense"},
        "web_videos": {"batch_size": "auto", "loss_weight": None, "resample": {"power": 0.2}},
        "untrimmed": {"batch_size": "auto", "loss_weight": None, "resample": {"power": 0.2}},
    },
    "untrimmed": {                # untrimmed -> clips (3D) / snippets (2D), paper section 3.5
        "window": 2.0,            # seconds per scored window (paper: 10 s on Kinetics)
        "stride": 1.0,            # seconds between window starts
        # teacher probability of the query class that makes a window positive; auto = the
        # calibrated threshold of the video teacher (as filter.threshold auto)
        "pos_threshold": "auto",
        "agree": True,            # the teacher's argmax must be the query class too
    },
    "dedup": {                    # remove web samples similar to target val (paper section 3.3)
        "enabled": True,          # false: skip de-duplication
        "frames_per_video": 2,    # frames of each video compared with target val frames
        # cosine threshold after whitening; None = the paper's crop calibration, which needs a
        # strong feature network (ImageNet ResNet-50). With the demo's tiny teacher as feature
        # network the calibrated threshold is far too low, so a fixed one is used.
        "threshold": 0.9,
    },
    "check": {                    # the check stage (omnisource data check on every list)
        "quick": False,           # True: sampled frames only, not every frame of every video
    },
    "ablations": False,           # also per-source and unfiltered runs (Table 2)
    "unfiltered_run": True,       # train target + all web data without filtering (paper: -3%)
}


class RunSettings(dict):
    """Nested dict with attribute access (read-only use)."""

    def __getattr__(self, key: str) -> Any:
        try:
            value = self[key]
        except KeyError:
            raise AttributeError(key) from None
        return RunSettings(value) if isinstance(value, dict) else value


OPEN = {"world", "model.overrides", "teacher_model.overrides", "image_teacher.overrides", "image_teacher.preset_overrides",
        "presets.overrides", "sources"}


def _deep_merge(old: Any, new: Any, depth: int) -> Any:
    """``new`` over ``old``, key by key for ``depth`` levels; below that values are replaced
    (a source's ``resample: {clip: 5}`` replaces its power law, it does not add to it)."""
    if depth > 0 and isinstance(old, dict) and isinstance(new, Mapping):
        out = dict(old)
        for k, v in new.items():
            out[k] = _deep_merge(old.get(k), v, depth - 1)
        return out
    return copy.deepcopy(new)


def _merge(base: dict, new: Mapping, file: str, prefix: str = "") -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            close = difflib.get_close_matches(str(key), list(base), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown key {dotted!r}{hint}", file=file)
        if dotted in OPEN:
            # open sections take any key. `sources` merge deeply: a file's `sources: {web_videos:
            # {batch_size: 2}}` changes that one value and keeps the source's other settings.
            # The other open sections are override bags of one recipe (the demo's
            # `presets.overrides` set clip_len 8 for its 3D preset): a new bag replaces the default
            # one, so a 2D recipe does not inherit them. `--set presets.overrides.scale=64`
            # changes one key of a bag (:func:`_into_open_section`).
            base[key] = _deep_merge(base.get(key), value, 2 if dotted == "sources" else 0)
        elif isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted!r} must be a mapping", file=file)
            _merge(base[key], value, file, dotted + ".")
        else:
            base[key] = value


def _into_open_section(cfg: dict, parts: list[str], value: Any) -> tuple[list[str], Any]:
    """``--set a.bag.key=v`` where ``a.bag`` is an open section: the bag with that one key
    changed, so that setting a key never replaces the rest of its bag (a bag given whole does)."""
    for i in range(1, len(parts)):
        section = ".".join(parts[:i])
        if section not in OPEN:
            continue
        node: Any = cfg
        for part in parts[:i]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            break                       # not there: the normal path reports the bad key
        bag = copy.deepcopy(node)
        cur = bag
        for part in parts[i:-1]:
            if not isinstance(cur.get(part), dict):
                cur[part] = {}
            cur = cur[part]
        cur[parts[-1]] = value
        return parts[:i], bag
    return parts, value


# "auto" or a number: checked on their own in load_run_settings
AUTO_OR_NUMBER = {"filter.threshold", "untrimmed.pos_threshold"}


def _type_name(v: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(v), type(v).__name__)


def _check_types(cfg: dict, defaults: dict, prefix: str) -> None:
    """Each set value has its default's type (an integer stands for a number; None-defaulted
    keys take anything), so ``--set train.epochs=abc`` is one line before any stage runs, not
    three failed stages later."""
    for key, dv in defaults.items():
        dotted = f"{prefix}{key}"
        if dotted in OPEN or dotted in AUTO_OR_NUMBER or key not in cfg or dv is None:
            continue
        v = cfg[key]
        if isinstance(dv, dict):
            if isinstance(v, dict):
                _check_types(v, dv, dotted + ".")
            continue
        ok = (isinstance(v, bool) if isinstance(dv, bool)
              else isinstance(v, (int, float)) and not isinstance(v, bool) if isinstance(dv, float)
              else isinstance(v, int) and not isinstance(v, bool) if isinstance(dv, int)
              else isinstance(v, type(dv)))
        if not ok:
            raise ConfigError(f"{dotted} must be {_type_name(dv)}, got {short(repr(v), 80)}")


def load_run_settings(path: str | Path | None = None, sets: Iterable[str] = ()) -> RunSettings:
    """Defaults, then the YAML file, then ``key.sub=value`` overrides (values parsed as YAML)."""
    cfg = copy.deepcopy(RUN_DEFAULTS)
    if path is not None:
        from omnisource.utils.yaml_io import read_yaml_file

        p = Path(path)
        data, _ = read_yaml_file(p)   # size-capped; duplicate keys and runaway nesting refused
        data = data or {}
        if not isinstance(data, Mapping):
            raise ConfigError("the config must be a mapping", file=p)
        _merge(cfg, data, str(p))
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {short(item, 80)!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            why = getattr(err, "problem", None) or "not a YAML value"
            raise ConfigError(f"--set {short(item, 80)}: {why}") from None
        parts = key.split(".")
        parts, value = _into_open_section(cfg, parts, value)
        node: dict = {}
        cur = node
        for part in parts[:-1]:
            cur[part] = {}
            cur = cur[part]
        cur[parts[-1]] = value
        _merge(cfg, node, "--set")
    for dotted, allow_null in (("filter.threshold", True), ("untrimmed.pos_threshold", False)):
        sec, key = dotted.split(".")
        v = cfg[sec][key]
        if v == "auto" or (v is None and allow_null):
            pass
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ConfigError(f"{dotted} must be auto, {'null, ' if allow_null else ''}or a number "
                              f"in [0, 1], got {short(repr(v), 80)}")
    _check_types(cfg, RUN_DEFAULTS, "")
    if not 0 < cfg["filter"]["holdout"] < 1:
        raise ConfigError(f"filter.holdout must be in (0, 1), got {cfg['filter']['holdout']}")
    if not 0 < cfg["filter"]["min_precision"] < 1:
        raise ConfigError(f"filter.min_precision must be in (0, 1), got {cfg['filter']['min_precision']}")
    if cfg["train"]["max_aux_ratio"] <= 0:
        raise ConfigError(f"train.max_aux_ratio must be > 0, got {cfg['train']['max_aux_ratio']}")
    for key in ("epochs", "batch_size"):
        if cfg["train"][key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {cfg['train'][key]}")
    if cfg["train"]["step_mode"] not in ("joint", "alternate"):
        raise ConfigError("train.step_mode must be 'joint' or 'alternate'")
    vt = cfg["filter"]["video_teachers"]
    if (not isinstance(vt, list) or not vt or len(set(vt)) != len(vt)
            or any(t not in ("teacher", "teacher-2d") for t in vt)):
        raise ConfigError(f"filter.video_teachers must list 'teacher' and/or 'teacher-2d', got {vt!r}")
    if cfg["filter"]["soft_labels"] not in ("none", "topk", "dense"):
        raise ConfigError("filter.soft_labels must be 'none', 'topk' or 'dense'")
    for name, sc in cfg["sources"].items():
        if name not in ("web_images", "web_videos", "untrimmed"):
            raise ConfigError(f"sources.{name}: unknown source (web_images, web_videos, untrimmed)")
        bs = (sc or {}).get("batch_size")
        if bs is not None and bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise ConfigError(f"sources.{name}.batch_size must be auto or an integer >= 1, got {short(repr(bs), 80)}")
        lw = (sc or {}).get("loss_weight")
        if lw is not None and (isinstance(lw, bool) or not isinstance(lw, (int, float)) or lw < 0):
            raise ConfigError(f"sources.{name}.loss_weight must be null or a number >= 0, got {short(repr(lw), 80)}")
        soft = (sc or {}).get("soft_labels")
        if soft is not None and (soft not in ("none", "topk", "dense") or name == "untrimmed"):
            raise ConfigError(f"sources.{name}.soft_labels must be 'none', 'topk' or 'dense' "
                              "(web_images / web_videos only)")
    return RunSettings(cfg)
