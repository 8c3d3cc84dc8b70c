"""Non-local block (Wang et al., 2018), as mmcv's ``NonLocal3d`` builds it, so mmaction2's
non-local checkpoints (I3D / SlowOnly ``-nl-*`` rows, later TSM's) load strictly.

Shared by the families that insert it after a residual block: ``y = x + conv_out(f(theta(x),
phi(x)) @ g(x))`` where ``f`` is the pairwise function of ``mode``: ``embedded_gaussian``
(softmax of theta.phi, optionally scaled by 1/sqrt(C')), ``gaussian`` (softmax of x.x, no
theta/phi convs), ``dot_product`` (theta.phi / number of positions). ``sub_sample`` max-pools
``g`` and ``phi`` over space (1x2x2), which is why their keys read ``g.0.conv.*``. Key names:
``g``, ``theta``, ``phi`` are 1x1x1 convs with bias (``.conv``), ``conv_out`` a conv without
bias plus BN (``.conv``, ``.bn``), mmcv ConvModule's layout.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["NonLocal3d", "NONLOCAL_MODES"]

NONLOCAL_MODES = ("embedded_gaussian", "gaussian", "dot_product")


class _Conv(nn.Module):
    """A 1x1x1 conv in mmcv ConvModule's naming (child ``conv``; ``bn`` when normalised)."""

    def __init__(self, cin: int, cout: int, norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 1, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.bn(x) if hasattr(self, "bn") else x


class NonLocal3d(nn.Module):
    def __init__(self, in_channels: int, mode: str = "embedded_gaussian", use_scale: bool = True,
                 sub_sample: bool = True, reduction: int = 2) -> None:
        super().__init__()
        if mode not in NONLOCAL_MODES:
            raise ValueError(f"non-local mode must be one of {NONLOCAL_MODES}, got {mode!r}")
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // reduction, 1)
        self.mode, self.use_scale, self.sub_sample = mode, use_scale, sub_sample
        g = _Conv(in_channels, self.inter_channels)
        pool = nn.MaxPool3d(kernel_size=(1, 2, 2))
        self.g: nn.Module = nn.Sequential(g, pool) if sub_sample else g
        self.conv_out = _Conv(self.inter_channels, in_channels, norm=True)
        if mode != "gaussian":
            self.theta = _Conv(in_channels, self.inter_channels)
            phi = _Conv(in_channels, self.inter_channels)
            self.phi: nn.Module = nn.Sequential(phi, pool) if sub_sample else phi
        elif sub_sample:
            self.phi = pool
        self.init_weights()

    def init_weights(self, std: float = 0.01) -> None:
        """mmcv's: N(0, 0.01) convs (zero bias), the output BN zeroed so the block starts as the identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.conv_out.bn.weight)
        nn.init.zeros_(self.conv_out.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        if self.mode == "gaussian":
            theta_x = x.view(n, self.in_channels, -1).permute(0, 2, 1)
            phi_x = (self.phi(x) if self.sub_sample else x).view(n, self.in_channels, -1)
        else:
            theta_x = self.theta(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
            phi_x = self.phi(x).view(n, self.inter_channels, -1)
        w = torch.matmul(theta_x, phi_x)
        if self.mode == "embedded_gaussian":
            if self.use_scale:
                w = w / theta_x.shape[-1] ** 0.5
            w = w.softmax(dim=-1)
        elif self.mode == "gaussian":
            w = w.softmax(dim=-1)
        else:
            w = w / w.shape[-1]
        y = torch.matmul(w, g_x).permute(0, 2, 1).contiguous().reshape(n, self.inter_channels, *x.shape[2:])
        return x + self.conv_out(y)
