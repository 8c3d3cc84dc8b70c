"""TimeSformer family (Bertasius et al. 2021, "Is Space-Time Attention All You Need for Video
Understanding?"): a ViT-B/16 over the patches of every frame, with attention that is

* ``divided_space_time``: per block, temporal attention (each patch over the frames, then a
  zero-initialised ``temporal_fc``), then spatial attention (each frame's patches, with the class
  token), then the MLP -- the paper's best;
* ``joint_space_time``: one attention over all patches of all frames;
* ``space_only``: a per-frame ViT whose class tokens are averaged over the frames.

Family ``timesformer``, input contract ``'3d'`` (clips ``[N, V, 3, T, H, W]``; T must equal
``num_frames`` for the temporal embedding). Module names follow mmaction2's ``TimeSformer``,
built from mmcv's transformer bricks, so its checkpoints load strictly:
``transformer_layers.layers.<i>.attentions.<j>.{norm,attn,temporal_fc}`` / ``ffns.0.{norm,layers}``
(divided), ``.attentions.0.attn`` / ``.norms.<k>`` / ``.ffns.0.layers`` (joint, space-only),
``patch_embed.projection``, ``cls_token``, ``pos_embed``, ``time_embed``, ``norm``,
``cls_head.fc_cls``. Attention is ``nn.MultiheadAttention`` (the layer mmcv wraps). Drop-path
rates rise linearly to 0.1 over the blocks, as there.

``pretrained=PATH`` takes ImageNet-21k ViT-B/16 weights in timm's names (``blocks.<i>.attn.qkv``,
``patch_embed.proj`` ...) or the original repo's / mmaction2's converted file: the spatial attention
is copied into the temporal one for divided attention, as mmaction2 does.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnisource.models.recognizers import Recognizer3D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets

__all__ = ["TimeSformer", "TimeSformerHead", "FAMILY", "ROWS"]

ATTENTION_TYPES = ("divided_space_time", "space_only", "joint_space_time")


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's residual branch with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class FFN(nn.Module):
    """mmcv's FFN layout: ``layers.0.0`` Linear -> GELU -> ``layers.1`` Linear, plus the residual."""

    def __init__(self, dims: int, hidden: int, drop_path: float, with_norm: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dims, hidden), nn.GELU(), nn.Dropout(0.0)),
                                    nn.Linear(hidden, dims), nn.Dropout(0.0))
        self.dropout_layer = DropPath(drop_path)
        self.norm = nn.LayerNorm(dims, eps=1e-6) if with_norm else None

    def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm is not None:          # FFNWithNorm: pre-norm inside, residual on the input
            return x + self.dropout_layer(self.layers(self.norm(x)))
        return (x if identity is None else identity) + self.dropout_layer(self.layers(x))


class SelfAttention(nn.Module):
    """mmcv's MultiheadAttention (batch first): ``attn`` is torch's, output plus the residual."""

    def __init__(self, dims: int, heads: int, drop_path: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dims, heads, batch_first=True)
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return identity + self.dropout_layer(self.attn(x, x, x, need_weights=False)[0])


