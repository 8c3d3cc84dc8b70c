"""Typed run configuration: defaults <- YAML file <- ``--set key.sub=value``.

Recipes are *data*: YAML parsed with ``yaml.safe_load``, never executed. Every key a recipe may
set is listed in :data:`DEFAULTS` with a comment (the SlowFast ``defaults.py`` habit), so a typo
such as ``optim.lrr`` is an error that names the file, the line and the closest valid key instead
of a silently ignored setting that costs a week of GPU time.

Load order (DINOv2 style): :data:`DEFAULTS`, then an optional single ``_base_`` file, then the
recipe, then command-line overrides. :func:`validate` checks types and choices and
:func:`derive` computes values that depend on the run (world size -> total batch -> linearly
scaled learning rate). The resolved config is written into the work dir by the train command
(:func:`save_resolved`) so a run can always be reproduced from its folder.

A few sub-trees are *open* (free-form dicts handed to another module that validates them):
``model.overrides`` (kwargs of ``create_model``), ``data.<split>.overrides`` (preset / dataset
overrides) and the items of ``sources`` (multi-source training, validated by
``omnisource.data.multisource`` when available).
"""
from __future__ import annotations

import argparse
import copy
import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from omnisource.errors import ConfigError

# ----------------------------------------------------------------------------------------------
# Defaults: every key a recipe may set. None means "not set" / "use the natural default".
# ----------------------------------------------------------------------------------------------


def _split(preset: str | None = None) -> dict[str, Any]:
    return {
        "ann_file": None,       # mmaction2 list / JSONL manifest (relative paths: to the cwd)
        "data_root": None,      # folder the list's paths are relative to
        "preset": preset,       # pipeline name from omnisource.data.presets (e.g. tsn_1x1x3_train)
        "format": None,         # list format; None: detected from the file (see annotations.detect_format)
        "overrides": {},        # OPEN: keyword overrides for the preset / dataset (e.g. num_clips)
    }


