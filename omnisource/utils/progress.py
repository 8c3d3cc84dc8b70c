"""When to show a tqdm bar: the project's one rule.

Why one place: training, testing, probing, checking and every web stage show progress, and
four copies of this rule had drifted apart (``OMNISOURCE_PROGRESS=0`` did not silence
``data check`` on a terminal, ``false`` meant off in some and on in others). A bar belongs on
a terminal; in logs and CI its carriage returns are noise, so it is off there unless asked.
"""
from __future__ import annotations

import os
import sys

ENV_VAR = "OMNISOURCE_PROGRESS"
_OFF = ("0", "", "false", "no", "off")


def progress_enabled(flag: bool | None = None) -> bool:
    """``flag`` when given (a command's ``--progress / --no-progress``); else
    ``$OMNISOURCE_PROGRESS`` (``1`` forces bars on, ``0`` / ``false`` / ``no`` / ``off`` off);
    else whether stderr is a terminal."""
    if flag is not None:
        return bool(flag)
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return env.strip().lower() not in _OFF
    return sys.stderr.isatty()
