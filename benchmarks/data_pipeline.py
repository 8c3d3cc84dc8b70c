#!/usr/bin/env python
"""Data-pipeline throughput: decode + sample + augment -> normalised model input (clips/s).

Measures, over the real videos in ``../shared/data`` (or ``--videos``), for the train
presets ``tsn_1x1x3_train``, ``tsn_1x1x8_train`` and ``slowonly_4x16x1_train``:

* the split in one process: decode (open + index + sparse decode of the sampled frames)
  vs augment (the preset: resize, crop, flip, normalise, format), in ms per clip, and the
  CPU time per clip (all threads; the robust figure on a loaded machine);
* decode only, the same frame indices on both sides, one thread, CPU per clip, and the share
  of it spent inside FFmpeg's decoder calls. An exact reader built on FFmpeg must decode the
  same reference-frame chains, so mmaction2's CPU per clip over that share is the ceiling of
  any such reader on these videos (printed as "ceiling"); ``--per-video N`` prints the same
  video by video, with each file's I/P/B frame mix (an exact reader can skip only B-frames
  nothing refers to, so a file of P-frames has a ceiling near 1.5x whatever the reader does);
* end-to-end clips/s through ``omnisource.data.build_dataset`` + a DataLoader with 0, 1
  and 2 worker processes (steady state: timed from the end of the first round of batches,
  one per worker; by default at least 12 batches timed), reading the videos
  in the same fixed order as the mmaction2 side (``--shuffle`` to shuffle each side). Each
  video's demux index is known by then (this process read every clip once to name its
  frames, and forked workers inherit its index cache): as from the second epoch on with
  persistent workers, or in every epoch with an index store. What a first read costs
  without one is in the decode-only line ("cold"); mmaction2's decord indexes the file at
  every open;
* with ``--compare-mmaction2``: the same pipelines from the mmaction2 1.2.0 configs, run in
  the reference venv by one long-lived subprocess (omnisource never imports mmaction2), on
  the same videos and clip counts, with the same normalisation added: one process with
  decord and with PyAV, and through a torch DataLoader with the same worker counts (decord).
  Every clip mmaction2 decodes has the frames our pipeline sampled for the same clip (its
  SampleFrames is replaced by those indices; ``--own-frames`` lets it sample its own): the
  cost of a frame differs up to 20x within one video (just after a keyframe or 250 frames
  past it), so two pipelines sampling 63 clips independently differ by +-20% on luck alone.
  Ours and mmaction2's measurements alternate (``--rounds``, medians reported), so both see
  the same machine load; a summary table with the ratios closes the output.

Prints measured numbers only; nothing is asserted. The machine's load is printed too,
because on a shared machine it dominates the absolute figures -- compare the ratios.

    python benchmarks/data_pipeline.py --compare-mmaction2
    python benchmarks/data_pipeline.py --videos ../shared/data/mmaction2/tests/data/test.mp4 \\
        --presets tsn_1x1x3_train --workers 0 2 --compare-mmaction2
"""
from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data").resolve()
DEFAULT_PRESETS = ["tsn_1x1x3_train", "tsn_1x1x8_train", "slowonly_4x16x1_train"]
MM_PYTHON = Path.home() / ".cache" / "mmaction2-ref" / "bin" / "python"
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm"}
# fewest batches a DataLoader measurement should time by default: with one video the default of
# 3 clips per video was under one batch, and the 2-worker figures came out 10x off on both sides
MIN_LOADER_BATCHES = 12

# mmaction2 1.2.0 Kinetics-400 train pipelines (configs/recognition/{tsn,slowonly}/...)
MM_PIPELINES = {
    "tsn_1x1x3_train": dict(sample=dict(clip_len=1, frame_interval=1, num_clips=3), crop="msc", fmt="NCHW"),
    "tsn_1x1x8_train": dict(sample=dict(clip_len=1, frame_interval=1, num_clips=8), crop="msc", fmt="NCHW"),
    "slowonly_4x16x1_train": dict(sample=dict(clip_len=4, frame_interval=16, num_clips=1), crop="rrc",
                                  fmt="NCTHW"),
}

