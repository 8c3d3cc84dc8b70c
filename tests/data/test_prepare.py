"""``omnisource prepare``: every dataset of the zoo from small fixtures written in the dataset's
own annotation format (class names from the real label maps in ../shared/data where they help),
with videos present, absent (counted and named) and annotation files in the wrong format (file,
line and what was expected)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnisource.cli import main
from omnisource.data.annotations import load_annotations
from omnisource.data.prepare import list_datasets, prepare
from omnisource.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _touch(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"video")


def _frames(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (folder / f"{i:05d}.jpg").write_bytes(b"jpg")


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_every_dataset_of_the_zoo_is_listed(capsys):
    assert set(list_datasets()) >= {"kinetics400", "kinetics600", "kinetics700", "mini_kinetics_200", "ucf101",
                                    "hmdb51", "sthv1", "sthv2", "diving48", "jester", "gym99", "mit", "mmit", "hvu",
                                    "activitynet"}
    assert main(["prepare", "--list"]) == 0
    assert "mini_kinetics_200" in capsys.readouterr().out


def test_kinetics_csv_class_folders_and_flat_layout_missing_counted(tmp_path, capsys):
    src = tmp_path / "k400"
    (src / "annotations").mkdir(parents=True)
    (src / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,--07WQ2iBlw,1,11,train,0\n"
        "air drumming,-VFhnk4v2rU,20,30,train,0\n"
        "abseiling,gone_video01,5,15,train,0\n")
    (src / "annotations" / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n\"air drumming\",0wR5jVB-WPk,417,427,val\n")
    (src / "annotations" / "test.csv").write_text("youtube_id,time_start,time_end,split\nabcdefghijk,0,10,test\n")
    _touch(src / "train" / "abseiling" / "--07WQ2iBlw_000001_000011.mp4")      # class folders
    _touch(src / "train" / "air_drumming" / "-VFhnk4v2rU_000020_000030.mp4")
    _touch(src / "val" / "0wR5jVB-WPk_000417_000427.mp4")                       # flat
    _touch(src / "test" / "abcdefghijk.mp4")                                    # youtube_id only
    out = tmp_path / "lists"
    assert main(["prepare", "kinetics400", "--src", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 of 3 listed videos found (1 missing" in printed
    assert _rows(out / "label_map.txt") == ["abseiling", "air drumming"]
    assert _rows(out / "kinetics400_train_list_videos.txt") == [
        "train/abseiling/--07WQ2iBlw_000001_000011.mp4 0", "train/air_drumming/-VFhnk4v2rU_000020_000030.mp4 1"]
    assert _rows(out / "kinetics400_val_list_videos.txt") == ["val/0wR5jVB-WPk_000417_000427.mp4 1"]
    assert _rows(out / "kinetics400_test_list_videos.txt") == ["test/abcdefghijk.mp4"]
    assert _rows(out / "missing_train.txt") == ["gone_video01_000005_000015"]
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["splits"]["train"] == {**report["splits"]["train"], "listed": 3, "found": 2, "missing": 1}
    samples = load_annotations(out / "kinetics400_train_list_videos.txt", label_map=out / "label_map.txt")
    assert [s.label for s in samples] == [0, 1]
    # nothing is overwritten without --force
    assert main(["prepare", "kinetics400", "--src", str(src), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["prepare", "kinetics400", "--src", str(src), "--out", str(out), "--force"]) == 0


def test_kinetics_json_and_bad_csv_name_the_line(tmp_path):
    src = tmp_path / "k600"
    src.mkdir()
    (src / "kinetics_600_train.json").write_text(json.dumps({
        "aaaaaaaaaaa": {"annotations": {"label": "zumba", "segment": [3.0, 13.0]}, "subset": "train"}}))
    _touch(src / "videos" / "aaaaaaaaaaa_000003_000013.mp4")
    res = prepare("kinetics600", src, tmp_path / "o")
    assert res.report["splits"]["train"]["found"] == 1
    bad = tmp_path / "kbad"
    bad.mkdir()
    (bad / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,x,ten,20,train\n")
    with pytest.raises(InputError, match=r"train.csv:2: time_start must be a number, got 'ten'"):
        prepare("kinetics400", bad, tmp_path / "o2")
    (bad / "train.csv").write_text("name,video\nabseiling,x\n")
    with pytest.raises(InputError, match=r"train.csv:1: expected a Kinetics csv header"):
        prepare("kinetics400", bad, tmp_path / "o3")


def test_mini_kinetics_keeps_its_200_classes_of_kinetics_400(tmp_path):
    src = tmp_path / "k400"
    src.mkdir()
    (src / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                   "abseiling,aaaaaaaaaaa,0,10,train\n"
                                   "applauding,bbbbbbbbbbb,0,10,train\n"     # not a Mini-Kinetics class
                                   "yoga,ccccccccccc,0,10,train\n")
    for v in ("aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc"):
        _touch(src / "v" / f"{v}_000000_000010.mp4")
    res = prepare("mini_kinetics_200", src, tmp_path / "o")
    classes = _rows(tmp_path / "o" / "label_map.txt")
    assert len(classes) == 200 and classes[0] == "abseiling" and "applauding" not in classes
    rows = _rows(res.lists["train"])
    assert rows == ["v/aaaaaaaaaaa_000000_000010.mp4 0", f"v/ccccccccccc_000000_000010.mp4 {classes.index('yoga')}"]


def test_ucf101_splits_and_hmdb51_split_files(tmp_path):
    src = tmp_path / "ucf"
    (src / "ucfTrainTestlist").mkdir(parents=True)
    (src / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n")
    (src / "ucfTrainTestlist" / "trainlist02.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nApplyLipstick/v_ApplyLipstick_g08_c01.avi 2\n")
    (src / "ucfTrainTestlist" / "testlist02.txt").write_text("ApplyLipstick/v_ApplyLipstick_g01_c01.avi\n")
    for v in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyLipstick/v_ApplyLipstick_g01_c01.avi"):
        _touch(src / "UCF-101" / v)
    res = prepare("ucf101", src, tmp_path / "u", split=2)
    assert _rows(res.lists["train_split_2"]) == ["UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0"]
    assert _rows(res.lists["val_split_2"]) == ["UCF-101/ApplyLipstick/v_ApplyLipstick_g01_c01.avi 1"]
    assert res.report["splits"]["train_split_2"]["missing"] == 1

    h = tmp_path / "hmdb"
    (h / "testTrainMulti_7030_splits").mkdir(parents=True)
    (h / "testTrainMulti_7030_splits" / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (h / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt").write_text("d.avi 1 \n")
    for cls, v in (("brush_hair", "a.avi"), ("brush_hair", "b.avi"), ("cartwheel", "d.avi")):
        _touch(h / "videos" / cls / v)
    res = prepare("hmdb51", h, tmp_path / "h")
    assert _rows(res.lists["train_split_1"]) == ["videos/brush_hair/a.avi 0", "videos/cartwheel/d.avi 1"]
    assert _rows(res.lists["val_split_1"]) == ["videos/brush_hair/b.avi 0"]
    (h / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt").write_text("d.avi 7\n")
    with pytest.raises(InputError, match=r"cartwheel_test_split1.txt:1: expected 'video.avi 0\|1\|2'"):
        prepare("hmdb51", h, tmp_path / "h2")


def test_something_something_and_jester(tmp_path):
    v2 = tmp_path / "sthv2"
    (v2 / "labels").mkdir(parents=True)
    (v2 / "labels" / "something-something-v2-labels.json").write_text(json.dumps(
        {"Approaching something with your camera": "0", "Attaching something to something": "1"}))
    (v2 / "labels" / "something-something-v2-train.json").write_text(json.dumps([
        {"id": "78687", "label": "attaching a cap to a pen", "template": "Attaching [something] to [something]",
         "placeholders": ["a cap", "a pen"]}]))
    (v2 / "labels" / "something-something-v2-validation.json").write_text(json.dumps([
        {"id": "42326", "template": "Approaching [something] with your camera"}]))
    _touch(v2 / "20bn-something-something-v2" / "78687.webm")
    _touch(v2 / "20bn-something-something-v2" / "42326.webm")
    res = prepare("sthv2", v2, tmp_path / "s2")
    assert _rows(res.lists["train"]) == ["20bn-something-something-v2/78687.webm 1"]
    assert _rows(res.lists["val"]) == ["20bn-something-something-v2/42326.webm 0"]

    v1 = tmp_path / "sthv1"
    v1.mkdir()
    labels = (SHARED / "mmaction2" / "tools" / "data" / "sthv1" / "label_map.txt")
    names = labels.read_text().splitlines()[:3] if labels.is_file() else ["Holding something", "Turning x", "Y"]
    (v1 / "something-something-v1-labels.csv").write_text("\n".join(names) + "\n")
    (v1 / "something-something-v1-train.csv").write_text(f"100218;{names[1]}\n5;{names[0]}\n")
    (v1 / "something-something-v1-validation.csv").write_text(f"9;{names[2]}\n")
    _frames(v1 / "20bn-something-something-v1" / "100218", 7)
    _frames(v1 / "20bn-something-something-v1" / "9", 3)
    res = prepare("sthv1", v1, tmp_path / "s1")
    assert _rows(res.lists["train"]) == ["20bn-something-something-v1/100218 7 1"]
    assert res.lists["train"].name == "sthv1_train_list_rawframes.txt"
    assert _rows(res.lists["val"]) == ["20bn-something-something-v1/9 3 2"]
    (v1 / "something-something-v1-validation.csv").write_text("9,Holding something\n")
    with pytest.raises(InputError, match=r"v1-validation.csv:1: expected 'id;class name'"):
        prepare("sthv1", v1, tmp_path / "s1b")

    j = tmp_path / "jester"
    j.mkdir()
    (j / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\n")
    (j / "jester-v1-train.csv").write_text("34870;Swiping Right\n")
    (j / "jester-v1-validation.csv").write_text("9223;Swiping Left\n9224;Doing other things\n")
    _frames(j / "20bn-jester-v1" / "34870", 4)
    with pytest.raises(InputError, match=r"jester-v1-validation.csv:2: class 'Doing other things' is not in"):
        prepare("jester", j, tmp_path / "j")
    (j / "jester-v1-validation.csv").write_text("9223;Swiping Left\n")
    assert main(["prepare", "jester", "--src", str(j), "--out", str(tmp_path / "j2")]) == 1   # val: none found
    assert _rows(tmp_path / "j2" / "jester_train_list_rawframes.txt") == ["20bn-jester-v1/34870 4 1"]


def test_diving48_gym99_and_moments(tmp_path):
    d = tmp_path / "diving"
    d.mkdir()
    (d / "Diving48_vocab.json").write_text(json.dumps([["Back", "15som", "05Twis", "FREE"],
                                                        ["Back", "15som", "15Twis", "FREE"]]))
    (d / "Diving48_V2_train.json").write_text(json.dumps([{"vid_name": "-mmq0PT-u8k_0", "label": 1,
                                                            "start_frame": 0, "end_frame": 83}]))
    (d / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "x_1", "label": 5}]))
    _touch(d / "rgb" / "-mmq0PT-u8k_0.mp4")
    with pytest.raises(InputError, match=r"Diving48_V2_test.json: item 0 \(x_1\): label 5 outside 0..1"):
        prepare("diving48", d, tmp_path / "d")
    (d / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "x_1", "label": 0}]))
    res = prepare("diving48", d, tmp_path / "d2")
    assert _rows(tmp_path / "d2" / "label_map.txt")[0] == "Back+15som+05Twis+FREE"
    assert _rows(res.lists["train"]) == ["rgb/-mmq0PT-u8k_0.mp4 1"] and res.report["splits"]["val"]["missing"] == 1

    g = tmp_path / "gym"
    g.mkdir()
    (g / "gym99_categories.txt").write_text("Clabel: 0; set: 1; Glabel: 1; (VT) round-off\n"
                                            "Clabel: 1; set: 1; Glabel: 2; (VT) tsukahara\n")
    (g / "gym99_train_element_v1.1.txt").write_text("A0xAXXysHUo_E_002407_002435_A_0003_0005 1\n")
    (g / "gym99_val_element.txt").write_text("B_E_000001_000002_A_0001_0002 0\n")
    _touch(g / "subactions" / "A0xAXXysHUo_E_002407_002435_A_0003_0005.mp4")
    res = prepare("gym99", g, tmp_path / "g")
    assert _rows(res.lists["train"]) == ["subactions/A0xAXXysHUo_E_002407_002435_A_0003_0005.mp4 1"]
    assert _rows(tmp_path / "g" / "label_map.txt") == ["(VT) round-off", "(VT) tsukahara"]

    m = tmp_path / "mit"
    m.mkdir()
    (m / "moments_categories.txt").write_text("clapping,0\npraying,1\n")
    (m / "trainingSet.csv").write_text("praying/giphy-1.mp4,praying,3,3\n")
    (m / "validationSet.csv").write_text("clapping/yt-2.mp4,clapping,3,3\n")
    _touch(m / "training" / "praying" / "giphy-1.mp4")
    _touch(m / "validation" / "clapping" / "yt-2.mp4")
    res = prepare("mit", m, tmp_path / "m")
    assert _rows(res.lists["train"]) == ["training/praying/giphy-1.mp4 1"]
    assert _rows(res.lists["val"]) == ["validation/clapping/yt-2.mp4 0"]

    mm = tmp_path / "mmit"
    mm.mkdir()
    (mm / "moments_categories.txt").write_text("crafting,0\npaddling,1\nraining,2\n")
    (mm / "trainingSet.txt").write_text("a/x.mp4,0,2\n")
    (mm / "validationSet.txt").write_text("b/y.mp4,1\n")
    _touch(mm / "training" / "a" / "x.mp4")
    _touch(mm / "validation" / "b" / "y.mp4")
    res = prepare("mmit", mm, tmp_path / "mm")
    assert _rows(res.lists["train"]) == ["training/a/x.mp4 0 2"] and res.report["multi_label"]
    s = load_annotations(res.lists["train"], num_classes=3)
    assert s[0].label == [0, 2]


def test_hvu_multilabel_with_categories_and_activitynet_clips(tmp_path):
    h = tmp_path / "hvu"
    h.mkdir()
    (h / "HVU_Tags_Categories_V1.0.csv").write_text("Tag,Category\nsnow,scene\nskiing,action\nski,object\n"
                                                    "alpine_skiing,action\n")
    (h / "HVU_Train_V1.0.csv").write_text("Tags,youtube_id,time_start,time_end\nskiing|snow|ski,aaaaaaaaaaa,10,20\n")
    (h / "HVU_Val_V1.0.csv").write_text("Tags,youtube_id,time_start,time_end\nalpine_skiing,bbbbbbbbbbb,0,10\n")
    _touch(h / "train" / "aaaaaaaaaaa_000010_000020.mp4")
    _touch(h / "val" / "bbbbbbbbbbb_000000_000010.mp4")
    res = prepare("hvu", h, tmp_path / "h")
    classes = _rows(tmp_path / "h" / "label_map.txt")
    assert classes == ["alpine_skiing", "skiing", "ski", "snow"]          # action, object, scene
    assert _rows(res.lists["train"]) == ["train/aaaaaaaaaaa_000010_000020.mp4 1 2 3"]
    cats = json.loads((tmp_path / "h" / "hvu_categories.json").read_text())
    assert cats == {"action": [0, 1], "object": [2], "scene": [3]}
    (h / "HVU_Val_V1.0.csv").write_text("Tags,youtube_id,time_start,time_end\nsurfing,bbbbbbbbbbb,0,10\n")
    with pytest.raises(InputError, match=r"HVU_Val_V1.0.csv:2: class 'surfing' is not in the label map"):
        prepare("hvu", h, tmp_path / "h2")

    a = tmp_path / "anet"
    a.mkdir()
    (a / "activity_net.v1-3.min.json").write_text(json.dumps({"version": "VERSION 1.3", "database": {
        "sJFgo9H6zNo": {"subset": "training", "duration": 139.1,
                        "annotations": [{"label": "Arm wrestling", "segment": [0.0, 10.5]},
                                        {"label": "Arm wrestling", "segment": [20.0, 30.0]}]},
        "V1": {"subset": "validation", "annotations": [{"label": "Applying sunscreen", "segment": [1.0, 2.0]}]},
        "T1": {"subset": "testing", "annotations": []}}}))
    _touch(a / "videos" / "v_sJFgo9H6zNo.mp4")
    res = prepare("activitynet", a, tmp_path / "a")
    assert _rows(res.lists["train"]) == ["videos/v_sJFgo9H6zNo.mp4 1"]
    clips = load_annotations(tmp_path / "a" / "activitynet_train_clips.jsonl")
    assert [c.segment for c in clips] == [(0.0, 10.5), (20.0, 30.0)] and {c.label for c in clips} == {1}
    assert res.report["splits"]["train"]["clips"] == 2 and res.report["splits"]["val"]["missing"] == 1


def test_unknown_dataset_and_missing_annotations_are_clear(tmp_path, capsys):
    assert main(["prepare", "kinetcs400", "--src", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean kinetics400" in capsys.readouterr().err
    assert main(["prepare", "ucf101", "--src", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "classInd.txt not found under the source folder" in capsys.readouterr().err


def test_probe_leaves_unreadable_videos_out_and_names_them(tmp_path, capsys):
    real = SHARED / "mmaction2" / "tests" / "data" / "test.avi"
    if not real.is_file():
        pytest.skip("shared media absent")
    import shutil

    src = tmp_path / "ucf"
    (src / "lists").mkdir(parents=True)
    (src / "lists" / "classInd.txt").write_text("1 ApplyEyeMakeup\n")
    (src / "lists" / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n"
                                                   "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1\n")
    (src / "lists" / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    (src / "UCF-101" / "ApplyEyeMakeup").mkdir(parents=True)
    shutil.copy(real, src / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    (src / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g02_c01.avi").write_bytes(b"\x00" * 512)
    out = tmp_path / "o"
    assert main(["prepare", "ucf101", "--src", str(src), "--out", str(out), "--probe", "--workers", "2"]) == 0
    assert "1 unreadable: unreadable_train_split_1.txt" in capsys.readouterr().out
    assert _rows(out / "ucf101_train_split_1_list_videos.txt") == ["UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 0"]
    assert (out / "unreadable_train_split_1.txt").read_text().startswith("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi\t")
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["splits"]["train_split_1"]["unreadable"] == 1 and report["splits"]["val_split_1"]["unreadable"] == 0