DEFAULTS: dict[str, Any] = {
    "model": {
        "name": None,           # registry name, see `omnisource.models.list_models()` (required)
        "num_classes": None,    # None: the preset's number of classes
        "pretrained": None,     # checkpoint file (ours or mmaction2 0.x/1.x) loaded before training
        "reset_head": False,    # re-initialise the classifier when `pretrained` has another class count
        "overrides": {},        # OPEN: create_model(**overrides), e.g. {base_channels: 8, depth: 18}
    },
    "data": {
        "train": _split(),
        "val": _split(),
        "test": _split(),
        "label_map": None,      # text file, one class name per line (used by predict / reports)
        "backend": "pyav",      # video decoder: pyav | decord | rawframes | image
        "num_workers": 4,       # DataLoader workers per process
        "batch_size": 8,        # training clips per process (per GPU) and per step
        "val_batch_size": None,  # None: same as batch_size
        "test_batch_size": 1,   # zoo protocol: one video (all its views) per forward
        "strict": False,        # True: an unreadable sample raises instead of being skipped + counted
        "pin_memory": True,     # only used with CUDA
        "index_store": None,    # file keeping video demux indexes between epochs and runs (a local disk;
                                # omnisource.data.decode.index_store); None: $OMNISOURCE_INDEX_STORE if set
    },
    "optim": {
        "lr": 0.01,             # base learning rate for `reference_batch_size` clips per step
        "momentum": 0.9,        # SGD momentum
        "nesterov": False,      # Nesterov momentum
        "weight_decay": 1e-4,   # L2 weight decay
        "no_decay_norm_bias": False,  # exclude norm weights and all biases from weight decay
        "grad_clip": 40.0,      # max global L2 grad norm (mmaction2 zoo: 40); null disables clipping
        "reference_batch_size": None,  # total batch the base lr was tuned for (zoo: 8 GPUs x per-GPU)
        "scale_lr": True,       # linear scaling rule: lr * total_batch / reference_batch_size
    },
    "schedule": {
        "epochs": 100,          # training epochs (one epoch = one pass over the train set / target source)
        "policy": "step",       # step | cosine
        "steps": [40, 80],      # step policy: epochs at which lr *= gamma (absolute epochs, 0.x semantics)
        "gamma": 0.1,           # step decay factor
        "min_lr": 0.0,          # cosine: final learning rate
        "warmup_epochs": 0,     # linear warm-up length in epochs (converted to iterations)
        "warmup_iters": 0,      # linear warm-up length in iterations (added to warmup_epochs)
        "warmup_ratio": 0.1,    # warm-up starts at lr * warmup_ratio
    },
    "train": {
        "amp": "none",          # none | bf16 (CPU and GPU autocast) | fp16 (GPU only, with GradScaler)
        "channels_last": "auto",  # auto | true | false: NHWC/NDHWC memory format (auto: 2D models; 3D on AVX-512 CPUs)
        "compile": False,       # torch.compile the training forward/backward (inductor; minutes to compile)
        "accum_steps": 1,       # gradient accumulation: optimizer step every N batches
        "mixup": {
            "alpha": 0.0,       # mixup Beta(alpha, alpha); 0 disables mixup
            "cutmix_alpha": 0.0,  # cutmix Beta(alpha, alpha); 0 disables cutmix
            "prob": 1.0,        # probability of mixing a batch at all
            "switch_prob": 0.5,  # with both enabled: probability of cutmix instead of mixup
        },
        "label_smoothing": 0.0,  # cross-entropy label smoothing
        "nonfinite": "stop",    # stop | skip: what to do with a NaN/Inf loss
        "val_interval": 1,      # validate every N epochs (when validation is on: see `validate`)
        "save_interval": 1,     # keep a numbered epoch_N.pth every N epochs (latest.pth: every epoch)
        "save_every_iters": 200,  # also refresh latest.pth every N iterations (kill -9 loses little)
        "max_keep_ckpts": 3,    # numbered epoch checkpoints kept (latest/best always kept)
        "seed": 0,              # base seed (rank is added for data workers)
        "deterministic": False,  # deterministic algorithms; with it a resumed run equals an uninterrupted one
        "log_interval": 20,     # iterations between log lines
        "tensorboard": True,    # also write TensorBoard events when tensorboard is installed
        "plot_curves": True,    # curves.png (losses, validation, lr) in the work dir when a run ends
        "max_iters_per_epoch": None,  # cap iterations per epoch (debugging / smoke tests)
        "validate": None,       # None: validate when data.val.ann_file is set; true: --validate; false: --no-validate
    },
    "test": {
        "average_clips": "prob",  # score | prob | none (mmaction2 BaseHead.average_clip)
        "num_clips": None,      # None: the test preset's; else override the number of clips
        "crops": None,          # None: the test preset's; else 1 | 3 | 10
        "metrics": ["top_k_accuracy", "mean_class_accuracy"],  # top_k_accuracy | mean_class_accuracy
        "topk": [1, 5],         # k values of top_k_accuracy
    },
    "dist": {
        "sync_bn": False,       # convert BatchNorm to SyncBatchNorm under DDP
        "backend": None,        # None: nccl on GPU, gloo on CPU
        "find_unused_parameters": False,  # DDP: allow parameters without gradient in a step (e.g. unused heads)
    },
    "sources": [],              # OPEN: multi-source training (issue 5); see omnisource.data.multisource
    "work_dir": None,           # None: work_dirs/<config stem>
}

# Sub-trees whose keys are free-form (validated by the module that consumes them).
OPEN_KEYS = {"model.overrides", "data.train.overrides", "data.val.overrides",
             "data.test.overrides", "sources"}