MM_SCRIPT = r'''
# A long-lived mmaction2 worker: one JSON request per stdin line, one RESULT line per answer,
# so the parent can interleave mmaction2 and omnisource measurements in the same time window
# without paying mmaction2's import time for each.
import gc, json, sys, time
import cv2
import numpy as np
import torch
# as mmaction2's own training does (env_cfg mp_cfg opencv_num_threads=0): OpenCV's thread
# pool is not fork-safe, and DataLoader workers forked after a cv2 call can hang
cv2.setNumThreads(0)
from mmaction.utils import register_all_modules
register_all_modules(init_default_scope=True)
from mmengine.dataset import Compose

import os
# @CPU_HELPERS@ (proc_cpu, loader_cpu, time_loader: spliced in from this file, see MMAction2.__init__)


MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def pipelines(p, backend, given=False):
    """``given``: the caller names each clip's frames (see ``start``), so SampleFrames is left
    out (microseconds of work) and both sides decode the same frames."""
    init, dec = (("DecordInit", "DecordDecode") if backend == "decord"
                 else ("PyAVInit", "PyAVDecode"))
    sample = [] if given else [dict(type="SampleFrames", **p["sample"])]
    decode = Compose([dict(type=init), *sample, dict(type=dec)])
    crop = (dict(type="MultiScaleCrop", input_size=224, scales=(1, 0.875, 0.75, 0.66),
                 random_crop=False, max_wh_scale_gap=1) if p["crop"] == "msc"
            else dict(type="RandomResizedCrop"))
    augment = Compose([dict(type="Resize", scale=(-1, 256)), crop,
                       dict(type="Resize", scale=(224, 224), keep_ratio=False),
                       dict(type="Flip", flip_ratio=0.5),
                       dict(type="FormatShape", input_format=p["fmt"]),
                       dict(type="PackActionInputs")])
    return decode, augment


def start(video, p, inds=None):
    """The pipeline's input for one clip; with ``inds``, what SampleFrames would add for them."""
    r = dict(filename=video, label=0, start_index=0, modality="RGB")
    if inds is not None:
        r.update(frame_inds=np.asarray(inds, dtype=np.int64), **p["sample"])
    return r


def normalise(x, fmt):
    x = x.float()
    if fmt == "NCHW":
        return (x - MEAN) / STD
    return (x - MEAN.view(1, 3, 1, 1, 1)) / STD.view(1, 3, 1, 1, 1)


class Clips(torch.utils.data.Dataset):
    def __init__(self, videos, n, p, backend, inds=None):
        self.videos, self.n, self.p, self.inds = videos, n, p, inds
        self.decode, self.augment = pipelines(p, backend, given=inds is not None)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        r = self.decode(start(self.videos[i % len(self.videos)], self.p,
                              None if self.inds is None else self.inds[i]))
        return normalise(self.augment(r)["inputs"], self.p["fmt"])


def split(req):
    p = req["pipeline"]
    inds = req.get("inds")
    decode, augment = pipelines(p, req["backend"], given=inds is not None)
    videos = req["videos"]
    t_dec = t_aug = c_dec = c_aug = 0.0
    failed = 0
    for k in range(req["clips"] + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            r = decode(start(videos[k % len(videos)], p, None if inds is None else inds[k]))
        except Exception:  # e.g. PyAVInit reads 0 frames from MKV headers; counted, not timed
            failed += 1
            continue
        t1, c1 = time.perf_counter(), time.process_time()
        normalise(augment(r)["inputs"], p["fmt"])
        t2, c2 = time.perf_counter(), time.process_time()
        if k:  # first clip warms up imports and caches
            t_dec += t1 - t0
            t_aug += t2 - t1
            c_dec += c1 - c0
            c_aug += c2 - c1
    done = max(req["clips"] - failed, 1)
    return dict(decode_ms=1000 * t_dec / done, augment_ms=1000 * t_aug / done,
                clips_per_s=done / (t_dec + t_aug), cpu_ms=1000 * (c_dec + c_aug) / done,
                failed=failed)


def decode_only(req):
    """mmaction2's decode steps (DecordInit + DecordDecode, file read as mmaction2 reads it)
    on frame indices chosen by the caller: both sides decode exactly the same frames."""
    init, dec = (("DecordInit", "DecordDecode") if req["backend"] == "decord"
                 else ("PyAVInit", "PyAVDecode"))
    decode = Compose([dict(type=init), dict(type=dec)])
    cpu = 0.0
    for k, (video, inds) in enumerate(req["jobs"]):
        c0 = time.process_time()
        decode(dict(filename=video, label=0, start_index=0, modality="RGB", clip_len=1,
                    frame_interval=1, num_clips=len(inds), frame_inds=np.array(inds)))
        if k:  # the first clip warms up
            cpu += time.process_time() - c0
    return dict(cpu_ms=1000 * cpu / max(len(req["jobs"]) - 1, 1))


def loader(req):
    w, bs, clips = req["workers"], req["batch_size"], req["clips"]
    ds = Clips(req["videos"], clips + max(1, w) * bs, req["pipeline"], req["backend"],
               req.get("inds"))
    gc.collect()  # PyAV objects of earlier requests finalised in a forked worker hang it
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=w, shuffle=req["shuffle"],
                                     persistent_workers=w > 0)
    res = time_loader(dl, clips, w, lambda batch: batch.shape[0])
    del dl
    return res


torch.set_num_threads(1)  # the normalisation added here is single-threaded, as omnisource's
print("READY", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    try:
        res = {"split": split, "decode": decode_only, "loader": loader}[req["kind"]](req)
    except Exception as err:
        res = dict(error=f"{type(err).__name__}: {err}")
    print("RESULT " + json.dumps(res), flush=True)
'''


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def loader_cpu(loader) -> float:
    """CPU seconds of this process plus the DataLoader's live worker processes: on a shared
    machine, clips per CPU-second is the load-independent figure (wall time there mostly
    measures how many runnable threads a side has against the other users)."""
    it = getattr(loader, "_iterator", None)
    workers = getattr(it, "_workers", None) or []
    return proc_cpu(os.getpid()) + sum(proc_cpu(w.pid) for w in workers)


