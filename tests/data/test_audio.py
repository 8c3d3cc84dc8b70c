"""Audio rows end to end: the log-mel features (mmaction2's parameters), ``omnisource
extract-audio`` on real files (with audio, without audio, corrupt), the audio list format and
dataset (mmaction2's window selection, silent input for videos without sound), training and
testing an audio recognizer, and fusing its scores with another model's."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from omnisource.cli import main
from omnisource.data.annotations import detect_format, load_annotations, write_annotations
from omnisource.data.audio import select_audio_clips
from omnisource.data.audio_features import (FFT_SIZE, HOP_SIZE, NoAudioError, _stft_magnitude, decode_audio,
                                            log_mel_spectrogram, mel_filter_bank, video_audio_features)
from omnisource.data.datasets import build_dataset
from omnisource.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
WITH_AUDIO = SHARED / "mmaction2" / "tests" / "data" / "test.avi"       # mp3, 44.1 kHz, 6.56 s
NO_AUDIO = SHARED / "mmaction2" / "demo" / "demo.mp4"
need_media = pytest.mark.skipif(not (WITH_AUDIO.is_file() and NO_AUDIO.is_file()), reason="shared media absent")


# ----------------------------------------------------------------------------- features
def test_window_selection_maps_video_frames_onto_the_spectrogram_as_mmaction2():
    """mmaction2's AudioFeatureSelector: rows round((first + 1) / total * L) to
    round((last + 1) / total * L), cut or zero-padded to fixed_length."""
    feats = np.arange(300 * 2, dtype=np.float32).reshape(300, 2)
    inds = np.arange(10, 74)                       # a 64-frame clip of a 150-frame video
    out = select_audio_clips(feats, inds, 1, 150, fixed_length=128)
    start, end = round(11 / 150 * 300), round(74 / 150 * 300)        # 22, 148
    assert out.shape == (1, 128, 2)
    np.testing.assert_array_equal(out[0, :end - start], feats[start:end])
    np.testing.assert_array_equal(out[0, end - start:], 0)            # 126 rows, then zeros
    long = select_audio_clips(feats, np.arange(0, 64), 1, 64, fixed_length=128)
    np.testing.assert_array_equal(long[0], feats[5:133])      # rows round(1 / 64 * 300) = 5 .. 300, cut to 128


def test_mel_filters_are_slaney_triangles_of_unit_area():
    fb = mel_filter_bank()
    assert fb.shape == (80, FFT_SIZE // 2 + 1) and (fb >= 0).all()
    df = 16000 / FFT_SIZE
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[0] * df >= 125 - df and peaks[-1] * df <= 7600
    wide = fb[40:]                                    # filters spanning many bins: area ~ 1 Hz^-1 * Hz
    np.testing.assert_allclose(wide.sum(axis=1) * df, 1.0, rtol=0.05)
    assert (fb[:, : int(125 // df)] == 0).all() and (fb[:, int(7600 // df) + 2:] == 0).all()


def test_stft_frames_and_peak_follow_lws_perfect_reconstruction_layout():
    sr, n = 16000, 16000
    sine = np.sin(2 * np.pi * 1000 * np.arange(n) / sr)
    mag = _stft_magnitude(sine)
    assert mag.shape == (1 + n // HOP_SIZE + (1 if n % HOP_SIZE else 0), FFT_SIZE // 2 + 1)   # 256 zeros first
    assert np.bincount(mag[5:-5].argmax(axis=1)).argmax() == round(1000 / (sr / FFT_SIZE))    # bin 32


def test_log_mel_is_in_unit_range_and_ignores_the_recording_gain():
    rng = np.random.default_rng(0)
    wav = rng.normal(size=8000) * np.hanning(8000)
    a, b = log_mel_spectrogram(wav), log_mel_spectrogram(wav * 37.0)      # RMS normalised first
    assert a.shape == (1 + 8000 // 256 + 1, 80) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 1 and a.std() > 0.01
    np.testing.assert_allclose(a, b, atol=1e-5)


@need_media
def test_decoding_a_real_audio_track_and_reporting_a_silent_video():
    wav = decode_audio(WITH_AUDIO)
    assert abs(len(wav) / 16000 - 6.56) < 0.05                     # 44.1 kHz mp3 -> 16 kHz mono
    feats = video_audio_features(WITH_AUDIO)
    assert feats.shape[1] == 80 and abs(feats.shape[0] - len(wav) / 256) <= 2
    with pytest.raises(NoAudioError, match="no audio stream"):
        video_audio_features(NO_AUDIO)


# ----------------------------------------------------------------------------- command
@need_media
def test_extract_audio_lists_every_video_reports_silent_and_corrupt_ones_and_resumes(tmp_path, capsys):
    vids = tmp_path / "videos"
    (vids / "cls").mkdir(parents=True)
    shutil.copy(WITH_AUDIO, vids / "cls" / "a.avi")
    shutil.copy(NO_AUDIO, vids / "b.mp4")
    (vids / "c.mp4").write_bytes(b"not a video at all")
    shutil.copy(WITH_AUDIO, vids / "d.avi")
    lst = tmp_path / "val.txt"
    lst.write_text("cls/a.avi 3\nb.mp4 1\nc.mp4 0\nd.avi 2\n")
    out = tmp_path / "audio"
    assert main(["extract-audio", str(lst), "--data-root", str(vids), "--out", str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 videos have audio features; 1 without audio" in printed and "1 unreadable" in printed
    rows = load_annotations(out / "val_audio_features.txt")
    assert [r.path for r in rows] == ["features/cls/a.npy", "features/b.npy", "features/c.npy", "features/d.npy"]
    assert [r.label for r in rows] == [3, 1, 0, 2] and rows[0].total_frames == 164 and rows[1].total_frames == 280
    assert detect_format(out / "val_audio_features.txt") == "audio"
    assert (out / "no_audio.txt").read_text().startswith("b.mp4\tno audio stream")
    assert (out / "failures.txt").read_text().startswith("c.mp4\t")
    assert json.loads((out / "summary.json").read_text())["failed"] == 1
    np.testing.assert_array_equal(np.load(out / "features" / "cls" / "a.npy"), video_audio_features(WITH_AUDIO))

    # a re-run of the finished folder is a no-op; another list into it needs --force
    assert main(["extract-audio", str(lst), "--data-root", str(vids), "--out", str(out)]) == 0
    other = tmp_path / "other.txt"
    other.write_text("cls/a.avi 3\n")
    assert main(["extract-audio", str(other), "--data-root", str(vids), "--out", str(out)]) == 2
    assert "another list" in capsys.readouterr().err

    # killed mid-run: the list and summary were never written and the status file ends in a torn
    # line; the next run redoes only the videos not recorded
    status = (out / ".status.jsonl").read_text().splitlines()
    (out / ".status.jsonl").write_text("\n".join(status[:2]) + '\n{"path": "b.mp')
    for name in ("val_audio_features.txt", "summary.json"):
        (out / name).unlink()
    (out / "features" / "d.npy").unlink()
    first = (out / "features" / "cls" / "a.npy").stat().st_mtime_ns
    assert main(["extract-audio", str(lst), "--data-root", str(vids), "--out", str(out)]) == 0
    assert "resuming: 1 of 4" in capsys.readouterr().err
    assert (out / "features" / "cls" / "a.npy").stat().st_mtime_ns == first
    assert (out / "features" / "d.npy").is_file() and len(load_annotations(out / "val_audio_features.txt")) == 4

    assert main(["extract-audio", str(lst), "--data-root", str(vids), "--out", str(tmp_path / "s"),
                 "--strict", "--workers", "1"]) == 2
    assert "c.mp4" in capsys.readouterr().err


# ----------------------------------------------------------------------------- dataset
def test_audio_list_dataset_gives_nctf_clips_silence_for_missing_and_skips_corrupt(tmp_path):
    feats = tmp_path / "f"
    feats.mkdir()
    np.save(feats / "a.npy", np.random.default_rng(0).random((300, 80), dtype=np.float32))
    (feats / "bad.npy").write_bytes(b"\x00" * 64)
    lst = tmp_path / "audio.txt"
    lst.write_text("f/a.npy 150 0\nf/none.npy 100 1\nf/bad.npy 100 1\n")
    assert detect_format(lst) == "audio"
    ds = build_dataset(lst, tmp_path, "audio_feature_64x1x1_train", seed=0)
    a, silent, replaced = ds[0], ds[1], ds[2]
    assert a["inputs"].shape == (1, 1, 128, 80) and a["inputs"].abs().sum() > 0 and a["label"] == 0
    assert silent["inputs"].abs().sum() == 0 and silent["label"] == 1 and ds.no_audio == {str(tmp_path / "f/none.npy")}
    assert replaced["skipped"] == 1 and ds.skipped["unreadable"] == 1
    test = build_dataset(lst, tmp_path, "audio_feature_64x1x1_test", test_mode=True)
    torch.testing.assert_close(test[0]["inputs"], test[0]["inputs"])             # deterministic
    strict = build_dataset(lst, tmp_path, "audio_feature_64x1x1_train", strict=True)
    with pytest.raises(DataError, match="bad.npy"):
        strict[2]
    rows = load_annotations(lst)
    write_annotations(tmp_path / "copy.txt", rows, format="audio")
    assert (tmp_path / "copy.txt").read_text() == lst.read_text()


def test_audio_recipe_trains_tests_and_fuses_with_another_model(tmp_path, capsys):
    """A tiny audio ResNet learns two classes whose spectrograms differ in band energy; its test
    scores fuse with a second result file, and mixing logits with probabilities is flagged."""
    rng = np.random.default_rng(0)
    (tmp_path / "f").mkdir()
    lines = []
    for i in range(12):
        label = i % 2
        x = rng.random((200, 80), dtype=np.float32) * 0.3
        x[:, :40] += 0.6 if label else 0.0
        np.save(tmp_path / "f" / f"{i}.npy", x)
        lines.append(f"f/{i}.npy 100 {label}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    split = (f"    ann_file: {tmp_path / 'list.txt'}\n    data_root: {tmp_path}\n"
             "    preset: audio_feature_64x1x1_{mode}\n")
    cfg = tmp_path / "audio.yaml"
    cfg.write_text("model:\n  name: tsn_r18_8xb320-64x1x1-100e_kinetics400-audio-feature\n  num_classes: 2\n"
                   "  overrides: {base_channels: 4}\n"
                   "data:\n  train:\n" + split.format(mode="train") + "  test:\n" + split.format(mode="test")
                   + "  batch_size: 4\n  num_workers: 0\n"
                   "optim:\n  lr: 0.05\nschedule:\n  epochs: 3\n  steps: [2]\ntrain:\n  tensorboard: false\n")
    work = tmp_path / "work"
    assert main(["train", str(cfg), "--work-dir", str(work), "--seed", "0"]) == 0
    prob, logit = tmp_path / "audio_prob.json", tmp_path / "audio_score.json"
    assert main(["test", str(cfg), str(work / "latest.pth"), "--average-clips", "prob", "--out", str(prob)]) == 0
    assert main(["test", str(cfg), str(work / "latest.pth"), "--average-clips", "score", "--out", str(logit)]) == 0
    scores = np.asarray(json.loads(prob.read_text())["scores"])
    assert scores.shape == (12, 2) and np.allclose(scores.sum(1), 1, atol=1e-5)
    capsys.readouterr()
    assert main(["fuse", str(prob), str(prob), "--ann", str(tmp_path / "list.txt")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["fuse", str(prob), str(logit), "--ann", str(tmp_path / "list.txt")]) == 0
    err = capsys.readouterr().err
    assert "mix probabilities and raw scores" in err and "audio_score.json: logits" in err
    out = tmp_path / "fused.json"
    assert main(["fuse", str(prob), str(logit), "--softmax", "--ann", str(tmp_path / "list.txt"),
                 "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    np.testing.assert_allclose(np.asarray(json.loads(out.read_text())["scores"]), scores, atol=1e-5)
