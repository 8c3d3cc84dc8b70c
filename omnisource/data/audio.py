"""Audio features as training data: mmaction2's ``AudioDataset`` + ``LoadAudioFeature`` +
``AudioFeatureSelector`` + ``FormatAudioShape``.

An audio list is a rawframes-style text list whose paths are ``.npy`` log-mel spectrograms
(``[L, 80]`` float32, written by ``omnisource extract-audio``)::

    audio_features_train/abseiling/0wR5jVB-WPk.npy 300 0

``300`` is the *video's* frame count: the preset's frame sampler picks video frame indices
(``SampleFrames(clip_len=64)``) as for an RGB clip, and the selector maps the clip's first and
last index onto the spectrogram's time axis proportionally (``round((i + 1) / total * L)``), then
cuts or zero-pads the window to ``fixed_length`` (128) rows. The result per clip is
``[1, 128, 80]``, so a sample is ``[num_clips, 1, 128, 80]`` (``NCTF``).

A listed feature file that does not exist is a video without an audio track: as mmaction2, the
sample becomes a silent (all-zero) 640 x 80 spectrogram, and the dataset counts and logs it
(``no_audio``) instead of failing; a file that exists but cannot be read is a bad sample (skipped,
replaced and counted like a corrupt video, or an error with ``strict``).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnisource.data.datasets import ClipDataset
from omnisource.data.sampling import SampleFrames
from omnisource.errors import ConfigError, DataError

__all__ = ["select_audio_clips", "AudioPreset", "build_audio_preset", "AudioFeatureDataset"]

logger = logging.getLogger(__name__)

SILENT_FRAMES = 640          # mmaction2's LoadAudioFeature zero pad for videos without audio
NUM_MELS = 80


def select_audio_clips(features: np.ndarray, frame_inds: np.ndarray, num_clips: int, total_frames: int,
                       fixed_length: int = 128) -> np.ndarray:
    """``[L, F]`` spectrogram + 0-based video frame indices (``num_clips`` clips) -> float32
    ``[num_clips, fixed_length, F]``: each clip's span of the spectrogram, cut or zero-padded."""
    if features.ndim != 2:
        raise ValueError(f"an audio feature must be [time, mel bins], got shape {features.shape}")
    total = max(int(total_frames), 1)
    length = features.shape[0]
    out = np.zeros((num_clips, fixed_length, features.shape[1]), dtype=np.float32)
    for c, inds in enumerate(np.asarray(frame_inds).reshape(num_clips, -1)):
        # Python's round (half to even), as mmaction2's int(round(...))
        start = max(0, int(round((int(inds[0]) + 1) / total * length)))
        end = min(length, int(round((int(inds[-1]) + 1) / total * length)))
        window = features[start:end][:fixed_length]
        out[c, :len(window)] = window
    return out


@dataclass
class AudioPreset:
    """The audio counterpart of :class:`omnisource.data.presets.Preset`: a video-frame sampler and
    the spectrogram window selector (no pixels, no normalisation: the features are in [0, 1])."""

    name: str
    sampler: SampleFrames
    clip_len: int
    num_clips: int
    test_mode: bool
    fixed_length: int = 128
    spec: Any = field(default=None, repr=False)
    layout: str = "audio"
    num_crops: int = 1
    mean: tuple | None = None
    std: tuple | None = None

    @property
    def frames_per_sample(self) -> int:
        return self.sampler.frames_per_sample

    @property
    def start_index(self) -> int:
        return self.sampler.start_index

    @property
    def input_size(self) -> None:
        return None

    @property
    def flip_label_map(self) -> dict[int, int]:
        return {}

    def sample(self, total_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.sampler(total_frames, rng)

    def with_start_index(self, start_index: int) -> "AudioPreset":
        return dataclasses.replace(self, sampler=self.sampler.with_start_index(start_index))

    def __call__(self, features: np.ndarray, frame_inds: np.ndarray, total_frames: int) -> torch.Tensor:
        """``[L, F]`` + 0-based frame indices -> ``[num_clips, 1, fixed_length, F]``."""
        clips = select_audio_clips(features, frame_inds, self.num_clips, total_frames, self.fixed_length)
        return torch.from_numpy(clips).unsqueeze(1)


def build_audio_preset(spec: Any, name: str) -> AudioPreset:
    """A :class:`PresetSpec` with ``layout='audio'`` -> :class:`AudioPreset` (only the sampling
    fields apply; crops and flips are image operations)."""
    if spec.sampler != "sample":
        raise ConfigError(f"audio presets sample with 'sample', got sampler={spec.sampler!r}")
    sampler = SampleFrames(spec.clip_len, spec.frame_interval, spec.num_clips, test_mode=spec.test_mode,
                           twice_sample=spec.twice_sample, out_of_bound_opt=spec.out_of_bound_opt,
                           keep_tail_frames=spec.keep_tail_frames, start_index=spec.start_index,
                           test_offsets=spec.test_offsets)
    n = spec.num_clips * (2 if spec.twice_sample and spec.test_mode else 1)
    return AudioPreset(name=name, sampler=sampler, clip_len=spec.clip_len, num_clips=n, test_mode=spec.test_mode,
                       fixed_length=int(spec.fixed_length), spec=spec)


class AudioFeatureDataset(ClipDataset):
    """Rows ``features.npy total_frames label``: spectrogram windows, ``[V, 1, 128, 80]`` per item."""

    kind = "audio"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if not isinstance(self.preset, AudioPreset):
            raise ConfigError(f"audio feature lists need an audio preset (e.g. audio_feature_64x1x1_train), "
                              f"got {getattr(self.preset, 'name', self.preset)!r}")
        self.no_audio: set[str] = set()      # listed features that do not exist: silent inputs

    def load_features(self, path: Path) -> np.ndarray:
        if not path.exists():
            if str(path) not in self.no_audio:
                self.no_audio.add(str(path))
                if self._first_to_log(f"no-audio:{path}"):
                    logger.warning("no audio feature %s: a silent spectrogram is used (mmaction2's "
                                   "LoadAudioFeature zero pad)", path)
            return np.zeros((SILENT_FRAMES, NUM_MELS), dtype=np.float32)
        try:
            with open(path, "rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise DataError(path, "not a .npy file (no NumPy header)")
                fh.seek(0)
                feats = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(path, f"not a readable .npy spectrogram ({err})") from None
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise DataError(path, f"an audio feature must be a non-empty [time, mel bins] array, got {feats.shape}")
        return feats.astype(np.float32, copy=False)

    def get_item(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        s = self.samples[i]
        feats = self.load_features(self._resolve(s))
        total = int(s.total_frames or 0)
        if total <= 0:
            raise DataError(s.path, f"total_frames must be positive (listed at {s.where})")
        inds = self.sample_indices(total, rng)
        inputs = self.preset(feats, inds, total)
        return {"inputs": inputs, "label": self.pack_label(s), "index": i, "path": s.path, "damaged": 0}
