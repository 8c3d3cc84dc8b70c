"""Teacher filtering: planted positives kept, planted noise dropped; selection rules; resume
after a simulated kill; 2 gloo ranks == 1 process; per-class counts table and plot.

The teacher is a tiny module with the recognizer interface that "recognises" colours: it is
confident exactly on saturated red / green / blue pictures, so the expected output is known.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnisource.web import filter as flt
from omnisource.web.teacher import ModelSource, TeacherEnsemble

REPO = Path(__file__).resolve().parents[2]

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("filter_teachers", HERE / "filter_teachers.py")
_teachers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_teachers)
ColourTeacher, tiny_cnn = _teachers.ColourTeacher, _teachers.tiny_cnn



def _img(path: Path, rgb, noise: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    if noise:
        a = rng.integers(90, 160, size=(40, 48, 1), dtype=np.uint8).repeat(3, axis=2)
    else:
        a = np.empty((40, 48, 3), np.uint8)
        a[:] = rgb
        a = np.clip(a.astype(int) + rng.integers(-10, 10, size=a.shape), 0, 255).astype(np.uint8)
    Image.fromarray(a).save(path, quality=95)


COLOURS = {0: (230, 20, 20), 1: (20, 230, 20), 2: (20, 20, 230)}


def make_web(tmp: Path, n_pos: int = 6, n_noise: int = 6, corrupt: bool = True) -> tuple[Path, list[dict]]:
    """Manifest of planted positives (query = their colour), grey noise and one corrupt file."""
    (tmp / "media").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_pos):
        c = i % 3
        _img(tmp / "media" / f"pos{i}.jpg", COLOURS[c], seed=i)
        rows.append({"path": f"media/pos{i}.jpg", "source": "img" if i % 2 else "img2", "kind": "image",
                     "query_label": c, "truth": "pos", "cls": c})
    for i in range(n_noise):
        _img(tmp / "media" / f"noise{i}.jpg", None, noise=True, seed=100 + i)
        rows.append({"path": f"media/noise{i}.jpg", "source": "img", "kind": "image", "query_label": i % 3,
                     "truth": "noise"})
    if corrupt:
        (tmp / "media" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        rows.append({"path": "media/broken.jpg", "source": "img", "kind": "image", "query_label": 0,
                     "truth": "corrupt"})
    order = np.random.default_rng(0).permutation(len(rows))
    rows = [rows[i] for i in order]
    man = tmp / "web.jsonl"
    with open(man, "w") as fh:
        for r in rows:
            fh.write(json.dumps({k: r[k] for k in ("path", "source", "kind", "query_label")}) + "\n")
    return man, rows


def ensemble(tmp: Path, workers: int = 0, models=None) -> TeacherEnsemble:
    models = models or [ColourTeacher()]
    return TeacherEnsemble(models, [ModelSource(f"colour{i}", None) for i in range(len(models))],
                           data_root=str(tmp), batch_size=4, num_workers=workers)


def _read(p: Path) -> list[dict]:
    return [r for r in (json.loads(x) for x in p.read_text().splitlines()) if "path" in r]


def test_planted_positives_kept_noise_dropped(tmp_path):
    man, rows = make_web(tmp_path)
    with ensemble(tmp_path, workers=1) as ens:      # decoding in a spawned worker process
        scores = flt.score_stage(man, tmp_path / "out" / "scores", ens, progress=False)
    assert scores.meta["counts"]["dropped"]["by_reason"] == {"unreadable": 1}
    sel = flt.select_stage(scores.manifest, tmp_path / "out", flt.SelectRule(threshold=0.9), progress=False)
    kept = {r["path"]: r for r in _read(sel.manifest)}
    truth = {r["path"]: r for r in rows}
    assert set(kept) == {p for p, r in truth.items() if r["truth"] == "pos"}
    for p, r in kept.items():
        assert r["label"] == truth[p]["cls"] and r["score"] > 0.9
        assert r["meta"]["teacher"]["topk"][0][0] == r["label"]
    dropped = _read(sel.dropped)
    assert {d["path"] for d in dropped} == {p for p, r in truth.items() if r["truth"] == "noise"}
    assert all(d["reason"] == "low_score" and d["extra"]["score"] < 0.9 for d in dropped)
    # per-class counts before / after (Fig. 3)
    rows_ = flt.class_count_rows(flt.query_counts(man), flt.label_counts(sel.manifest), ["red", "green", "blue"])
    assert [(r["name"], r["before"], r["after"]) for r in rows_] == [("red", 5, 2), ("green", 4, 2), ("blue", 4, 2)]
    csv_path, png_path = flt.write_class_counts(rows_, tmp_path / "out")
    assert csv_path.read_text().splitlines()[1].startswith("0,red,5,2,")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "total" in flt.format_table(rows_)


def _scored(tmp: Path, rows: list[tuple]) -> Path:
    """A scored manifest: (path, source, query, label, score)."""
    p = tmp / "scored.jsonl"
    with open(p, "w") as fh:
        for path, src, q, lab, sc in rows:
            fh.write(json.dumps({"path": path, "source": src, "kind": "image", "query_label": q, "label": lab,
                                 "score": sc, "meta": {"teacher": {"topk": [[lab, sc], [(lab + 1) % 3, 1 - sc]]}}})
                     + "\n")
    return p


SCORED = [("a.jpg", "s1", 0, 0, 0.9), ("b.jpg", "s1", 0, 0, 0.8), ("c.jpg", "s2", 0, 0, 0.7),
          ("d.jpg", "s2", 1, 0, 0.95), ("e.jpg", "s1", 1, 1, 0.6), ("f.jpg", "s2", 1, 1, 0.6),
          ("g.jpg", "s1", 2, 1, 0.3), ("h.jpg", "s2", 2, 2, 0.5)]


@pytest.mark.parametrize("rule,expect", [
    (flt.SelectRule(threshold=0.65), {"a", "b", "c", "d"}),
    (flt.SelectRule(threshold=0.65, source_thresholds={"s2": 0.9}), {"a", "b", "d"}),
    (flt.SelectRule(topk_per_class=2), {"d", "a", "e", "f", "h"}),             # ties broken by path
    (flt.SelectRule(topk_per_class=1, rank_group="query"), {"a", "d", "h"}),
    (flt.SelectRule(top_fraction_per_class=0.5), {"d", "a", "e", "f", "h"}),   # ceil(4*.5)=2, ceil(3*.5)=2, 1
    (flt.SelectRule(agree=True), {"a", "b", "c", "e", "f", "h"}),
    (flt.SelectRule(agree=True, topk_per_class=1), {"a", "e", "h"}),
    (flt.SelectRule(threshold=0.55, top_fraction_per_class=1.0), {"a", "b", "c", "d", "e", "f"}),
])
def test_selection_rules(tmp_path, rule, expect):
    p = _scored(tmp_path, SCORED)
    res = flt.select_stage(p, tmp_path / "sel", rule, progress=False)
    assert {r["path"][0] for r in _read(res.manifest)} == expect
    reasons = res.meta["counts"]["dropped"]["by_reason"]
    assert sum(reasons.values()) == len(SCORED) - len(expect)


def test_soft_labels_and_rule_errors(tmp_path):
    from omnisource.errors import ConfigError

    p = _scored(tmp_path, SCORED)
    res = flt.select_stage(p, tmp_path / "sel", flt.SelectRule(threshold=0.85, soft_labels="topk", soft_topk=2),
                           progress=False)
    rec = _read(res.manifest)[0]
    assert rec["label"] == 0 and rec["meta"]["soft_label"] == [[0, 0.9], [1, pytest.approx(0.1)]]
    with pytest.raises(ConfigError):
        flt.SelectRule().validate()
    with pytest.raises(ConfigError):
        flt.SelectRule(threshold=1.5).validate()
    with pytest.raises(ConfigError):
        flt.SelectRule(topk_per_class=2, top_fraction_per_class=0.5).validate()


def test_ensemble_averages_and_dense_soft_labels(tmp_path):
    man, rows = make_web(tmp_path, n_pos=3, n_noise=1, corrupt=False)
    with ensemble(tmp_path, models=[ColourTeacher(scale=8.0), ColourTeacher(scale=0.0)]) as ens:
        scores = flt.score_stage(man, tmp_path / "scores", ens, keep_probs=True, progress=False)
    with ensemble(tmp_path) as single:
        one = single.score([type("R", (), r)() for r in [{"path": "media/pos0.jpg", "kind": "image"}]])[0]
    recs = {r["path"]: r for r in _read(scores.manifest)}
    # the second teacher is uniform (1/3 each): the ensemble is the mean of the two
    assert recs["media/pos0.jpg"]["score"] == pytest.approx((one.max() + 1 / 3) / 2, abs=1e-4)
    res = flt.select_stage(scores.manifest, tmp_path / "sel", flt.SelectRule(threshold=0.0, soft_labels="dense"),
                           progress=False)
    for r in _read(res.manifest):
        assert isinstance(r["label"], list) and len(r["label"]) == 3 and sum(r["label"]) == pytest.approx(1, abs=1e-3)


class _Killed(BaseException):
    """Stands in for kill -9: escapes every handler, leaves the journal as it was."""


def test_resume_after_kill_is_byte_identical(tmp_path):
    man, _ = make_web(tmp_path, n_pos=6, n_noise=5)
    with ensemble(tmp_path) as ens:
        ref = flt.score_stage(man, tmp_path / "ref", ens, chunk_size=3, progress=False)
        calls = {"n": 0}
        real = ens.score

        def dying(chunk):
            calls["n"] += 1
            if calls["n"] == 3:
                raise _Killed()
            return real(chunk)

        ens.score = dying
        with pytest.raises(_Killed):
            flt.score_stage(man, tmp_path / "killed", ens, chunk_size=3, progress=False)
        assert not (tmp_path / "killed" / "meta.json").exists()
        seen = []

        def spy(chunk):
            seen.extend(r.path for r in chunk)
            return real(chunk)

        ens.score = spy
        res = flt.score_stage(man, tmp_path / "killed", ens, chunk_size=3, progress=False)
    assert len(seen) == 12 - 6                       # two chunks were journaled before the "kill"
    for name in ("manifest.jsonl", "dropped.jsonl", "side.jsonl"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    assert res.meta["counts"] == ref.meta["counts"]




SHARD_SCRIPT = textwrap.dedent('''
    import sys
    from filter_teachers import tiny_cnn
    import torch.distributed as dist
    from omnisource.web import filter as flt
    from omnisource.web.teacher import ModelSource, TeacherEnsemble

    if __name__ == "__main__":
        man, out, root = sys.argv[1:4]
        dist.init_process_group("gloo")
        ens = TeacherEnsemble([tiny_cnn()], [ModelSource("tiny", None)], data_root=root, batch_size=4)
        scores = flt.score_stage(man, out + "/scores", ens, chunk_size=2, progress=False)
        flt.select_stage(scores.manifest, out, flt.SelectRule(topk_per_class=1), chunk_size=2, progress=False)
        ens.close()
        dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_equal_single_process(tmp_path):
    man, _ = make_web(tmp_path, n_pos=5, n_noise=4)
    with ensemble(tmp_path, models=[tiny_cnn()]) as ens:
        scores = flt.score_stage(man, tmp_path / "single" / "scores", ens, chunk_size=2, progress=False)
    flt.select_stage(scores.manifest, tmp_path / "single", flt.SelectRule(topk_per_class=1), chunk_size=2,
                     progress=False)
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(man), str(tmp_path / "sharded"), str(tmp_path)],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-3000:]
    for sub in ("scores/manifest.jsonl", "scores/dropped.jsonl", "manifest.jsonl", "dropped.jsonl"):
        assert (tmp_path / "sharded" / sub).read_bytes() == (tmp_path / "single" / sub).read_bytes(), sub
    assert json.loads((tmp_path / "sharded" / "meta.json").read_text())["world_size"] == 2


def test_real_media_from_shared_data(shared_data, tmp_path):
    """Real images and videos (and a truncated JPEG) through the score pass: counted, never a crash."""
    rows = [("mmaction2/tests/data/test.jpg", "image"), ("pillow/Tests/images/hopper.jpg", "image"),
            ("pillow/Tests/images/pil_sample_cmyk.jpg", "image"), ("pillow/Tests/images/truncated_jpeg.jpg", "image"),
            ("mmaction2/tests/data/rawvideo_dataset/part_0.mp4", "video")]
    man = tmp_path / "real.jsonl"
    man.write_text("".join(json.dumps({"path": p, "source": "real", "kind": k, "query_label": 0}) + "\n"
                           for p, k in rows))
    with TeacherEnsemble([ColourTeacher(), ColourTeacher("3d")], [ModelSource("c2", None), ModelSource("c3", None)],
                         data_root=str(shared_data), batch_size=2, segments=3) as ens:
        res = flt.score_stage(man, tmp_path / "scores", ens, progress=False)
    c = res.meta["counts"]
    assert c["in"]["total"] == 5 and c["out"]["total"] == 4 and c["dropped"]["by_reason"] == {"unreadable": 1}
    for r in _read(res.manifest):
        assert 1 / 3 - 1e-6 <= r["score"] <= 1 and r["label"] in (0, 1, 2)


def test_cli_with_tiny_zoo_teacher(tmp_path, capsys):
    from omnisource.cli import main

    man, rows = make_web(tmp_path, n_pos=3, n_noise=2)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    args = ["filter", str(man), "--data-root", str(tmp_path), "--out", str(tmp_path / "out"),
            "--teacher", "tsn_r18_1x1x3_100e_kinetics400_rgb", "none",
            "--teacher-set", "model.overrides.base_channels=8",
            "--teacher-set", "model.num_classes=3", "--label-map", str(labels), "--workers", "0", "--batch-size", "4",
            "--topk-per-class", "1", "--soft-labels", "topk", "--soft-topk", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "red" in out and "total" in out
    kept = _read(tmp_path / "out" / "manifest.jsonl")
    assert 1 <= len(kept) <= 3 and len({r["label"] for r in kept}) == len(kept)      # one per teacher class
    assert all(len(r["meta"]["soft_label"]) == 2 for r in kept)
    assert (tmp_path / "out" / "class_counts.png").is_file() and (tmp_path / "out" / "class_counts.csv").is_file()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["data_root"] == str(tmp_path.resolve()) and meta["stage"] == "filter-select"
    # bad input: one clear error line, exit status 2
    assert main(args[:6] + ["--teacher", "no_such_model", "none", "--threshold", "0.5"]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert main(args[:-6] + ["--threshold", "0.5", "--label-map", str(tmp_path / "labels.txt"),
                             "--teacher-set", "model.num_classes=5"]) == 2      # label map vs teacher classes


def test_setup_errors_stop_the_run_instead_of_dropping_rows(tmp_path):
    from omnisource.errors import ConfigError, InputError

    man, _ = make_web(tmp_path, n_pos=2, n_noise=1, corrupt=False)
    with ensemble(tmp_path, models=[ColourTeacher("3d")]) as ens, pytest.raises(ConfigError, match="2D teacher"):
        flt.score_stage(man, tmp_path / "s3d", ens, progress=False)      # 3D teachers never score images
    p = tmp_path / "named.jsonl"
    p.write_text(json.dumps({"path": "x.jpg", "source": "s", "kind": "image", "query_label": "red", "label": 0,
                             "score": 0.9}) + "\n")
    with pytest.raises(InputError, match="--agree"):
        flt.select_stage(p, tmp_path / "agree", flt.SelectRule(agree=True), progress=False)


def test_teacher_from_yaml_config_and_checkpoint(tmp_path):
    """(config, checkpoint) teachers load the user's weights: same scores as the saved model."""
    from omnisource.models import create_model
    from omnisource.web.teacher import build_model

    torch.manual_seed(0)
    model = create_model("tsn_r18_1x1x3_100e_kinetics400_rgb", num_classes=3, base_channels=8).eval()
    ckpt = tmp_path / "teacher.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    cfg = REPO / "configs" / "tsn_r18_1x1x3_100e_kinetics400_rgb.yaml"
    if not cfg.is_file():
        pytest.skip("recipe not in this tree")
    src = ModelSource(str(cfg), str(ckpt), ["model.overrides.base_channels=8", "model.num_classes=3"])
    loaded = build_model(src)
    assert src.checkpoint_sha1 and len(src.checkpoint_sha1) == 40
    x = torch.randn(2, 1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_sparse_topk_soft_labels_reach_the_soft_target_loss(tmp_path):
    """filter --soft-labels topk -> a source with pseudo_label: soft trains on the renormalised top-k."""
    from types import SimpleNamespace

    from omnisource.data.mixup import soft_target_cross_entropy
    from omnisource.data.multisource import build_source
    from omnisource.engine.train import source_loss

    man, _ = make_web(tmp_path, n_pos=3, n_noise=2, corrupt=False)
    with ensemble(tmp_path, models=[ColourTeacher(scale=2.0)]) as ens:     # soft enough: 2nd class > 0
        scores = flt.score_stage(man, tmp_path / "scores", ens, progress=False)
    sel = flt.select_stage(scores.manifest, tmp_path / "sel",
                           flt.SelectRule(threshold=0.0, soft_labels="topk", soft_topk=2), progress=False)
    rows = _read(sel.manifest)
    cfg = SimpleNamespace(data=SimpleNamespace(label_map=None, train=SimpleNamespace(preset="tsn_1x1x3_train"),
                                               backend="pyav", strict=False), model=SimpleNamespace(num_classes=3))
    item = {"name": "web", "ann_file": str(sel.manifest), "data_root": str(tmp_path)}
    soft = build_source(dict(item, pseudo_label="soft"), cfg, seed=0, batch_size=2).dataset
    hard = build_source(item, cfg, seed=0, batch_size=2).dataset
    labels = []
    for i, row in enumerate(rows):
        got = soft[i]["label"]
        want = torch.zeros(3)
        for c, p in row["meta"]["soft_label"]:
            want[c] = p
        want /= want.sum()
        assert got.dtype == torch.float32 and got.shape == (3,)
        assert torch.allclose(got, want, atol=1e-6) and (want > 0).sum() == 2
        assert int(got.argmax()) == row["label"] == hard[i]["label"]      # default: the hard argmax
        labels.append(got)
    target = torch.stack(labels)
    logits = torch.randn(len(rows), 3, generator=torch.Generator().manual_seed(0))
    loss, _ = source_loss(logits, target, len(rows), 0.0)
    manual = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    assert not torch.allclose(loss, torch.nn.functional.cross_entropy(logits, target.argmax(1)))
    assert torch.allclose(soft_target_cross_entropy(logits, target), manual, atol=1e-6)
    from omnisource.data.datasets import build_dataset
    from omnisource.errors import ConfigError

    lst = tmp_path / "list.txt"
    lst.write_text("media/pos0.jpg 0\n")
    with pytest.raises(ConfigError, match="soft labels"):
        build_dataset(lst, tmp_path, "tsn_1x1x3_train", format="image", num_classes=3, soft_labels=True)
