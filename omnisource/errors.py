"""Error types that carry *where* a problem is (file, line), so users never see a deep traceback.

The CLI catches :class:`OmniSourceError` and prints ``str(err)`` (``file:line: message``) with
exit status 2; everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import re
from pathlib import Path

# torch's DataLoader re-raises a worker's exception as ``type(err)(text)``, where text is
# "Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...\n<module>.DataError:
# <message>": the user's one line is the last one
_WORKER_WRAPPED = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*\nOriginal Traceback", re.S)


def _unwrap_worker_text(text: str) -> str:
    """The original one-line message inside torch's wrapper text (unchanged otherwise)."""
    if not _WORKER_WRAPPED.match(text):
        return text
    last = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), text)
    return re.sub(r"^[\w.]*(?:Error|Exception): ", "", last.strip())


class OmniSourceError(Exception):
    """Base class for user-facing errors (bad input, bad config, unreadable data)."""


class InputError(OmniSourceError):
    """Bad user input located in a file, optionally at a 1-based line number."""

    def __init__(self, message: str, file: str | Path | None = None, line: int | None = None):
        self.message = _unwrap_worker_text(message) if file is None else message
        self.file = None if file is None else str(file)
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        if self.file is None:
            return self.message
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class ConfigError(InputError):
    """Invalid configuration (unknown key, wrong type, bad value)."""


class DataError(OmniSourceError):
    """A sample (video, image, frame folder) that cannot be read; names the file and reason."""

    def __init__(self, path: str | Path, reason: str | None = None):
        if reason is None:   # re-raised from a DataLoader worker: one text holding both
            text = _unwrap_worker_text(str(path))
            self.path, _, self.reason = text.partition(": ")
            super().__init__(text)
            return
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NoSpaceError(OmniSourceError):
    """The disk (or quota) filled up while writing ``path``; nothing finished was lost."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        super().__init__(f"no space left on the device writing {self.path} (the previous version, if "
                         "any, is intact: free space and run the same command again)")