CHOICES: dict[str, tuple] = {
    "schedule.policy": ("step", "cosine"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.channels_last": ("auto", True, False),
    "train.nonfinite": ("stop", "skip"),
    "test.average_clips": ("score", "prob", "none"),
    "data.backend": ("pyav", "decord", "rawframes", "image"),
}

# Keys whose default is None but whose value has a type when set.
NULLABLE_TYPES: dict[str, tuple[type, ...]] = {
    "model.name": (str,), "model.num_classes": (int,), "model.pretrained": (str,),
    "data.label_map": (str,), "data.val_batch_size": (int,), "data.index_store": (str,),
    "optim.grad_clip": (int, float), "optim.reference_batch_size": (int,),
    "train.max_iters_per_epoch": (int,), "train.validate": (bool,), "test.num_clips": (int,), "test.crops": (int,),
    "dist.backend": (str,), "work_dir": (str,),
    **{f"data.{s}.{k}": (str,) for s in ("train", "val", "test")
       for k in ("ann_file", "data_root", "preset", "format")},
}

# Items of `sources:` (issue 5). Known keys are type-checked here; extra keys are passed on to
# the multi-source module, which owns their meaning.
SOURCE_DEFAULTS: dict[str, Any] = {
    "name": None,           # unique source name (e.g. kinetics, web_images, insvideo)
    "ann_file": None,       # list / manifest of the source
    "data_root": None,      # folder the source's paths are relative to
    "preset": None,         # pipeline preset (None: data.train.preset)
    "format": None,         # list format (None: detected; manifests for filtered web data)
    "batch_size": None,     # clips per step from this source (None: data.batch_size)
    "loss_weight": 1.0,     # weight of this source's loss in the summed loss (paper Eq. 1)
    "resample": None,       # class re-sampling: none | power | {clip: N} | {power: p} (data.multisource)
    "inflate": None,        # image -> pseudo clip: still | translate | perspective (data.inflate)
    "overrides": {},        # preset / dataset keyword overrides for this source
}


class Config(dict):
    """A nested ``dict`` with attribute access (``cfg.optim.lr``) that stays plain YAML data."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def to_dict(self) -> dict:
        return _plain(self)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _wrap(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return Config({k: _wrap(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_wrap(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def _key_line(text: str, dotted: str) -> int | None:
    """1-based line of ``dotted`` in YAML ``text`` (for error messages); None when not found."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in dotted.split("."):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _read_yaml(path: Path) -> tuple[dict, str]:
    if path.suffix == ".py":
        # an mmaction2 / mmengine config: Python that would have to be executed to be read
        raise ConfigError(
            "Python configs (mmaction2 / mmengine) are code and are never executed here; write the "
            "recipe as YAML -- configs/ has one per zoo preset with mmaction2's config name "
            "(e.g. configs/tsn_r50_1x1x3_100e_kinetics400_rgb.yaml)", file=path)
    from omnisource.utils.yaml_io import read_yaml_file

    # size-capped, regular files only, duplicate keys and runaway nesting refused
    data, text = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a config must be a YAML mapping at top level", file=path, line=1)
    return data, text


def _merge(base: dict, new: Mapping, *, file: str | None, text: str | None, prefix: str = "",
           schema: Mapping | None = None) -> None:
    """Merge ``new`` into ``base`` in place, refusing keys the schema does not know."""
    schema = base if schema is None else schema
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}", file=file,
                              line=_key_line(text, prefix.rstrip(".")) if text else None)
        if dotted in OPEN_KEYS:
            if dotted == "sources":
                if value is None:
                    value = []
                if not isinstance(value, list):
                    raise ConfigError("'sources' must be a list of mappings", file=file,
                                      line=_key_line(text, dotted) if text else None)
            elif value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"'{dotted}' must be a mapping", file=file,
                                  line=_key_line(text, dotted) if text else None)
            base[key] = copy.deepcopy(_plain(value)) if value is not None else {}
            continue
        if key not in schema:
            known = [k for k in schema]
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else \
                f" (known keys: {', '.join(prefix + k for k in known)})"
            raise ConfigError(f"unknown config key '{dotted}'{hint}", file=file,
                              line=_key_line(text, dotted) if text else None)
        if isinstance(schema[key], dict) and f"{dotted}" not in OPEN_KEYS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{dotted}' must be a mapping, got {type(value).__name__}",
                                  file=file, line=_key_line(text, dotted) if text else None)
            _merge(base[key], value, file=file, text=text, prefix=dotted + ".", schema=schema[key])
        else:
            base[key] = copy.deepcopy(value)