def time_loader(loader, clips: int, workers: int, size_of, on_epoch=None) -> dict:
    """Steady-state clips/s and CPU per clip of a DataLoader, at least ``clips`` clips timed.

    The first round of batches -- one per worker, or the first batch without workers -- is
    start-up (forking, imports, warm caches), and the workers produce it side by side: the
    clock starts when the last of that round arrives and counts only the clips after it.
    (Starting it at the very first batch would count the second worker's batch, finished
    at the same moment, as if it had taken no time: +1 batch in every measurement, a small
    bias over 16 batches but 10x with a handful.) Runs as many epochs as it needs;
    ``on_epoch(epoch)`` is called before each one. Spliced into the mmaction2 side too."""
    warm = max(1, workers)
    got = seen = epoch = 0
    start = cpu0 = None
    while start is None or seen < clips:
        if on_epoch is not None:
            on_epoch(epoch)
        for batch in loader:
            got += 1
            if start is None:
                if got >= warm:
                    start, cpu0 = time.perf_counter(), loader_cpu(loader)
                continue
            seen += size_of(batch)
            if seen >= clips:
                break
        epoch += 1
    dt = time.perf_counter() - start
    cpu = loader_cpu(loader) - cpu0
    return dict(clips_per_s=seen / dt, clips=seen, cpu_ms=1000 * cpu / seen)


def load_text() -> str:
    try:
        la = os.getloadavg()
        return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} CPU(s)"
    except OSError:  # pragma: no cover
        return f"{os.cpu_count()} CPU(s)"


