"""Error types that carry *where* a problem is (file, line), so users never see a deep traceback.

The CLI catches :class:`OmniSourceError` and prints ``str(err)`` (``file:line: message``) with
exit status 2; everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path


class OmniSourceError(Exception):
    """Base class for user-facing errors (bad input, bad config, unreadable data)."""


class InputError(OmniSourceError):
    """Bad user input located in a file, optionally at a 1-based line number."""

    def __init__(self, message: str, file: str | Path | None = None, line: int | None = None):
        self.message = message
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

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