def add_set_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                     dest: str = "sets", example: str = "optim.lr=0.1") -> None:
    """The one ``--set KEY=VALUE ...`` option every config-reading command takes.

    Several overrides may follow one ``--set`` (``--set optim.lr=0.1 schedule.epochs=5``, as
    mmaction2's ``--cfg-options``) and ``--set`` may repeat; all end up in ``args.<dest>`` in
    order, for :func:`parse_set` / :func:`load_config`. Why one definition: seven commands had
    each declared their own (one value per ``--set``), so the documented multi-value form
    failed with argparse's "unrecognized arguments"."""
    parser.add_argument("--set", dest=dest, action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE",
                        help=f"override config values (YAML syntax), e.g. --set {example}; "
                             "several may follow one --set, and --set may repeat")


def parse_set(items: Iterable[str]) -> list[tuple[str, Any]]:
    """``['optim.lr=0.1', 'schedule.steps=[10, 20]']`` -> ``[('optim.lr', 0.1), ...]`` (YAML values)."""
    out = []
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"--set expects key.sub=value, got {item!r}", file="--set")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse value of {key}: {err}", file="--set") from None
        out.append((key, value))
    return out


def _apply_set(cfg: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = cfg
    schema: Any = DEFAULTS
    for i, part in enumerate(parts[:-1]):
        dotted = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"'{dotted}': no list item {part}", file="--set")
            node, schema = node[int(part)], None
            continue
        if schema is not None and dotted not in OPEN_KEYS and part not in schema:
            close = difflib.get_close_matches(part, list(schema), n=1, cutoff=0.5)
            hint = f" (did you mean '{'.'.join(parts[:i] + [close[0]])}'?)" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}", file="--set")
        if dotted in OPEN_KEYS:
            schema = None
            node = node.setdefault(part, {} if dotted != "sources" else [])
        else:
            schema = schema[part] if isinstance(schema, dict) else None
            node = node.setdefault(part, {}) if isinstance(node, dict) else node
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"'{key}': no list item {last}", file="--set")
        node[int(last)] = value
        return
    wrapper: dict = {}
    cur = wrapper
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[last] = value
    if schema is None:  # inside an open sub-tree
        node[last] = value
    else:
        _merge(cfg, wrapper, file="--set", text=None)


def load_config(path: str | Path | None = None, overrides: Iterable[str] | None = None,
                *, check: bool = True) -> Config:
    """Defaults <- ``_base_`` <- file <- ``--set`` overrides, then :func:`validate`.

    ``overrides`` are ``key.sub=value`` strings whose values are parsed as YAML.
    """
    cfg = copy.deepcopy(DEFAULTS)
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        data, text = _read_yaml(path)
        # a resolved config written into a work dir carries the values derive() computed;
        # they are recomputed for the run at hand, never taken as settings
        data.pop("derived", None)
        base = data.pop("_base_", None)
        if base is not None:
            if not isinstance(base, str):
                raise ConfigError("_base_ must be one file name", file=path, line=_key_line(text, "_base_"))
            base_path = path.parent / base
            base_data, base_text = _read_yaml(base_path)
            if "_base_" in base_data:
                # one level only: deep inheritance chains make recipes unreadable (DESIGN.md)
                raise ConfigError("a _base_ config cannot itself have a _base_ (one level only)",
                                  file=base_path, line=_key_line(base_text, "_base_"))
            _merge(cfg, base_data, file=str(base_path), text=base_text)
        _merge(cfg, data, file=str(path), text=text)
    set_keys = []
    for key, value in parse_set(overrides or ()):
        _apply_set(cfg, key, value)
        set_keys.append(key)
    out = _wrap(cfg)
    out["_source"] = source
    if check:
        try:
            validate(out)
        except ConfigError as err:
            raise _locate(err, set_keys, path, text if path is not None else None) from None
    return out


