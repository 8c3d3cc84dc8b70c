"""Log-mel spectrograms of a video's audio track, with mmaction2's audio feature parameters.

mmaction2 prepares its audio rows in two steps (``tools/data/extract_audio.py``: ffmpeg to
``.wav``; ``tools/data/build_audio_features.py``: librosa + lws to ``.npy``). Here one function
does both from the video file, with the same numbers:

* audio resampled to **16 kHz mono** (PyAV / libswresample here; librosa's ``load(sr=16000)``
  there), RMS-normalised to 0.1 (``NORM_AUDIO``: the gain of the recording does not matter);
* the STFT of ``lws.lws(512, 256, mode='speech').stft``: frames of **512 samples (32 ms) every
  256 (16 ms)**, a square-root Hann analysis window, lws' perfect-reconstruction padding (256
  zeros in front, the end padded to whole hops), magnitude of the 257 bins;
* **80 mel bins** from 125 to 7600 Hz (Slaney mel scale and area normalisation: librosa's
  ``filters.mel`` defaults), ``20 log10(max(1e-5, .)) - 20`` dB (``REF_LEVEL_DB``), then
  ``clip((S + 100) / 100, 0, 1)`` (``MIN_LEVEL_DB`` -100): values in [0, 1];
* saved as float32 ``[frames, 80]``: 62.5 rows per second of audio.

Why our own STFT and mel bank instead of librosa + lws: they are 20 lines of numpy, while the
two packages bring numba / llvmlite and a C++ build into every install; the resampler is the one
difference (libswresample's filter instead of soxr's). PyAV is already the video decoder.

Checked once against the real thing (librosa 0.11 + lws 1.2.8 in a separate venv, mmaction2's
``AudioTools`` calls, on ``tests/data/test.avi`` of mmaction2, 6.56 s of 44.1 kHz mp3): on the same
16 kHz signal the features agree to 6e-8 (float32 rounding; same 411 x 80 shape); with each side's
own resampler (librosa's soxr_hq vs libswresample) the mean absolute difference is 3e-4 and the
largest 0.026, against a feature standard deviation of 0.14.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from omnisource.errors import DataError

__all__ = ["SAMPLE_RATE", "FFT_SIZE", "HOP_SIZE", "NUM_MELS", "FMIN", "FMAX", "NoAudioError",
           "decode_audio", "mel_filter_bank", "log_mel_spectrogram", "video_audio_features"]

SAMPLE_RATE = 16000
FFT_SIZE = 512
HOP_SIZE = 256
NUM_MELS = 80
FMIN, FMAX = 125.0, 7600.0
MIN_LEVEL_DB, REF_LEVEL_DB = -100.0, 20.0


class NoAudioError(DataError):
    """The file has no audio stream (or an empty one): reported, not a failure of the file."""


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, stream_index: int = 0) -> np.ndarray:
    """The ``stream_index``-th audio stream of a media file as float32 mono at ``sample_rate``."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise DataError(path, f"cannot open ({err})") from None
    with container:
        streams = container.streams.audio
        if len(streams) <= stream_index:
            raise NoAudioError(path, "no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(streams[stream_index]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):          # flush the resampler's delay line
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as err:
            if not chunks:
                raise DataError(path, f"audio stream cannot be decoded ({err})") from None
            # a damaged tail: keep what decoded (as ffmpeg's wav extraction does)
    wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if wav.size == 0:
        raise NoAudioError(path, "the audio stream holds no samples")
    return wav


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa ``htk=False``)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filter_bank(sample_rate: int = SAMPLE_RATE, n_fft: int = FFT_SIZE, n_mels: int = NUM_MELS,
                    fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters, each of unit area in Hz (Slaney norm)."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got {fmin}, {fmax}, {sample_rate}")
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def _lws_window(fsize: int) -> np.ndarray:
    """lws' default analysis window: sqrt of its offset Hann (``sin^2(pi (2k + 1) / 2n)``), whose
    overlap-add at hop n/2 is 1, so its perfect-reconstruction normalisation changes nothing."""
    k = np.arange(fsize)
    return np.sqrt(0.5 * (1 - np.cos(2 * np.pi * (2 * k + 1) / (2 * fsize))))


def _stft_magnitude(wav: np.ndarray, fsize: int = FFT_SIZE, hop: int = HOP_SIZE) -> np.ndarray:
    """``|STFT|`` ``[frames, fsize // 2 + 1]`` as ``lws.stft`` with ``perfectrec=True``."""
    residual = fsize % hop
    pre = fsize - hop if residual == 0 else fsize - residual
    post = 0 if len(wav) % hop == 0 else hop - len(wav) % hop
    x = np.concatenate([np.zeros(pre), wav.astype(np.float64), np.zeros(post)])
    m = len(x) // hop
    x = np.concatenate([x, np.zeros((m - 1) * hop + fsize - len(x))])
    frames = np.lib.stride_tricks.sliding_window_view(x, fsize)[::hop][:m]
    return np.abs(np.fft.rfft(frames * _lws_window(fsize), n=fsize, axis=1))


def log_mel_spectrogram(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """mmaction2's audio feature of a 16 kHz mono signal: float32 ``[frames, 80]`` in [0, 1]."""
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    rms = max(1e-4, float(np.sqrt(np.mean(wav ** 2)))) if wav.size else 1e-4
    wav = wav * (0.1 / rms)
    mag = _stft_magnitude(wav)                                   # [frames, 257]
    mel = mag @ mel_filter_bank(sample_rate).T.astype(np.float64)  # [frames, 80]
    db = 20 * np.log10(np.maximum(10 ** (MIN_LEVEL_DB / 20), mel)) - REF_LEVEL_DB
    return np.clip((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB, 0, 1).astype(np.float32)


def video_audio_features(path: str | Path) -> np.ndarray:
    """Decode the audio of ``path`` and return its log-mel features (raises :class:`NoAudioError`
    for a file without sound, :class:`DataError` for one that cannot be read)."""
    return log_mel_spectrogram(decode_audio(path))
