"""Static HTML pages with PNG plots and JPEG thumbnails: the one place reports are written.

Why here: both reports people read -- the web stages' (``omnisource report``,
:mod:`omnisource.web.report`) and a test run's (``omnisource test --report``,
:mod:`omnisource.engine.eval_report`) -- are folders of one ``index.html`` plus images beside it.
Every file is written atomically, and the HTML only references files that were written.
"""
from __future__ import annotations

import hashlib
import html
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from omnisource.utils.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger("omnisource.report")

THUMB = 160

CSS = """body{font-family:sans-serif;margin:20px;max-width:1400px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}
.grid{display:flex;flex-wrap:wrap;gap:6px}figure{margin:0;width:170px;font-size:11px}
img{max-width:100%}section{border-top:2px solid #08519c;margin-top:24px}"""


def escape(x: Any) -> str:
    return html.escape(str(x))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in headers)
    b = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def page(title: str, body: Sequence[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def class_bars_png(names: Sequence[str], light: tuple[str, Sequence[float]] | None, dark: tuple[str, Sequence[float]],
                   *, title: str = "", ylabel: str = "samples", xlabel: str = "classes",
                   hline: tuple[str, float] | None = None, ylim: tuple[float, float] | None = None,
                   legend_above: bool = False) -> bytes:
    """A bar per class (``names``, already sorted) of two overlaid series, ``(label, values)``:
    ``light`` behind, ``dark`` in front (before / after filtering, listed / readable, top-5 /
    top-1; ``light`` None: one series). Class names label the bars up to 40 classes; the figure
    widens with the count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(names))
    fig, ax = plt.subplots(figsize=(min(24, 4 + 0.06 * n + (0.25 * n if n < 40 else 0)), 4), dpi=100)
    xs = np.arange(len(names))
    width = 1.0 if n > 60 else 0.8
    if light is not None:
        ax.bar(xs, list(light[1]), width=width, color="#9ecae1", label=light[0])
    ax.bar(xs, list(dark[1]), width=width, color="#08519c", label=dark[0])
    if hline is not None:
        ax.axhline(hline[1], color="k", ls="--", lw=1, label=hline[0])
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if n <= 40:
        ax.set_xticks(xs)
        ax.set_xticklabels([str(k)[:28] for k in names], rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xticks([])
    if legend_above:   # sorted bars can fill every corner of the axes
        ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    else:
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@dataclass
class Writer:
    """Writes the images of one report folder and remembers which exist."""

    out_dir: Path
    files: set[str] = field(default_factory=set)

    def png(self, name: str, fig: Any) -> str:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        return self.png_bytes(name, buf.getvalue())

    def png_bytes(self, name: str, data: bytes) -> str:
        atomic_write_bytes(self.out_dir / name, data)
        self.files.add(name)
        return name

    def thumb(self, media: Path, rec: dict[str, Any]) -> str:
        """JPEG thumbnail of an image or of one frame of a video (a grey tile when unreadable).

        ``rec``: ``kind`` ('image' or a video), and which frame: ``frame``, else the first of
        ``frame_inds``, else the middle of ``segment`` (seconds) or of the whole video."""
        ident = f"{media}|{rec.get('frame_inds')}|{rec.get('segment')}|{rec.get('frame')}"
        key = hashlib.sha1(ident.encode()).hexdigest()[:16]
        name = f"thumbs/{key}.jpg"
        if name in self.files:
            return name
        from PIL import Image

        try:
            arr = _thumb_array(media, rec)
        except Exception as err:  # noqa: BLE001 - any unreadable media gets a grey tile
            log.debug("thumbnail of %s failed: %s", media, err)
            arr = np.full((THUMB * 3 // 4, THUMB, 3), 200, np.uint8)
        im = Image.fromarray(arr)
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        atomic_write_bytes(self.out_dir / name, buf.getvalue())
        self.files.add(name)
        return name

    def grid(self, items: list[tuple[Path, dict[str, Any], str]]) -> str:
        """Thumbnails with captions: ``(media path, rec for :meth:`thumb`, caption)``."""
        if not items:
            return "<p><i>none</i></p>"
        cells = []
        for media, rec, caption in items:
            t = self.thumb(media, rec)
            cells.append(f'<figure><img src="{escape(t)}" loading="lazy"><figcaption>{escape(caption)}'
                         "</figcaption></figure>")
        return '<div class="grid">' + "".join(cells) + "</div>"

    def write_page(self, title: str, body: Sequence[str]) -> Path:
        index = self.out_dir / "index.html"
        atomic_write_text(index, page(title, body))
        return index


def _thumb_array(media: Path, rec: dict[str, Any]) -> np.ndarray:
    from omnisource.data.decode.base import segment_frame_range
    from omnisource.data.decode.images import read_image_reduced

    if media.is_dir():  # a rawframe folder (mmaction2 RawframeDataset): its middle image
        from omnisource.data.annotations import IMAGE_EXTS

        groups: dict[str, list[Path]] = {}   # img_00001.jpg.. vs flow x_00001.jpg..: by name pattern
        for p in sorted(media.iterdir()):
            if p.suffix.lower() in IMAGE_EXTS:
                groups.setdefault(re.sub(r"\d+", "#", p.name), []).append(p)
        if not groups:
            raise FileNotFoundError(f"no image in {media}")
        frames = max(groups.values(), key=len)   # the RGB frames outnumber each flow direction
        return read_image_reduced(frames[len(frames) // 2], THUMB)
    if rec.get("kind") == "image":
        return read_image_reduced(media, THUMB)
    from omnisource.data.decode import open_video

    with open_video(str(media)) as r:
        if rec.get("frame") is not None:
            idx = int(rec["frame"])
        elif rec.get("frame_inds"):
            idx = int(rec["frame_inds"][0])
        else:
            lo, hi = segment_frame_range(r, rec.get("segment"))
            idx = (lo + hi) // 2
        return r.get_frames([idx])[0]
