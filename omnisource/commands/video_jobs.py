"""What ``extract-frames`` and ``resize-videos`` share: the input (a video list or a folder), the
output layout (the input's relative paths under ``--out``), the resumable run and the summary."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable



def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", type=Path, help="a video list ('path [label...]' rows) or a folder of videos")
    p.add_argument("--out", type=Path, required=True, help="output folder (the input's layout below it)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder a list's paths are relative to (default: the list's folder)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes")
    p.add_argument("--short-side", type=int, default=None, help="resize so the short side is this (e.g. 256, 320)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("W", "H"), help="resize to a fixed size")
    p.add_argument("--force", action="store_true", help="start again in a folder holding another run's results")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable video (exit 2)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal)")


def inputs(args: argparse.Namespace) -> tuple[list[tuple[str, Path, Any]], str]:
    """``[(relative path, absolute path, labels)]`` and a digest naming the input."""
    from omnisource.data.annotations import VIDEO_EXTS, load_annotations, resolve_path
    from omnisource.errors import InputError

    src: Path = args.src
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
        if not files:
            raise InputError("no video files below this folder", file=src)
        rows = [(p.relative_to(src).as_posix(), p, None) for p in files]
    elif src.is_file():
        root = args.data_root or src.parent
        if not root.is_dir():
            raise InputError("data root folder not found", file=root)
        samples = load_annotations(src, format="video")
        if not samples:
            raise InputError("the list names no video", file=src)
        rows = [(s.path, resolve_path(root, s.path, s.file, s.line), s.label) for s in samples]
    else:
        raise InputError("neither a video list nor a folder", file=src)
    if args.short_side is not None and args.short_side < 2:
        raise InputError(f"--short-side must be at least 2, got {args.short_side}")
    h = hashlib.sha1(json.dumps([r[0] for r in rows]).encode())
    h.update(json.dumps([args.short_side, args.size]).encode())
    return rows, h.hexdigest()


def run_resumable(args: argparse.Namespace, what: str, jobs: list[tuple[str, Any]], fn: Callable, digest: str,
                  clean: tuple[str, ...]) -> dict[str, dict]:
    from omnisource.errors import InputError
    from omnisource.utils.jobs import prepare_folder, run_jobs
    from omnisource.utils.lock import WorkDirLock

    args.out.mkdir(parents=True, exist_ok=True)
    with WorkDirLock(args.out, what=f"omnisource {what}"):
        done = prepare_folder(args.out, digest, str(args.src), args.force, clean=clean)

        def stop(key: str, res: dict) -> None:
            if args.strict:
                raise InputError(f"cannot read {key}: {res['reason']}", file=args.src)
        return run_jobs(args.out, jobs, fn, done, workers=args.workers, desc=what, progress=args.progress,
                        strict_fail=stop)


def summarise(args: argparse.Namespace, what: str, rows: list, results: dict[str, dict]) -> int:
    from omnisource.utils.io import atomic_write_json, atomic_write_text

    failed = [(r[0], results[r[0]].get("reason", "")) for r in rows if results[r[0]]["status"] == "failed"]
    atomic_write_text(args.out / "failures.txt", "".join(f"{p}\t{why}\n" for p, why in failed))
    summary = {"videos": len(rows), "done": len(rows) - len(failed), "failed": len(failed)}
    atomic_write_json(args.out / "summary.json", summary)
    print(f"{what}: {summary['done']} of {len(rows)} videos done, {len(failed)} unreadable"
          + (f" (failures.txt: {failed[0][0]}: {failed[0][1]}{' ...' if len(failed) > 1 else ''})" if failed else "")
          + f"; output: {args.out}")
    if failed and len(failed) == len(rows):
        print(f"{what}: no video could be read", file=sys.stderr)
        return 1
    return 0
