"""The OmniSource web-data release (mmaction2 ``tools/data/omnisource/README.md``) as the data
folder of ``omnisource run``.

The release lays out ``annotations/`` (``kinetics_200/k200_{train,val}.txt``, image lists of
``googleimage_200`` / ``insimage_200``, the ``insvideo_200`` video list, the teacher-filtered
Kinetics raw clips ``kinetics_raw_200/slowonly_8x8_kinetics_raw_200.json``) beside the media
folders. :func:`adapt_release` builds our run layout from it without copying media: symlinks to
the release's folders under ``target/`` and ``web/<source>/``, and lists whose paths go through
them (``DIR/target/train.txt``, ``DIR/web/images/list.txt`` ...). Web lists are the release's
*unfiltered* ones when present (``googleimage_200.txt``: the run's own teachers filter them), else
its filtered ``*_wodup.txt`` lists (the paper's filter then runs a second time, on top of theirs).
Raw Kinetics videos come trimmed into ``part_K.mp4`` clips (its ``trim_raw_video.py``): each
part becomes one untrimmed video of the run, with its video's label as the query.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from omnisource.errors import InputError

__all__ = ["is_release", "adapt_release"]

K200 = ("annotations", "kinetics_200", "k200_train.txt")


def is_release(folder: Path) -> bool:
    return folder.joinpath(*K200).is_file()


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


def _rows(path: Path) -> list[tuple[str, str]]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            f = line.split()
            if not f:
                continue
            if len(f) < 2:
                raise InputError("expected 'path label'", file=path, line=n)
            out.append((f[0], f[-1]))
    return out


def _media_path(rel: str, folder: str, src: Path) -> str:
    """A list path of the release, relative to the run folder's link ``folder``."""
    rel = rel.lstrip("/")
    if rel.startswith(folder + "/"):
        return rel
    return f"{folder}/{rel}"


def adapt_release(src: Path, out: Path) -> Path:
    """Write the run layout for the release at ``src`` into ``out``; returns ``out``."""
    from omnisource.utils.io import atomic_write_text

    src = src.resolve()
    ann = src / "annotations"
    actions = ann / "k200_actions.txt"
    if actions.is_file():
        names = [l.strip() for l in actions.read_text(encoding="utf-8").splitlines() if l.strip()]
    else:   # the 200 classes (derived from the S3D split files; see omnisource/resources)
        res = Path(__file__).resolve().parents[1] / "resources" / "mini_kinetics_200_classes.txt"
        names = [l.strip() for l in res.read_text(encoding="utf-8").splitlines() if l.strip()]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "label_map.txt", "".join(n + "\n" for n in names))
    for split, folder in (("train", "kinetics_200_train"), ("val", "kinetics_200_val")):
        lst = ann / "kinetics_200" / f"k200_{split}.txt"
        if not lst.is_file():
            raise InputError(f"the OmniSource release lacks its Kinetics-200 {split} list", file=lst)
        if not (src / folder).is_dir():
            raise InputError(f"the OmniSource release lacks the folder {folder}", file=src / folder)
        _link(src / folder, out / "target" / folder)
        atomic_write_text(out / "target" / f"{split}.txt",
                          "".join(f"{_media_path(p, folder, src)} {lab}\n" for p, lab in _rows(lst)))
    webs = {"images": [("googleimage_200", ["googleimage_200.txt", "tsn_8seg_googleimage_200_wodup.txt"]),
                       ("insimage_200", ["insimage_200.txt", "tsn_8seg_insimage_200_wodup.txt"])],
            "videos": [("insvideo_200", ["insvideo_200.txt", "slowonly_8x8_insvideo_200_wodup.txt"])]}
    for sub, parts in webs.items():
        lines = []
        for folder, candidates in parts:
            lst = next((ann / folder / c for c in candidates if (ann / folder / c).is_file()), None)
            if lst is None or not (src / folder).is_dir():
                continue
            _link(src / folder, out / "web" / sub / folder)
            lines += [f"{_media_path(p, folder, src)} {lab}\n" for p, lab in _rows(lst)]
        if lines:
            atomic_write_text(out / "web" / sub / "list.txt", "".join(lines))
    raw = ann / "kinetics_raw_200" / "slowonly_8x8_kinetics_raw_200.json"
    if raw.is_file() and (src / "kinetics_raw_200_train").is_dir():
        try:
            entries = json.loads(raw.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(f"not valid JSON ({err.msg})", file=raw, line=err.lineno) from None
        _link(src / "kinetics_raw_200_train", out / "web" / "untrimmed" / "kinetics_raw_200_train")
        lines = []
        for i, e in enumerate(entries):
            try:
                vdir, label, n = str(e["video_dir"]), int(e["label"]), int(e["num_clips"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"entry {i} lacks video_dir / label / num_clips", file=raw) from None
            for k in range(n):
                lines.append(f"kinetics_raw_200_train/{vdir.strip('/')}/part_{k}.mp4 {label}\n")
        atomic_write_text(out / "web" / "untrimmed" / "list.txt", "".join(lines))
    return out
