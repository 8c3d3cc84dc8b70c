"""Named data pipelines matching mmaction2's zoo configs: sampler + uint8 transforms + format.

A :class:`Preset` answers the two questions a dataset has: *which frames to decode*
(``preset.sampler`` / ``preset.sample(total_frames, rng)``) and *how to turn them into the
model input* (``preset(frames, rng)`` -> normalised float32 tensor). Names are
``<family>_<mode>`` with ``mode`` in ``train`` / ``val`` / ``test``; the family names follow
mmaction2's config names (``tsn_1x1x3`` = ``tsn_..._1x1x3_..._kinetics400-rgb.py``,
``slowonly_4x16x1`` = clip_len 4, frame_interval 16, 1 clip). ``list_presets()`` lists them.

What the zoo does, and therefore the presets (mmaction2 1.2.0 ``configs/recognition``):

* train: ``Resize((-1, 256))`` -> ``MultiScaleCrop(224, (1, .875, .75, .66))`` (TSN/TSM; I3D
  uses scales (1, .8) with gap 0) or ``RandomResizedCrop()`` (SlowOnly, SlowFast, R(2+1)D,
  and the OmniSource recipes) -> ``Resize((224, 224), keep_ratio=False)`` -> ``Flip(0.5)``.
* val: the train clip count in test mode, ``Resize((-1, 256))`` + ``CenterCrop(224)``.
* test: TSN 25 clips x ``TenCrop(224)``; TSM 8 clips x ``TenCrop(224)``; 3D models 10 clips x
  ``ThreeCrop(256)`` (crop = the short side; C2D tests at short side 224).
* ``*_omnisource_*``: the OmniSource Mini-Kinetics recipes of mmaction2 0.x
  (``tsn_r50_1x1x8_100e_minikinetics_omnisource_rgb``,
  ``slowonly_r50_8x8x1_256e_minikinetics_omnisource_rgb``): RandomResizedCrop for training,
  ``CenterCrop(256)`` for val, ``ThreeCrop(256)`` for test, and 0.x test offsets
  (``test_offsets='v0'``). To evaluate the published Kinetics-400 OmniSource checkpoints the
  0.x way, use e.g. ``get_preset('tsn_1x1x3_test', test_offsets='v0')``.

Overrides (``get_preset(name, **overrides)``), so configs and tests can reshape a preset:

=====================  ==================================================================
``clip_len``           frames per clip
``frame_interval``     stride between frames of a clip
``num_clips``          clips (segments) per sample
``test_offsets``       ``'v1'`` (mmaction2 >= 1.0) or ``'v0'`` (0.x) for val/test offsets
``twice_sample``       val/test: also sample unshifted clips (TSM)
``out_of_bound_opt``   ``'loop'`` or ``'repeat_last'``
``keep_tail_frames``   train: float segments that can reach the last frames
``start_index``        first frame number (1 for rawframe folders); see ``with_start_index``
``sampler``            ``'sample'`` (SampleFrames) or ``'dense'`` (DenseSampleFrames)
``sample_range``       dense: frames the dense clips span
``num_sample_positions``  dense test: number of window starts
``scale``              short side of the first resize (int), or an mmaction2 scale tuple
``crop_size``          network input side: train output size, MultiScaleCrop input_size,
                       val/test crops that the zoo sizes at 224
``crop``               train: ``'msc'`` | ``'rrc'`` | ``'random'`` | ``'none'``;
                       val/test: ``'center'`` | ``'three'`` | ``'ten'`` | ``'none'``
``test_crop_size``     val/test crop side; ``None`` = the zoo's choice (``crop_size``, or
                       the short side for ThreeCrop); ``'scale'`` = the short side (the
                       OmniSource val CenterCrop(256))
``msc_scales``         MultiScaleCrop scales
``max_wh_scale_gap``   MultiScaleCrop
``num_fixed_crops``    MultiScaleCrop: 5 or 13
``msc_random_crop``    MultiScaleCrop: random instead of fixed positions
``area_range``         RandomResizedCrop
``aspect_ratio_range`` RandomResizedCrop
``flip_ratio``         probability of a horizontal flip (train)
``flip_label_map``     pairs ``(a, b)``: a flipped clip of class a is labelled b (mmaction2 ``Flip(
                       flip_label_map=...)``; Something-Something's left/right classes)
``interpolation``      resize interpolation (``'bilinear'``)
``mean`` / ``std``     RGB normalisation
=====================  ==================================================================

Example for tests: ``get_preset('tsn_1x1x3_train', scale=64, crop_size=56, num_clips=2)``.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from omnisource.data.sampling import DenseSampleFrames, SampleFrames
from omnisource.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop,
                                        MultiScaleCrop, RandomCrop, RandomResizedCrop, Resize,
                                        TenCrop, ThreeCrop, Transform, Flip, check_frames,
                                        to_model_input)
from omnisource.errors import ConfigError, DataError

__all__ = ["Preset", "PresetSpec", "get_preset", "list_presets", "build_preset"]

TSN_SCALES = (1, 0.875, 0.75, 0.66)
_MODES = ("train", "val", "test")


@dataclass(frozen=True)
class PresetSpec:
    """Every knob of a preset; the override keys of :func:`get_preset` are its fields."""

    layout: str                      # '2d' | '3d'
    mode: str                        # 'train' | 'val' | 'test'
    clip_len: int
    frame_interval: int
    num_clips: int
    crop: str                        # see module docstring
    scale: Any = 256
    crop_size: int = 224
    test_crop_size: int | str | None = None  # None: zoo default; 'scale': the short side
    sampler: str = "sample"
    test_offsets: str = "v1"
    twice_sample: bool = False
    out_of_bound_opt: str = "loop"
    keep_tail_frames: bool = False
    start_index: int = 0
    sample_range: int = 64
    num_sample_positions: int = 10
    msc_scales: tuple = TSN_SCALES
    max_wh_scale_gap: int = 1
    num_fixed_crops: int = 5
    msc_random_crop: bool = False
    area_range: tuple = (0.08, 1.0)
    aspect_ratio_range: tuple = (3 / 4, 4 / 3)
    flip_ratio: float = 0.5
    flip_label_map: tuple = ()       # ((a, b), ...): a flipped train clip of class a becomes class b
    interpolation: str = "bilinear"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    modality: str = "rgb"            # 'rgb' | 'flow' (2-channel x / y frames; 2D clips stacked into channels)
    fixed_length: int = 128          # layout 'audio': spectrogram rows per clip (mmaction2 AudioFeatureSelector)

    @property
    def test_mode(self) -> bool:
        return self.mode != "train"


@dataclass
class Preset:
    """A named pipeline: ``sampler`` picks frame indices, ``__call__`` makes the model input.

    ``preset(frames, rng)``: ``frames`` uint8 ``[num_clips*clip_len, H, W, 3]`` as sampled
    (any whole number of clips is accepted, e.g. ``UntrimmedSampleFrames`` output); returns
    float32 ``[S, 3, H, W]`` for 2D (``S = frames * num_crops``) or ``[V, 3, T, H, W]`` for 3D
    (``V = num_crops * clips``, crop-major then clip, as mmaction2). A *single* frame given to
    a preset with ``clip_len > 1`` is treated as a still image: augmented once, then repeated
    ``clip_len`` times (mmaction2's ``BuildPseudoClip`` for web images). All random decisions
    come from ``rng`` (a fresh generator when ``None``), one draw per sample.
    """

    name: str
    sampler: SampleFrames
    transforms: list
    layout: str
    clip_len: int
    num_clips: int
    num_crops: int
    test_mode: bool
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    spec: PresetSpec | None = field(default=None, repr=False)

    @property
    def frames_per_sample(self) -> int:
        """How many frame indices ``sampler`` returns per sample."""
        return self.sampler.frames_per_sample

    @property
    def start_index(self) -> int:
        return self.sampler.start_index

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the output frames, when it does not depend on the input size."""
        if self.spec is None or self.spec.crop == "none":
            return None
        if self.spec.mode == "train":
            return (self.spec.crop_size, self.spec.crop_size)
        side = _test_crop_side(self.spec)
        return (side, side)

    def sample(self, total_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Frame indices to decode for a video of ``total_frames`` frames."""
        return self.sampler(total_frames, rng)

    def with_start_index(self, start_index: int) -> "Preset":
        """A copy whose sampler counts frames from ``start_index`` (1 for rawframes)."""
        spec = None if self.spec is None else dataclasses.replace(self.spec,
                                                                  start_index=start_index)
        return dataclasses.replace(self, sampler=self.sampler.with_start_index(start_index),
                                   spec=spec)

    @property
    def flip_label_map(self) -> dict[int, int]:
        """Label swaps of flipped train clips (empty for most presets)."""
        if self.spec is None or not self.spec.flip_label_map:
            return {}
        return {int(a): int(b) for a, b in self.spec.flip_label_map}

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None,
                 info: dict[str, Any] | None = None) -> torch.Tensor:
        """The model input; ``info`` (optional) receives ``flipped``: whether a Flip flipped it
        (the dataset swaps the label through :attr:`flip_label_map` then)."""
        flow = self.spec is not None and self.spec.modality == "flow"
        frames = check_frames(frames, 2 if flow else 3)
        if rng is None:
            rng = np.random.default_rng()
        still = frames.shape[0] == 1 and self.clip_len > 1
        if not still and frames.shape[0] % self.clip_len:
            raise DataError("<frames>", f"preset {self.name!r} got {frames.shape[0]} frames, "
                                        f"not a whole number of {self.clip_len}-frame clips")
        for t in self.transforms:
            if info is not None and isinstance(t, Flip):
                before = frames
                frames = t(frames, rng)
                info["flipped"] = frames is not before
                continue
            frames = t(frames, rng)
        if still:  # one image per view -> a clip of clip_len copies (crop-major kept)
            frames = np.repeat(frames, self.clip_len, axis=0)
        return to_model_input(frames, self.layout, self.clip_len, self.mean, self.std, stack_clip_channels=flow)

    def __repr__(self) -> str:
        ts = ", ".join(repr(t) for t in self.transforms)
        return (f"Preset({self.name!r}, layout={self.layout!r}, sampler={self.sampler!r}, "
                f"transforms=[{ts}])")


# ----------------------------------------------------------------------------- the table
def _family(layout: str, clip_len: int, frame_interval: int, num_clips: int, train_crop: str,
            val_clips: int, test_clips: int, test_crop: str, val_crop: str = "center",
            train: dict | None = None, val: dict | None = None, test: dict | None = None,
            **common: Any) -> dict[str, PresetSpec]:
    base = dict(layout=layout, clip_len=clip_len, frame_interval=frame_interval, **common)
    return {
        "train": PresetSpec(mode="train", num_clips=num_clips, crop=train_crop,
                            **{**base, **(train or {})}),
        "val": PresetSpec(mode="val", num_clips=val_clips, crop=val_crop,
                          **{**base, **(val or {})}),
        "test": PresetSpec(mode="test", num_clips=test_clips, crop=test_crop,
                           **{**base, **(test or {})}),
    }


# Something-Something V2 classes that mirror each other ("... from left to right" / "... from
# right to left"), as mmaction2's sthv2 configs list them: a flipped clip changes class
STHV2_FLIP_LABEL_MAP = ((86, 87), (87, 86), (93, 94), (94, 93), (166, 167), (167, 166))
# and Something-Something V1's (mmaction2's sthv1 configs)
STHV1_FLIP_LABEL_MAP = ((2, 4), (4, 2), (30, 41), (41, 30), (52, 66), (66, 52))


def _tsn(k: int, **kw: Any) -> dict[str, PresetSpec]:
    return _family("2d", 1, 1, k, "msc", val_clips=k, test_clips=25, test_crop="ten", **kw)


def _3d(clip_len: int, interval: int, train_crop: str = "rrc", **kw: Any) -> dict[str, PresetSpec]:
    return _family("3d", clip_len, interval, 1, train_crop, val_clips=1, test_clips=10,
                   test_crop="three", **kw)


_FAMILIES: dict[str, dict[str, PresetSpec]] = {
    # TSN, Kinetics-400 (tsn_imagenet-pretrained-r50_8xb32-1x1x{3,5,8}-100e_kinetics400-rgb)
    "tsn_1x1x3": _tsn(3),
    "tsn_1x1x5": _tsn(5),
    "tsn_1x1x8": _tsn(8),
    # TSN on Something-Something V2 (tsn_imagenet-pretrained-r50_8xb32-1x1x{8,16}-50e_sthv2-rgb):
    # Kinetics' crops, and a flip that swaps the left/right classes (mmaction2's sthv2_flip_label_map)
    "tsn_sthv2_1x1x8": _tsn(8, flip_label_map=STHV2_FLIP_LABEL_MAP),
    "tsn_sthv2_1x1x16": _tsn(16, flip_label_map=STHV2_FLIP_LABEL_MAP, train=dict(num_fixed_crops=13)),
    # TSN DenseNet-161 (tsn_imagenet-pretrained-dense161_8xb32-1x1x3-100e): RandomResizedCrop training
    "tsn_rrc_1x1x3": _family("2d", 1, 1, 3, "rrc", val_clips=3, test_clips=25, test_crop="ten"),
    # TSN with dense training clips (tsn_..._dense-1x1x5-100e): test 25 clips, centre crop
    "tsn_dense_1x1x5": _family("2d", 1, 1, 5, "msc", val_clips=5, test_clips=25,
                               test_crop="center", train=dict(sampler="dense")),
    # TSM (tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e): 13 fixed crops, test 8 clips x 10 crops
    "tsm_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="ten",
                         num_fixed_crops=13),
    "tsm_1x1x16": _family("2d", 1, 1, 16, "msc", val_clips=16, test_clips=16, test_crop="ten",
                          num_fixed_crops=13),
    # TSM MobileNetV2 (tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e): test ThreeCrop 256
    "tsm_mnv2_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="three",
                              num_fixed_crops=13),
    # TSM MobileOne-S4 (tsm_imagenet-pretrained-mobileone-s4_8xb16-1x1x16-50e): test ThreeCrop 256
    "tsm_mobileone_1x1x16": _family("2d", 1, 1, 16, "msc", val_clips=16, test_clips=16, test_crop="three",
                                    num_fixed_crops=13),
    # TSM dense (tsm_..._8xb16-dense-1x1x8-50e): DenseSampleFrames in every mode, TenCrop 224
    "tsm_dense_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="ten",
                               num_fixed_crops=13, sampler="dense"),
    # TSM on Something-Something V2: the left/right label swap on flips, test twice-sampled
    # segments x ThreeCrop 256
    "tsm_sthv2_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="three",
                               num_fixed_crops=13, flip_label_map=STHV2_FLIP_LABEL_MAP,
                               test=dict(twice_sample=True)),
    "tsm_sthv2_1x1x16": _family("2d", 1, 1, 16, "msc", val_clips=16, test_clips=16, test_crop="three",
                                num_fixed_crops=13, flip_label_map=STHV2_FLIP_LABEL_MAP,
                                test=dict(twice_sample=True)),
    # TRN on Something-Something V1 (trn_..._1x1x8-50e_sthv1): V1's label swaps, else as V2's
    "trn_sthv1_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="three",
                               num_fixed_crops=13, flip_label_map=STHV1_FLIP_LABEL_MAP,
                               test=dict(twice_sample=True)),
    # TPN on TSM-R50 (tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1): RandomResizedCrop
    # then 224x224, V1's label swaps on flips; test twice-sampled segments x ThreeCrop 256
    "tpn_tsm_sthv1_1x1x8": _family("2d", 1, 1, 8, "rrc", val_clips=8, test_clips=8, test_crop="three",
                                   flip_label_map=STHV1_FLIP_LABEL_MAP, test=dict(twice_sample=True)),
    # TANet (tanet_imagenet-pretrained-r50_...): blue mean 103.5 as its model config; dense
    # Kinetics clips test on ThreeCrop 256; Something-Something V1 as TRN's, 8 or 16 segments
    "tanet_dense_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="three",
                                 num_fixed_crops=13, sampler="dense", mean=(123.675, 116.28, 103.5)),
    "tanet_sthv1_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="three",
                                 num_fixed_crops=13, flip_label_map=STHV1_FLIP_LABEL_MAP,
                                 test=dict(twice_sample=True), mean=(123.675, 116.28, 103.5)),
    "tanet_sthv1_1x1x16": _family("2d", 1, 1, 16, "msc", val_clips=16, test_clips=16, test_crop="three",
                                  num_fixed_crops=13, flip_label_map=STHV1_FLIP_LABEL_MAP,
                                  test=dict(twice_sample=True), mean=(123.675, 116.28, 103.5)),
    # TimeSformer (timesformer_*_8xb8-8x32x1-15e): mean = std = 127.5; test one clip at short
    # side 224, ThreeCrop 224. mmaction2 trains with RandomRescale(256-320) + RandomCrop 224;
    # here: short side 256 + RandomCrop 224 (RandomRescale is not one of our transforms yet)
    "timesformer_8x32x1": _family("3d", 8, 32, 1, "random", val_clips=1, test_clips=1, test_crop="three",
                                  mean=(127.5,) * 3, std=(127.5,) * 3, test=dict(scale=224, test_crop_size="scale")),
    # audio log-mel features (tsn_r18_8xb320-64x1x1-100e / audioonly_r50_8xb160-64x1x1-100e
    # _kinetics400-audio-feature): a 64-frame video clip's span of the spectrogram, 128 x 80
    "audio_feature_64x1x1": _family("audio", 64, 1, 1, "none", val_clips=1, test_clips=1, test_crop="none"),
    # optical flow (x / y JPEG pairs, mean = std = 128): TSN 5x1x3 stacks each segment's 5 frames
    # into 10 channels (tsn_imagenet-pretrained-r50_8xb32_5x1x3-110e_kinetics400-flow); SlowOnly
    # 16x4x1 feeds 2-channel clips, 2 val clips (slowonly_r50_8xb16-16x4x1-256e_kinetics400-flow)
    "tsn_flow_5x1x3": _family("2d", 5, 1, 3, "rrc", val_clips=3, test_clips=25, test_crop="ten",
                              modality="flow", mean=(128.0, 128.0), std=(128.0, 128.0)),
    "slowonly_flow_16x4x1": _family("3d", 16, 4, 1, "rrc", val_clips=2, test_clips=10, test_crop="three",
                                    modality="flow", mean=(128.0, 128.0), std=(128.0, 128.0)),
    # TIN (tin_..._1x1x8-{40e_sthv1,40e_sthv2,50e_kinetics400}): TSN's crops, 8 test segments,
    # one centre crop; the Something-Something rows never flip
    "tin_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="center"),
    "tin_sth_1x1x8": _family("2d", 1, 1, 8, "msc", val_clips=8, test_clips=8, test_crop="center",
                             flip_ratio=0.0),
    # I3D (i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e)
    "i3d_32x2x1": _3d(32, 2, "msc", msc_scales=(1, 0.8), max_wh_scale_gap=0),
    # I3D dense (i3d_..._8xb8-dense-32x2x1-100e): DenseSampleFrames in every mode; one test clip
    # per sample position (10 positions), three crops
    "i3d_dense_32x2x1": _family("3d", 32, 2, 1, "msc", val_clips=1, test_clips=1, test_crop="three",
                                msc_scales=(1, 0.8), max_wh_scale_gap=0, sampler="dense"),
    # C2D (c2d_r50-in1k-pre_8xb32-{8x8x1,16x4x1}-100e): TSN-style crops; test at short side 224
    "c2d_8x8x1": _3d(8, 8, "msc", test=dict(scale=224)),
    "c2d_16x4x1": _3d(16, 4, "msc", test=dict(scale=224)),
    # C2D without temporal pooling (c2d_r50-in1k-pre-nopool_8xb32-8x8x1-100e): the same clips,
    # formatted NCHW for a TSN-style 2D model (every frame is a segment)
    "c2d_nopool_8x8x1": _family("2d", 8, 8, 1, "msc", val_clips=1, test_clips=10, test_crop="three",
                                test=dict(scale=224)),
    # SlowOnly (slowonly_r50_8xb16-{4x16x1,8x8x1}-256e_kinetics400-rgb)
    "slowonly_4x16x1": _3d(4, 16),
    "slowonly_8x8x1": _3d(8, 8),
    # SlowFast samples 32 frames at stride 2 for both of its zoo names
    "slowfast_4x16x1": _3d(32, 2),
    "slowfast_8x8x1": _3d(32, 2),
    # R(2+1)D (r2plus1d_r34_8xb8-{8x8x1,32x2x1}-180e)
    "r2plus1d_8x8x1": _3d(8, 8),
    "r2plus1d_32x2x1": _3d(32, 2),
    # C3D on UCF101 (c3d_sports1m-pretrained_8xb30-16x1x1-45e): short side 128, crops 112
    "c3d_16x1x1": _family("3d", 16, 1, 1, "random", val_clips=1, test_clips=10,
                          test_crop="center", scale=128, crop_size=112, mean=(104.0, 117.0, 128.0),
                          std=(1.0, 1.0, 1.0)),
    # CSN (ircsn_ig65m-pretrained-r152-bnfrozen_8xb12-32x2x1-58e): SlowOnly's crops, 32 x 2 clips
    "csn_32x2x1": _3d(32, 2),
    # the from-scratch / Sports-1M CSN rows normalise with Kinetics' own mean and std
    "csn_k400norm_32x2x1": _3d(32, 2, mean=(110.2008, 100.63983, 95.99475), std=(58.14765, 56.46975, 55.332195)),
    # X3D (x3d_{s,m}_..._facebook-kinetics400-rgb): mmaction2 ships test pipelines only (10 clips,
    # ThreeCrop at the short side: 182 for S, 256 for M); the train pipelines here crop 160 / 224
    "x3d_s_13x6x1": _3d(13, 6, scale=182, crop_size=160, test=dict(test_crop_size="scale"),
                        mean=(114.75,) * 3, std=(57.38,) * 3),
    "x3d_m_16x5x1": _3d(16, 5, test=dict(test_crop_size="scale"), mean=(114.75,) * 3, std=(57.38,) * 3),
    # OmniSource Mini-Kinetics recipes of mmaction2 0.x (v0 test offsets)
    "tsn_1x1x8_omnisource": _family("2d", 1, 1, 8, "rrc", val_clips=8, test_clips=25,
                                    test_crop="three", val=dict(test_crop_size="scale"),
                                    test_offsets="v0"),
    "slowonly_8x8x1_omnisource": _family("3d", 8, 8, 1, "rrc", val_clips=1, test_clips=10,
                                         test_crop="three", val=dict(test_crop_size="scale"),
                                         test_offsets="v0"),
}

_PRESETS: dict[str, PresetSpec] = {f"{fam}_{mode}": spec
                                   for fam, specs in _FAMILIES.items()
                                   for mode, spec in specs.items()}

_OVERRIDABLE = tuple(f.name for f in dataclasses.fields(PresetSpec) if f.name not in ("layout",
                                                                                     "mode"))


def list_presets(pattern: str = "*") -> list[str]:
    """Sorted preset names matching a shell-style ``pattern``."""
    import fnmatch
    return sorted(n for n in _PRESETS if fnmatch.fnmatchcase(n, pattern))


def get_preset(name: str, **overrides: Any) -> Preset:
    """Build the named preset, with ``overrides`` (see the module docstring for the keys)."""
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, list(_PRESETS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            f"; known presets: {', '.join(list_presets())}"
        raise ConfigError(f"unknown preset {name!r}{hint}")
    spec = _PRESETS[name]
    for key in overrides:
        if key not in _OVERRIDABLE:
            close = difflib.get_close_matches(key, _OVERRIDABLE, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else \
                f"; allowed: {', '.join(_OVERRIDABLE)}"
            raise ConfigError(f"unknown override {key!r} for preset {name!r}{hint}")
    if overrides:
        spec = dataclasses.replace(spec, **_coerce(overrides))
    return build_preset(spec, name)


def _coerce(overrides: dict[str, Any]) -> dict[str, Any]:
    """YAML gives lists where the spec has tuples; keep specs hashable and comparable."""
    out = {}
    for k, v in overrides.items():
        if isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


def _resize_scale(spec: PresetSpec) -> Any:
    s = spec.scale
    if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
        return (-1, int(s))
    if isinstance(s, (tuple, list)):
        return tuple(s)
    return s


def _short_side(spec: PresetSpec) -> int | None:
    s = _resize_scale(spec)
    if isinstance(s, tuple) and min(s) == -1:
        return max(s)
    return None


def _test_crop_side(spec: PresetSpec) -> int:
    if spec.test_crop_size is not None and spec.test_crop_size != "scale":
        return int(spec.test_crop_size)
    if spec.crop == "three" or spec.test_crop_size == "scale":
        side = _short_side(spec)
        if side is None:
            raise ConfigError("ThreeCrop without test_crop_size needs a short-side scale "
                              f"(an int or (-1, s)), got scale={spec.scale!r}")
        return side
    return int(spec.crop_size)


def build_preset(spec: PresetSpec, name: str = "custom") -> Preset:
    """Turn a :class:`PresetSpec` into a :class:`Preset` (validates every field)."""
    if spec.layout == "audio":           # spectrogram windows: a sampler, no image transforms
        from omnisource.data.audio import build_audio_preset

        return build_audio_preset(spec, name)  # type: ignore[return-value]
    if spec.layout not in ("2d", "3d"):
        raise ConfigError(f"layout must be '2d', '3d' or 'audio', got {spec.layout!r}")
    if spec.modality not in ("rgb", "flow"):
        raise ConfigError(f"modality must be 'rgb' or 'flow', got {spec.modality!r}")
    if spec.mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {spec.mode!r}")
    sampler: SampleFrames
    if spec.sampler == "dense":
        sampler = DenseSampleFrames(spec.clip_len, spec.frame_interval, spec.num_clips,
                                    test_mode=spec.test_mode, sample_range=spec.sample_range,
                                    num_sample_positions=spec.num_sample_positions,
                                    out_of_bound_opt=spec.out_of_bound_opt,
                                    start_index=spec.start_index)
    elif spec.sampler == "sample":
        sampler = SampleFrames(spec.clip_len, spec.frame_interval, spec.num_clips,
                               test_mode=spec.test_mode, twice_sample=spec.twice_sample,
                               out_of_bound_opt=spec.out_of_bound_opt,
                               keep_tail_frames=spec.keep_tail_frames,
                               start_index=spec.start_index, test_offsets=spec.test_offsets)
    else:
        raise ConfigError(f"sampler must be 'sample' or 'dense', got {spec.sampler!r}")

    transforms: list[Transform] = [Resize(_resize_scale(spec), interpolation=spec.interpolation)]
    num_crops = 1
    size = int(spec.crop_size)
    if spec.mode == "train":
        if spec.crop == "msc":
            transforms.append(MultiScaleCrop(size, tuple(spec.msc_scales), spec.max_wh_scale_gap,
                                             spec.msc_random_crop, spec.num_fixed_crops))
        elif spec.crop == "rrc":
            transforms.append(RandomResizedCrop(spec.area_range, spec.aspect_ratio_range))
        elif spec.crop == "random":
            transforms.append(RandomCrop(size))
        elif spec.crop != "none":
            raise ConfigError(f"train crop must be 'msc', 'rrc', 'random' or 'none', "
                              f"got {spec.crop!r}")
        if spec.crop in ("msc", "rrc"):
            transforms.append(Resize((size, size), keep_ratio=False,
                                     interpolation=spec.interpolation))
        transforms.append(Flip(spec.flip_ratio, flow=spec.modality == "flow"))
    else:
        if spec.crop == "center":
            transforms.append(CenterCrop(_test_crop_side(spec)))
        elif spec.crop == "three":
            transforms.append(ThreeCrop(_test_crop_side(spec)))
            num_crops = 3
        elif spec.crop == "ten":
            transforms.append(TenCrop(_test_crop_side(spec)))
            num_crops = 10
        elif spec.crop != "none":
            raise ConfigError(f"val/test crop must be 'center', 'three', 'ten' or 'none', "
                              f"got {spec.crop!r}")
    nch = 2 if spec.modality == "flow" else 3
    if len(spec.mean) != nch or len(spec.std) != nch or min(spec.std) <= 0:
        raise ConfigError(f"mean/std must be {nch} values for {spec.modality} frames (std > 0), "
                          f"got {spec.mean}, {spec.std}")
    return Preset(name=name, sampler=sampler, transforms=transforms, layout=spec.layout,
                  clip_len=spec.clip_len, num_clips=spec.num_clips, num_crops=num_crops,
                  test_mode=spec.test_mode, mean=tuple(spec.mean), std=tuple(spec.std),
                  spec=spec)


def preset_names_for(family: str) -> list[str]:
    """The ``_train`` / ``_val`` / ``_test`` names of a family (``'tsn_1x1x3'``)."""
    return [f"{family}_{m}" for m in _MODES if f"{family}_{m}" in _PRESETS]


def describe(name: str, **overrides: Any) -> str:
    """One-line human description of a preset (for logs and ``--help``)."""
    p = get_preset(name, **overrides)
    steps = " -> ".join(repr(t) for t in p.transforms)
    return f"{name}: {p.sampler!r} -> {steps} -> normalise -> {p.layout.upper()}"

