"""Settings and input parsing of `omnisource run` (no training)."""
from __future__ import annotations

import pytest

from omnisource.errors import ConfigError, InputError
from omnisource.pipeline.config import load_run_settings
from omnisource.data.annotations import read_web_list
from omnisource.pipeline.run import run_pipeline


def test_defaults_file_and_set_overrides(tmp_path):
    f = tmp_path / "omnisource.yaml"
    f.write_text("train:\n  epochs: 3\nsources:\n  web_videos: {batch_size: 2}\n")
    s = load_run_settings(f, ["filter.agree=false", "presets.overrides.scale=64"])
    assert s.train.epochs == 3 and s.train.batch_size == 16
    assert s.sources.web_videos["batch_size"] == 2 and s.filter.agree is False
    assert s.presets.overrides["scale"] == 64 and s.presets.overrides["clip_len"] == 8
    # a whole override bag replaces the demo's (a 2D recipe must not inherit clip_len 8)
    f.write_text("presets:\n  train: tsn_1x1x3_train\n  overrides: {scale: 46}\n")
    s = load_run_settings(f, ["image_teacher.preset_overrides={crop_size: 32}"])
    assert s.presets.overrides == {"scale": 46} and s.presets.train == "tsn_1x1x3_train"
    assert s.image_teacher.preset_overrides == {"crop_size": 32}
    # one value of a source changes; its other settings stay (they were lost before)
    d = load_run_settings(None)
    s = load_run_settings(None, ["sources.web_images.batch_size=3", "sources.untrimmed.resample={clip: 5}"])
    assert s.sources.web_images == {**d.sources.web_images, "batch_size": 3}
    assert s.sources.untrimmed == {**d.sources.untrimmed, "resample": {"clip": 5}}


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_run_settings(f)
    with pytest.raises(ConfigError, match="epochs"):
        load_run_settings(None, ["train.epohcs=2"])
    with pytest.raises(ConfigError, match="unknown source"):
        load_run_settings(None, ["sources.instagram={batch_size: 2}"])


