"""The embedded demo world's tiny networks: rows of the TSN and 3D ResNet families.

Why registered presets and not just ``base_channels`` overrides: the web stages (teacher
scoring, de-duplication, untrimmed windows) build their test-time views from ``model.meta``
(``input_size``, ``clip_len``, ``frame_interval``). A preset carries the recipe the network was
trained with, so the teacher sees web data exactly like it saw its training clips (a Kinetics
preset would score 40-pixel clips at 224 pixels and 8x8 sampling).

Both are ResNet-18 layouts with 8 base channels (well under 1 M parameters): fast enough to
train several runs of the recipe on 2 CPU cores in minutes. They live here, in ``models/``,
so ``omnisource filter --teacher <run config>`` finds them without importing the pipeline.
"""
from __future__ import annotations

from omnisource.models import resnet3d, slowfast, tsn, x3d  # noqa: F401  (the families these rows belong to)
from omnisource.models.registry import ModelPreset, register_presets

__all__ = ["TINY_3D", "TINY_2D", "TINY_SLOWFAST", "TINY_X3D"]

TINY_3D = "tiny_slowonly_r18_8x2x1_omnisource_world"
TINY_2D = "tiny_tsn_r18_1x1x3_omnisource_world"
# other 3D families at the demo's input, to run the recipe with them as teacher or student
TINY_SLOWFAST = "tiny_slowfast_r18_8x2x1_omnisource_world"
TINY_X3D = "tiny_x3d_8x2x1_omnisource_world"

register_presets([
    ModelPreset(
        name=TINY_3D, family="resnet3d", arch="slowonly", depth=18, num_classes=8, dataset="omnisource-world",
        clip_len=8, frame_interval=2, num_clips=1, epochs=30, train_preset="slowonly_8x8x1_train",
        test_preset="slowonly_8x8x1_val", imagenet_pretrained=False, dropout=0.3, init_std=0.01,
        input_size=40, recipe=False, doc="the demo world's video network",
        # temporal kernels from the stem on (SlowOnly has them only in res4/res5, where a 40 px
        # input is 3x3 pixels and a moving object's displacement is sub-pixel)
        model={"base_channels": 8, "conv1_kernel": (3, 7, 7), "inflate": (1, 1, 1, 1)}),
    ModelPreset(
        name=TINY_2D, family="tsn", depth=18, num_classes=8, dataset="omnisource-world", clip_len=1,
        frame_interval=1, num_clips=3, epochs=20, train_preset="tsn_1x1x3_train", test_preset="tsn_1x1x3_val",
        imagenet_pretrained=False, dropout=0.3, init_std=0.01, input_size=40, recipe=False,
        doc="the demo world's 2D image teacher", model={"base_channels": 8}),
    ModelPreset(
        name=TINY_SLOWFAST, family="slowfast", arch="slowfast_8x8", depth=18, num_classes=8,
        dataset="omnisource-world", clip_len=8, frame_interval=2, num_clips=1, epochs=30,
        train_preset="slowonly_8x8x1_train", test_preset="slowonly_8x8x1_val", dropout=0.3, input_size=40,
        recipe=False, doc="a SlowFast R18 at the demo's input (slow pathway 2 frames, fast 8)",
        model={"base_channels": 16}),
    ModelPreset(
        name=TINY_X3D, family="x3d", arch="x3d_s", num_classes=8, dataset="omnisource-world", clip_len=8,
        frame_interval=2, num_clips=1, epochs=30, train_preset="slowonly_8x8x1_train",
        test_preset="slowonly_8x8x1_val", dropout=0.3, input_size=40, recipe=False,
        doc="an X3D with 8 stem channels and one block per depth unit, at the demo's input",
        model={"base_channels": 8, "gamma_d": 1.0}),
])
