"""`omnisource run` end to end on a reduced world: every stage, results, report, caching, resume."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from omnisource.commands.run import REDUCED_SETS
from omnisource.pipeline.run import format_table, format_table2, run_pipeline
from omnisource.pipeline.world import WorldSpec

SPEC = WorldSpec.reduced()            # what `omnisource run --reduced` generates
SETS = tuple(REDUCED_SETS) + ("train.epochs=1", "image_teacher.epochs=1")
EXPECTED = {"world", "check", "teacher", "teacher-2d", "ingest-web_images", "ingest-web_videos",
            "ingest-untrimmed", "dedup-web_images", "dedup-web_videos", "dedup-untrimmed",
            "score-web_images", "select-web_images", "score-web_videos", "select-web_videos",
            "untrimmed", "student", "unfiltered", "test", "calibrate"}


def _run(work: Path, **kw):
    lines: list[str] = []
    res = run_pipeline(work, None, None, SETS, world_spec=SPEC, say=lines.append, progress=False, **kw)
    return res, lines


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    res, lines = _run(work)
    return work, res, lines


def test_every_stage_runs_and_results_are_written(finished):
    work, res, _ = finished
    status = {n: s["status"] for n, s in res["stages"].items()}
    assert set(status) == EXPECTED, set(status) ^ EXPECTED
    assert all(s == "done" for s in status.values()), status
    on_disk = json.loads((work / "results.json").read_text())
    assert on_disk["seed"] == 0 and on_disk["generated_world"] is True
    runs = {r["run"]: r for r in on_disk["table"]}
    assert {"teacher", "student", "unfiltered"} <= set(runs)
    for r in runs.values():
        assert 0.0 <= r["top1"] <= 1.0
    assert "omnisource_gain_top1" in on_disk
    assert (work / "report" / "results.html").is_file()
    assert on_disk["report"] and Path(on_disk["report"]).is_file()
    # every evaluated run has its per-class page, linked from results.html
    assert set(on_disk["test_reports"]) == set(runs)
    page = (work / "report" / "results.html").read_text()
    for name, rel in on_disk["test_reports"].items():
        assert (work / rel).is_file() and (work / rel).with_name("per_class.csv").is_file()
        assert f'href="../{rel}"' in page
    # teacher filtering kept a subset, measured against the world's ground truth
    for src in ("web_images", "web_videos"):
        info = on_disk["filtering"][src]
        assert 0 < info["kept"] < info["crawl_size"]
    # images are pseudo-labelled with the 2D teacher's probabilities, videos with its argmax
    from omnisource.data.annotations import iter_manifest

    stages = work / "stages"
    imgs = list(iter_manifest(stages / "select-web_images" / "out" / "manifest.jsonl"))
    vids = list(iter_manifest(stages / "select-web_videos" / "out" / "manifest.jsonl"))
    assert imgs and all(isinstance(r.label, list) and len(r.label) == SPEC.num_classes
                        and abs(sum(r.label) - 1) < 1e-3 for r in imgs)
    assert vids and all(isinstance(r.label, int) for r in vids)
    assert "target only" in format_table(on_disk)
    assert format_table2(on_disk).splitlines()[0].split()[:2] == ["target", "+all"]


def test_rerun_reuses_every_finished_stage(finished):
    work, first, _ = finished
    res, lines = _run(work)
    assert all(s["status"] == "cached" for s in res["stages"].values()), res["stages"]
    assert [r["top1"] for r in res["table"]] == [r["top1"] for r in first["table"]]


def test_resume_after_kill_between_stages(finished, tmp_path):
    work, first, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(work, copy)
    # as if killed after `untrimmed` finished: later stages never wrote their markers
    for name in ("student", "unfiltered", "test"):
        (copy / "stages" / name / "done.json").unlink()
    (copy / "results.json").unlink()
    res, _ = _run(copy)
    status = {n: s["status"] for n, s in res["stages"].items()}
    assert status["student"] == status["unfiltered"] == status["test"] == "done"
    assert all(status[n] == "cached" for n in EXPECTED - {"student", "unfiltered", "test"})
    assert (copy / "results.json").is_file()


def test_moved_work_folder_reuses_its_stages(finished, tmp_path):
    # stage identities and results hold paths inside the work folder as $WORK/...: a folder
    # moved to another disk (here: a copy, the original deleted) is still a finished run
    work, first, _ = finished
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(work, moved)
    (moved / "results.json").unlink()
    hidden = tmp_path / "hidden"
    work.rename(hidden)           # nothing may still point into the old folder
    try:
        res, _ = _run(moved)
    finally:
        hidden.rename(work)
    assert all(s["status"] == "cached" for s in res["stages"].values()), res["stages"]
    assert [r["top1"] for r in res["table"]] == [r["top1"] for r in first["table"]]
    done = json.loads((moved / "stages" / "student" / "done.json").read_text())
    assert done["result"]["checkpoint"].startswith("$WORK/")


def _video_score_layouts(work: Path) -> list[str]:
    meta = json.loads((work / "stages" / "score-web_videos" / "out" / "meta.json").read_text())
    assert len(meta["config"]["ensemble"]["teachers"]) == len(meta["config"]["ensemble"]["views"])
    return sorted(v["layout"] for v in meta["config"]["ensemble"]["views"])


def test_video_teachers_single_or_ensemble_rescores_only_what_depends_on_it(finished, tmp_path):
    """Web videos are scored by the 3D and 2D teachers averaged (default) or by the 3D teacher
    alone (filter.video_teachers=[teacher]); switching reuses every stage that does not depend
    on the video scores."""
    work, _, _ = finished
    assert _video_score_layouts(work) == ["2d", "3d"]
    copy = tmp_path / "run"
    shutil.copytree(work, copy)
    res = run_pipeline(copy, None, None, SETS + ("filter.video_teachers=[teacher]",),
                       world_spec=SPEC, say=lambda _: None, progress=False)
    status = {n: s["status"] for n, s in res["stages"].items()}
    assert status["score-web_videos"] == status["select-web_videos"] == status["student"] == "done"
    assert all(status[n] == "cached" for n in ("teacher", "teacher-2d", "dedup-web_videos", "untrimmed"))
    assert _video_score_layouts(copy) == ["3d"]
    from omnisource.errors import ConfigError
    from omnisource.pipeline.config import load_run_settings

    for bad in ("[teacher-3d]", "[]", "[teacher, teacher]", "teacher"):
        with pytest.raises(ConfigError, match="video_teachers"):
            load_run_settings(None, [f"filter.video_teachers={bad}"])


@pytest.mark.slow
def test_resume_after_kill_within_a_stage(finished, tmp_path):
    """SIGKILL the CLI while a stage runs; the rerun reuses finished stages and completes."""
    src, _, _ = finished
    work = tmp_path / "run"
    shutil.copytree(src, work)
    # joint training and what follows have not run yet in this copy
    later = ["student", "unfiltered", "test"]
    for name in later:
        shutil.rmtree(work / "stages" / name)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "omnisource", "run", "--reduced", "--work-dir", str(work),
           "--no-progress"] + [a for s in SETS[len(REDUCED_SETS):] for a in ("--set", s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    killed_in = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("[student] running"):
            proc.send_signal(signal.SIGKILL)
            killed_in = "student"
            break
    proc.wait(timeout=120)
    if killed_in is None:
        pytest.fail("the run finished before it could be killed")
    assert not (work / "stages" / killed_in / "done.json").is_file()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "[teacher] finished earlier: reused" in out.stdout
    assert f"[{killed_in}] running" in out.stdout
    res = json.loads((work / "results.json").read_text())
    assert all(s["status"] in ("done", "cached") for s in res["stages"].values()), res["stages"]


def test_slowfast_student_with_an_x3d_teacher_end_to_end(tmp_path):
    """Other 3D families in the recipe: a tiny X3D is the video teacher (it scores web videos and
    untrimmed windows), a tiny SlowFast the student; the target-only baseline is then trained
    with the student's network, and the table's gains are measured against it."""
    import yaml

    from omnisource.models.tiny import TINY_SLOWFAST, TINY_X3D

    sets = SETS + (f"model.name={TINY_SLOWFAST}", f"teacher_model.name={TINY_X3D}")
    res = run_pipeline(tmp_path, None, None, sets, world_spec=SPEC, say=lambda _: None, progress=False)
    assert all(s["status"] == "done" for s in res["stages"].values()), res["stages"]
    stages = tmp_path / "stages"
    teacher = yaml.safe_load((stages / "teacher" / "run_config.yaml").read_text())
    baseline = yaml.safe_load((stages / "baseline" / "run_config.yaml").read_text())
    student = yaml.safe_load((stages / "student" / "run_config.yaml").read_text())
    assert teacher["model"]["name"] == TINY_X3D
    assert baseline["model"]["name"] == student["model"]["name"] == TINY_SLOWFAST
    scored = json.loads((stages / "score-web_videos" / "out" / "meta.json").read_text())
    specs = [t["spec"] for t in scored["config"]["ensemble"]["teachers"]]
    assert any(sp.endswith("stages/teacher/run_config.yaml") for sp in specs)   # the X3D scored them
    runs = {r["run"]: r for r in res["table"]}
    assert {"teacher", "baseline", "student"} <= set(runs)
    assert res["omnisource_gain_top1"] == pytest.approx(runs["student"]["top1"] - runs["baseline"]["top1"])


def test_calibrated_thresholds_and_auto_weights(tmp_path):
    """With enough training clips to hold some out, the calibrate stage fits every scorer, the
    selection uses its thresholds and the student's batches follow kept counts and precision."""
    import yaml

    spec = WorldSpec.reduced(train_per_class=8)
    # teachers that learned something (1 epoch leaves them at chance, and a chance teacher's
    # calibrated threshold rightly keeps nothing: no student to inspect)
    sets = tuple(s for s in SETS if not s.startswith("sources.") and not s.startswith("untrimmed.pos")
                 and "epochs" not in s) + ("train.epochs=8", "image_teacher.epochs=8", "filter.source_check=true")
    res = run_pipeline(tmp_path, None, None, sets, world_spec=spec, say=lambda _: None, progress=False)
    # the held-out source check: the student's network with / without each source, on the 8
    # held-out training clips; its verdicts scale the student's loss weights
    chk = res["source_check"]
    assert chk["held_out"] == 8 and {"web_images", "web_videos"} <= set(chk["factors"])   # untrimmed: if kept
    assert (tmp_path / "stages" / "source-check" / "held.txt").read_text().count("\n") == 8
    cal = json.loads((tmp_path / "stages" / "calibrate" / "done.json").read_text())["result"]
    assert cal["held_out"] == 8 and cal["fit"] == 24
    assert set(cal["calibrations"]) == {"video_ensemble", "video_teacher", "image"}
    for src, key in (("web_videos", "video_ensemble"), ("untrimmed", "video_teacher"), ("web_images", "image")):
        thr = cal["calibrations"][key]["threshold"]
        info = res["filtering"][src]
        assert info["threshold"] == (None if thr is None else pytest.approx(thr, abs=1e-4)) or src == "untrimmed"
    student = yaml.safe_load((tmp_path / "stages" / "student" / "run_config.yaml").read_text())
    weights = json.loads((tmp_path / "stages" / "student" / "done.json").read_text())["result"]["weights"]
    for item in student["sources"][1:]:
        bs, lw, why = weights[item["name"]]
        assert item["batch_size"] == bs >= 1 and item["loss_weight"] == pytest.approx(lw, abs=1e-4)
        assert "kept" in why and "precision" in why
    for src, (factor, why) in chk["factors"].items():
        assert factor in (0.0, 0.5, 1.0) and "held-out top-1" in why
        trained = {i["name"] for i in student["sources"][1:]}
        assert (src in trained) == (factor > 0) or weights.get(src, [1])[0] == 0
        if factor == 0.5:
            assert "half weight" in weights[src][2]


