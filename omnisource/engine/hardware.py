"""What this CPU can do natively, for choices (and warnings) that depend on it.

bf16 autocast only pays off on a CPU with native bf16 arithmetic: AVX512-BF16 (Cooper Lake,
Zen 4 and later) or AMX-BF16 (Sapphire Rapids and later). On an AVX2-only CPU oneDNN converts
bf16 operands to fp32 for every convolution and matmul, so autocast adds conversions without
saving any arithmetic; on this project's AMD EPYC (AVX2) it measured about 10x *slower* than
fp32. The trainer warns about that, and ``benchmarks/train_step.py`` prints it next to its
bf16 numbers, so a slow bf16 run is not mistaken for a regression.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> set[str]:
    """The ``flags`` line of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@lru_cache(maxsize=1)
def cpu_bf16_support() -> tuple[bool, str]:
    """``(native, description)``: whether this CPU has bf16 instructions, in words."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = _cpu_flags()
    present = [f for f in BF16_CPU_FLAGS if f in flags]
    if present:
        return True, f"CPU capability {capability}, native bf16 ({', '.join(present)})"
    if not flags:
        return False, f"CPU capability {capability}, bf16 support unknown (no /proc/cpuinfo flags)"
    return False, (f"CPU capability {capability}, no {' / '.join(BF16_CPU_FLAGS)}: bf16 convolutions "
                   f"and matmuls are emulated through fp32, so bf16 autocast is slower than fp32 "
                   f"on this CPU (the bf16 speed-up needs AVX512-BF16 or AMX hardware)")


def cpu_has_avx512() -> bool:
    """Whether torch's CPU kernels run at the AVX-512 level here (oneDNN then has fast NDHWC
    3D convolutions; see :func:`omnisource.engine.train.use_channels_last`)."""
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


def compile_toolchain_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot work here, or None when it can.

    Inductor generates C++ (CPU) or Triton (GPU) kernels at run time: on CPU it needs a C++
    compiler on PATH (``CXX`` or g++ / clang++), on GPU the ``triton`` package. Checking up front
    turns an obscure failure minutes into the first step into a clear configuration error.
    """
    import importlib.util
    import os
    import shutil

    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") else "torch.compile on GPU needs the triton package"
    candidates = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    if any(c and shutil.which(c) for c in candidates):
        return None
    return "torch.compile on CPU needs a C++ compiler (g++ or clang++ on PATH, or CXX)"


def cpu_name() -> str:
    """The CPU model name (benchmark figures differ by CPU: every printed number quotes it)."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