def find_videos(data: Path, min_frames: int) -> list[Path]:
    """Readable videos with at least ``min_frames`` frames (probe: metadata + packet index)."""
    from omnisource.data.decode import probe_many

    cands = sorted(p for p in data.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    recs = probe_many(cands, decode=False, workers=2, progress=False)
    return [Path(r["path"]) for r in recs
            if r["readable"] and (r["frames"] or 0) >= min_frames and "corrupt" not in r["path"]]


def measure_split(preset_name: str, videos: list[Path], clips: int, backend: str, seed: int) -> dict:
    """One process, no DataLoader: time decode and augment separately (wall and CPU)."""
    from omnisource.data.decode import open_video
    from omnisource.data.presets import get_preset

    preset = get_preset(preset_name)
    rng = np.random.default_rng(seed)
    t_dec = t_aug = c_all = 0.0
    inds = []
    for k in range(clips + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        with open_video(videos[k % len(videos)], backend=backend) as r:
            idx = preset.sample(len(r), rng)
            frames = r.get_frames(idx)
        inds.append([int(i) for i in idx])
        t1 = time.perf_counter()
        x = preset(frames, rng)
        t2, c2 = time.perf_counter(), time.process_time()
        assert x.dtype.is_floating_point
        if k:  # the first clip pays imports / first-use costs
            t_dec += t1 - t0
            t_aug += t2 - t1
            c_all += c2 - c0
    return dict(decode_ms=1000 * t_dec / clips, augment_ms=1000 * t_aug / clips,
                clips_per_s=clips / (t_dec + t_aug), cpu_ms=1000 * c_all / clips, inds=inds)


def same_frame_jobs(preset_name: str, videos: list[Path], clips: int, seed: int) -> list:
    """``clips + 1`` (video, frame indices) pairs drawn with our sampler (the first warms up),
    video by video as in the other measurements; both sides decode exactly these."""
    from omnisource.data.decode import open_video
    from omnisource.data.presets import get_preset

    preset = get_preset(preset_name)
    rng = np.random.default_rng(seed)
    jobs = []
    for k in range(clips + 1):
        v = videos[k % len(videos)]
        with open_video(v) as r:
            jobs.append((str(v), [int(i) for i in preset.sample(len(r), rng)]))
    return jobs


def measure_decode_only(jobs: list, cold: bool = False) -> dict:
    """Decode only, one thread (no side-by-side keyframe runs), the frames of ``jobs``: CPU per
    clip, and how much of it FFmpeg's decoder calls take -- the floor of any exact reader
    built on FFmpeg, since it must decode the same reference-frame chains (what a read costs
    besides them is opening, demuxing, seeking and the RGB conversion). The demux index is
    cached here (``same_frame_jobs`` opened every video), as in training after the first
    epoch or with an index store; mmaction2's decord builds its index at every open.
    ``cold``: forget the index before every read instead (a dataset larger than the memory
    cache, read without an index store)."""
    from omnisource.data.decode.pyav_index import clear_index_cache
    from omnisource.data.decode.pyav_reader import PyAVReader

    spent = [0.0]

    class TimedReader(PyAVReader):
        """Counts the CPU time (this thread) spent inside the decoder's send/receive calls."""

        def _decode_packet(self, packet):
            t = time.thread_time()
            try:
                return super()._decode_packet(packet)
            finally:
                spent[0] += time.thread_time() - t

        def _drain(self):
            t = time.thread_time()
            try:
                return super()._drain()
            finally:
                spent[0] += time.thread_time() - t

    cpu = 0.0
    for k, (video, inds) in enumerate(jobs):
        if k == 1:
            spent[0] = 0.0
        if cold:
            clear_index_cache()
        c0 = time.thread_time()
        with TimedReader(video, parallel=False) as r:
            r.get_frames(np.asarray(inds))
        if k:
            cpu += time.thread_time() - c0
    n = max(len(jobs) - 1, 1)
    return dict(cpu_ms=1000 * cpu / n, decoder_ms=1000 * spent[0] / n)


def loader_frame_indices(preset_name: str, ann: Path, root: Path, n: int, backend: str) -> list | None:
    """The frame indices our dataset's items ``0 .. n-1`` sample in epoch 0 (each item's draw
    depends only on its seed, epoch and index, so a DataLoader's workers sample the same), for
    the mmaction2 side to decode the same frames. Read once here, unshuffled, unmeasured.
    None when an item has no single clip to name (an unreadable video replaced by another, or
    a frame count corrected by re-sampling): mmaction2 then samples its own frames."""
    from omnisource.data import build_dataset
    from omnisource.data.annotations import DuplicateEntryWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateEntryWarning)
        ds = build_dataset(ann, root, preset_name, backend=backend)
    got: list = []
    real = ds.sample_indices

    def spy(total, rng):
        rel = real(total, rng)
        got.append([int(i) for i in rel])
        return rel

    ds.sample_indices = spy  # type: ignore[method-assign]
    ds.set_epoch(0)
    out = []
    for i in range(n):
        del got[:]
        item = ds[i]
        if len(got) != 1 or item.get("index", i) != i:
            print(f"  (item {i} of the list was re-sampled or replaced: mmaction2 samples its own "
                  f"frames for this pipeline)")
            return None
        out.append(got[0])
    return out


def measure_loader(preset_name: str, ann: Path, root: Path, workers: int, clips: int,
                   backend: str, batch_size: int, mp_context: str = "fork",
                   shuffle: bool = False) -> dict:
    """End to end through build_dataset + DataLoader; steady state after the first batch.

    Unshuffled by default: the list holds the videos in a fixed order, repeated, and the
    mmaction2 side reads the same order, so both time the same clips (after the same first
    batch). Decode costs differ 20x between the real videos; two independently shuffled
    63-clip samples differed by up to +-20% in mean cost, which showed up as ratio noise."""
    from omnisource.data import build_dataset
    from omnisource.data.annotations import DuplicateEntryWarning
    from omnisource.data.datasets import build_dataloader

    with warnings.catch_warnings():  # the list repeats its videos on purpose
        warnings.simplefilter("ignore", DuplicateEntryWarning)
        ds = build_dataset(ann, root, preset_name, backend=backend)
    gc.collect()  # no PyAV object of this process may be finalised inside a forked worker
    kw = {}
    if workers > 0 and mp_context != "fork":
        kw["multiprocessing_context"] = mp_context
    loader = build_dataloader(ds, batch_size=batch_size, num_workers=workers, shuffle=shuffle,
                              persistent_workers=workers > 0, **kw)
    try:
        res = time_loader(loader, clips, workers, lambda batch: batch["inputs"].shape[0],
                          getattr(ds, "set_epoch", None))
    finally:
        del loader
        gc.collect()
    return dict(res, skipped=sum(getattr(ds, "skipped", {}).values()))


class MMAction2:
    """The mmaction2 1.2.0 reference venv as a long-lived subprocess (see ``MM_SCRIPT``);
    omnisource never imports mmaction2."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        env.pop("PYTHONPATH", None)
        # the reference counts CPU and times its loader exactly as we do: the same helpers, by source
        helpers = "\n\n".join(inspect.getsource(f) for f in (proc_cpu, loader_cpu, time_loader))
        script = MM_SCRIPT.replace("# @CPU_HELPERS@", helpers + "\n#", 1)
        self.proc = subprocess.Popen([str(MM_PYTHON), "-c", script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env, cwd=tempfile.gettempdir())
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"mmaction2 reference did not start (exit {self.proc.poll()})")

    def ask(self, **req) -> dict | None:
        if self.proc.poll() is not None:
            return None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                res = json.loads(line[len("RESULT "):])
                if "error" in res:
                    print(f"  mmaction2 failed: {res['error']}")
                    return None
                return res
        return None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - a hung reference must not outlive the benchmark
            self.proc.kill()


def warm_clips(args) -> int:
    """Clips the DataLoader measurements read before the clock starts (see time_loader)."""
    return max([1, *args.workers]) * args.batch_size


def median_of(runs: list[dict]) -> dict:
    """Field-wise median of repeated measurements (keys of the first run)."""
    return {k: float(np.median([r[k] for r in runs])) for k, v in runs[0].items()
            if isinstance(v, (int, float))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder searched for videos")
    ap.add_argument("--videos", nargs="*", type=Path, help="use these videos instead")
    ap.add_argument("--presets", nargs="*", default=DEFAULT_PRESETS)
    ap.add_argument("--clips", type=int, default=None,
                    help="clips timed per measurement (default: 3 per video, at least 12 batches; decode "
                         "costs differ 4x between the real videos, so fewer clips than that swing "
                         "the ratios)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved repetitions (ours, mmaction2, ours, ...); medians reported")
    ap.add_argument("--workers", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--backend", default="pyav", choices=["pyav", "decord"])
    ap.add_argument("--min-frames", type=int, default=64, help="skip shorter videos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shuffle", action="store_true",
                    help="shuffle the DataLoader measurements (each side with its own generator, "
                         "so the two sides time different clips; default: the same clips in the "
                         "same order on both sides)")
    ap.add_argument("--own-frames", action="store_true",
                    help="let mmaction2 sample its own frames (its SampleFrames) instead of decoding "
                         "the frames our pipeline sampled for the same clip; the frames then differ, "
                         "and decode costs differ up to 20x within one video (a frame just after a "
                         "keyframe or 250 frames past it), so 63-clip ratios swing by +-20%%")
    ap.add_argument("--mp-context", default="fork", choices=["fork", "forkserver", "spawn"],
                    help="worker start method (default fork, the Linux default; OpenCV is kept "
                         "single-threaded so forked workers are safe, see omnisource.data.workers)")
    ap.add_argument("--compare-mmaction2", action="store_true",
                    help="also time mmaction2 1.2.0's pipelines in the reference venv")
    ap.add_argument("--mm-backend", nargs="*", default=["decord", "pyav"],
                    help="mmaction2 decoders to compare with in one process (default: decord pyav)")
    ap.add_argument("--mm-loader-backend", default="decord",
                    help="mmaction2 decoder for the DataLoader comparison ('none' to skip it)")
    ap.add_argument("--per-video", type=int, default=0, metavar="CLIPS",
                    help="also print a decode-only table video by video, CLIPS clips each (ours, "
                         "mmaction2's decord with --compare-mmaction2, and the exact-reader ceiling "
                         "per file, with the file's I/P/B frame mix)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    videos = [p.resolve() for p in args.videos] if args.videos else find_videos(args.data, args.min_frames)
    if not videos:
        print(f"no videos found under {args.data}")
        return 1
    if args.clips is None:
        args.clips = max(3 * len(videos), MIN_LOADER_BATCHES * args.batch_size)
    elif args.workers and args.clips < MIN_LOADER_BATCHES * args.batch_size:
        print(f"note: {args.clips} clips are {args.clips / args.batch_size:.1f} batches per "
              f"DataLoader measurement; under {MIN_LOADER_BATCHES} the loader figures mostly "
              f"time start-up and epoch ends, not the pipeline")
    root = Path(os.path.commonpath([str(v.parent) for v in videos]))
    print(f"{len(videos)} video(s) under {root}; {args.clips} clips per measurement, "
          f"{args.rounds} interleaved round(s), medians; {load_text()}")
    results: dict = {"videos": [str(v) for v in videos], "load_before": load_text(), "ours": {},
                     "mmaction2": {}, "args": {k: str(v) for k, v in vars(args).items()}}
    mm = None
    if args.compare_mmaction2:
        if MM_PYTHON.exists():
            mm = MMAction2()
        else:
            print(f"  mmaction2 reference venv not found at {MM_PYTHON}; skipping the comparison")
    table: list[tuple] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ann = Path(tmp) / "videos.txt"
            # at least clips + 2 batches of samples per epoch, like the mmaction2 loader's
            # dataset: with a handful of videos an epoch would otherwise be one batch and
            # the loader would time epoch restarts, not the pipeline
            reps = -(-(args.clips + warm_clips(args)) // len(videos))
            ann.write_text("".join(f"{v.relative_to(root)} 0\n" for v in videos) * reps)
            for name in args.presets:
                run_one_preset(name, args, videos, ann, root, mm, results, table)
                if args.per_video > 0 and args.backend == "pyav":
                    per_video_table(name, args, videos, mm, results)
    finally:
        if mm is not None:
            mm.close()
    if table:
        print("\nsummary (clips/s, medians; ratio = omnisource / mmaction2):")
        print(f"  {'pipeline':24s} {'setting':22s} {'omnisource':>10s} {'mm decord':>10s} "
              f"{'mm pyav':>9s} {'x decord':>9s} {'x pyav':>7s} {'x decord CPU':>13s}")
        for row in table:
            name, setting, ours, dec, pyav, cpu_x = row
            fmt = lambda v: f"{v:.2f}" if v else "-"  # noqa: E731
            rd = f"{ours / dec:.2f}" if dec else "-"
            rp = f"{ours / pyav:.2f}" if pyav else "-"
            print(f"  {name:24s} {setting:22s} {fmt(ours):>10s} {fmt(dec):>10s} {fmt(pyav):>9s} "
                  f"{rd:>9s} {rp:>7s} {fmt(cpu_x):>13s}")
    results["load_after"] = load_text()
    print(f"\n{load_text()}")
    if args.json:
        from omnisource.utils.io import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


def decode_only_rounds(name: str, args, videos: list[Path], mm: MMAction2 | None,
                       results: dict) -> dict:
    """Same frames on both sides, decode only, one thread, interleaved rounds (CPU per clip):
    the comparison with the least noise, plus the exact-decoding ceiling it implies."""
    jobs = same_frame_jobs(name, videos, args.clips, args.seed)
    ours_runs, cold_runs, mm_runs = [], [], []
    for _ in range(args.rounds):
        ours_runs.append(measure_decode_only(jobs))
        cold_runs.append(measure_decode_only(jobs, cold=True))
        if mm is not None and "decord" in args.mm_backend:
            r = mm.ask(kind="decode", backend="decord", jobs=jobs)
            if r is not None:
                mm_runs.append(r)
    ours = median_of(ours_runs)
    cold = median_of(cold_runs)
    ours["cold_cpu_ms"] = cold["cpu_ms"]
    line = (f"  decode only, same frames, one thread: {ours['cpu_ms']:.1f} ms CPU per clip, "
            f"{ours['decoder_ms']:.1f} ms of it in FFmpeg's decoder "
            f"({100 * ours['decoder_ms'] / ours['cpu_ms']:.0f}%); {cold['cpu_ms']:.1f} ms when "
            f"every read demuxes its file first (no memory or on-disk index)")
    if mm_runs:
        m = median_of(mm_runs)
        ours["mm_decord_cpu_ms"] = m["cpu_ms"]
        results["mmaction2"].setdefault("decode_only_decord", {})[name] = {**m, "runs": mm_runs}
        line += (f"; mmaction2 (decord) {m['cpu_ms']:.1f} ms -> {m['cpu_ms'] / ours['cpu_ms']:.2f}x "
                 f"({m['cpu_ms'] / cold['cpu_ms']:.2f}x cold); "
                 f"ceiling of an exact FFmpeg-based reader (decoder calls only): "
                 f"{m['cpu_ms'] / ours['decoder_ms']:.2f}x")
    print(line)
    return {**ours, "runs": ours_runs}


def frame_mix(video: Path) -> str:
    """Picture types of a whole sequential decode (``I 2, P 224, B 74``), for the per-video table:
    how much an exact reader can skip depends on it (only B-frames nothing refers to)."""
    import collections

    import av

    counts: collections.Counter = collections.Counter()
    try:
        with av.open(str(video)) as c:
            for fr in c.decode(video=0):
                # an int in PyAV >= 14 (FFmpeg's AVPictureType), an enum before
                t = fr.pict_type
                counts[{1: "I", 2: "P", 3: "B"}.get(int(t), "other") if isinstance(t, int)
                       else str(getattr(t, "name", t))] += 1
    except Exception as err:  # noqa: BLE001 - a benchmark column, not a reader
        return f"? ({type(err).__name__})"
    return ", ".join(f"{t} {counts[t]}" for t in ("I", "P", "B") if counts[t]) or "?"


def per_video_table(name: str, args, videos: list[Path], mm: MMAction2 | None,
                    results: dict) -> None:
    """Decode only, one thread, the same frames on both sides, video by video (CPU per clip):
    where the ratio comes from. The ceiling column is mmaction2's CPU over our decoder calls
    alone, i.e. what an exact FFmpeg-based reader could reach on that file with no overhead at
    all; the totals weight every video equally, as the mixed runs above do."""
    root = Path(os.path.commonpath([str(v.parent) for v in videos]))
    print(f"\n{name}: decode only, per video ({args.per_video} clips each, {args.rounds} round(s), "
          f"ms CPU per clip; ceiling = mmaction2 / our decoder calls)")
    print(f"  {'video':48s} {'codec':6s} {'frames: types':24s} {'ours':>6s} {'decoder':>8s} "
          f"{'mm':>7s} {'x':>6s} {'ceiling':>8s}")
    from omnisource.data.decode.pyav_reader import read_info

    rows = []
    for v in videos:
        jobs = same_frame_jobs(name, [v], args.per_video, args.seed)
        ours = median_of([measure_decode_only(jobs) for _ in range(args.rounds)])
        m = None
        if mm is not None:
            got = [mm.ask(kind="decode", backend="decord", jobs=jobs) for _ in range(args.rounds)]
            got = [g for g in got if g is not None]
            m = median_of(got)["cpu_ms"] if got else None
        codec = read_info(str(v)).codec
        rel = str(v.relative_to(root))
        rel = rel if len(rel) <= 48 else "..." + rel[-45:]
        rows.append(dict(video=str(v), codec=codec, mix=frame_mix(v), cpu_ms=ours["cpu_ms"],
                         decoder_ms=ours["decoder_ms"], mm_cpu_ms=m))
        r = rows[-1]
        x = f"{m / r['cpu_ms']:.2f}" if m else "-"
        ceil = f"{m / r['decoder_ms']:.2f}" if m and r["decoder_ms"] > 0 else "-"
        print(f"  {rel:48s} {codec:6s} {r['mix']:24s} {r['cpu_ms']:6.1f} {r['decoder_ms']:8.1f} "
              f"{m if m is not None else float('nan'):7.1f} {x:>6s} {ceil:>8s}", flush=True)
    ours_t = sum(r["cpu_ms"] for r in rows)
    dec_t = sum(r["decoder_ms"] for r in rows)
    line = f"  all {len(rows)} videos: ours {ours_t / len(rows):.1f} ms (decoder {dec_t / len(rows):.1f})"
    if all(r["mm_cpu_ms"] for r in rows):
        mm_t = sum(r["mm_cpu_ms"] for r in rows)
        line += (f", mmaction2 {mm_t / len(rows):.1f} ms -> {mm_t / ours_t:.2f}x, "
                 f"ceiling {mm_t / dec_t:.2f}x")
    print(line)
    results["ours"].setdefault(name, {})["per_video"] = rows


def run_one_preset(name: str, args, videos: list[Path], ann: Path, root: Path,
                   mm: MMAction2 | None, results: dict, table: list) -> None:
    """Interleaved rounds for one pipeline: one process split, then each DataLoader setting."""
    ours_runs: list[dict] = []
    mm_runs: dict[str, list[dict]] = {b: [] for b in args.mm_backend}
    pipe = MM_PIPELINES.get(name)
    vids = [str(v) for v in videos]
    for _ in range(args.rounds):
        ours_runs.append(measure_split(name, videos, args.clips, args.backend, args.seed))
        given = None if args.own_frames else ours_runs[-1]["inds"]  # the same in every round
        if mm is not None and pipe is not None:
            for mb in args.mm_backend:
                r = mm.ask(kind="split", pipeline=pipe, backend=mb, videos=vids, clips=args.clips,
                           inds=given)
                if r is not None:
                    mm_runs[mb].append(r)
    split = median_of(ours_runs)
    res = {"split": split, "split_runs": ours_runs, "loader": {}}
    print(f"\n{name} ({args.backend}):")
    print(f"  one process, split: decode {split['decode_ms']:.1f} ms + augment "
          f"{split['augment_ms']:.1f} ms per clip = {split['clips_per_s']:.2f} clips/s "
          f"(decode {100 * split['decode_ms'] / (split['decode_ms'] + split['augment_ms']):.0f}%; "
          f"CPU {split['cpu_ms']:.1f} ms per clip)")
    one, one_cpu = {}, {}
    for mb, runs in mm_runs.items():
        if not runs:
            continue
        m = median_of(runs)
        one[mb] = m["clips_per_s"]
        one_cpu[mb] = m["cpu_ms"] / split["cpu_ms"]
        results["mmaction2"].setdefault(mb, {})[name] = {"split": m, "split_runs": runs}
        print(f"  mmaction2 1.2.0 ({mb}), one process: decode {m['decode_ms']:.1f} ms + "
              f"augment {m['augment_ms']:.1f} ms = {m['clips_per_s']:.2f} clips/s "
              f"(CPU {m['cpu_ms']:.1f} ms per clip)"
              + (f" ({int(m['failed'])} clips failed)" if m.get("failed") else "")
              + f" -> omnisource {split['clips_per_s'] / m['clips_per_s']:.2f}x wall, "
              f"{m['cpu_ms'] / split['cpu_ms']:.2f}x CPU")
    table.append((name, "1 process (no loader)", split["clips_per_s"], one.get("decord"),
                  one.get("pyav"), one_cpu.get("decord")))
    if args.backend == "pyav":
        res["decode_only"] = decode_only_rounds(name, args, videos, mm, results)
    mb = args.mm_loader_backend
    given = None
    if args.workers:  # also leaves every video's index in this process's cache (see docstring)
        named = loader_frame_indices(name, ann, root, args.clips + warm_clips(args),
                                     args.backend)
        given = None if args.own_frames else named
    for w in args.workers:
        ours_w, mm_w = [], []
        for _ in range(args.rounds):
            ours_w.append(measure_loader(name, ann, root, w, args.clips, args.backend,
                                         args.batch_size, args.mp_context, args.shuffle))
            if mm is not None and pipe is not None and mb != "none":
                r = mm.ask(kind="loader", pipeline=pipe, backend=mb, videos=[str(v) for v in videos],
                           clips=args.clips, workers=w, batch_size=args.batch_size,
                           shuffle=args.shuffle, inds=given)
                if r is not None:
                    mm_w.append(r)
        r = median_of(ours_w)
        res["loader"][w] = {**r, "runs": ours_w}
        line = (f"  DataLoader, {w} worker(s), batch {args.batch_size}: {r['clips_per_s']:.2f} clips/s, "
                f"CPU {r['cpu_ms']:.0f} ms/clip"
                + (f" ({int(r['skipped'])} skipped)" if r.get("skipped") else ""))
        m = median_of(mm_w) if mm_w else None
        if m is not None:
            results["mmaction2"].setdefault(f"loader_{mb}", {}).setdefault(name, {})[w] = m
            line += (f"; mmaction2 ({mb}) {m['clips_per_s']:.2f} clips/s, CPU {m['cpu_ms']:.0f} "
                     f"ms/clip -> {r['clips_per_s'] / m['clips_per_s']:.2f}x wall, "
                     f"{m['cpu_ms'] / r['cpu_ms']:.2f}x CPU")
        print(line)
        dec = m is not None and mb == "decord"
        table.append((name, f"DataLoader {w} worker(s)", r["clips_per_s"],
                      m["clips_per_s"] if dec else None,
                      m["clips_per_s"] if (m is not None and mb == "pyav") else None,
                      m["cpu_ms"] / r["cpu_ms"] if dec else None))
    results["ours"][name] = res


if __name__ == "__main__":
    sys.exit(main())
