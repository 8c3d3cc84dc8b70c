"""Audio features of every video of a list, for the audio recognizers (mmaction2's
``extract_audio.py`` + ``build_audio_features.py`` in one resumable command).

    omnisource extract-audio data/k400/val_list_videos.txt --data-root data/k400/videos_val \\
        --out data/k400/audio_val

Writes, under ``--out``:

* ``features/<video path without extension>.npy``: the log-mel spectrogram (float32 ``[frames, 80]``,
  mmaction2's parameters: :mod:`omnisource.data.audio_features`), each written atomically;
* ``<list name>_audio_features.txt``: the audio list for training and testing (``features/....npy
  total_frames label``), **every video of the input list in its order**, so audio test scores fuse
  row by row with the RGB ones (``omnisource fuse``). A video without an audio track has no
  ``.npy``; the dataset gives it a silent spectrogram, as mmaction2 does;
* ``no_audio.txt`` and ``failures.txt`` (``path<TAB>reason``) and ``summary.json`` (counts).

Parallel over processes (``--workers``), a progress bar, resumable after a kill at any moment:
finished videos are recorded one line each in ``.status.jsonl`` and skipped on the next run.
The folder holds one list's features: another list needs ``--force`` (which starts again); a
re-run of a finished folder does nothing.

Exit status: 0 when every video was processed (videos without audio and unreadable videos are
reported, not fatal); 1 when no video could be read; 2 for bad input (list, folders) and, with
``--strict``, at the first unreadable video.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HELP = "log-mel audio features of a video list (PyAV decode, mmaction2's parameters) + an audio list"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_list", type=Path, help="video list (mmaction2 'path label' rows)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--data-root", type=Path, default=None, help="folder the list's paths are relative to "
                                                                "(default: the list's folder)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes (default: min(4, CPUs))")
    p.add_argument("--force", action="store_true", help="start again in a folder that holds results")
    p.add_argument("--strict", action="store_true", help="exit 1 if any video cannot be read")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal)")


def _extract(job: tuple[str, str]) -> dict[str, Any]:
    """One video -> its .npy (atomically) + frame count; never raises (a worker must report)."""
    import numpy as np

    from omnisource.data.audio_features import NoAudioError, video_audio_features
    from omnisource.data.decode.probe import probe
    from omnisource.errors import DataError
    from omnisource.utils.io import atomic_open

    video, npy = job
    rec = probe(video)
    frames = rec.get("frames") if rec.get("readable") else None
    if not frames:
        return {"status": "failed", "reason": rec.get("reason") or "no video frames"}
    try:
        feats = video_audio_features(video)
    except NoAudioError as err:
        return {"status": "no_audio", "frames": int(frames), "reason": err.reason}
    except DataError as err:
        return {"status": "failed", "frames": int(frames), "reason": err.reason}
    except Exception as err:       # whatever the file holds, the run goes on
        return {"status": "failed", "frames": int(frames), "reason": f"{type(err).__name__}: {err}"}
    with atomic_open(npy, "wb") as fh:
        np.save(fh, feats, allow_pickle=False)
    return {"status": "ok", "frames": int(frames), "rows": int(feats.shape[0])}


def run(args: argparse.Namespace) -> int:
    from omnisource.data.annotations import Sample, load_annotations, resolve_path, write_annotations
    from omnisource.errors import InputError
    from omnisource.utils.io import atomic_write_json, atomic_write_text, sha1_file
    from omnisource.utils.jobs import STATUS, prepare_folder, read_status, run_jobs
    from omnisource.utils.lock import WorkDirLock

    if not args.video_list.is_file():
        raise InputError("video list not found", file=args.video_list)
    root = args.data_root or args.video_list.parent
    if not root.is_dir():
        raise InputError("data root folder not found", file=root)
    samples = load_annotations(args.video_list, format="video")
    if not samples:
        raise InputError("the list names no video", file=args.video_list)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    list_name = f"{args.video_list.stem}_audio_features.txt"
    with WorkDirLock(out, what="omnisource extract-audio"):
        digest = sha1_file(args.video_list)
        header, _ = read_status(out / STATUS)
        if header.get("digest") == digest and (out / list_name).is_file() and (out / "summary.json").is_file() \
                and not args.force:
            summary = json.loads((out / "summary.json").read_text())
            print(f"extract-audio: already done for this list ({summary['with_audio']} of {summary['videos']} "
                  f"videos with audio); --force starts again. List: {out / list_name}")
            return 0
        done = prepare_folder(out, digest, str(args.video_list), args.force,
                              clean=("features", list_name, "no_audio.txt", "failures.txt", "summary.json"))
        jobs, npys = [], {}
        for s in samples:
            rel = Path(s.path).with_suffix(".npy").as_posix()
            npys[s.path] = f"features/{rel}"
            jobs.append((s.path, (str(resolve_path(root, s.path, s.file, s.line)), str(out / "features" / rel))))

        def stop(key: str, res: dict) -> None:
            if args.strict:
                raise InputError(f"cannot read {key}: {res['reason']}", file=args.video_list)
        done = run_jobs(out, jobs, _extract, done, workers=args.workers, desc="extract-audio",
                        progress=args.progress, strict_fail=stop)
        rows, no_audio, failed = [], [], []
        for s in samples:
            res = done[s.path]
            if res["status"] == "no_audio":
                no_audio.append(f"{s.path}\t{res['reason']}")
            elif res["status"] == "failed":
                failed.append(f"{s.path}\t{res['reason']}")
            # every video stays in the list (row-by-row fusion with RGB); unknown frame counts: 1
            rows.append(Sample(path=npys[s.path], label=s.label, kind="audio",
                               total_frames=int(res.get("frames") or 1)))
        atomic_write_text(out / "no_audio.txt", "".join(x + "\n" for x in no_audio))
        atomic_write_text(out / "failures.txt", "".join(x + "\n" for x in failed))
        summary = {"videos": len(samples), "with_audio": len(samples) - len(no_audio) - len(failed),
                   "no_audio": len(no_audio), "failed": len(failed), "list": list_name}
        atomic_write_json(out / "summary.json", summary)
        write_annotations(out / list_name, rows, format="audio")
    print(f"extract-audio: {summary['with_audio']} of {len(samples)} videos have audio features; "
          f"{len(no_audio)} without audio (no_audio.txt), {len(failed)} unreadable (failures.txt); "
          f"list: {out / list_name}")
    if summary["with_audio"] == 0 and failed:
        print("extract-audio: no video could be read", file=sys.stderr)
        return 1
    return 0
