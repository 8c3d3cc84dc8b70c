"""Reading YAML configs defensively: bounded size, no duplicate keys, bounded nesting.

Why not plain ``yaml.safe_load(path.read_text())``: a config is user input. ``_base_:
/dev/zero`` read until the machine ran out of memory, a 50 MB file parsed for minutes, a deeply
nested one raised RecursionError with a traceback, and a key written twice silently kept the
second value (a recipe that sets ``lr`` twice trains with the one you did not look at). Here:

* only regular files are read, at most :data:`MAX_BYTES` (``$OMNISOURCE_MAX_CONFIG_BYTES``);
* a duplicate key is an error naming both lines;
* nesting deeper than :data:`MAX_DEPTH` is an error (checked on the composed node tree, before
  any Python object is built), and a RecursionError inside the parser is caught too.

Errors are :class:`~omnisource.errors.ConfigError` naming the file and, where known, the line;
a huge path or value is echoed as a short prefix.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from omnisource.errors import ConfigError

MAX_BYTES = int(os.environ.get("OMNISOURCE_MAX_CONFIG_BYTES", 4 * 1024 * 1024))
MAX_DEPTH = 64


def short(text: Any, n: int = 120) -> str:
    """At most ``n`` characters of ``text`` for an error message."""
    s = str(text)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} characters)"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:      # an unhashable key: let PyYAML report it
            continue
        if first is not None:
            raise ConfigError(f"duplicate key {short(key, 60)!r} (first on line {first})",
                              line=key_node.start_mark.line + 1)
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _depth(node: yaml.Node) -> int:
    """Nesting depth of a composed node tree, iteratively (no recursion to overflow)."""
    best, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        if d > MAX_DEPTH:
            return d
        if isinstance(n, yaml.MappingNode):
            stack.extend((v, d + 1) for kv in n.value for v in kv)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend((v, d + 1) for v in n.value)
    return best


def read_text_capped(path: str | Path, what: str = "config") -> str:
    """The text of a regular file of at most :data:`MAX_BYTES` bytes (ConfigError otherwise)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", file=short(p)) from None
    except OSError as err:
        raise ConfigError(f"cannot read {what}: {err.strerror}", file=short(p)) from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "not a file")
        raise ConfigError(f"{what} is {kind}, not a regular file", file=short(p))
    if st.st_size > MAX_BYTES:
        raise ConfigError(f"{what} is {st.st_size} bytes, over the {MAX_BYTES}-byte cap "
                          "(OMNISOURCE_MAX_CONFIG_BYTES raises it)", file=short(p))
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read {what}: {err.strerror}", file=short(p)) from None
    if len(raw) > MAX_BYTES:   # grew while we looked
        raise ConfigError(f"{what} is over the {MAX_BYTES}-byte cap", file=short(p))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} is not UTF-8 text ({err.reason} at byte {err.start})", file=short(p)) from None


def load_yaml_text(text: str, file: str | Path | None = None) -> Any:
    """Parse ``text`` (one YAML document) with the checks above; errors name ``file``."""
    where = None if file is None else short(file)
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        if node is None:
            return None
        if _depth(node) > MAX_DEPTH:
            raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", file=where)
        loader = _UniqueKeyLoader("")
        try:
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError as err:
        if err.file is None:
            raise ConfigError(err.message, file=where, line=err.line) from None
        raise
    except RecursionError:
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", file=where) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {short(getattr(err, 'problem', None) or err, 200)}", file=where,
                          line=None if mark is None else mark.line + 1) from None


def read_yaml_file(path: str | Path, what: str = "config") -> tuple[Any, str]:
    """(data, text) of a YAML file: size-capped, duplicate keys and deep nesting refused."""
    text = read_text_capped(path, what)
    return load_yaml_text(text, path), text
