"""The single entry point: ``omnisource <command> ...``.

Each command lives in ``omnisource/commands/<module>.py`` and exposes

* ``HELP``: one line shown in ``omnisource --help``;
* ``add_arguments(parser: argparse.ArgumentParser) -> None``;
* ``run(args: argparse.Namespace) -> int``: the exit status.

Commands are imported lazily (only the one being run), so ``omnisource probe`` does not pay
for importing torch models, and a broken optional dependency of one command cannot break the
others. User-facing errors (:class:`omnisource.errors.OmniSourceError`) are printed as one
line naming the file and line, with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
from typing import Sequence

from omnisource import __version__
from omnisource.errors import OmniSourceError

# command name -> module under omnisource.commands (kept in the order shown in --help)
COMMANDS: dict[str, str] = {
    "run": "run",                # end-to-end OmniSource pipeline
    "train": "train",
    "test": "test",
    "predict": "predict",
    "bench-infer": "bench_infer",
    "flops": "flops",
    "fuse": "fuse",
    "probe": "probe",
    "extract-audio": "extract_audio",
    "extract-frames": "extract_frames",
    "resize-videos": "resize_videos",
    "prepare": "prepare",
    "zoo": "zoo",
    "data": "data",              # data check, ...
    "queries": "queries",
    "ingest": "ingest",
    "dedup": "dedup",
    "filter": "filter",
    "fit-motion": "fit_motion",
    "untrimmed": "untrimmed",
    "report": "report",
}


def _load(name: str):
    return importlib.import_module(f"omnisource.commands.{COMMANDS[name]}")


def _available() -> dict[str, str]:
    """Commands whose module exists (so a partially built tree still has a working CLI)."""
    out = {}
    for name, mod in COMMANDS.items():
        if importlib.util.find_spec(f"omnisource.commands.{mod}") is not None:
            out[name] = mod
    return out


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnisource",
        description="Omni-sourced webly-supervised learning for video recognition.",
    )
    parser.add_argument("--version", action="version", version=f"omnisource {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _available():
        if only is not None and name != only:
            # cheap placeholder: help text without importing the module
            sub.add_parser(name, help=f"(see omnisource {name} --help)", add_help=False)
            continue
        module = _load(name)
        p = sub.add_parser(name, help=getattr(module, "HELP", None), description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so both unwind the same way: atomic
    writers drop their temporary files, stage journals stay consistent, one message is printed."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


# what to run to continue after an interruption, per command (others: "run it again")
RESUME_HINTS = {
    "train": "run the same command with --resume auto to continue from the last checkpoint",
    "run": "run the same command again: finished stages are reused, the interrupted one resumes",
    "ingest": "run the same command again: it resumes where it stopped",
    "dedup": "run the same command again: it resumes where it stopped",
    "filter": "run the same command again: it resumes where it stopped",
    "untrimmed": "run the same command again: it resumes where it stopped",
}


def _interrupt_in_chain(err: BaseException) -> KeyboardInterrupt | None:
    seen = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _interrupted(command: str, err: KeyboardInterrupt) -> int:
    term = isinstance(err, Terminated)
    hint = RESUME_HINTS.get(command, "run the same command again")
    print(f"omnisource {command}: interrupted ({'SIGTERM' if term else 'SIGINT'}); {hint}",
          file=sys.stderr, flush=True)
    return 143 if term else 130


def _install_sigterm() -> None:
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):   # not the main thread (embedded use): leave it alone
        pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    only = first if first in COMMANDS else None
    if only is None and not any(a in ("-h", "--help", "--version") for a in argv):
        build_parser().print_help()
        return 2
    parser = build_parser(only)
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help()
        return 2
    _install_sigterm()
    try:
        return int(module.run(args) or 0)
    except OmniSourceError as err:
        print(f"omnisource {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        return _interrupted(args.command, err)
    except BrokenPipeError:
        # the reader of our output went away (`omnisource zoo list | head`): not an error of ours;
        # point stdout at /dev/null so the interpreter's final flush does not raise again
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        # an interrupt that landed inside a library call which then failed while unwinding
        # (torch.save's zip writer raises "unexpected pos" when its write is cut): still an
        # interruption, not a crash -- the atomic writers have already removed their temporary
        stop = _interrupt_in_chain(err)
        if stop is None:
            raise
        return _interrupted(args.command, stop)
    finally:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
