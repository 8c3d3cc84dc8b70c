"""Command-line options and small helpers shared by the model-driven web commands
(dedup, filter, untrimmed): the same flag means the same thing in every one of them.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from omnisource.errors import InputError
from omnisource.utils.io import atomic_write_json


def add_run_arguments(p: argparse.ArgumentParser, chunk: int = 256, batch: int = 32) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--batch-size", type=int, default=batch, help=f"samples per forward pass (default {batch})")
    g.add_argument("--workers", type=int, default=2,
                   help="decoding worker processes; decoding overlaps the forward pass (default 2, 0 = inline)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--decode-backend", default="pyav", choices=("pyav", "decord"), help="video decoder")
    g.add_argument("--chunk-size", type=int, default=chunk,
                   help=f"records per checkpoint of the resumable stage (default {chunk})")
    g.add_argument("--strict", action="store_true", help="stop at the first unreadable file instead of counting it")
    g.add_argument("--force", action="store_true", help="redo finished work")
    g.add_argument("--progress", action="store_true", default=None, help="force progress bars on")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_teacher_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("teacher")
    g.add_argument("--teacher", nargs=2, action="append", metavar=("CONFIG_OR_MODEL", "CHECKPOINT"),
                   required=required,
                   help="a teacher: YAML recipe (or registered model name) and its checkpoint ('none' = "
                        "random weights, smoke tests only); repeat for an ensemble (probabilities averaged)")
    g.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every teacher, e.g. model.overrides.base_channels=8")
    g.add_argument("--segments", type=int, default=8, help="frames per video for 2D teachers (default 8)")
    g.add_argument("--clips", type=int, default=1, help="clips per video for 3D teachers (default 1)")


def resolve_device(device: str) -> str:
    """``cuda`` under torchrun means this rank's GPU (``cuda:$LOCAL_RANK``)."""
    import os

    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)          # its loader chatters at INFO
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def resolve_data_root(manifest: str | Path, explicit: str | Path | None) -> Path:
    """Folder the manifest's relative paths start from.

    ``--data-root`` when given; else the ``data_root`` that the stage which wrote the manifest
    recorded in its meta.json (ingest and every stage here do); else the manifest's folder.
    """
    if explicit is not None:
        root = Path(explicit)
        if not root.is_dir():
            raise InputError("data root is not a folder", root)
        return root.resolve()
    manifest = Path(manifest)
    meta = manifest.parent / "meta.json"
    if meta.is_file():
        try:
            root = json.loads(meta.read_text()).get("data_root")
        except ValueError:
            root = None
        if root:
            return Path(root)
    return manifest.parent.resolve()


def annotate_meta(output_dir: str | Path, **fields: Any) -> None:
    """Add fields (e.g. ``data_root``) to a finished stage's meta.json (atomic, rank 0 only)."""
    from omnisource.web.stage import dist_info

    if dist_info()[0] != 0:
        return
    path = Path(output_dir) / "meta.json"
    meta = json.loads(path.read_text())
    meta.update({k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items()})
    atomic_write_json(path, meta)


def parse_key_floats(items: list[str] | None, what: str) -> dict[str, float]:
    """``["web_img=0.6", ...]`` -> ``{"web_img": 0.6}`` with a clear error."""
    out: dict[str, float] = {}
    for it in items or []:
        key, sep, val = it.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key] = float(val)
        except ValueError:
            raise InputError(f"{what} must look like NAME=NUMBER, got {it!r}") from None
    return out