def _locate(err: ConfigError, set_keys: list[str], path: Path | None, text: str | None) -> ConfigError:
    """Point a validation error at where its value came from: ``--set KEY=...`` when the
    command line gave it, else the key's line in the YAML file."""
    key = getattr(err, "key", None)
    if not key:
        return err
    if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in set_keys):
        e = ConfigError(err.message, file="--set")
    elif path is not None and text is not None:
        e = ConfigError(err.message, file=path, line=_key_line(text, key))
    else:
        return err
    e.key = key
    return e


# ----------------------------------------------------------------------------------------------
# Validation and derived values
# ----------------------------------------------------------------------------------------------

def _walk(defaults: Mapping, cfg: Mapping, prefix: str = "") -> Iterable[tuple[str, Any, Any]]:
    for key, default in defaults.items():
        dotted = f"{prefix}{key}"
        if dotted in OPEN_KEYS:
            continue
        if isinstance(default, dict):
            yield from _walk(default, cfg.get(key, {}), dotted + ".")
        else:
            yield dotted, default, cfg.get(key, default)


def _check_type(dotted: str, default: Any, value: Any, file: str) -> Any:
    def bad(expected: str) -> ConfigError:
        from omnisource.utils.yaml_io import short

        e = ConfigError(f"'{dotted}' must be {expected}, got {short(repr(value), 80)}", file=file)
        e.key = dotted   # load_config adds the line (or blames --set)
        return e

    if dotted in CHOICES:
        choices = CHOICES[dotted]
        if value is None and "none" in choices:
            return "none"
        if value not in choices or (isinstance(value, bool) and True not in choices):
            raise bad("one of " + " | ".join(str(c).lower() for c in choices))
        return value
    if value is None:
        if default is None or dotted in NULLABLE_TYPES:
            return None
        raise bad(f"a {type(default).__name__}")
    if dotted in NULLABLE_TYPES:
        types = NULLABLE_TYPES[dotted]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise bad(" or ".join("true or false" if t is bool else t.__name__ for t in types))
        return float(value) if float in types and not isinstance(value, int) else value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise bad("a list")
    return value


def _set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    node = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value


def validate(cfg: Config) -> Config:
    """Type- and range-check a merged config in place (errors name the key and the file)."""
    file = cfg.get("_source", "<config>")
    for dotted, default, value in _walk(DEFAULTS, cfg):
        _set_dotted(cfg, dotted, _check_type(dotted, default, value, file))

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg, file=file)

    need(cfg.data.batch_size >= 1, "'data.batch_size' must be >= 1")
    need(cfg.train.accum_steps >= 1, "'train.accum_steps' must be >= 1")
    need(cfg.schedule.epochs >= 1, "'schedule.epochs' must be >= 1")
    need(cfg.optim.lr > 0, "'optim.lr' must be > 0")
    need(0 <= cfg.optim.momentum < 1, "'optim.momentum' must be in [0, 1)")
    need(cfg.optim.weight_decay >= 0, "'optim.weight_decay' must be >= 0")
    need(cfg.optim.grad_clip is None or cfg.optim.grad_clip > 0,
         "'optim.grad_clip' must be > 0 or null")
    need(not cfg.optim.nesterov or cfg.optim.momentum > 0, "'optim.nesterov' needs momentum > 0")
    need(all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in cfg.schedule.steps),
         "'schedule.steps' must be a list of positive epoch numbers")
    need(list(cfg.schedule.steps) == sorted(cfg.schedule.steps), "'schedule.steps' must be increasing")
    need(0 < cfg.schedule.warmup_ratio <= 1, "'schedule.warmup_ratio' must be in (0, 1]")
    need(cfg.schedule.warmup_epochs >= 0 and cfg.schedule.warmup_iters >= 0,
         "warm-up lengths must be >= 0")
    need(0 <= cfg.train.mixup.prob <= 1, "'train.mixup.prob' must be in [0, 1]")
    need(cfg.train.mixup.alpha >= 0 and cfg.train.mixup.cutmix_alpha >= 0,
         "mixup alphas must be >= 0")
    need(0 <= cfg.train.label_smoothing < 1, "'train.label_smoothing' must be in [0, 1)")
    need(cfg.train.val_interval >= 1 and cfg.train.save_interval >= 1, "intervals must be >= 1")
    need(cfg.train.save_every_iters >= 0, "'train.save_every_iters' must be >= 0 (0 disables)")
    need(cfg.test.crops in (None, 1, 3, 10), "'test.crops' must be 1, 3 or 10")
    need(cfg.test.num_clips is None or cfg.test.num_clips >= 1, "'test.num_clips' must be >= 1")
    for m in cfg.test.metrics:
        need(m in ("top_k_accuracy", "mean_class_accuracy"),
             f"unknown metric {m!r} in 'test.metrics' (top_k_accuracy | mean_class_accuracy)")
    need(all(isinstance(k, int) and k >= 1 for k in cfg.test.topk), "'test.topk' must be positive ints")
    _validate_sources(cfg, file)
    return cfg