def test_2d_student_end_to_end(tmp_path):
    """A TSN (2D) student through every stage: untrimmed videos become 2D snippets, web images
    go in as still clips, and the recipe's preset overrides replace the 3D demo's (no clip_len 8)."""
    import yaml

    from omnisource.data.annotations import iter_manifest

    sets = SETS + ("model.name=tiny_tsn_r18_1x1x3_omnisource_world", "presets.train=tsn_1x1x3_train",
                   "presets.test=tsn_1x1x3_val", "presets.overrides={scale: 46, crop_size: 40, test_crop_size: 40}",
                   "untrimmed.agree=false")
    res = run_pipeline(tmp_path, None, None, sets, world_spec=SPEC, say=lambda _: None, progress=False)
    assert all(s["status"] == "done" for s in res["stages"].values()), res["stages"]
    stages = tmp_path / "stages"
    student = yaml.safe_load((stages / "student" / "run_config.yaml").read_text())
    assert student["model"]["name"] == "tiny_tsn_r18_1x1x3_omnisource_world"
    assert student["data"]["train"]["preset"] == "tsn_1x1x3_train"
    names = [s["name"] for s in student["sources"]]
    assert names[0] == "target" and {"web_images", "web_videos"} <= set(names)
    for s in student["sources"]:
        assert "clip_len" not in (s.get("overrides") or {}), s
    meta = json.loads((stages / "untrimmed" / "out" / "meta.json").read_text())
    assert meta["stage"] == "untrimmed-2d" and meta["config"]["settings"]["mode"] == "2d"
    for rec in iter_manifest(stages / "untrimmed" / "out" / "manifest.jsonl"):
        assert rec.frame_inds, rec                       # snippets: explicit frames, not clips
    runs = {r["run"]: r for r in res["table"]}
    assert {"teacher", "student", "unfiltered"} <= set(runs)
    assert all(0.0 <= r["top1"] <= 1.0 for r in runs.values())


