"""Loading weights: mmaction2 0.x / 1.x and omnisource checkpoints, ImageNet backbones, inflation.

Reading a file never executes code from it:

1. ``torch.load(weights_only=True)``: enough for omnisource checkpoints and most others.
2. mmaction2 1.x checkpoints pickle mmengine objects in ``meta`` / ``message_hub``
   (``HistoryBuffer``, ``ConfigDict``, numpy arrays). Rather than importing mmengine we re-read
   the file with a *restricted* unpickler: the handful of torch functions that rebuild tensors
   are resolved, every other global becomes an inert :class:`OpaqueObject` that only records
   its arguments. Nothing named in the file is imported or called, so a hostile file cannot run
   code; we only keep tensors.
3. ``.safetensors`` files (timm's hub format) are parsed directly: the format is a JSON header
   plus raw little-endian buffers, so this avoids a dependency for ~20 lines.

:func:`load_checkpoint` loads a whole recognizer strictly: missing / unexpected keys are listed by
name in an :class:`~omnisource.errors.InputError` naming the file; a classifier of a different
size is an error unless ``reset_head=True`` asks for a fresh head.

:func:`load_pretrained_backbone` imports backbone weights only: an mmaction2/omnisource recognizer,
a bare backbone, or a foreign file the model's *family* knows (its ``pretrained_state`` hook, e.g.
torchvision / timm / mmpretrain ResNets for the ResNet families:
:func:`omnisource.models.resnet.imagenet_resnet_state`), inflating 2D kernels into 3D ones the I3D
way (repeat over time, divide by the temporal size) where the family says so (``inflate``), so a
temporally constant clip gives the 2D network's activations. A family whose mmaction2 key names
differ from ours gives a ``checkpoint_key_map``; both loaders apply it first.
"""
from __future__ import annotations

import json
import logging
import pickle
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from omnisource.errors import InputError

__all__ = ["LoadReport", "OpaqueObject", "read_checkpoint_file", "extract_state_dict", "load_checkpoint",
           "load_pretrained_backbone", "inflate_weight"]

log = logging.getLogger("omnisource.models.checkpoint")

_MAX_LISTED = 12


# ---------------------------------------------------------------------------------------------
# reading files
# ---------------------------------------------------------------------------------------------
class OpaqueObject(dict):
    """Stand-in for any pickled class we do not trust (mmengine, numpy, ...).

    It subclasses ``dict`` and has ``append``/``extend`` so SETITEMS / APPENDS opcodes of
    dict- or list-like originals (``ConfigDict``) succeed; construction args and state are only
    stored. ``__reduce__`` is not exercised: we never re-pickle these.
    """

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args
        self.kwargs = kwargs
        self.items_list: list[Any] = []
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items_list.append(item)

    def extend(self, items: Any) -> None:
        self.items_list.extend(items)

    def __repr__(self) -> str:
        return f"<opaque {self._qualname}>"

    # identity semantics, so placeholders can be dict keys / set members (numpy scalars, enums)
    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


_OPAQUE_CACHE: dict[str, type] = {}