def _validate_sources(cfg: Config, file: str) -> None:
    """Check the generic shape of ``sources:``; the multi-source module checks the rest."""
    names = set()
    checked = []
    for i, item in enumerate(cfg.get("sources") or []):
        where = f"sources.{i}"
        if not isinstance(item, Mapping):
            raise ConfigError(f"'{where}' must be a mapping", file=file)
        merged = copy.deepcopy(SOURCE_DEFAULTS)
        merged.update(item)
        name = merged["name"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"'{where}.name' is required (a string)", file=file)
        if name in names:
            raise ConfigError(f"duplicate source name {name!r} in 'sources'", file=file)
        names.add(name)
        if merged["ann_file"] is not None and not isinstance(merged["ann_file"], str):
            raise ConfigError(f"'{where}.ann_file' must be a string", file=file)
        bs = merged["batch_size"]
        if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise ConfigError(f"'{where}.batch_size' must be a positive integer", file=file)
        lw = merged["loss_weight"]
        if isinstance(lw, bool) or not isinstance(lw, (int, float)) or lw < 0:
            raise ConfigError(f"'{where}.loss_weight' must be a number >= 0", file=file)
        checked.append(Config(merged))
    cfg["sources"] = checked
    if checked:
        try:  # optional hook owned by the multi-source module (issue 5)
            from omnisource.data import multisource
        except ImportError:
            return
        hook = getattr(multisource, "validate_sources", None)
        if hook is not None:
            hook(cfg["sources"], file=file)


def derive(cfg: Config, world_size: int = 1) -> Config:
    """Values that depend on the launch: total batch and the linearly scaled learning rate.

    Goyal et al.'s linear scaling rule: ``lr = base_lr * total_batch / reference_batch`` where
    ``total_batch = batch_size * world_size * accum_steps``. Stored under ``cfg.derived`` so the
    resolved config shows both the recipe's base lr and the one actually used.
    """
    total = cfg.data.batch_size * world_size * cfg.train.accum_steps
    ref = cfg.optim.reference_batch_size
    lr = cfg.optim.lr
    if cfg.optim.scale_lr and ref:
        lr = cfg.optim.lr * total / ref
    cfg["derived"] = Config({"world_size": world_size, "total_batch_size": total, "lr": lr,
                             "val_batch_size": cfg.data.val_batch_size or cfg.data.batch_size})
    return cfg


def save_resolved(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config (defaults filled, overrides applied) as YAML, atomically."""
    from omnisource.utils.io import atomic_write_text

    data = cfg.to_dict() if isinstance(cfg, Config) else _plain(cfg)
    data.pop("_source", None)  # bookkeeping; `derived` stays (load_config ignores it, derive() recomputes)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def config_from_dict(data: Mapping, source: str = "<checkpoint>") -> Config:
    """Rebuild a validated config from a plain dict (e.g. the one stored in a checkpoint)."""
    data = dict(data)
    derived = data.pop("derived", None)
    data.pop("_source", None)
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, data, file=source, text=None)
    out = _wrap(cfg)
    out["_source"] = source
    validate(out)
    if derived is not None:
        out["derived"] = _wrap(derived)
    return out
