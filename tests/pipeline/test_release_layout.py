"""The OmniSource web-data release layout (mmaction2 tools/data/omnisource/README.md) becomes a
run folder: Kinetics-200 lists as the target, web image / video lists and the trimmed raw
Kinetics parts as web sources, read through links (no media copied)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnisource.data.annotations import load_annotations, read_web_list
from omnisource.errors import InputError
from omnisource.pipeline.release import adapt_release, is_release


def _touch(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")


def _release(root: Path) -> Path:
    a = root / "annotations"
    (a / "kinetics_200").mkdir(parents=True)
    (a / "k200_actions.txt").write_text("abseiling\nair drumming\n")
    (a / "kinetics_200" / "k200_train.txt").write_text("0074cdXclLU.mp4 0\n00aaaaaaaaa.mp4 1\n")
    (a / "kinetics_200" / "k200_val.txt").write_text("01fAWEHzudA.mp4 1\n")
    for v in ("0074cdXclLU.mp4", "00aaaaaaaaa.mp4"):
        _touch(root / "kinetics_200_train" / v)
    _touch(root / "kinetics_200_val" / "01fAWEHzudA.mp4")
    (a / "googleimage_200").mkdir()
    (a / "googleimage_200" / "tsn_8seg_googleimage_200_wodup.txt").write_text("000/00/000001.jpg 0\n")
    _touch(root / "googleimage_200" / "000" / "00" / "000001.jpg")
    (a / "insimage_200").mkdir()
    (a / "insimage_200" / "insimage_200.txt").write_text("001/air_drum/1J9tKWCNgV_0.jpg 1\n")
    _touch(root / "insimage_200" / "001" / "air_drum" / "1J9tKWCNgV_0.jpg")
    (a / "insvideo_200").mkdir()
    (a / "insvideo_200" / "slowonly_8x8_insvideo_200_wodup.txt").write_text("000/abseil/B00arxogubl.mp4 0\n")
    _touch(root / "insvideo_200" / "000" / "abseil" / "B00arxogubl.mp4")
    (a / "kinetics_raw_200").mkdir()
    (a / "kinetics_raw_200" / "slowonly_8x8_kinetics_raw_200.json").write_text(json.dumps(
        [{"video_dir": "pref_/___dTOdxzXY", "label": 1, "num_clips": 2, "positive_clip_inds": [1]}]))
    for k in range(2):
        _touch(root / "kinetics_raw_200_train" / "pref_" / "___dTOdxzXY" / f"part_{k}.mp4")
    return root


def test_release_becomes_a_run_folder(tmp_path):
    src = _release(tmp_path / "OmniSource")
    assert is_release(src) and not is_release(tmp_path)
    out = adapt_release(src, tmp_path / "run_data")
    names = (out / "label_map.txt").read_text().split("\n")[:2]
    assert names == ["abseiling", "air drumming"]
    train = load_annotations(out / "target" / "train.txt", data_root=out / "target")
    assert [(s.path, s.label) for s in train] == [("kinetics_200_train/0074cdXclLU.mp4", 0),
                                                  ("kinetics_200_train/00aaaaaaaaa.mp4", 1)]
    assert all((out / "target" / s.path).is_file() for s in train)          # through the links
    imgs = read_web_list(out / "web" / "images" / "list.txt", names)
    assert [(r.path, r.label) for r in imgs] == [("googleimage_200/000/00/000001.jpg", 0),
                                                 ("insimage_200/001/air_drum/1J9tKWCNgV_0.jpg", 1)]
    assert all((out / "web" / "images" / r.path).is_file() for r in imgs)
    vids = read_web_list(out / "web" / "videos" / "list.txt", names)
    assert [(r.path, r.label) for r in vids] == [("insvideo_200/000/abseil/B00arxogubl.mp4", 0)]
    parts = read_web_list(out / "web" / "untrimmed" / "list.txt", names)
    assert [r.path for r in parts] == [f"kinetics_raw_200_train/pref_/___dTOdxzXY/part_{k}.mp4" for k in range(2)]
    assert all((out / "web" / "untrimmed" / r.path).is_file() for r in parts)
    adapt_release(src, tmp_path / "run_data")          # again: idempotent (links kept)


def test_release_without_its_kinetics_folder_is_a_clear_error(tmp_path):
    src = _release(tmp_path / "OmniSource")
    import shutil

    shutil.rmtree(src / "kinetics_200_val")
    with pytest.raises(InputError, match="lacks the folder kinetics_200_val"):
        adapt_release(src, tmp_path / "o")


def test_web_stage_reads_a_release_list_directly(tmp_path):
    """`omnisource ingest --list` takes the release's mmaction2 lists ('path label') as they are."""
    import numpy as np
    from PIL import Image

    from omnisource.cli import main
    from omnisource.data.annotations import iter_manifest

    src = tmp_path / "OmniSource"
    (src / "annotations" / "googleimage_200").mkdir(parents=True)
    (src / "annotations" / "k200_actions.txt").write_text("abseiling\nair drumming\n")
    for i in range(3):
        p = src / "googleimage_200" / "000" / "00" / f"00000{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(p)
    (src / "annotations" / "googleimage_200" / "googleimage_200.txt").write_text(
        "000/00/000000.jpg 0\n000/00/000001.jpg 1\n000/00/000002.jpg 7\n")
    out = tmp_path / "ingested"
    assert main(["ingest", "--list", str(src / "annotations" / "googleimage_200" / "googleimage_200.txt"),
                 "--root", str(src / "googleimage_200"), "--label-map", str(src / "annotations" / "k200_actions.txt"),
                 "--out", str(out), "--kinds", "image", "--min-size", "16"]) == 0
    recs = list(iter_manifest(out / "manifest.jsonl"))
    assert sorted((r.path, r.query_label) for r in recs) == [("000/00/000000.jpg", 0), ("000/00/000001.jpg", 1)]
