"""Atomic file output: write to a temporary file in the same folder, fsync, then rename.

Long jobs may be killed at any moment (kill -9); a reader must only ever see a complete old
file or a complete new one, never a torn write. ``os.replace`` is atomic on POSIX within one
file system, which is why the temporary file lives beside the target.

Two details users see: the finished file gets the usual mode of a new file (``0666 & ~umask``;
``mkstemp``'s private 0600 used to leak onto every output), and a full disk (or quota) is one
:class:`~omnisource.errors.NoSpaceError` naming the file -- the old file is untouched and the
temporary one removed, so freeing space and resuming loses nothing.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _new_file_mode() -> int:
    """``0666 & ~umask`` (read without changing it where /proc tells, else set-and-restore)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return 0o666 & ~old


def _no_space(err: BaseException, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno in _NO_SPACE:
        return True
    if isinstance(err, RuntimeError) and "write failed" in str(err):   # torch's zip writer
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free < (1 << 20)
    return False


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write by name; renamed onto ``path`` when the block
    succeeds (after an ``fsync`` unless the caller already did one), removed when it fails.

    The temporary name keeps ``path``'s suffix, for writers that choose a format by file name
    (FFmpeg's muxers: :mod:`omnisource.utils.video_writer`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as err:
        if _no_space(err, path.parent):
            raise _no_space_error(path) from None
        raise
    os.close(fd)
    try:
        os.chmod(tmp, _new_file_mode())
        yield Path(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _no_space(err, path.parent):
            raise _no_space_error(path) from None
        raise


def _no_space_error(path: Path) -> Exception:
    from omnisource.errors import NoSpaceError

    return NoSpaceError(path)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename onto ``path`` on success only."""
    binary = "b" in mode
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file + rename (checkpoints are never half-written)."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def sha1_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha1_json(obj: Any) -> str:
    """Stable hash of a JSON-able object (used for config / input hashes in meta.json)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