class DividedTemporalAttention(nn.Module):
    """Each patch attends over the frames (class token untouched); ``temporal_fc`` starts at 0."""

    def __init__(self, dims: int, heads: int, num_frames: int, drop_path: float) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.norm = nn.LayerNorm(dims, eps=1e-6)
        self.attn = nn.MultiheadAttention(dims, heads, batch_first=True)
        self.dropout_layer = DropPath(drop_path)
        self.temporal_fc = nn.Linear(dims, dims)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls, tokens = x[:, :1], x[:, 1:]
        b, pt, m = tokens.shape
        t = self.num_frames
        q = self.norm(tokens.reshape(b * (pt // t), t, m))            # tokens are patch-major: (p t)
        res = self.dropout_layer(self.attn(q, q, q, need_weights=False)[0])
        res = self.temporal_fc(res).reshape(b, pt, m)
        return torch.cat((cls, tokens + res), 1)


class DividedSpatialAttention(nn.Module):
    """Each frame's patches attend to each other and to the (per-frame copy of the) class token."""

    def __init__(self, dims: int, heads: int, num_frames: int, drop_path: float) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.norm = nn.LayerNorm(dims, eps=1e-6)
        self.attn = nn.MultiheadAttention(dims, heads, batch_first=True)
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls, tokens = x[:, :1], x[:, 1:]
        b, pt, m = tokens.shape
        t = self.num_frames
        p = pt // t
        cls_t = cls.repeat(1, t, 1).reshape(b * t, 1, m)
        q = tokens.reshape(b, p, t, m).transpose(1, 2).reshape(b * t, p, m)   # (b t) p m
        q = self.norm(torch.cat((cls_t, q), 1))
        res = self.dropout_layer(self.attn(q, q, q, need_weights=False)[0])
        cls_res = res[:, 0].reshape(b, t, m).mean(1, keepdim=True)
        res = res[:, 1:].reshape(b, t, p, m).transpose(1, 2).reshape(b, p * t, m)
        return x + torch.cat((cls_res, res), 1)


class DividedBlock(nn.Module):
    def __init__(self, dims: int, heads: int, num_frames: int, drop_path: float) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([DividedTemporalAttention(dims, heads, num_frames, drop_path),
                                         DividedSpatialAttention(dims, heads, num_frames, drop_path)])
        self.ffns = nn.ModuleList([FFN(dims, 4 * dims, drop_path, with_norm=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffns[0](self.attentions[1](self.attentions[0](x)))


class PreNormBlock(nn.Module):
    """norm -> attention (+x) -> norm -> FFN (+x): mmcv's BaseTransformerLayer in pre-norm order."""

    def __init__(self, dims: int, heads: int, drop_path: float) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([SelfAttention(dims, heads, drop_path)])
        self.norms = nn.ModuleList([nn.LayerNorm(dims, eps=1e-6), nn.LayerNorm(dims, eps=1e-6)])
        self.ffns = nn.ModuleList([FFN(dims, 4 * dims, drop_path, with_norm=False)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attentions[0](self.norms[0](x), x)
        return self.ffns[0](self.norms[1](x), x)


class _Layers(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.layers:
            x = blk(x)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_channels: int, dims: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
        self.num_patches = (img_size // patch_size) ** 2
        self.projection = nn.Conv2d(in_channels, dims, patch_size, stride=patch_size)
        nn.init.kaiming_normal_(self.projection.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(self.projection.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w)
        return self.projection(x).flatten(2).transpose(1, 2)           # [(b t), p, m]


class TimeSformer(nn.Module):
    """``[N, 3, T, H, W]`` -> class-token features ``[N, embed_dims]``."""

    def __init__(self, num_frames: int = 8, img_size: int = 224, patch_size: int = 16, embed_dims: int = 768,
                 num_heads: int = 12, num_layers: int = 12, in_channels: int = 3,
                 attention_type: str = "divided_space_time", drop_path_rate: float = 0.1) -> None:
        super().__init__()
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {attention_type!r}")
        self.num_frames, self.attention_type, self.feat_dim = num_frames, attention_type, embed_dims
        self.patch_embed = PatchEmbed(img_size, patch_size, in_channels, embed_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dims))
        if attention_type != "space_only":
            self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dims))
        self.norm = nn.LayerNorm(embed_dims, eps=1e-6)
        dpr = [drop_path_rate * i / max(1, num_layers - 1) for i in range(num_layers)]   # numpy.linspace
        blocks: list[nn.Module] = [DividedBlock(embed_dims, num_heads, num_frames, d) if attention_type == "divided_space_time"
                                   else PreNormBlock(embed_dims, num_heads, d) for d in dpr]
        self.transformer_layers = _Layers(blocks)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[2]
        if t != self.num_frames:
            raise ValueError(f"TimeSformer was built for {self.num_frames} frames, got clips of {t}")
        x = self.patch_embed(x)                                          # [(b t), p, m]
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), 1) + self.pos_embed
        if self.attention_type != "space_only":
            cls = x[:b, :1]                                              # frame 0's class token of each clip
            p, m = x.shape[1] - 1, x.shape[2]
            tokens = x[:, 1:].reshape(b, t, p, m).transpose(1, 2).reshape(b * p, t, m) + self.time_embed
            x = torch.cat((cls, tokens.reshape(b, p * t, m)), 1)          # patch-major (p t) tokens
        x = self.transformer_layers(x)
        if self.attention_type == "space_only":
            x = x.view(-1, self.num_frames, *x.shape[-2:]).mean(1)
        return self.norm(x)[:, 0]


class TimeSformerHead(nn.Module):
    """(dropout) -> fc_cls on the class token (mmaction2 TimeSformerHead, trunc-normal 0.02 init)."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.0, init_std: float = 0.02) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.init_std = num_classes, in_channels, init_std
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.fc_cls = nn.Linear(in_channels, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.trunc_normal_(self.fc_cls.weight, std=self.init_std)
        nn.init.zeros_(self.fc_cls.bias)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_cls(x if self.dropout is None else self.dropout(x))


def vit_pretrained_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """An ImageNet ViT-B/16 file (timm names) in our names, for a divided-attention model: each
    block's attention becomes both the spatial and the temporal one (mmaction2's rule)."""
    sd = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()}
    if "patch_embed.projection.weight" in sd and any(".norms.0." in k for k in sd):
        # mmaction2's converted ViT (mmcv names, one attention per block): its own renaming
        out = {}
        for k, v in sd.items():
            k = k.replace("norms.0", "attentions.0.norm").replace("norms.1", "ffns.0.norm")
            out[k] = v
            if ".attentions.0." in k:
                out[k.replace(".attentions.0.", ".attentions.1.")] = v.clone()
        return out, "mmaction2 ViT"
    if "patch_embed.proj.weight" not in sd or not any(k.startswith("blocks.0.attn.qkv") for k in sd):
        return {}, "unknown"
    out: dict[str, torch.Tensor] = {
        "patch_embed.projection.weight": sd["patch_embed.proj.weight"],
        "patch_embed.projection.bias": sd["patch_embed.proj.bias"],
        "cls_token": sd["cls_token"], "pos_embed": sd["pos_embed"],
        "norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    i = 0
    while f"blocks.{i}.attn.qkv.weight" in sd:
        pre, dst = f"blocks.{i}.", f"transformer_layers.layers.{i}."
        for j in (0, 1):
            a = f"{dst}attentions.{j}."
            out[a + "attn.in_proj_weight"] = sd[pre + "attn.qkv.weight"]
            out[a + "attn.in_proj_bias"] = sd[pre + "attn.qkv.bias"]
            out[a + "attn.out_proj.weight"] = sd[pre + "attn.proj.weight"]
            out[a + "attn.out_proj.bias"] = sd[pre + "attn.proj.bias"]
            out[a + "norm.weight"], out[a + "norm.bias"] = sd[pre + "norm1.weight"], sd[pre + "norm1.bias"]
        out[dst + "ffns.0.norm.weight"], out[dst + "ffns.0.norm.bias"] = sd[pre + "norm2.weight"], sd[pre + "norm2.bias"]
        out[dst + "ffns.0.layers.0.0.weight"], out[dst + "ffns.0.layers.0.0.bias"] = sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"]
        out[dst + "ffns.0.layers.1.weight"], out[dst + "ffns.0.layers.1.bias"] = sd[pre + "mlp.fc2.weight"], sd[pre + "mlp.fc2.bias"]
        i += 1
    return out, "timm ViT"


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    in_channels = int(opts.pop("in_channels", 3))
    dims = int(opts.pop("embed_dims", opts.pop("base_channels", 768)))
    opts.pop("depth", None)
    backbone = TimeSformer(num_frames=int(opts.pop("num_frames", preset.clip_len)),
                           img_size=int(opts.pop("img_size", preset.input_size)), embed_dims=dims,
                           in_channels=in_channels, attention_type=str(opts.pop("attention_type", preset.arch)),
                           **opts)
    head = TimeSformerHead(num_classes, dims, dropout=dropout, init_std=init_std)
    size = int(backbone.patch_embed.num_patches ** 0.5) * backbone.patch_embed.projection.kernel_size[0]
    meta.update(in_channels=in_channels, dropout=dropout, attention_type=backbone.attention_type,
                clip_len=backbone.num_frames, input_size=size)   # the input the embeddings were built for
    return Recognizer3D(backbone, head, meta)  # type: ignore[arg-type]


def _example(model: nn.Module, n: int) -> torch.Tensor:
    bb = model.backbone
    size = int(bb.patch_embed.num_patches ** 0.5) * bb.patch_embed.projection.kernel_size[0]
    return torch.randn(n, 1, int(model.meta.get("in_channels", 3)), bb.num_frames, size, size)


FAMILY = register_family(Family(
    name="timesformer", layout="3d", build=_build,
    overrides=frozenset({"embed_dims", "num_heads", "num_layers", "patch_size", "img_size", "num_frames",
                         "attention_type", "drop_path_rate"}),
    tiny={"embed_dims": 32, "num_heads": 2, "num_layers": 2, "img_size": 32, "num_frames": 4},
    example_input=_example,
    pretrained_fresh=("time_embed", r"\.temporal_fc\."),
    pretrained_state=vit_pretrained_state, inflate=False,
    doc="TimeSformer: ViT-B/16 with divided / joint / space-only attention (mmaction2 TimeSformer + TimeSformerHead)",
))

_MEAN = (127.5, 127.5, 127.5)


def _row(name: str, attention: str, mm: str, params: int, doc: str) -> ModelPreset:
    return ModelPreset(name=name, family="timesformer", arch=attention, num_classes=400, dataset="kinetics400",
                       clip_len=8, frame_interval=32, num_clips=1, epochs=15, train_preset="timesformer_8x32x1_train",
                       test_preset="timesformer_8x32x1_test", mmaction2_configs=(mm,), imagenet_pretrained=True,
                       dropout=0.0, init_std=0.02, input_size=224, mean=_MEAN, std=_MEAN, params=params, doc=doc)


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("timesformer_divST_8x32x1_15e_kinetics400_rgb", "divided_space_time",
         "timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb", 121_566_352,
         "TimeSformer ViT-B/16, divided space-time attention, 8x32 at 224 (ImageNet-21k ViT init)"),
    _row("timesformer_jointST_8x32x1_15e_kinetics400_rgb", "joint_space_time",
         "timesformer_jointST_8xb8-8x32x1-15e_kinetics400-rgb", 86_112_400,
         "TimeSformer ViT-B/16, joint space-time attention"),
    _row("timesformer_spaceOnly_8x32x1_15e_kinetics400_rgb", "space_only",
         "timesformer_spaceOnly_8xb8-8x32x1-15e_kinetics400-rgb", 86_106_256,
         "TimeSformer ViT-B/16, space-only attention (a per-frame ViT, class tokens averaged)"),
])