def test_stage_markers_written_before_portable_paths_are_still_reused(tmp_path):
    # a run folder finished by an older build holds identities of absolute paths: upgrading
    # must not re-run its stages
    from omnisource.pipeline.config import load_run_settings
    from omnisource.pipeline.run import Pipeline
    from omnisource.utils.io import sha1_json

    work = tmp_path / "w"
    pipe = Pipeline(work, None, load_run_settings(None, []), say=lambda s: None)
    ident = {"manifest": str(work / "stages" / "a" / "m.jsonl")}
    assert pipe.stage("a", ident, lambda d: {"out": str(d / "x")}) == {"out": str(work / "stages" / "a" / "x")}
    marker = work / "stages" / "a" / "done.json"
    done = json.loads(marker.read_text())
    assert done["result"]["out"] == "$WORK/stages/a/x" and done["ident"] != sha1_json(ident)
    done.update(ident=sha1_json(ident), result={"out": str(work / "stages" / "a" / "x")})  # old build
    marker.write_text(json.dumps(done))

    def must_not_run(d):
        raise AssertionError("re-ran a finished stage")
    again = Pipeline(work, None, load_run_settings(None, []), say=lambda s: None)
    assert again.stage("a", ident, must_not_run) == {"out": str(work / "stages" / "a" / "x")}
    assert again.stages["a"].status == "cached"


