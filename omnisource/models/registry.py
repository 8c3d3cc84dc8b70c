"""Model families and presets: ``create_model(name, num_classes=None, **overrides)``.

Two kinds of entry, both registered by the module that defines them:

* a :class:`Family` (``tsn``, ``resnet3d``, later ``tsm``, ``slowfast``, ``x3d`` ...): its input
  contract (``layout``: ``'2d'`` frames ``[N, S, 3, H, W]``, ``'3d'`` clips ``[N, V, 3, T, H, W]``,
  ``'audio'`` spectrograms, or its own), how to build backbone + neck + head + recognizer from a
  row, the overrides it accepts, its checkpoint hooks (mmaction2 key map, pretrained files it can
  start from, 2D->3D inflation), a tiny test configuration and an example input;
* a :class:`ModelPreset`: one row of a family's table -- the recipe facts of one mmaction2 zoo
  config (dataset, sampling, epochs, pipelines, input size, ImageNet init), its mmaction2 0.x
  name (the registry key) and every 1.x config name it reproduces, and the parameter count
  mmaction2 1.2.0 reports for it.

Why this shape (timm's ``_registry``/``_factory``): adding a family is adding one file that
imports this module, defines its blocks, a table of rows and one :func:`register_family` call;
nothing else in the package changes. Tests and docs read the registry (``list_models``,
:func:`list_families`, :func:`preset_module`), never hand-kept lists.

Names resolve in this order: the 0.x name, any 1.x name, a path ending in either plus ``.py``
(``configs/recognition/tsn/<1.x name>.py``), and the name with ``-`` read as ``_``. Unknown
names and unknown overrides are :class:`~omnisource.errors.ConfigError` naming the closest
valid one.
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from omnisource.errors import ConfigError

__all__ = ["Family", "ModelPreset", "register_family", "register_presets", "create_model", "list_models",
           "list_families", "get_family", "get_model_preset", "resolve_name", "preset_module", "family_of",
           "example_input", "IMAGENET_MEAN", "IMAGENET_STD", "COMMON_OVERRIDES"]

# mmaction2's ActionDataPreprocessor normalisation, on the 0..255 scale.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# what every family accepts (a family adds its own)
COMMON_OVERRIDES = frozenset({"depth", "base_channels", "in_channels", "dropout", "init_std", "pretrained"})


@dataclass
class ModelPreset:
    """One zoo row. Overrides may change the network, never these recipe facts."""

    name: str                       # the registry key: mmaction2 0.x config name (or ours)
    family: str                     # a registered Family
    num_classes: int
    dataset: str
    clip_len: int                   # frames per clip (1 for 2D models)
    frame_interval: int
    num_clips: int                  # training clips / segments
    epochs: int
    train_preset: str               # omnisource.data.presets pipeline names
    test_preset: str
    mmaction2_configs: tuple[str, ...] = ()   # every mmaction2 1.x config name this row reproduces
    depth: int | None = None
    arch: str = ""                  # the variant within the family (a row of its table, e.g. 'c2d')
    imagenet_pretrained: bool = False   # the recipe starts from ImageNet weights (pass pretrained=PATH)
    dropout: float = 0.5
    init_std: float = 0.01
    input_size: int = 224
    # mmaction2's data_preprocessor normalisation of this row (0..255 scale); None: ImageNet's
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    model: dict[str, Any] = field(default_factory=dict)  # default builder keyword arguments
    params: int | None = None       # parameters mmaction2 1.2.0 builds for this config (None: not a zoo row)
    recipe: bool = True             # configs/<name>.yaml exists (the demo's networks have none)
    doc: str = ""
    module: str = ""                # the module that registered the row

    @property
    def mmaction2_config(self) -> str:
        """The main 1.x config name ('' when mmaction2 ships none)."""
        return self.mmaction2_configs[0] if self.mmaction2_configs else ""

    @property
    def layout(self) -> str:
        return get_family(self.family).layout


BuildFn = Callable[[ModelPreset, int, dict[str, Any], dict[str, Any]], nn.Module]


@dataclass
class Family:
    """An architecture family: how rows of its table become recognizers, and its hooks.

    ``build(preset, num_classes, options, meta) -> recognizer``: ``options`` are the row's
    defaults merged with the user's validated overrides (``pretrained`` already removed), and
    ``meta`` the dict the recognizer carries as ``model.meta`` (fill in what the family knows).
    """

    name: str
    layout: str                                  # input contract: '2d' | '3d' | 'audio' | own name
    build: BuildFn
    overrides: frozenset[str]                    # keys create_model accepts for this family
    tiny: dict[str, Any] = field(default_factory=dict)   # overrides of a tiny test network
    # a batch of ``n`` inputs of the declared contract for a model of this family (tests, flops)
    example_input: Callable[[nn.Module, int], torch.Tensor] | None = None
    # mmaction2 0.x / 1.x state-dict keys -> ours (None: identical names)
    checkpoint_key_map: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    # a foreign pretrained file's state dict -> (backbone tensors in our names, a word on the format);
    # ({}, 'unknown') when it is not one this family can start from
    pretrained_state: Callable[[dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], str]] | None = None
    inflate: bool = False                        # 2D kernels of pretrained files inflate into 3D ones
    # regexes of backbone keys a pretrained (ImageNet) file does not have and that keep their fresh
    # initialisation (TimeSformer's time embedding, TIN's offset nets, TANet's TAMs, non-local blocks)
    pretrained_fresh: tuple[str, ...] = ()
    # importable modules the family needs beyond the default install (an optional extra, e.g. timm)
    requires: tuple[str, ...] = ()
    doc: str = ""
    module: str = ""


_FAMILIES: dict[str, Family] = {}
_PRESETS: dict[str, ModelPreset] = {}
_ALIASES: dict[str, str] = {}


def _caller_module(depth: int = 2) -> str:
    frame = inspect.stack()[depth].frame
    return str(frame.f_globals.get("__name__", "?"))


def register_family(family: Family) -> Family:
    """Register ``family`` (once); records the defining module."""
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} registered twice")
    if not family.module:
        family.module = _caller_module()
    family.overrides = frozenset(family.overrides) | COMMON_OVERRIDES
    _FAMILIES[family.name] = family
    return family


def register_presets(rows: Iterable[ModelPreset]) -> list[ModelPreset]:
    """Register the rows of a family's table; records the defining module of each."""
    module = _caller_module()
    out = []
    for row in rows:
        if row.family not in _FAMILIES:
            raise ValueError(f"preset {row.name}: family {row.family!r} is not registered")
        if row.name in _PRESETS or row.name in _ALIASES:
            raise ValueError(f"model {row.name!r} registered twice")
        for alias in row.mmaction2_configs:
            if alias in _ALIASES or alias in _PRESETS:
                raise ValueError(f"mmaction2 config name {alias!r} claimed by two presets")
        if not row.module:
            row.module = module
        row.mmaction2_configs = tuple(row.mmaction2_configs)
        _PRESETS[row.name] = row
        for alias in row.mmaction2_configs:
            _ALIASES[alias] = row.name
        out.append(row)
    return out


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered preset names matching a shell-style ``pattern``, of one ``family`` if given."""
    return sorted(n for n, p in _PRESETS.items()
                  if fnmatch.fnmatchcase(n, pattern) and (family is None or p.family == family))


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_FAMILIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (families: {', '.join(list_families())})"
        raise ConfigError(f"unknown model family {name!r}{hint}") from None


def resolve_name(name: str) -> str:
    """The registry key of a 0.x name, a 1.x name, a ``.py`` config path or a ``-`` spelling."""
    key = Path(name).name[:-3] if name.endswith(".py") else name
    if key in _PRESETS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    under = key.replace("-", "_")
    if under in _PRESETS:
        return under
    known = list(_PRESETS) + list(_ALIASES)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
    raise ConfigError(f"unknown model {name!r}{hint}")


def get_model_preset(name: str) -> ModelPreset:
    """The row of ``name`` (any accepted spelling; a copy, safe to modify)."""
    return copy.deepcopy(_PRESETS[resolve_name(name)])


def preset_module(name: str) -> str:
    """The module that registered preset ``name``."""
    return _PRESETS[resolve_name(name)].module


def missing_requirements(name: str) -> list[str]:
    """Modules that the family of model ``name`` (or family ``name``) needs and that cannot be
    imported here (an optional extra not installed): tests and docs skip those rows."""
    import importlib.util

    fam = _FAMILIES[name] if name in _FAMILIES else get_family(_PRESETS[resolve_name(name)].family)
    return [m for m in fam.requires if importlib.util.find_spec(m) is None]


def family_of(model: nn.Module) -> Family | None:
    """The family a built recognizer came from (``model.meta['family']``), or None."""
    name = (getattr(model, "meta", None) or {}).get("family")
    return _FAMILIES.get(name) if name else None


def example_input(model: nn.Module, n: int = 2, size: int = 32) -> torch.Tensor:
    """A batch of ``n`` random inputs in the model's declared contract (its family's own, else the
    layout's: 2D ``[n, 2, C, s, s]``, 3D ``[n, 1, C, T, s, s]``)."""
    fam = family_of(model)
    if fam is not None and fam.example_input is not None:
        return fam.example_input(model, n)
    meta = model.meta
    c = int(meta.get("in_channels", 3))
    if meta["layout"] == "2d":
        return torch.randn(n, 2, c, size, size)
    t = max(8, int(meta.get("clip_len") or 8))   # I3D needs 8 frames for its temporal strides
    return torch.randn(n, 1, c, min(t, 8), size, size)