def _opaque_class(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _OPAQUE_CACHE:
        _OPAQUE_CACHE[key] = type(f"Opaque[{key}]", (OpaqueObject,), {"_qualname": key})
    return _OPAQUE_CACHE[key]


def _safe_globals() -> dict[tuple[str, str], Any]:
    """Globals a restricted load may resolve: tensor rebuilding and plain containers only."""
    import collections
    import torch._utils as tu

    allowed: dict[tuple[str, str], Any] = {("collections", "OrderedDict"): collections.OrderedDict,
                                           ("torch", "Size"): torch.Size, ("torch", "device"): torch.device}
    for fn in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(tu, fn):
            allowed[("torch._utils", fn)] = getattr(tu, fn)
    for name in dir(torch):
        obj = getattr(torch, name, None)
        if isinstance(obj, torch.dtype):
            allowed[("torch", name)] = obj
    return allowed


# modules whose objects mmaction2 / mmengine checkpoints pickle in their metadata: turning them
# inert is routine (logged at info level); any other reference is reported as a warning
_ROUTINE_MODULES = ("mmengine", "mmcv", "mmaction", "mmdet", "mmpretrain", "numpy", "collections",
                    "_codecs", "torch", "builtins.set", "builtins.frozenset", "builtins.slice",
                    # mmengine's message_hub pickles enum members as getattr(EnumClass, name)
                    "builtins.getattr", "__builtin__.getattr")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :func:`_safe_globals`; anything else becomes opaque.

    Every global turned inert is recorded in :attr:`ignored` (the names of the last load), so
    the caller can say what a file referenced that was not imported or called."""

    _allowed: dict[tuple[str, str], Any] | None = None
    ignored: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _safe_globals()
        obj = _RestrictedUnpickler._allowed.get((module, name))
        if obj is not None:
            return obj
        _RestrictedUnpickler.ignored.add(f"{module}.{name}")
        return _opaque_class(module, name)


def _report_ignored(path: Path) -> None:
    names = sorted(_RestrictedUnpickler.ignored)
    odd = [n for n in names if not n.startswith(_ROUTINE_MODULES)]
    if odd:
        more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        log.warning("%s references code that was not imported or called (turned inert, weights kept): %s%s",
                    path, ", ".join(odd[:5]), more)
    elif names:
        log.info("%s: %d metadata object type(s) kept inert (%s)", path, len(names), ", ".join(names[:5]))


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# A module-like object for torch.load(pickle_module=...): torch subclasses our Unpickler (to map
# storages) and otherwise defers to our find_class.
_restricted_pickle = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=_restricted_load,
                                           __name__="omnisource_restricted_pickle")

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    data = path.read_bytes()
    if len(data) < 8:
        raise InputError("truncated safetensors file", file=path)
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as err:
        raise InputError(f"bad safetensors header: {err}", file=path) from None
    if not isinstance(header, dict):
        raise InputError(f"bad safetensors header: a JSON object was expected, got a {type(header).__name__}",
                         file=path)
    base = 8 + n
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            if not isinstance(info, dict):
                raise InputError(f"bad safetensors entry {name}: a JSON object was expected, got "
                                 f"{type(info).__name__}", file=path)
            dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
            if dtype is None:
                raise InputError(f"unsupported safetensors dtype {info.get('dtype')!r} for {name}", file=path)
            begin, end = (int(v) for v in info["data_offsets"])
            if not 0 <= begin <= end <= len(data) - base:
                raise InputError(f"tensor {name} lies outside the file (truncated?)", file=path)
            buf = bytearray(data[base + begin:base + end])
            t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
            out[name] = t.reshape(info["shape"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise InputError(f"bad safetensors entry {name}: {type(err).__name__}: {err}", file=path) from None
    return out


def read_checkpoint_file(path: str | Path) -> Any:
    """Load a checkpoint file onto the CPU without executing code from it (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint file not found", file=path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a paragraph of advice with terminal escapes; its first sentence says it
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        first = re.sub(r"\x1b\[[0-9;]*m", "", first).split(". ")[0].rstrip(".")
        log.info("%s: weights_only load refused (%s); re-reading with the restricted unpickler", path, first)
    except Exception as err:  # corrupt zip, truncated file, not a torch file at all
        if path.stat().st_size == 0:
            raise InputError("empty checkpoint file (0 bytes)", file=path) from None
        raise InputError(f"cannot read checkpoint: {type(err).__name__}: {err}", file=path) from None
    _RestrictedUnpickler.ignored = set()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except Exception as err:
        raise InputError(f"cannot read checkpoint: {type(err).__name__}: {err}", file=path) from None
    _report_ignored(path)
    return obj


# ---------------------------------------------------------------------------------------------
# state dicts
# ---------------------------------------------------------------------------------------------
_NESTING_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.")
_IGNORED_PREFIXES = ("data_preprocessor.",)


def _plain(obj: Any, depth: int = 0) -> Any:
    """Meta as plain data (opaque objects become their qualified name)."""
    if depth > 6:
        return "..."
    if isinstance(obj, OpaqueObject):
        return repr(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return f"<tensor {tuple(obj.shape)}>"
    return repr(obj)


def extract_state_dict(obj: Any, file: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the state dict in a loaded checkpoint; return ``(state_dict, meta)``.

    Handles 0.x/1.x nesting (``{'state_dict': ..., 'meta': ...}``), omnisource's ``model`` key,
    DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes, and drops mmaction2 1.x's
    ``data_preprocessor.*`` buffers (normalisation lives in our data presets).
    """
    if not isinstance(obj, Mapping):
        raise InputError(f"checkpoint holds a {type(obj).__name__}, not a dict of tensors", file=file)
    meta: dict[str, Any] = {}
    sd: Any = obj
    for _ in range(3):  # nested at most a few levels deep
        if not isinstance(sd, Mapping):
            break
        if sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            break
        inner = next((k for k in _NESTING_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        if isinstance(sd.get("meta"), Mapping):
            meta = _plain(sd["meta"])
        sd = sd[inner]
    if isinstance(sd, Mapping) and not sd and sd is not obj:
        raise InputError("the checkpoint's state dict is empty (no weights saved)", file=file)
    if not isinstance(sd, Mapping) or not sd:
        raise InputError("no state dict found in checkpoint "
                         f"(top-level keys: {', '.join(map(str, list(obj)[:10]))})", file=file)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"state dict has non-tensor entries: {', '.join(map(str, bad[:_MAX_LISTED]))}", file=file)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        key = str(key)
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        if key.startswith(_IGNORED_PREFIXES):
            continue
        out[key] = value
    return out, meta


def _listing(keys: list[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _is_tolerated_missing(key: str) -> bool:
    # Old checkpoints predate BN's num_batches_tracked; it does not affect any output.
    return key.endswith("num_batches_tracked")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model under DDP / DataParallel / torch.compile wrappers (keys match on it)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


@dataclass
class LoadReport:
    """What a load did; ``missing``/``unexpected`` are non-empty only for ``strict=False``."""

    file: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head_reset: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True,
                    reset_head: bool = False) -> LoadReport:
    """Load a recognizer checkpoint (mmaction2 0.x/1.x or omnisource) into ``model``.

    ``strict``: every model key must be in the file and vice versa, else an InputError lists
    them by name (missing ``num_batches_tracked`` buffers are tolerated: they never change an
    output). ``reset_head``: ignore the file's ``cls_head.*`` weights and re-initialise the
    classifier (fine-tuning to a new label set); without it a classifier of another size is an
    error, never silently replaced. 2D kernels load into ``1xkxk`` 3D kernels (mmaction2's C2D).
    """
    file = str(path)
    model = unwrap_model(model)
    sd, meta = extract_state_dict(read_checkpoint_file(path), file)
    from omnisource.models.registry import family_of

    fam = family_of(model)
    if fam is not None and fam.checkpoint_key_map is not None:   # mmaction2 0.x / 1.x names -> ours
        sd = fam.checkpoint_key_map(sd)
    own = model.state_dict()
    if _foreign(model, sd):
        raise InputError("this is an ImageNet backbone file (torchvision/timm key names), not a recognizer "
                         "checkpoint; pass it as the model's `pretrained` path instead", file=file)
    head_keys = {k for k in own if k.startswith("cls_head.")}
    if reset_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("cls_head.")}
    else:
        wrong_head = [k for k in head_keys if k in sd and sd[k].shape != own[k].shape]
        if wrong_head:
            k = "cls_head.fc_cls.weight" if "cls_head.fc_cls.weight" in wrong_head else sorted(wrong_head)[0]
            theirs, ours = tuple(sd[k].shape), tuple(own[k].shape)
            if theirs[0] == ours[0] and len(theirs) > 1:
                # same classes, other feature width: the backbone differs, and re-initialising
                # the head would only move the error to the backbone's keys
                raise InputError(
                    f"classifier {k} takes {theirs[1]} features in the checkpoint but {ours[1]} in "
                    f"the model: the checkpoint was trained with another backbone (depth or width); "
                    "check model.name and model.overrides", file=file)
            raise InputError(
                f"classifier {k} has shape {theirs} in the checkpoint but {ours} in the model "
                f"({theirs[0]} vs {ours[0]} classes); pass reset_head=True (--reset-head) to re-initialise "
                "the head", file=file)
    to_load: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in sd.items():
        if key not in own:
            continue
        target = own[key]
        if value.shape != target.shape:
            if value.dim() == 4 and target.dim() == 5 and target.shape[2] == 1 and \
                    value.shape == target.shape[:2] + target.shape[3:]:
                value = value.unsqueeze(2)  # 2D kernel into a 1xkxk kernel: same computation
            else:
                mismatched.append(f"{key} {tuple(value.shape)} vs model {tuple(target.shape)}")
                continue
        to_load[key] = value
    if mismatched:
        raise InputError(f"shape mismatch for {len(mismatched)} tensors: {_listing(mismatched)}", file=file)
    expected = set(own) - (head_keys if reset_head else set())
    missing = sorted(k for k in expected - set(to_load) if not _is_tolerated_missing(k))
    unexpected = sorted(set(sd) - set(own))
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        raise InputError("checkpoint does not match the model: " + "; ".join(parts), file=file)
    model.load_state_dict(to_load, strict=False)
    if reset_head:
        if hasattr(model, "reset_head"):
            model.reset_head()
        else:  # pragma: no cover - foreign modules
            for m in model.get_submodule("cls_head").modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    if missing or unexpected:
        log.warning("%s: loaded non-strictly; %d missing, %d unexpected keys", file, len(missing), len(unexpected))
    return LoadReport(file=file, missing=missing, unexpected=unexpected, head_reset=reset_head, meta=meta)


# ---------------------------------------------------------------------------------------------
# ImageNet backbones and 2D -> 3D inflation
# ---------------------------------------------------------------------------------------------
def inflate_weight(weight_2d: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
    """I3D inflation: repeat a ``[O, I, kh, kw]`` kernel ``kt`` times over time and divide by ``kt``."""
    kt = target_shape[2]
    return weight_2d.unsqueeze(2).expand(target_shape).contiguous() / kt


def _backbone_state_from(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Backbone tensors in our naming, plus a word on the source format: a recognizer of ours /
    mmaction2's (``backbone.*``), a bare backbone, or a foreign file the model's family knows
    (its ``pretrained_state`` hook: torchvision / timm ResNets for the ResNet families)."""
    from omnisource.models.registry import family_of

    fam = family_of(model)
    if fam is not None and fam.checkpoint_key_map is not None:
        sd = fam.checkpoint_key_map(sd)
    if any(k.startswith("backbone.") for k in sd) and not _foreign(model, sd):   # a recognizer
        return {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}, "mmaction2"
    backbone = model.backbone if hasattr(model, "backbone") else model
    own = backbone.state_dict()
    if own and sum(k in own for k in sd) >= max(1, len(own) // 2):       # a bare backbone in our naming
        return dict(sd), "mmaction2-backbone"
    if fam is not None and fam.pretrained_state is not None:
        return fam.pretrained_state(sd)
    return {}, "unknown"


def _foreign(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``sd`` is a pretrained file of another project (ImageNet ResNet names, ...) that
    the model's family can import: such files are for ``pretrained``, not ``load_checkpoint``."""
    from omnisource.models.registry import family_of

    fam = family_of(model)
    if fam is None or fam.pretrained_state is None:
        return False
    own = set(model.state_dict())
    if sum(k in own for k in sd) >= max(1, len(own) // 2):
        return False
    _, kind = fam.pretrained_state(dict(sd))
    return kind not in ("unknown", "mmaction2", "mmaction2-backbone")


def load_pretrained_backbone(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Initialise ``model.backbone`` from ImageNet / recognizer weights, inflating 2D kernels.

    Accepted files: torchvision or timm ResNet state dicts (``.pth``/``.safetensors``), mmpretrain
    ResNet checkpoints, mmaction2/omnisource recognizer checkpoints. For a 3D backbone every 2D
    ``[O, I, kh, kw]`` kernel becomes ``[O, I, kt, kh, kw]`` with value ``w / kt``. The head keeps
    its fresh initialisation. ``strict``: every backbone tensor must be found with a compatible
    shape (BN ``num_batches_tracked`` excepted).
    """
    file = str(path)
    p = str(path)
    if "://" in p:
        raise InputError("pretrained must be a local file path (omnisource never downloads weights)", file=p)
    sd, meta = extract_state_dict(read_checkpoint_file(path), file)
    model = unwrap_model(model)
    src, kind = _backbone_state_from(model, sd)
    if not src:
        raise InputError("unrecognised backbone checkpoint: expected torchvision/timm ResNet keys "
                         f"(conv1.weight, bn1.weight, layer1.0.conv1.weight) or mmaction2 keys; got "
                         f"{_listing(list(sd))}", file=file)
    from omnisource.models.registry import family_of

    fam = family_of(model)
    inflate = fam is None or fam.inflate
    backbone = model.backbone if hasattr(model, "backbone") else model
    own = backbone.state_dict()
    new: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    fresh = [re.compile(r) for r in (fam.pretrained_fresh if fam is not None else ())]
    for key, target in own.items():
        if key not in src:
            if not _is_tolerated_missing(key) and not any(r.search(key) for r in fresh):
                problems.append(f"{key} (missing)")
            continue
        value = src[key]
        if (value.dim() in (4, 5) and value.dim() <= target.dim() and value.shape[1] == 3
                and target.shape[1] != 3 and value.shape[0] == target.shape[0]):
            # an RGB stem into a flow (or other-channel) stem: the mean over RGB, repeated per input
            # channel -- TSN's cross-modality initialisation, what the zoo's flow models start from
            # (mmaction2 1.2.0 itself leaves a mismatched stem random)
            reps = (1, target.shape[1]) + (1,) * (value.dim() - 2)
            value = value.mean(dim=1, keepdim=True).repeat(*reps)
        if value.shape == target.shape:
            new[key] = value.to(target.dtype)
        elif (inflate and value.dim() == 4 and target.dim() == 5
              and value.shape == target.shape[:2] + target.shape[3:]):
            new[key] = inflate_weight(value, target.shape).to(target.dtype)
        else:
            problems.append(f"{key} {tuple(value.shape)} vs model {tuple(target.shape)}")
    if problems and strict:
        raise InputError(f"pretrained {kind} weights do not fit the backbone ({len(problems)} problems): "
                         f"{_listing(problems)}", file=file)
    backbone.load_state_dict(new, strict=False)
    unused = sorted(set(src) - set(own))
    if unused:
        log.info("%s: %d tensors of the pretrained file not used: %s", file, len(unused), _listing(unused))
    return LoadReport(file=file, missing=[p.split(" ")[0] for p in problems], unexpected=unused, meta=meta)