def test_stage_configs_hold_absolute_paths_for_a_relative_work_dir(tmp_path, monkeypatch):
    """`omnisource run --work-dir work_dirs/x` writes stage configs that load from any directory:
    the pipeline works on the absolute folder (identities stay $WORK-portable, see above)."""
    from omnisource.pipeline.config import load_run_settings
    from omnisource.pipeline.run import Pipeline

    monkeypatch.chdir(tmp_path)
    pipe = Pipeline("work_dirs/x", "data/mine", load_run_settings(None, []), say=lambda s: None)
    assert pipe.work == tmp_path / "work_dirs" / "x" and pipe.data == tmp_path / "data" / "mine"
    out = pipe.stage("a", {"m": str(pipe.work / "stages" / "a" / "m.jsonl")}, lambda d: {"cfg": str(d / "c.yaml")})
    assert out == {"cfg": str(tmp_path / "work_dirs" / "x" / "stages" / "a" / "c.yaml")}
    done = json.loads((tmp_path / "work_dirs" / "x" / "stages" / "a" / "done.json").read_text())
    assert done["result"]["cfg"] == "$WORK/stages/a/c.yaml"


def test_the_finished_run_configs_load_from_another_directory(finished, tmp_path, monkeypatch):
    from omnisource.config import load_config

    work, _, _ = finished
    monkeypatch.chdir(tmp_path)
    cfg = load_config(work / "stages" / "student" / "config.yaml")
    for split in ("train", "val"):
        assert Path(cfg.data[split].ann_file).is_absolute() and Path(cfg.data[split].ann_file).is_file()