def _check_overrides(fam: Family, preset: ModelPreset, overrides: Mapping[str, Any]) -> None:
    for key in overrides:
        if key not in fam.overrides:
            close = difflib.get_close_matches(key, sorted(fam.overrides), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown override {key!r} for {fam.name} model {preset.name}{hint} "
                              f"(valid: {', '.join(sorted(fam.overrides))})")


def _plain_value(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str, list, tuple)) else str(v)


def create_model(name: str, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build the recognizer of preset ``name``.

    ``num_classes`` defaults to the preset's dataset (400 for Kinetics-400). Overrides are the
    family's (see its module); unknown keys raise ConfigError naming the closest valid key.
    ``pretrained=PATH`` initialises the backbone from a local file the family understands
    (ImageNet / recognizer weights; 2D kernels inflated where the family says so).
    """
    preset = get_model_preset(name)
    fam = get_family(preset.family)
    _check_overrides(fam, preset, overrides)
    missing = missing_requirements(fam.name)
    if missing:
        raise ConfigError(f"model {preset.name} needs {', '.join(missing)}, which is not installed "
                          f"(pip install 'omnisource[{missing[0]}]')")
    opts = {**preset.model, **{k: v for k, v in overrides.items() if v is not None}}
    if "num_classes" in opts:  # tolerated when passed through **overrides by configs
        num_classes = opts.pop("num_classes") if num_classes is None else num_classes
    num_classes = preset.num_classes if num_classes is None else int(num_classes)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be positive, got {num_classes}")
    pretrained = opts.pop("pretrained", None)
    meta = {k: v for k, v in asdict(preset).items() if k not in ("model", "num_classes", "doc", "params",
                                                                  "recipe", "module")}
    meta.update(family=fam.name, mmaction2_config=preset.mmaction2_config,
                mmaction2_configs=list(preset.mmaction2_configs), mean=list(preset.mean or IMAGENET_MEAN),
                std=list(preset.std or IMAGENET_STD), pretrained=None, in_channels=int(opts.get("in_channels", 3)),
                overrides={k: _plain_value(v) for k, v in overrides.items() if v is not None})
    try:
        model = fam.build(preset, num_classes, opts, meta)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {preset.name}: {err}") from None
    model.meta.setdefault("layout", fam.layout)
    if pretrained is not None:
        from omnisource.models.checkpoint import load_pretrained_backbone

        load_pretrained_backbone(model, pretrained)
        model.meta["pretrained"] = str(pretrained)
    return model
