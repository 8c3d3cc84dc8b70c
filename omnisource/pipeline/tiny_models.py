"""Tiny recognizers for the embedded demo world, registered in the model zoo.

Why registered presets and not just ``base_channels`` overrides: the web stages (teacher
scoring, de-duplication, untrimmed windows) build their test-time views from ``model.meta``
(``input_size``, ``clip_len``, ``frame_interval``). A zoo preset carries the recipe the network
was trained with, so the teacher sees web data exactly like it saw its training clips (a
Kinetics preset would score 40-pixel clips at 224 pixels and 8x8 sampling).

Both are ResNet-18 layouts with 8 base channels (well under 1 M parameters): fast enough to
train several runs of the recipe on 2 CPU cores in minutes.
"""
from __future__ import annotations

from omnisource.models.zoo import PresetSpec, list_models, register_model

__all__ = ["TINY_3D", "TINY_2D"]

TINY_3D = "tiny_slowonly_r18_8x2x1_omnisource_world"
TINY_2D = "tiny_tsn_r18_1x1x3_omnisource_world"


def _register() -> None:
    if TINY_3D in list_models():
        return

    @register_model
    def tiny_slowonly_r18_8x2x1_omnisource_world() -> PresetSpec:
        return PresetSpec(
            name=TINY_3D, arch="slowonly", depth=18, num_classes=8, dataset="omnisource-world",
            clip_len=8, frame_interval=2, num_clips=1, epochs=30,
            train_preset="slowonly_8x8x1_train", test_preset="slowonly_8x8x1_val",
            mmaction2_config="(none: omnisource demo network)-3d", imagenet_pretrained=False,
            dropout=0.3, init_std=0.01, input_size=40,
            # temporal kernels from the stem on (SlowOnly has them only in res4/res5, where a
            # 40 px input is 3x3 pixels and a moving object's displacement is sub-pixel)
            model={"base_channels": 8, "conv1_kernel": (3, 7, 7), "inflate": (1, 1, 1, 1)})

    @register_model
    def tiny_tsn_r18_1x1x3_omnisource_world() -> PresetSpec:
        return PresetSpec(
            name=TINY_2D, arch="tsn", depth=18, num_classes=8, dataset="omnisource-world",
            clip_len=1, frame_interval=1, num_clips=3, epochs=20,
            train_preset="tsn_1x1x3_train", test_preset="tsn_1x1x3_val",
            mmaction2_config="(none: omnisource demo network)-2d", imagenet_pretrained=False,
            dropout=0.3, init_std=0.01, input_size=40, model={"base_channels": 8})


_register()
