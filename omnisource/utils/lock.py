"""One run per work dir: an exclusive, advisory lock on ``WORK/.lock``.

Why: two ``omnisource run`` (or ``train``) on one work dir used to interleave, one failing a
stage on a file the other had just replaced, both exiting 0, and later runs reusing the damage.
The lock is ``fcntl.flock`` on a file that stays in the folder: the kernel releases it when the
process ends however it ends (kill -9 included), so a stale lock can never block a resume. The
file holds who has it (pid, host, command, start time) so the second run can say so.

Nested locks on *different* folders are fine (``omnisource run`` holds ``W/.lock`` and each
training stage it runs holds ``W/stages/<name>/.lock``); locking one folder twice in one process
is refused like any second holder.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from omnisource.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not guarded
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class WorkDirLock:
    """``with WorkDirLock(work_dir, what="omnisource run"):`` -- held for the block.

    Raises :class:`ConfigError` at entry when another process (or another lock object in this
    one) holds the folder, naming the holder and exiting the CLI with status 2."""

    def __init__(self, work_dir: str | Path, what: str = "omnisource", name: str = LOCK_NAME):
        self.dir = Path(work_dir)
        self.path = self.dir / name
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> "WorkDirLock":
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(f"work dir is in use by {holder}; wait for it to finish, or use "
                              f"another work dir", file=self.dir) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.what,
                "argv": sys.argv[1:6], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)   # the file stays (deleting it would race a new holder)
        except OSError:
            pass
        os.close(self._fd)              # closing drops the flock
        self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (f"{info.get('command', 'omnisource')} (pid {info.get('pid')} on {info.get('host')}, "
            f"started {info.get('started')})")
