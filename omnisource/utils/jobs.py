"""Per-file jobs over a process pool that survive kill -9: the runner of ``extract-audio``,
``extract-frames`` and ``resize-videos``.

Each job writes its own outputs atomically (so a file that exists is complete) and returns a small
JSON-able dict with a ``status``; the runner appends it, one line per finished job, to
``<out>/.status.jsonl``, whose first line names what the folder holds (a digest of the job list).
A re-run reads the file (a line cut short by a kill is ignored: that job runs again) and runs only
the jobs not recorded. Another job list in the same folder needs ``force``; ``force`` starts again.
The folder is locked for the run (one run per folder).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from omnisource.errors import InputError

__all__ = ["STATUS", "read_status", "run_jobs"]

STATUS = ".status.jsonl"
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")


def read_status(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(header, {job key: result}) of a status file; torn lines are skipped."""
    header: dict[str, Any] = {}
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return header, done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:      # the line a kill cut short: that job is redone
            continue
        if isinstance(rec, dict) and "digest" in rec and "key" not in rec:
            header = rec
        elif isinstance(rec, dict) and "key" in rec:
            done[rec["key"]] = rec
    return header, done


def prepare_folder(out: Path, digest: str, what: str, force: bool, clean: Sequence[str] = ()) -> dict[str, dict]:
    """Check / reset ``out`` for a job list with ``digest``; returns the jobs already done."""
    import shutil

    status = out / STATUS
    header, done = read_status(status)
    if header and header.get("digest") != digest and not force:
        raise InputError(f"the folder holds the results of another list ({header.get('what', '?')}); pass "
                         "--force to start again or choose another --out", file=out)
    if force or not header:
        for name in clean:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        status.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(status, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"digest": digest, "what": what}) + "\n")
        done = {}
    return done


def run_jobs(out: Path, jobs: Sequence[tuple[str, Any]], fn: Callable[[Any], dict[str, Any]], done: dict[str, dict],
             *, workers: int, desc: str, progress: bool | None = None,
             strict_fail: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run ``fn(args)`` for every ``(key, args)`` not in ``done`` on ``workers`` spawned processes
    (``fn`` must be a module-level function), recording each result; returns every result by key.
    ``strict_fail(key, result)`` is called for each failed job and may raise to stop the run."""
    from omnisource.utils.progress import progress_enabled

    todo = [(k, a) for k, a in jobs if k not in done]
    if done:
        print(f"resuming: {len(done)} of {len(jobs)} done already", file=sys.stderr)
    results = dict(done)
    if not todo:
        return results
    n = max(1, min(int(workers), len(todo)))
    # one thread of BLAS / OpenMP / OpenCV per worker: the workers are the parallelism, and
    # OpenBLAS threads busy-waiting on an oversubscribed machine made a 0.1 ms matmul take minutes
    # (seen with 2 workers beside other jobs on 2 cores). Children read these at start-up.
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"))
        it = pool.map(fn, [a for _, a in todo], chunksize=1)    # starts the workers now
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with open(out / STATUS, "a", encoding="utf-8") as log, pool:
        if progress_enabled(progress):
            from tqdm import tqdm

            it = tqdm(it, total=len(todo), desc=desc, dynamic_ncols=True)
        for (key, _), res in zip(todo, it):
            res = {**res, "key": key}
            results[key] = res
            log.write(json.dumps(res) + "\n")
            log.flush()
            if strict_fail is not None and res.get("status") == "failed":
                strict_fail(key, res)
    return results
