"""Atomic writers: the usual file mode, and a full disk as one clear error with nothing lost."""
from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from omnisource.errors import NoSpaceError
from omnisource.utils import io as oio


def test_outputs_get_the_mode_of_a_new_file_not_mkstemps_0600(tmp_path):
    old = os.umask(0o027)
    try:
        oio.atomic_write_text(tmp_path / "a.txt", "x")
        oio.atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "b.pth")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.pth"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640


def test_a_full_disk_is_one_line_and_the_old_file_survives(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    oio.atomic_write_json(target, {"v": 1})
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(NoSpaceError, match=r"no space left on the device writing .*results.json"):
        oio.atomic_write_json(target, {"v": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]     # no temporary left

    def torch_full(obj, fh):   # what torch's zip writer raises when a write fails
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed "
                           "writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", torch_full)
    monkeypatch.setattr(oio.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    with pytest.raises(NoSpaceError, match="latest.pth"):
        oio.atomic_torch_save({}, tmp_path / "latest.pth")