def test_web_list_accepts_ids_and_names_and_names_the_bad_line(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("a b.jpg 1\nc.jpg\tred_disc\n\n# comment\nd.jpg Red_Disc\n")
    rows = read_web_list(lst, ["x", "y", "red_disc"])
    assert [(r.path, r.label, r.line) for r in rows] == [("a b.jpg", 1, 1), ("c.jpg", 2, 2), ("d.jpg", 2, 5)]
    lst.write_text("ok.jpg 0\nbad.jpg 7\n")
    with pytest.raises(InputError, match=r"list.txt:2: query label 7 outside"):
        read_web_list(lst, ["x", "y"])
    lst.write_text("ok.jpg 0\nbad.jpg red_dsc\n")
    with pytest.raises(InputError, match=r"list.txt:2: .*'red_dsc'.*did you mean 'red_disc'"):
        read_web_list(lst, ["x", "red_disc"])
    lst.write_text("nolabel.jpg\n")
    with pytest.raises(InputError, match=r"list.txt:1: expected 'path query_label'"):
        read_web_list(lst, ["x"])


def test_missing_data_layout_is_a_clear_error(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(InputError, match="label_map.txt"):
        run_pipeline(tmp_path / "w", tmp_path / "data", say=lambda m: None, progress=False)
    with pytest.raises(InputError, match="not found"):
        run_pipeline(tmp_path / "w", tmp_path / "nope", say=lambda m: None, progress=False)


def test_stage_cache_resume_and_stale_partial_work(tmp_path):
    from omnisource.pipeline.run import Pipeline, StageUnavailable

    p = Pipeline(tmp_path, tmp_path, load_run_settings(), say=lambda m: None)

    def interrupted(d):
        (d / "partial.txt").write_text("half")
        raise StageUnavailable("interrupted")

    p.stage("s", {"a": 1}, interrupted)
    assert p.stages["s"].status == "unavailable"

    def resumes(d):                      # same settings: the partial work is still there
        assert (d / "partial.txt").read_text() == "half"
        return {"n": 1}

    assert p.stage("s", {"a": 1}, resumes) == {"n": 1}
    assert p.stage("s", {"a": 1}, lambda d: pytest.fail("must be cached")) == {"n": 1}
    assert p.stages["s"].status == "cached"

    p.stage("t", {"a": 1}, interrupted)

    def fresh(d):                        # other settings: stale partial work is discarded
        assert not (d / "partial.txt").exists()
        return {"n": 2}

    assert p.stage("t", {"a": 2}, fresh) == {"n": 2}
    assert p.stage("s", {"a": 3}, fresh) == {"n": 2}      # a finished stage with new settings reruns
    p.stage("u", {}, lambda d: {}, needs=("missing",))
    assert p.stages["u"].status == "skipped"


def test_soft_labels_per_source_and_their_hard_label():
    from types import SimpleNamespace

    from omnisource.pipeline.run import Pipeline, _hard_label

    s = load_run_settings()
    p = Pipeline("unused", None, s, say=lambda m: None)
    # images carry soft labels by default (a still image cannot show motion), videos hard ones
    assert p._soft_labels("web_images") == "dense" and p._soft_labels("web_videos") == "none"
    s = load_run_settings(None, ["filter.soft_labels=dense", "sources.web_images.soft_labels=none"])
    p = Pipeline("unused", None, s, say=lambda m: None)
    assert p._soft_labels("web_images") == "none" and p._soft_labels("web_videos") == "dense"
    with pytest.raises(ConfigError, match="soft_labels"):
        load_run_settings(None, ["sources.web_videos.soft_labels=fuzzy"])
    with pytest.raises(ConfigError, match="soft_labels"):
        load_run_settings(None, ["sources.untrimmed.soft_labels=dense"])
    with pytest.raises(ConfigError, match="soft_labels"):
        load_run_settings(None, ["filter.soft_labels=probs"])
    # the teacher's top-k (sparse, renormalised) is the third kind; the student reads it as soft
    s = load_run_settings(None, ["sources.web_videos.soft_labels=topk"])
    assert Pipeline("unused", None, s, say=lambda m: None)._soft_labels("web_videos") == "topk"
    assert _hard_label(SimpleNamespace(label=[0.1, 0.7, 0.2])) == 1
    assert _hard_label(SimpleNamespace(label=3)) == 3
    assert _hard_label(SimpleNamespace(label=[2])) == 2


def test_results_page_is_styled_and_rounded():
    from omnisource.pipeline.run import results_html

    html = results_html({"seed": 0, "data": "d", "seconds": 61.2345, "report": "x",
                         "table": [{"description": "target only", "top1": 0.7751234, "top5": None,
                                    "mean_class_accuracy": 0.70001}],
                         "filtering": {"web_videos": {"kept": 12, "crawl_size": 20, "relevant_in_crawl": 0.4,
                                                      "pseudo_label_precision": 0.16666}},
                         "stages": {"check": {"status": "done", "seconds": 5.886230945587158, "reason": None}},
                         "omnisource_gain_top1": 0.0625})
    assert "<style>" in html and "77.5" in html and "n/a" in html and "5.9" in html and "+6.2" in html
    assert "5.886230945587158" not in html and "0.7751234" not in html and '<a href="index.html">' in html


def test_source_ablations_name_the_best_single_source_and_warn_when_all_do_worse():
    from omnisource.pipeline.run import source_ablations

    rows = [{"run": "teacher", "top1": 0.469}, {"run": "student", "top1": 0.469},
            {"run": "only-web_images", "top1": 0.506}, {"run": "only-web_videos", "top1": 0.731},
            {"run": "only-untrimmed", "top1": 0.438}, {"run": "unfiltered", "top1": 0.325}]
    filt: dict = {"web_videos": {"kept": 22}}
    out = source_ablations(rows, filt)
    assert out["best_single_source"] == "web_videos"
    assert abs(out["all_vs_best_single_top1"] - (0.469 - 0.731)) < 1e-9
    assert "do worse than web_videos alone" in out["warning"] and "untrimmed is below" in out["warning"]
    assert abs(filt["web_videos"]["ablation_gain_top1"] - 0.262) < 1e-9 and filt["web_videos"]["kept"] == 22
    rows[1]["top1"] = 0.80
    assert "warning" not in source_ablations(rows, {})
    assert source_ablations([{"run": "teacher", "top1": 0.5}, {"run": "student", "top1": 0.6}], {}) == {}
