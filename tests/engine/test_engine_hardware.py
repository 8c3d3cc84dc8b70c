"""CPU bf16 detection (drives the trainer's warning and the benchmark's hardware line)."""
from __future__ import annotations

import pytest

from omnisource.engine import hardware


@pytest.mark.parametrize("flags, native", [({"avx2", "avx512_bf16"}, True), ({"avx2", "amx_bf16"}, True),
                                           ({"avx2", "fma"}, False)])
def test_cpu_bf16_support_reads_cpu_flags(monkeypatch, flags, native):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: set(flags))
    hardware.cpu_bf16_support.cache_clear()
    try:
        got, what = hardware.cpu_bf16_support()
    finally:
        hardware.cpu_bf16_support.cache_clear()
    assert got is native
    assert ("slower than fp32" in what) is (not native)
