"""omnisource.utils.progress: one rule for tqdm bars, used by every command."""
from __future__ import annotations

import io
import sys

import pytest

from omnisource.utils.progress import progress_enabled


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("env, tty, expected", [
    (None, False, False), (None, True, True),          # default: a terminal gets a bar
    ("1", False, True), ("yes", False, True),          # forced on in logs / CI
    ("0", True, False), ("false", True, False), ("off", True, False), ("", True, False),
])
def test_environment_and_terminal(monkeypatch, env, tty, expected):
    if env is None:
        monkeypatch.delenv("OMNISOURCE_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("OMNISOURCE_PROGRESS", env)
    monkeypatch.setattr(sys, "stderr", _Tty() if tty else io.StringIO())
    assert progress_enabled() is expected
    assert progress_enabled(True) is True and progress_enabled(False) is False  # a flag wins


def test_every_command_uses_the_same_rule(monkeypatch):
    # the copies this replaced disagreed: data check kept its bar on a terminal with
    # OMNISOURCE_PROGRESS=0; a test that each caller goes through the one function
    from omnisource.data import check
    from omnisource.engine import logging_utils
    from omnisource.web import stage

    assert stage.progress_enabled is progress_enabled
    assert logging_utils.progress_enabled is progress_enabled
    assert check.progress_enabled is progress_enabled


@pytest.mark.parametrize("env, tty, shown", [("0", True, False), ("1", False, True), (None, True, True)])
def test_probe_many_follows_the_rule(monkeypatch, tmp_path, env, tty, shown):
    from omnisource.data.decode import probe_many

    if env is None:
        monkeypatch.delenv("OMNISOURCE_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("OMNISOURCE_PROGRESS", env)
    err = _Tty() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    (rec,) = probe_many([tmp_path / "missing.mp4"], workers=1)
    assert not rec["readable"]
    assert ("probe" in err.getvalue()) is shown
