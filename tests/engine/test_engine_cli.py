"""The train / test / fuse / predict / bench-infer commands with the real models and datasets,
on tiny generated videos (and the shared demo video when present)."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from omnisource.cli import main
from omnisource.utils.video_writer import write_video

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
DEMO = SHARED / "mmaction2" / "demo" / "demo.mp4"
K400_MAP = SHARED / "mmaction2" / "tools" / "data" / "kinetics" / "label_map_k400.txt"
TINY = ["model.overrides.depth=18", "model.overrides.base_channels=4"]


def _write_video(path: Path, colour: tuple[int, int, int], frames: int = 12) -> None:
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    write_video(path, (np.clip(np.array(colour, np.int16) + rng.integers(-20, 20, (32, 48, 3)), 0, 255)
                       .astype(np.uint8) for _ in range(frames)), codec="mpeg4", fps=8)


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    vids = root / "videos"
    vids.mkdir()
    lines = []
    for i in range(6):
        label = i % 2
        _write_video(vids / f"v{i}.mp4", (220, 30, 30) if label else (30, 30, 220))
        lines.append(f"v{i}.mp4 {label}")
    ann = root / "list.txt"
    ann.write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("blue\nred\n")
    split = (f"    ann_file: {ann}\n    data_root: {vids}\n"
             "    overrides: {{scale: 32, crop_size: 24}}\n    preset: tsn_1x1x3_{mode}\n")
    cfg = root / "tiny.yaml"
    cfg.write_text(
        "model:\n  name: tsn_r50_1x1x3_100e_kinetics400_rgb\n  num_classes: 2\n"
        "  overrides: {depth: 18, base_channels: 4}\n"
        "data:\n  train:\n" + split.format(mode="train") + "  val:\n" + split.format(mode="val")
        + "  test:\n" + split.format(mode="test") +
        f"  label_map: {root / 'classes.txt'}\n  batch_size: 3\n  num_workers: 0\n"
        "optim:\n  lr: 0.01\nschedule:\n  epochs: 2\n  steps: [1]\n"
        "train:\n  log_interval: 1\n  tensorboard: false\n")
    return root, cfg, ann


def test_train_test_fuse_commands(tiny_project, capsys):
    root, cfg, ann = tiny_project
    work = root / "work"
    assert main(["train", str(cfg), "--work-dir", str(work), "--validate", "--seed", "1"]) == 0
    assert (work / "latest.pth").is_file() and (work / "best.pth").is_file()
    # resuming a finished run is a no-op that still succeeds
    assert main(["train", str(cfg), "--work-dir", str(work), "--resume"]) == 0
    capsys.readouterr()
    outs = {ext: root / f"scores.{ext}" for ext in ("json", "npy", "pkl")}
    for ext, out in outs.items():
        rc = main(["test", str(cfg), str(work / "latest.pth"), "--num-clips", "2", "--crops", "3",
                   "--average-clips", "prob", "--out", str(out)]
                  + (["--report", str(root / "report")] if ext == "json" else []))
        assert rc == 0
    printed = capsys.readouterr().out
    page = (root / "report" / "index.html").read_text()   # class names from the config's label map
    assert f"wrote the test report to {root / 'report' / 'index.html'}" in printed
    assert "blue" in page and "red" in page and "clips: 2; crop: three" in page
    assert (root / "report" / "per_class.csv").read_text().count("\n") == 3   # header + 2 classes
    assert re.search(r"top1_acc: \d\.\d{4}", printed) and "mean_class_accuracy" in printed
    data = json.loads(outs["json"].read_text())
    scores = np.asarray(data["scores"])
    assert scores.shape == (6, 2) and np.allclose(scores.sum(1), 1, atol=1e-5)   # 'prob' rows
    assert data["labels"] == [0, 1, 0, 1, 0, 1]
    assert np.allclose(np.load(outs["npy"]), scores, atol=1e-6)
    with open(outs["pkl"], "rb") as fh:
        assert np.allclose(np.asarray(pickle.load(fh)), scores, atol=1e-6)
    # the same scores with the BatchNorms folded into the convolutions
    folded = root / "scores_folded.npy"
    assert main(["test", str(cfg), str(work / "latest.pth"), "--num-clips", "2", "--crops", "3",
                 "--average-clips", "prob", "--out", str(folded), "--fuse-conv-bn"]) == 0
    np.testing.assert_allclose(np.load(folded), scores, atol=1e-5)
    capsys.readouterr()
    assert main(["fuse", str(outs["json"]), str(outs["npy"]), "--weights", "1", "2",
                 "--ann", str(ann)]) == 0
    assert "fused: top1_acc" in capsys.readouterr().out
    # a pickle holding objects is refused
    (root / "evil.pkl").write_bytes(pickle.dumps(np.zeros((6, 2))))
    assert main(["fuse", str(root / "evil.pkl"), "--ann", str(ann)]) == 2
    # other JSON (here: what `predict --out` writes) is named as not a scores file, no traceback
    (root / "preds.json").write_text(json.dumps([{"video": "v0.mp4", "topk": [{"class": 0}]}]))
    capsys.readouterr()
    assert main(["fuse", str(root / "preds.json"), "--ann", str(ann)]) == 2
    assert "preds.json: not a scores file" in capsys.readouterr().err


def test_train_with_sources_uses_the_multisource_loader(tiny_project):
    """`sources:` in a recipe: one batch per source per step, per-source losses logged."""
    root, cfg, ann = tiny_project
    vids = root / "videos"
    over = "{scale: 32, crop_size: 24}"
    sources = (f"sources=[{{name: kinetics, ann_file: '{ann}', data_root: '{vids}', preset: tsn_1x1x3_train, "
               f"overrides: {over}}}, {{name: web, ann_file: '{ann}', data_root: '{vids}', "
               f"preset: tsn_1x1x3_train, overrides: {over}, loss_weight: 0.5, batch_size: 2}}]")
    work = root / "work_ms"
    assert main(["train", str(cfg), "--work-dir", str(work), "--set", sources,
                 "--set", "schedule.epochs=1"]) == 0
    lines = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines()]
    tr = [x for x in lines if x["mode"] == "train"]
    assert tr and {"loss_kinetics", "loss_web", "acc_kinetics", "acc_web"} <= set(tr[0])


def test_bench_infer_prints_throughput_and_memory(tiny_project, capsys):
    _, cfg, _ = tiny_project
    assert main(["bench-infer", str(cfg), "--num-videos", "2", "--warmup", "1", "--num-clips", "2",
                 "--crops", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"videos/s: \d+\.\d+", out) and re.search(r"peak_rss: \d+\.\d MiB", out)
    assert "[2, 3, 24, 24]" in out   # TSN: 2 segments (clips of 1 frame) x 1 crop, 24 px
    assert "channels_last: False" in out  # the tiny project's config says train.channels_last=false
    assert main(["bench-infer", str(cfg), "--num-videos", "1", "--warmup", "0", "--num-clips", "2",
                 "--crops", "1", "--channels-last"]) == 0  # alone: on, as the flag always meant
    assert "channels_last: True" in capsys.readouterr().out
    assert main(["bench-infer", str(cfg), "--num-videos", "1", "--warmup", "0", "--num-clips", "2",
                 "--crops", "1", "--fuse-conv-bn"]) == 0
    assert "fused conv+BN: 20" in capsys.readouterr().out  # ResNet-18: stem + 16 convs + 3 downsamples


def test_config_errors_are_one_line(tiny_project, capsys):
    _, cfg, _ = tiny_project
    assert main(["train", str(cfg), "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'optim.lr'" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,dest", [
    (["train", "c.yaml"], "sets"), (["test", "c.yaml", "k.pth"], "sets"),
    (["predict", "v.mp4", "--config", "c.yaml", "--checkpoint", "k.pth"], "sets"),
    (["bench-infer", "c.yaml"], "sets"), (["flops", "c.yaml"], "overrides"),
    (["run"], "sets"), (["dedup", "m.jsonl", "--target", "t.txt", "--out", "o.jsonl"], "model_set"),
])
def test_set_takes_several_overrides_and_repeats(argv, dest):
    # `--set a=1 b=2` (as the docs and mmaction2's --cfg-options write it) and `--set a=1 --set
    # b=2` both reach the command, in order; every command that reads a config takes the same form
    from omnisource.cli import build_parser

    parser = build_parser(argv[0])
    args = parser.parse_args(argv + ["--set", "optim.lr=0.1", "schedule.epochs=3", "--set", "x.y=[1, 2]"])
    assert getattr(args, dest) == ["optim.lr=0.1", "schedule.epochs=3", "x.y=[1, 2]"]


def test_several_overrides_after_one_set_apply(tiny_project, capsys):
    _, cfg, _ = tiny_project
    assert main(["flops", str(cfg), "--json", "--set", "model.overrides.base_channels=8",
                 "model.num_classes=7"]) == 0
    wide = json.loads(capsys.readouterr().out)
    assert main(["flops", str(cfg), "--json"]) == 0
    narrow = json.loads(capsys.readouterr().out)
    assert wide["params"] > narrow["params"]


@pytest.mark.skipif(not DEMO.is_file() or not K400_MAP.is_file(), reason="shared demo data absent")
def test_predict_demo_video_top5(tmp_path, capsys):
    from omnisource.models import create_model

    torch.manual_seed(0)
    model = create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", num_classes=400, depth=18, base_channels=4)
    ckpt = tmp_path / "random_tiny.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    repo = Path(__file__).resolve().parents[2]
    rc = main(["predict", str(DEMO), "--config", str(repo / "configs/tsn_r50_1x1x3_100e_kinetics400_rgb.yaml"),
               "--checkpoint", str(ckpt), "--label-map", str(K400_MAP), "--num-clips", "2", "--crops", "1",
               *sum((["--set", s] for s in TINY + ["data.test.overrides={scale: 64, crop_size: 56}"]), [])])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = K400_MAP.read_text().splitlines()
    # the TSN recipe averages raw scores (average_clips: score), and the header says so
    assert lines[0] == f"{DEMO}: top-5, raw class scores (logits) averaged over the test views"
    assert len(lines) == 6
    values = []
    for k, line in enumerate(lines[1:], 1):
        m = re.fullmatch(r"(\d)\. (.+) \((\d+)\): (-?\d+\.\d{4})", line)
        assert m and int(m[1]) == k and names[int(m[3])] == m[2]
        values.append(float(m[4]))
    assert values == sorted(values, reverse=True)
    # the same classes with the BatchNorms folded into the convolutions
    rc = main(["predict", str(DEMO), "--config", str(repo / "configs/tsn_r50_1x1x3_100e_kinetics400_rgb.yaml"),
               "--checkpoint", str(ckpt), "--label-map", str(K400_MAP), "--num-clips", "2", "--crops", "1",
               "--fuse-conv-bn",
               *sum((["--set", s] for s in TINY + ["data.test.overrides={scale: 64, crop_size: 56}"]), [])])
    assert rc == 0
    fused = capsys.readouterr().out.strip().splitlines()[1:]
    assert [x.rsplit(":", 1)[0] for x in fused] == [x.rsplit(":", 1)[0] for x in lines[1:]]
    assert all(abs(float(a.rsplit(":", 1)[1]) - b) <= 2e-4 for a, b in zip(fused, values))


def test_predict_several_videos_goes_on_past_an_unreadable_one(tiny_project, tmp_path, capsys):
    from omnisource.models import create_model

    root, cfg, _ = tiny_project
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", num_classes=2, depth=18,
                                           base_channels=4).state_dict()}, ckpt)
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    videos = [str(root / "videos" / "v0.mp4"), str(bad), str(root / "videos" / "v1.mp4")]
    out = tmp_path / "preds.json"
    rc = main(["predict", *videos, "--config", str(cfg), "--checkpoint", str(ckpt), "--num-clips", "1",
               "--crops", "1", "--topk", "2", "--out", str(out)])
    assert rc == 1                                    # one video failed, the others were predicted
    captured = capsys.readouterr()
    assert f"{bad}: cannot open as a video" in captured.err and "1 of 3 videos" in captured.err
    preds = json.loads(out.read_text())
    assert [p["video"] for p in preds] == videos and "error" in preds[1]
    for p in (preds[0], preds[2]):
        assert sorted(t["name"] for t in p["topk"]) == ["blue", "red"]   # the config's label map
        assert p["topk"][0]["score"] >= p["topk"][1]["score"]
        assert f"{p['video']}: top-2" in captured.out
    assert main(["predict", str(bad), "--config", str(cfg), "--checkpoint", str(ckpt)]) == 2  # alone: an error


def test_test_command_reports_replaced_unreadable_videos(tiny_project, capsys):
    """A broken test video is replaced by the dataset; the test command must say so, and the
    count must survive DataLoader workers (each worker's dataset counter sees only its share)."""
    root, cfg, ann = tiny_project
    work = root / "work_broken"
    assert main(["train", str(cfg), "--work-dir", str(work), "--set", "schedule.epochs=1"]) == 0
    (root / "videos" / "broken.mp4").write_text("not a video")
    broken_list = root / "list_broken.txt"
    broken_list.write_text(ann.read_text() + "broken.mp4 1\n")
    capsys.readouterr()
    rc = main(["test", str(cfg), str(work / "latest.pth"), "--num-clips", "1", "--crops", "1",
               "--set", f"data.test.ann_file={broken_list}", "--set", "data.num_workers=2"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "1 of 7 test videos were unreadable" in err


def test_train_counts_unreadable_samples_across_workers(tiny_project, tmp_path, capsys):
    # two unreadable train videos in a list of 8, read by 2 DataLoader workers for 2 epochs: every
    # failed read is counted (from the items, as the workers' own counters are out of reach),
    # logged, and summed up at the end
    root, cfg, ann = tiny_project
    (root / "videos" / "broken_train.mp4").write_text("not a video")
    lst = tmp_path / "train.txt"
    lst.write_text(ann.read_text() + "broken_train.mp4 0\ngone_train.mp4 1\n")
    work = tmp_path / "work"
    capsys.readouterr()
    assert main(["train", str(cfg), "--work-dir", str(work), "--set", f"data.train.ann_file={lst}",
                 "data.num_workers=2", "data.batch_size=4", "schedule.epochs=2"]) == 0
    err = capsys.readouterr().err
    done = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines()][-1]
    assert done["mode"] == "done" and done["unreadable"] == 4          # 2 files x 2 epochs
    assert "WARNING: 4 reads of unreadable train samples were replaced" in err


def test_joint_training_counts_unreadable_samples_of_a_source(tiny_project, tmp_path, capsys):
    # the multi-source loader collates its own batches: the items' failed-read counts must reach
    # the trainer through it too (they were dropped, so joint training always reported none)
    root, cfg, ann = tiny_project
    vids = root / "videos"
    (vids / "broken_web.mp4").write_text("not a video")
    web = tmp_path / "web.txt"
    web.write_text(ann.read_text() + "broken_web.mp4 0\n")
    over = "{scale: 32, crop_size: 24}"
    sources = (f"sources=[{{name: kinetics, ann_file: '{ann}', data_root: '{vids}', preset: tsn_1x1x3_train, "
               f"overrides: {over}}}, {{name: web, ann_file: '{web}', data_root: '{vids}', "
               f"preset: tsn_1x1x3_train, overrides: {over}, batch_size: 7}}]")
    work = tmp_path / "work"
    assert main(["train", str(cfg), "--work-dir", str(work), "--set", sources, "data.num_workers=2",
                 "schedule.epochs=1"]) == 0
    done = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines()][-1]
    assert done["mode"] == "done" and done.get("unreadable", 0) >= 1
    assert "unreadable train sample" in capsys.readouterr().err


def test_num_classes_against_the_label_map_is_checked_before_training(tiny_project, tmp_path, capsys, caplog):
    """Fewer outputs than classes: one ConfigError naming both numbers (it was an IndexError from
    cross_entropy at the first batch with a high label); more: trains, with a warning."""
    root, cfg, ann = tiny_project
    (tmp_path / "three.txt").write_text("blue\nred\ngreen\n")
    code = main(["train", str(cfg), "--work-dir", str(tmp_path / "a"), "--set",
                 f"data.label_map={tmp_path / 'three.txt'}", "model.num_classes=1", "schedule.epochs=1"])
    err = capsys.readouterr().err
    assert code == 2 and "model.num_classes is 1 but the label map" in err and "has 3 classes" in err
    assert not (tmp_path / "a" / "latest.pth").exists()
    code = main(["train", str(cfg), "--work-dir", str(tmp_path / "b"), "--set", "model.num_classes=4",
                 "schedule.epochs=1", "--no-validate"])
    assert code == 0
    assert "model.num_classes is 4 but the label map" in caplog.text


def test_a_configured_val_split_is_validated_unless_turned_off(tiny_project, tmp_path):
    """train.validate: None (the default) validates when data.val is set, as its comment says."""
    root, cfg, ann = tiny_project
    assert main(["train", str(cfg), "--work-dir", str(tmp_path / "a"), "--set", "schedule.epochs=1"]) == 0
    modes = [json.loads(x)["mode"] for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert "val" in modes
    assert main(["train", str(cfg), "--work-dir", str(tmp_path / "b"), "--set", "schedule.epochs=1",
                 "--no-validate"]) == 0
    modes = [json.loads(x)["mode"] for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert "val" not in modes


def test_unset_data_root_and_a_folder_given_to_predict_are_one_clear_line(tiny_project, tmp_path, capsys):
    from omnisource.models import create_model

    root, cfg, _ = tiny_project
    code = main(["train", str(cfg), "--work-dir", str(tmp_path / "a"), "--set", "data.train.data_root=null"])
    err = capsys.readouterr().err
    assert code == 2 and "'data.train.data_root' is not set" in err and err.count("\n") == 1
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", num_classes=2, depth=18,
                                           base_channels=4).state_dict()}, ckpt)
    assert main(["predict", str(root / "videos"), "--config", str(cfg), "--checkpoint", str(ckpt)]) == 2
    assert "is a folder, not a video" in capsys.readouterr().err
