"""``omnisource run``: the whole OmniSource recipe, stage by stage, cached and resumable.

Stages (each in ``WORK/stages/<name>/``; a stage is finished when its ``done.json`` exists and
names the same inputs/settings hash -- a finished stage is skipped, an interrupted one is rerun
and resumes through its own machinery: the web stages through their journals, training through
``latest.pth``)::

    world        generate the default synthetic world (only without --data)
    check        decode every listed sample (omnisource data check) and summarise
    ingest-*     validate each web list into a manifest (web/ingest.py)
    teacher      train the video teacher on the target set; it is also the target-only baseline
    teacher-2d   train a 2D teacher on target frames: it scores web images (3D teachers never
                 do, paper 3.4), joins the video teacher in scoring web videos
                 (filter.video_teachers) and gives dedup its features
    calibrate    the same two teachers trained on a per-class split of the training set; on the
                 held-out rest they map confidence to "right with probability p"
                 (web/calibration.py): per-source thresholds and source weights come from it,
                 never from the validation set
    dedup-*      remove web samples that look like target val samples (web/dedup.py)
    score-*, select-*   teacher filtering + pseudo-labels (web/filter.py)
    untrimmed    positive clips of untrimmed videos (web/untrimmed.py)
    student      joint training on target + all filtered sources (paper Eq. 1)
    unfiltered   joint training on target + all web data with query labels (no teacher)
    only-*       target + one source (--ablations; paper Table 2)
    test         every trained model on the target val set
then ``WORK/results.json`` (measured numbers, seeds, stage status) and the HTML report
``WORK/report/index.html``.

The pipeline calls the Python APIs of the other modules (never subprocesses). A stage that cannot
run on this data by design (no list for a source, dedup disabled) raises
:class:`StageUnavailable`: it is reported with the reason, the stages that depend on it are
skipped, and the run goes on. Anything else stops the run: bad input (an
:class:`~omnisource.errors.OmniSourceError`, e.g. a list line naming a class outside the label
map) ends it with that one line (``file:line: message``, exit 2); an unexpected exception ends it
with one line pointing at the traceback saved in the stage folder (``error.log``, exit 1). A run
that could not do what it was asked never trains the student on what is left and never exits 0.
Both write ``results.json`` with the stage statuses first, and a rerun resumes where it stopped.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omnisource.errors import InputError, OmniSourceError
import omnisource.models  # noqa: F401  (registers every family, the demo networks included)
from omnisource.pipeline.config import RunSettings, load_run_settings
from omnisource.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha1_json

log = logging.getLogger("omnisource.pipeline.run")

WEB_SOURCES = {  # source name -> list file under DATA/web/, kind
    "web_images": ("images", "image"),
    "web_videos": ("videos", "video"),
    "untrimmed": ("untrimmed", "video"),
}


class StageUnavailable(Exception):
    """A stage cannot run on this data by design (no list for a source, dedup disabled)."""


class StageFailed(OmniSourceError):
    """A stage stopped on bad input: ``str(err)`` is ``stage NAME: file:line: message``."""

    def __init__(self, stage: str, err: OmniSourceError):
        self.stage, self.cause = stage, err
        super().__init__(f"stage {stage}: {err}")


class StageCrashed(Exception):
    """A stage raised an unexpected exception (a bug, or a fault the code does not name):
    one line for the user, the traceback in ``log``."""

    def __init__(self, stage: str, err: BaseException, log_file: Path):
        self.stage, self.cause, self.log_file = stage, err, log_file
        super().__init__(f"stage {stage} crashed: {type(err).__name__}: {str(err)[:300]} "
                         f"(traceback in {log_file})")


@dataclass
class StageStatus:
    name: str
    status: str              # done | cached | unavailable | failed | crashed | skipped
    seconds: float = 0.0
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Runs the recipe; see the module docstring. ``say`` prints progress lines."""

    def __init__(self, work_dir: str | Path, data_dir: str | Path | None, settings: RunSettings,
                 *, ablations: bool | None = None, world_spec: Any = None,
                 say: Callable[[str], None] = print, progress: bool | None = None):
        # absolute: the configs written into the stages then load from any directory (a stage's
        # `omnisource train/test stages/X/config.yaml` run from elsewhere found no data before);
        # stage identities stay portable ($WORK, see _portable) so a moved folder is still reused
        self.work = Path(work_dir).absolute()
        self.data = Path(data_dir).absolute() if data_dir is not None else None
        self.s = settings
        self.ablations = bool(settings.ablations if ablations is None else ablations)
        self.world_spec = world_spec
        self.say = say
        self.progress = progress
        self.stages: dict[str, StageStatus] = {}
        self.models: dict[str, dict[str, Any]] = {}   # run name -> {work_dir, config, metrics}

    # ------------------------------------------------------------------ stage machinery
    def stage(self, name: str, ident: Any, fn: Callable[[Path], dict[str, Any]],
              needs: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """Run ``fn(stage_dir)`` unless finished with the same ``ident``; record the status."""
        for dep in needs:
            st = self.stages.get(dep)
            if st is None or st.status not in ("done", "cached"):
                why = f"needs {dep} ({st.status if st else 'not run'})"
                self.stages[name] = StageStatus(name, "skipped", reason=why)
                self.say(f"[{name}] skipped: {why}")
                return None
        sdir = self.work / "stages" / name
        marker = sdir / "done.json"
        key = sha1_json(self._portable(ident))
        # identities written before paths were made portable (same folder, same inputs)
        same = {key, sha1_json(ident)}
        if marker.is_file():
            try:
                done = json.loads(marker.read_text())
            except (OSError, ValueError):
                done = {}
            if done.get("ident") in same:
                result = self._local(done.get("result", {}))
                self.stages[name] = StageStatus(name, "cached", done.get("seconds", 0.0),
                                                result=result)
                self.say(f"[{name}] finished earlier: reused")
                return result
        # partial work in the folder (an interrupted run) is resumed only if it was started for
        # the same inputs and settings; otherwise it belongs to another recipe: start afresh
        started = sdir / "started.json"
        if sdir.exists():
            try:
                prev = json.loads(started.read_text()).get("ident")
            except (OSError, ValueError):
                prev = None
            if prev not in same:
                import shutil

                shutil.rmtree(sdir)
        sdir.mkdir(parents=True, exist_ok=True)
        if not started.is_file():
            atomic_write_json(started, {"stage": name, "ident": key})
        self.say(f"[{name}] running")
        t0 = time.time()
        try:
            result = fn(sdir) or {}
        except StageUnavailable as err:
            self.stages[name] = StageStatus(name, "unavailable", time.time() - t0, str(err))
            self.say(f"[{name}] unavailable: {err}")
            return None
        except OmniSourceError as err:   # bad input: the run stops with the user's one line
            atomic_write_text(sdir / "error.log", traceback.format_exc())
            self.stages[name] = StageStatus(name, "failed", time.time() - t0, str(err))
            self._write_partial_results(t0)
            raise StageFailed(name, err) from None
        except Exception as err:        # unexpected: stop, keep the traceback for the report
            log_file = sdir / "error.log"
            atomic_write_text(log_file, traceback.format_exc())
            self.stages[name] = StageStatus(name, "crashed", time.time() - t0,
                                            f"{type(err).__name__}: {err}")
            self._write_partial_results(t0)
            raise StageCrashed(name, err, log_file) from err
        secs = round(time.time() - t0, 2)
        atomic_write_json(marker, {"stage": name, "ident": key, "seconds": secs,
                                   "result": self._portable(result)})
        self.stages[name] = StageStatus(name, "done", secs, result=result)
        self.say(f"[{name}] done in {secs:.1f} s")
        return result

    def _write_partial_results(self, t0: float) -> None:
        """``results.json`` of a run that stopped: the stage statuses so far (no table)."""
        try:
            atomic_write_json(self.work / "results.json", {
                "complete": False, "seed": int(self.s.seed),
                "stages": {n: {"status": s.status, "seconds": s.seconds, "reason": s.reason}
                           for n, s in self.stages.items()}})
        except OSError as err:    # the stage's own error is the one to report
            log.warning("could not write results.json: %s", err)

    _WORK = "$WORK"

    def _portable(self, obj: Any) -> Any:
        """``obj`` with every path inside the work folder written as ``$WORK/...``.

        Stage identities and stored results go through this, so a work folder that is moved
        or copied (another disk, another machine) reuses its finished stages: identities hold
        the manifests' paths, results the manifests, checkpoints and configs a later stage
        reads. Files are found again by :meth:`_local`."""
        roots = sorted({str(self.work), str(self.work.resolve())}, key=len, reverse=True)

        def conv(x: Any) -> Any:
            if isinstance(x, str):
                for r in roots:
                    if x == r or x.startswith(r + os.sep):
                        return self._WORK + x[len(r):]
                return x
            if isinstance(x, dict):
                return {k: conv(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [conv(v) for v in x]
            return x
        return conv(obj)

    def _local(self, obj: Any) -> Any:
        """Inverse of :meth:`_portable` for this work folder (older markers pass unchanged)."""
        if isinstance(obj, str):
            if obj == self._WORK or obj.startswith(self._WORK + os.sep):
                return str(self.work) + obj[len(self._WORK):]
            return obj
        if isinstance(obj, dict):
            return {k: self._local(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._local(v) for v in obj]
        return obj

    def ok(self, name: str) -> bool:
        st = self.stages.get(name)
        return st is not None and st.status in ("done", "cached")

    # ------------------------------------------------------------------ data layout
    def paths(self) -> dict[str, Path]:
        d = self.data
        assert d is not None
        return {"label_map": d / "label_map.txt", "target_root": d / "target",
                "train": d / "target" / "train.txt", "val": d / "target" / "val.txt"}

    def web_list(self, source: str) -> Path | None:
        assert self.data is not None
        sub, _ = WEB_SOURCES[source]
        p = self.data / "web" / sub / "list.txt"
        return p if p.is_file() else None

    def class_names(self) -> list[str]:
        from omnisource.data.annotations import read_label_map

        return list(read_label_map(self.paths()["label_map"]))

    # ------------------------------------------------------------------ the recipe
    def run(self) -> dict[str, Any]:
        """The whole recipe, holding the work dir's lock (one run per work dir)."""
        from omnisource.utils.lock import WorkDirLock

        with WorkDirLock(self.work, what="omnisource run"):
            return self._run()

    def _run(self) -> dict[str, Any]:
        t0 = time.time()
        self.work.mkdir(parents=True, exist_ok=True)
        seed = int(self.s.seed)
        if self.data is None:
            from omnisource.pipeline.world import WorldSpec, generate_world

            spec = self.world_spec or WorldSpec(**{"seed": seed, **dict(self.s.world)})
            root = self.work / "world"

            def make_world(sdir: Path) -> dict:
                from omnisource.utils.progress import progress_enabled

                w = generate_world(root, spec, progress=progress_enabled(self.progress))
                return {"root": str(root), "counts": w["counts"],
                        "relevant_share": w["relevant_share"]}

            import dataclasses
            self.stage("world", {"spec": dataclasses.asdict(spec)}, make_world)
            self.data = root
        self._check_layout()
        self.stage("check", {"data": self._data_ident()}, self._stage_check)
        base_ident = {"data": self._data_ident(), "seed": seed, "model": dict(self.s.model),
                      "presets": dict(self.s.presets), "train": dict(self.s.train)}
        self.stage("teacher", {**base_ident, "teacher_model": self._teacher_model()},
                   lambda d: self._train_run(d, "teacher", []))
        if self._separate_teacher():   # the target-only baseline is the student's network
            self.stage("baseline", base_ident, lambda d: self._train_run(d, "baseline", []))
        sources_present = [s for s in self.s.sources if self.web_list(s) is not None]
        if sources_present:   # scores images, gives dedup its features, joins the video ensemble
            self.stage("teacher-2d", {**base_ident, "image_teacher": dict(self.s.image_teacher)},
                       self._train_image_teacher)
        if sources_present and self._needs_calibration():
            self.stage("calibrate", {**base_ident, "image_teacher": dict(self.s.image_teacher),
                                     "video_teachers": list(self.s.filter.video_teachers),
                                     "holdout": float(self.s.filter.holdout),
                                     "fit": "platt, offset-only below 200 samples, prior 1 (v2)"},
                       self._calibrate, needs=("teacher",))
        for src in sources_present:
            self.stage(f"ingest-{src}", {"data": self._data_ident(), "src": src},
                       lambda d, src=src: self._ingest(d, src))
        video_teachers = tuple(self.s.filter.video_teachers)
        for src in sources_present:
            teacher = ("teacher-2d",) if src == "web_images" else video_teachers
            self.stage(f"dedup-{src}", {"dedup": dict(self.s.dedup), "src": src, "data": self._data_ident()},
                       lambda d, src=src: self._dedup(d, src), needs=(f"ingest-{src}",))
            web_in = f"dedup-{src}" if self.ok(f"dedup-{src}") else f"ingest-{src}"
            if src == "untrimmed":
                self.stage("untrimmed", {"u": dict(self.s.untrimmed), "in": web_in, "base": base_ident,
                                         "pos_threshold": self._threshold("untrimmed")},
                           lambda d: self._untrimmed(d, web_in), needs=(web_in, "teacher"))
                continue
            self.stage(f"score-{src}", {"in": web_in, "base": base_ident, "src": src, "teachers": list(teacher),
                                        "image_teacher": dict(self.s.image_teacher),
                                        "keep_probs": self._soft_labels(src) == "dense"},
                       lambda d, src=src, web_in=web_in, teacher=teacher: self._score(d, src, web_in, teacher),
                       needs=(web_in,) + teacher)
            self.stage(f"select-{src}", {"filter": dict(self.s.filter), "src": src,
                                         "soft_labels": self._soft_labels(src),
                                         "threshold": self._threshold(src)},
                       lambda d, src=src: self._select(d, src), needs=(f"score-{src}",))
        # training runs on auxiliary data
        filtered = {s: self._filtered_manifest(s) for s in sources_present}
        filtered = {s: m for s, m in filtered.items() if m is not None}
        if filtered and self.s.filter.source_check and self.ok("calibrate") \
                and self.stages["calibrate"].result.get("calibrations"):
            self.stage("source-check", {**base_ident, "holdout": float(self.s.filter.holdout),
                                        "sources": {k: [str(v), _file_hash(v)] for k, v in filtered.items()},
                                        "source_cfg": dict(self.s.sources), "rule": "se v1"},
                       lambda d: self._source_check(d, filtered), needs=("calibrate",))
        runs: list[tuple[str, dict[str, Path]]] = []
        if filtered:
            runs.append(("student", filtered))
        raw = {s: self._raw_manifest(s) for s in sources_present}
        raw = {s: m for s, m in raw.items() if m is not None}
        if raw and (self.s.unfiltered_run or self.ablations):
            runs.append(("unfiltered", raw))
        if self.ablations:
            for s, m in filtered.items():
                runs.append((f"only-{s}", {s: m}))
        for run_name, srcs in runs:
            ident = {**base_ident, "sources": {k: [str(v), _file_hash(v)] for k, v in srcs.items()},
                     "source_cfg": dict(self.s.sources),
                     "weights": {k: [w.batch_size, w.loss_weight] for k, w in self._weights(srcs).items()}}
            self.stage(run_name, ident, lambda d, run_name=run_name, srcs=srcs: self._train_run(d, run_name, srcs))
        trained = [n for n in ["teacher", "baseline"] + [r for r, _ in runs] if self.ok(n)]
        self.stage("test", {"runs": {n: self.stages[n].result.get("checkpoint_sha1") for n in trained},
                            "presets": dict(self.s.presets)},
                   lambda d: self._test(d, trained), needs=("teacher",))
        results = self._results(time.time() - t0)
        self._report(results)
        return results

    # ------------------------------------------------------------------ stages
    def _data_ident(self) -> dict[str, Any]:
        p = self.paths()
        ident = {k: _file_hash(v) for k, v in p.items() if v.is_file()}
        for s in WEB_SOURCES:
            lst = self.web_list(s)
            if lst is not None:
                ident[s] = _file_hash(lst)
        return ident

    def _check_layout(self) -> None:
        p = self.paths()
        for key in ("label_map", "train", "val"):
            if not p[key].is_file():
                raise InputError(f"missing {p[key].relative_to(self.data)} (see the data layout in "
                                 f"`omnisource run --help`)", file=self.data)

    def _stage_check(self, sdir: Path) -> dict[str, Any]:
        from omnisource.data.annotations import Sample, read_web_list
        from omnisource.data.check import check_annotations

        p = self.paths()
        out: dict[str, Any] = {}
        lists: list[tuple[str, Path, Path, Any]] = [("target_train", p["train"], p["target_root"], None),
                                                    ("target_val", p["val"], p["target_root"], None)]
        names = self.class_names()
        for s in WEB_SOURCES:
            lst = self.web_list(s)
            if lst is not None:    # the same parser as ingest: query labels are indices or names
                kind = WEB_SOURCES[s][1]
                rows = [Sample(path=r.path, label=r.label, kind=kind, line=r.line, file=str(lst))
                        for r in read_web_list(lst, names)]
                lists.append((s, lst, lst.parent, rows))
        for name, lst, root, rows in lists:
            fmt = None if rows is None else ("image" if rows and rows[0].kind == "image" else "video")
            rep = check_annotations(lst, root, label_map=names, workers=0, progress=self.progress,
                                    samples=rows, format=fmt, quick=bool(self.s.check.quick))
            atomic_write_json(sdir / f"{name}.json", rep)
            out[name] = {"total": rep["total"], "ok": rep["ok"], "failed": rep["failed"],
                         "by_reason": rep.get("by_reason", {})}
            self.say(f"  {name}: {rep['ok']}/{rep['total']} readable"
                     + (f", {rep['failed']} unreadable" if rep["failed"] else ""))
        return out

    def _train_cfg(self, name: str, sources: dict[str, Path], work: Path, train_list: Path | None = None) -> Any:
        """An omnisource training config (engine/train.py) for one run of the recipe
        (``train_list`` replaces the target training list: the calibration teachers)."""
        from omnisource.config import config_from_dict

        p = dict(self.paths())
        if train_list is not None:
            p["train"] = train_list
        t = self.s.train
        net = self._teacher_model() if name in ("teacher", "calibrate") else dict(self.s.model)
        pov = dict(self.s.presets.overrides)
        nclass = len(self.class_names())
        data = {
            "train": {"ann_file": str(p["train"]), "data_root": str(p["target_root"]),
                      "preset": self.s.presets.train, "overrides": dict(pov)},
            "val": {"ann_file": str(p["val"]), "data_root": str(p["target_root"]),
                    "preset": self.s.presets.test, "overrides": dict(pov)},
            "label_map": str(p["label_map"]), "num_workers": int(t.num_workers),
            "batch_size": int(t.batch_size), "pin_memory": False,
        }
        cfg: dict[str, Any] = {
            "model": {"name": net["name"], "num_classes": nclass, "overrides": dict(net["overrides"])},
            "data": data,
            "optim": {"lr": float(t.lr), "weight_decay": float(t.weight_decay), "scale_lr": False},
            "schedule": {"epochs": int(t.epochs), "policy": "cosine",
                         "warmup_epochs": int(t.warmup_epochs)},
            "train": {"seed": int(self.s.seed), "tensorboard": False, "save_interval": int(t.epochs),
                      "max_keep_ckpts": 1, "log_interval": 1000,
                      "max_iters_per_epoch": t.max_iters_per_epoch,
                      "mixup": {"alpha": float(t.mixup_alpha)}},
            "work_dir": str(work),
        }
        if sources:
            items = [{"name": "target", "ann_file": str(p["train"]), "data_root": str(p["target_root"]),
                      "batch_size": int(t.batch_size), "role": "target",
                      "step_mode": t.step_mode, "overrides": dict(pov)}]
            weights = self._weights(sources)
            for src, manifest in sources.items():
                sc = dict(self.s.sources.get(src) or {})
                sub, _ = WEB_SOURCES[src]
                w = weights[src]
                if w.batch_size == 0:      # no better than chance: reported, not trained on
                    continue
                item = {"name": src, "ann_file": str(manifest),
                        "data_root": str(self.data / "web" / sub),  # type: ignore[operator]
                        "batch_size": w.batch_size,
                        "loss_weight": float(w.loss_weight),
                        "resample": sc.get("resample"), "overrides": dict(pov),
                        "format": "manifest"}
                if src == "web_images" and sc.get("inflate"):
                    item["inflate"] = sc["inflate"]
                if self._soft_labels(src) == "topk":     # the sparse top-k of meta.soft_label
                    item["pseudo_label"] = "soft"
                items.append(item)
            cfg["sources"] = items
        return config_from_dict(cfg, source=f"<omnisource run: {name}>")

    def _train_run(self, sdir: Path, name: str, sources: dict[str, Path] | list,
                   train_list: Path | None = None) -> dict[str, Any]:
        from omnisource.engine.train import train

        srcs = dict(sources) if sources else {}
        cfg = self._train_cfg(name, srcs, sdir, train_list)
        cfg_file = _save_config(cfg, sdir / "run_config.yaml")
        summary = train(cfg, sdir, resume="auto", validate=False, device="cpu")
        ckpt = sdir / "latest.pth"
        if not ckpt.is_file():
            raise RuntimeError(f"training {name} wrote no checkpoint")
        from omnisource.utils.io import sha1_file

        return {"work_dir": str(sdir), "checkpoint": str(ckpt), "config": str(cfg_file),
                "checkpoint_sha1": sha1_file(ckpt), "iterations": summary.get("global_iter"),
                "sources": {k: str(v) for k, v in srcs.items()},
                "weights": {k: [w.batch_size, round(w.loss_weight, 4), w.reason]
                            for k, w in self._weights(srcs).items()} if srcs else {}}

    def _train_image_teacher(self, sdir: Path, train_list: Path | None = None) -> dict[str, Any]:
        from omnisource.config import config_from_dict
        from omnisource.engine.train import train
        from omnisource.utils.io import sha1_file

        p = dict(self.paths())
        if train_list is not None:
            p["train"] = train_list
        it = self.s.image_teacher
        pov = dict(it.preset_overrides)
        cfg = config_from_dict({
            "model": {"name": it.name, "num_classes": len(self.class_names()), "overrides": dict(it.overrides)},
            "data": {"train": {"ann_file": str(p["train"]), "data_root": str(p["target_root"]),
                               "preset": it.preset, "overrides": pov},
                     "label_map": str(p["label_map"]), "num_workers": int(self.s.train.num_workers),
                     "batch_size": int(it.batch_size), "pin_memory": False},
            "optim": {"lr": float(it.lr), "weight_decay": float(self.s.train.weight_decay), "scale_lr": False},
            "schedule": {"epochs": int(it.epochs), "policy": "cosine", "warmup_epochs": 1},
            "train": {"seed": int(self.s.seed), "tensorboard": False, "save_interval": int(it.epochs),
                      "max_keep_ckpts": 1, "log_interval": 1000,
                      "max_iters_per_epoch": self.s.train.max_iters_per_epoch},
        }, source="<omnisource run: teacher-2d>")
        cfg_file = _save_config(cfg, sdir / "run_config.yaml")
        summary = train(cfg, sdir, resume="auto", validate=False, device="cpu")
        ckpt = sdir / "latest.pth"
        return {"work_dir": str(sdir), "checkpoint": str(ckpt), "config": str(cfg_file),
                "checkpoint_sha1": sha1_file(ckpt), "iterations": summary.get("global_iter")}

    def _ingest(self, sdir: Path, src: str) -> dict[str, Any]:
        from omnisource.web.ingest import ValidateConfig, ingest

        lst = self.web_list(src)
        if lst is None:
            raise StageUnavailable(f"no list for {src}")
        from omnisource.data.annotations import read_web_list

        names = self.class_names()
        listing = sdir / "list.tsv"
        atomic_write_text(listing, "".join(f"{r.path}\t{names[r.label]}\n" for r in read_web_list(lst, names)))
        kinds = ("image",) if src == "web_images" else ("video",)
        res = ingest(sdir / "out", label_map=self.paths()["label_map"], list_file=listing, root=lst.parent,
                     cfg=ValidateConfig(min_size=16, kinds=kinds, source=src), workers=1,
                     progress=self.progress)
        counts = res.meta.get("counts", {})
        return {"manifest": str(res.manifest), "data_root": str(res.data_root), "counts": counts}

    def _dedup(self, sdir: Path, src: str) -> dict[str, Any]:
        if not self.s.dedup.enabled:
            raise StageUnavailable("disabled (dedup.enabled: false)")
        if not self.ok("teacher-2d"):
            raise StageUnavailable("needs a 2D feature network (teacher-2d)")
        from omnisource.web.dedup import DedupSettings, run_dedup
        from omnisource.web.teacher import ModelSource, build_model

        t2 = self.stages["teacher-2d"].result
        msrc = ModelSource(spec=t2["config"], checkpoint=t2["checkpoint"])
        model = build_model(msrc, backbone_only=True)
        p = self.paths()
        ing = self.stages[f"ingest-{src}"].result
        thr = self.s.dedup.threshold
        settings = DedupSettings(frames_per_video=int(self.s.dedup.frames_per_video), pca_dim=32,
                                 threshold=None if thr is None else float(thr), threshold_frames=50,
                                 seed=int(self.s.seed))
        summary = run_dedup(ing["manifest"], [(p["val"], p["target_root"])], sdir / "out", model,
                            msrc.describe(), settings, web_root=ing["data_root"], batch_size=32,
                            progress=self.progress)
        return {"manifest": str(sdir / "out" / "manifest.jsonl"), "data_root": ing["data_root"],
                "summary": _jsonable(summary)}

    def _ensemble(self, teachers: str | tuple[str, ...], data_root: str, results: dict[str, dict] | None = None):
        """The teacher stages' models as one ensemble (probabilities averaged over teachers);
        ``results`` maps teacher names to other trained models (the calibration teachers)."""
        from omnisource.web.teacher import ModelSource, build_ensemble

        names = (teachers,) if isinstance(teachers, str) else teachers
        res = {n: (results or {}).get(n) or self.stages[n].result for n in names}
        srcs = [ModelSource(spec=res[n]["config"], checkpoint=res[n]["checkpoint"]) for n in names]
        return build_ensemble(srcs, data_root=data_root, batch_size=32)

    def _teacher_model(self) -> dict[str, Any]:
        """The video teacher's network: ``teacher_model`` when named, else the student's."""
        tm = dict(self.s.teacher_model)
        if not tm.get("name"):
            return dict(self.s.model)
        return {"name": tm["name"], "overrides": dict(tm.get("overrides") or {})}

    def _separate_teacher(self) -> bool:
        return self._teacher_model() != dict(self.s.model)

    # ------------------------------------------------------------------ calibration (issue 19)
    def _needs_calibration(self) -> bool:
        """Whether anything is 'auto': thresholds or source batch sizes."""
        return (self.s.filter.threshold == "auto" or self.s.untrimmed.pos_threshold == "auto"
                or any((sc or {}).get("batch_size") == "auto" for sc in self.s.sources.values()))

    def _scorer(self, src: str) -> str:
        """Which teacher ensemble scores a source (its calibration key)."""
        return {"web_images": "image", "untrimmed": "video_teacher"}.get(src, "video_ensemble")

    def _calibration(self, src: str):
        from omnisource.web.calibration import Calibration

        if not self.ok("calibrate"):
            return None
        d = self.stages["calibrate"].result.get("calibrations", {}).get(self._scorer(src))
        return None if d is None else Calibration.from_dict(d)

    def _threshold(self, src: str) -> float | None:
        """The selection threshold of a source: a fixed setting, or (auto) the confidence at which
        its calibrated teacher is right with probability ``filter.min_precision``."""
        setting = self.s.untrimmed.pos_threshold if src == "untrimmed" else self.s.filter.threshold
        if setting != "auto":
            return None if setting is None else float(setting)
        cal = self._calibration(src)
        thr = None if cal is None else cal.threshold(float(self.s.filter.min_precision))
        if src == "untrimmed" and thr is None:
            return 0.5          # the paper's positive-window rule when calibration is unavailable
        return None if thr is None else round(thr, 4)

    def _kept_precision(self, src: str, manifest: Path) -> float | None:
        """Mean calibrated correctness of a source's kept samples (its estimated precision)."""
        from omnisource.data.annotations import iter_manifest

        cal = self._calibration(src)
        if cal is None:
            return None
        scores = [float(r.score) for r in iter_manifest(manifest) if r.score is not None]
        return float(cal.correctness(scores).mean()) if scores else None

    def _weights(self, sources: dict[str, Path]) -> dict[str, Any]:
        """Batch size and loss weight of each auxiliary source of a joint run (computed once per
        set of manifests: the stage identity, the training config and the results all ask)."""
        checked = self.ok("source-check")
        key = tuple(sorted((k, str(v), _file_hash(v)) for k, v in sources.items())) + (checked,)
        cache = self.__dict__.setdefault("_weights_cache", {})
        if key not in cache:
            cache[key] = self._compute_weights(sources)
            if checked:          # the held-out source check's verdicts (see _source_check)
                verdicts = self.stages["source-check"].result.get("factors", {})
                for src, w in cache[key].items():
                    f, why = verdicts.get(src, (1.0, ""))
                    if f < 1.0:
                        w.loss_weight *= f
                        if f == 0.0:
                            w.batch_size = 0
                        w.reason = f"{w.reason}; {why}"
        return {k: copy.copy(w) for k, w in cache[key].items()}

    def _source_check(self, sdir: Path, filtered: dict[str, Path]) -> dict[str, Any]:
        """Per source: the student's network trained on the calibration split with and without the
        source, scored on the held-out split of the training set (never the validation set)."""
        from omnisource.data.annotations import write_annotations
        from omnisource.pipeline.source_weights import check_factor

        p = self.paths()
        fmt, fit_rows, held_rows = self._holdout_split()
        fit_list, held_list = sdir / "fit.txt", sdir / "held.txt"
        write_annotations(fit_list, fit_rows, fmt)
        write_annotations(held_list, held_rows, fmt)
        n = len(held_rows)

        def held_top1(res: dict[str, Any]) -> float:
            m = evaluate_checkpoint(res["config"], res["checkpoint"], held_list, p["target_root"],
                                    self.s.presets.test, dict(self.s.presets.overrides), p["label_map"])
            return float(m.get("top1_acc") or 0.0)

        base = held_top1(self._train_run(sdir / "without", "check-without", [], train_list=fit_list))
        out: dict[str, Any] = {"held_out": n, "without": base, "with": {}, "factors": {}}
        self.say(f"  source check: {n} held-out training samples, top-1 without web data {100 * base:.1f}%")
        for src, manifest in filtered.items():
            acc = held_top1(self._train_run(sdir / f"with-{src}", f"check-{src}", {src: manifest},
                                            train_list=fit_list))
            f, why = check_factor(round(base * n), round(acc * n), n)
            out["with"][src] = acc
            out["factors"][src] = [f, why]
            self.say(f"  source check {src}: {why}")
        return out

    def _compute_weights(self, sources: dict[str, Path]) -> dict[str, Any]:
        from omnisource.pipeline.source_weights import SourceStats, SourceWeight, auto_source_weights

        t = self.s.train
        bt = int(t.batch_size)
        auto = {s: m for s, m in sources.items() if (self.s.sources.get(s) or {}).get("batch_size") == "auto"}
        out: dict[str, Any] = {}
        if auto:
            n_target = self._target_size()
            stats = {s: SourceStats(kept=_count_records(m), precision=self._kept_precision(s, m))
                     for s, m in auto.items()}
            out.update(auto_source_weights(stats, n_target, bt, len(self.class_names()),
                                           max_aux_ratio=float(t.max_aux_ratio)))
        for s in sources:
            sc = dict(self.s.sources.get(s) or {})
            if s in out:
                if sc.get("loss_weight") is not None:
                    out[s].loss_weight = float(sc["loss_weight"])
                continue
            bs = int(sc.get("batch_size") or bt)
            lw = sc.get("loss_weight")
            out[s] = SourceWeight(bs, float(bs / bt if lw is None else lw), bs / bt, "set in sources")
        return out

    def _target_size(self) -> int:
        from omnisource.data.annotations import load_annotations

        if not hasattr(self, "_n_target"):
            self._n_target = len(load_annotations(self.paths()["train"], data_root=self.paths()["target_root"]))
        return self._n_target

    def _holdout_split(self) -> tuple[str, list[Any], list[Any]]:
        """(list format, fit rows, held-out rows): the per-class split of the training set that the
        calibration teachers and the source check share (``filter.holdout``, seeded)."""
        from omnisource.data.annotations import detect_format, load_annotations
        from omnisource.web.calibration import stratified_holdout

        p = self.paths()
        fmt = detect_format(p["train"], data_root=p["target_root"])
        rows = load_annotations(p["train"], format=fmt, data_root=p["target_root"])
        labels = [int(r.label) for r in rows]  # type: ignore[arg-type]  (training rows carry labels)
        held = stratified_holdout(labels, float(self.s.filter.holdout), int(self.s.seed))
        return fmt, [r for r, h in zip(rows, held) if not h], [r for r, h in zip(rows, held) if h]

    def _calibrate(self, sdir: Path) -> dict[str, Any]:
        """Teachers trained on a per-class split of the training set, calibrated on the rest."""
        from omnisource.data.annotations import ManifestRecord, write_annotations
        from omnisource.web.calibration import fit_calibration

        p = self.paths()
        fmt, fit_rows, held_rows = self._holdout_split()
        out: dict[str, Any] = {"fit": len(fit_rows), "held_out": len(held_rows), "calibrations": {}}
        if len(held_rows) < 8:
            out["note"] = (f"{len(held_rows)} held-out samples are too few to calibrate on; "
                           "auto thresholds fall back to the rank rule, auto weights to kept counts")
            self.say(f"  calibrate: {out['note']}")
            return out
        fit_list = sdir / "fit.txt"
        write_annotations(fit_list, fit_rows, fmt)
        self.say(f"  calibrate: teachers on {len(fit_rows)} training samples, "
                 f"calibrated on the other {len(held_rows)}")
        cal_teachers = {"teacher": self._train_run(sdir / "teacher", "calibrate", [], train_list=fit_list),
                        "teacher-2d": self._train_image_teacher(sdir / "teacher-2d", train_list=fit_list)}
        root = str(p["target_root"])
        recs = [ManifestRecord(path=r.path, source="calibration", kind=r.kind, query_label=int(r.label),  # type: ignore[arg-type]
                               frame_inds=None) for r in held_rows]
        stills = self._held_stills(sdir / "stills", held_rows)
        scorers = {"video_ensemble": (tuple(self.s.filter.video_teachers), recs, root),
                   "video_teacher": (("teacher",), recs, root),
                   "image": (("teacher-2d",), stills, str(sdir / "stills"))}
        for key, (names, records, data_root) in scorers.items():
            if not records:
                continue
            with self._ensemble(names, data_root, results=cal_teachers) as ens:
                probs = ens.score(records)
            pairs = [(float(pr.max()), int(pr.argmax()) == int(r.query_label))
                     for r, pr in zip(records, probs) if not isinstance(pr, str)]
            if len(pairs) < 8:
                continue
            cal = fit_calibration([c for c, _ in pairs], [ok for _, ok in pairs])
            thr = cal.threshold(float(self.s.filter.min_precision))
            out["calibrations"][key] = {**cal.to_dict(), "threshold": None if thr is None else round(thr, 4),
                                        "pairs": [[round(c, 4), ok] for c, ok in pairs]}
            self.say(f"  calibrate {key}: held-out top-1 {100 * cal.accuracy:.0f}% (mean confidence "
                     f"{100 * cal.mean_confidence:.0f}%), right with p >= {self.s.filter.min_precision} "
                     f"from confidence {'n/a' if thr is None else f'{thr:.2f}'}")
        return out

    def _held_stills(self, out_dir: Path, rows: list[Any]) -> list[Any]:
        """The middle frame of each held-out clip as a PNG: what the image teacher is calibrated
        on (it scores still web images)."""
        import cv2

        from omnisource.data.annotations import ManifestRecord
        from omnisource.errors import DataError
        from omnisource.web.features import open_reader

        out_dir.mkdir(parents=True, exist_ok=True)
        recs = []
        root = self.paths()["target_root"]
        for i, r in enumerate(rows):
            name = f"{i:05d}.png"
            try:
                reader = open_reader(root / r.path, r.kind)
                try:
                    frame = reader.get_frames([reader.start_index + max(0, len(reader) // 2)])[0]
                finally:
                    reader.close()
            except (DataError, OSError, ValueError, IndexError):
                continue              # unreadable clips were counted by the check stage
            ok, buf = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            if ok:
                atomic_write_bytes(out_dir / name, buf.tobytes())
                recs.append(ManifestRecord(path=name, source="calibration", kind="image", query_label=int(r.label)))
        return recs

    def _score(self, sdir: Path, src: str, web_in: str, teacher: tuple[str, ...]) -> dict[str, Any]:
        from omnisource.web.filter import score_stage

        inp = self.stages[web_in].result
        ens = self._ensemble(teacher, inp["data_root"])
        res = score_stage(inp["manifest"], sdir / "out", ens, topk=5,
                          keep_probs=self._soft_labels(src) == "dense",
                          label_map=self.class_names(), progress=self.progress)
        return {"manifest": str(res.manifest), "data_root": inp["data_root"],
                "counts": res.meta.get("counts", {})}

    def _soft_labels(self, src: str) -> str:
        """Pseudo-label kind of a source: ``sources.<src>.soft_labels``, else ``filter.soft_labels``."""
        sc = dict(self.s.sources.get(src) or {})
        return str(sc.get("soft_labels") or self.s.filter.soft_labels)

    def _select(self, sdir: Path, src: str) -> dict[str, Any]:
        from omnisource.web.filter import SelectRule, select_stage

        f = self.s.filter
        rule = SelectRule(threshold=self._threshold(src), top_fraction_per_class=f.top_fraction_per_class,
                          rank_group="query", agree=bool(f.agree), soft_labels=self._soft_labels(src))
        sc = self.stages[f"score-{src}"].result
        res = select_stage(sc["manifest"], sdir / "out", rule, progress=self.progress)
        return {"manifest": str(res.manifest), "data_root": sc["data_root"],
                "counts": res.meta.get("counts", {})}

    def _untrimmed(self, sdir: Path, web_in: str) -> dict[str, Any]:
        from omnisource.web.untrimmed import UntrimmedSettings, untrimmed_stage

        u = self.s.untrimmed
        inp = self.stages[web_in].result
        ens = self._ensemble("teacher", inp["data_root"])
        layout = "3d" if all(v.layout == "3d" for v in ens.views) else "2d"
        settings = UntrimmedSettings(mode=layout, window=float(u.window), stride=float(u.stride),
                                     pos_threshold=float(self._threshold("untrimmed")), agree=bool(u.agree),
                                     seed=int(self.s.seed))
        res = untrimmed_stage(inp["manifest"], sdir / "out", ens, settings, data_root=inp["data_root"],
                              label_map=self.class_names(), progress=self.progress)
        return {"manifest": str(res.manifest), "data_root": inp["data_root"],
                "counts": res.meta.get("counts", {})}

    def _filtered_manifest(self, src: str) -> Path | None:
        stage = "untrimmed" if src == "untrimmed" else f"select-{src}"
        if not self.ok(stage):
            return None
        m = Path(self.stages[stage].result["manifest"])
        return m if _count_records(m) > 0 else None

    def _raw_manifest(self, src: str) -> Path | None:
        """Web data without teacher: the (de-duplicated) ingest manifest with query labels."""
        for stage in (f"dedup-{src}", f"ingest-{src}"):
            if self.ok(stage):
                m = Path(self.stages[stage].result["manifest"])
                out = self.work / "stages" / f"unfiltered-{src}.jsonl"
                _query_labelled(m, out)
                return out if _count_records(out) > 0 else None
        return None

    def _test(self, sdir: Path, runs: list[str]) -> dict[str, Any]:
        from omnisource.engine.metrics import format_metric

        out = {}
        n = len(self.class_names())
        for name in runs:
            res = self.stages[name].result
            metrics = evaluate_checkpoint(res["config"], res["checkpoint"], self.paths()["val"],
                                          self.paths()["target_root"], self.s.presets.test,
                                          dict(self.s.presets.overrides), self.paths()["label_map"],
                                          report_dir=sdir / f"report-{name}")
            out[name] = metrics
            self.say(f"  {name}: top1 {format_metric('top1_acc', metrics.get('top1_acc'), n)} "
                     f"top5 {format_metric('top5_acc', metrics.get('top5_acc'), n)}")
        return out

    # ------------------------------------------------------------------ results
    def _results(self, seconds: float) -> dict[str, Any]:
        test = self.stages["test"].result if self.ok("test") else {}
        rows = []
        labels = {"teacher": ("video teacher, target only" if self._separate_teacher()
                              else "target only (baseline = teacher)"),
                  "baseline": "target only (the student's network)",
                  "student": "target + all sources (OmniSource)",
                  "unfiltered": "target + all sources, no teacher filtering"}
        for name, m in test.items():
            rows.append({"run": name, "description": labels.get(name, f"target + {name[5:]}" if name.startswith("only-") else name),
                         "top1": m.get("top1_acc"), "top5": m.get("top5_acc"),
                         "mean_class_accuracy": m.get("mean_class_accuracy")})
        filt = {}
        from omnisource.pipeline.world import load_truth

        truth = load_truth(self.data) if self.data is not None else None
        for src in WEB_SOURCES:
            st = "untrimmed" if src == "untrimmed" else f"select-{src}"
            if self.ok(st):
                filt[src] = self._filter_quality(src, Path(self.stages[st].result["manifest"]), truth)
        res = {
            "seed": int(self.s.seed),
            "data": str(self.data),
            "complete": True,
            "generated_world": (self.work / "world") == self.data,
            "seconds": round(seconds, 1),
            "settings": dict(self.s),
            "stages": {n: {"status": s.status, "seconds": s.seconds, "reason": s.reason}
                       for n, s in self.stages.items()},
            "table": rows,
            "filtering": filt,
            # per-class pages of the test stage (accuracy per class, confusions, mistakes),
            # relative to the work folder; a test stage finished by an older build has none
            "test_reports": {n: f"stages/test/report-{n}/index.html" for n in test
                             if (self.work / "stages" / "test" / f"report-{n}" / "index.html").is_file()},
        }
        wj = Path(str(self.data)) / "world.json"
        if wj.is_file():
            try:
                w = json.loads(wj.read_text())
                res["world"] = {"spec": w.get("spec"), "counts": w.get("counts"),
                                "relevant_share": w.get("relevant_share")}
            except (OSError, ValueError):
                pass
        base_run = "baseline" if any(r["run"] == "baseline" for r in rows) else "teacher"
        base = next((r for r in rows if r["run"] == base_run), None)
        stud = next((r for r in rows if r["run"] == "student"), None)
        unf = next((r for r in rows if r["run"] == "unfiltered"), None)
        if base and stud and base["top1"] is not None and stud["top1"] is not None:
            res["omnisource_gain_top1"] = stud["top1"] - base["top1"]
        if base and unf and base["top1"] is not None and unf["top1"] is not None:
            res["unfiltered_gain_top1"] = unf["top1"] - base["top1"]
        res.update(source_ablations(rows, filt, base_run))
        if self.ok("source-check"):
            chk = self.stages["source-check"].result
            res["source_check"] = {"held_out": chk["held_out"], "without": chk["without"], "with": chk["with"],
                                   "factors": chk["factors"]}
        if self.ok("calibrate"):
            cal = self.stages["calibrate"].result
            res["calibration"] = {"fit": cal.get("fit"), "held_out": cal.get("held_out"), "note": cal.get("note"),
                                  **{k: {kk: v[kk] for kk in ("accuracy", "mean_confidence", "threshold", "n")}
                                     for k, v in cal.get("calibrations", {}).items()}}
        chance = [f["warning"] for f in filt.values() if f.get("warning")]
        if chance:
            res["warning"] = "; ".join(([res["warning"]] if res.get("warning") else []) + chance)
        atomic_write_json(self.work / "results.json", res)
        return res

    def _filter_quality(self, src: str, manifest: Path, truth: dict | None) -> dict[str, Any]:
        """Kept counts, and (generated world only) precision of the kept pseudo-labels."""
        from omnisource.data.annotations import iter_manifest

        kept = list(iter_manifest(manifest))
        info: dict[str, Any] = {"kept": len(kept), "threshold": self._threshold(src)}
        est = self._kept_precision(src, manifest)
        if est is not None:
            from omnisource.web.calibration import above_chance

            info["estimated_precision"] = round(est, 4)
            if above_chance(est, len(self.class_names())) <= 0:
                info["warning"] = (f"{src}: kept pseudo-labels are estimated no better than chance "
                                   f"({100 * est:.0f}% for {len(self.class_names())} classes)")
        sw = self.stages["student"].result.get("weights", {}).get(src) if self.ok("student") else None
        if sw is not None:      # what the student trained with: batch, loss weight, why
            info["student_batch_size"], info["student_loss_weight"], info["weight_reason"] = sw
        key = {"web_images": "web_images", "web_videos": "web_videos", "untrimmed": "web_untrimmed"}[src]
        if truth and key in truth:
            t = truth[key]
            correct = sum(1 for r in kept if t.get(r.path, {}).get("true") == _hard_label(r))
            info["pseudo_label_precision"] = correct / len(kept) if kept else None
            info["relevant_in_crawl"] = sum(1 for v in t.values() if v["kind"] == "relevant") / max(1, len(t))
            info["crawl_size"] = len(t)
        return info

    def _report(self, results: dict[str, Any]) -> None:
        try:
            from omnisource.web.report import build_report

            index = build_report(self.work / "stages", self.work / "report",
                                 label_map=self.class_names(), order=list(self.stages),
                                 results_page="results.html")
            results["report"] = str(index)
        except (ImportError, AttributeError) as err:
            results["report"] = None
            results.setdefault("notes", []).append(f"web report unavailable: {err}")
        except (OmniSourceError, OSError, ValueError, RuntimeError) as err:
            results["report"] = None
            results.setdefault("notes", []).append(f"web report failed: {type(err).__name__}: {err}")
        atomic_write_text(self.work / "report" / "results.html", results_html(results))
        atomic_write_json(self.work / "results.json", results)


# ---------------------------------------------------------------------- helpers

def source_ablations(rows: list[dict[str, Any]], filtering: dict[str, dict], base_run: str = "teacher") -> dict[str, Any]:
    """Each source's own ablation (target + that source alone, ``--ablations``) against the
    baseline, written into ``filtering[src]['ablation_gain_top1']``, and the verdict the paper's
    Table 2 claims: all sources together at least as good as the best single one.

    Returns ``{'best_single_source': ..., 'all_vs_best_single_top1': ...}`` plus
    ``'warning'`` when all sources together do worse than the best single source (a source
    drags the joint result down: look at its pseudo-label precision and its own ablation)."""
    by = {r["run"]: r for r in rows if r.get("top1") is not None}
    base, stud = by.get(base_run), by.get("student")
    out: dict[str, Any] = {}
    if base is None:
        return out
    singles = {name[len("only-"):]: r["top1"] for name, r in by.items() if name.startswith("only-")}
    for src, top1 in singles.items():
        filtering.setdefault(src, {})["ablation_gain_top1"] = top1 - base["top1"]
    if singles and stud is not None:
        best = max(singles, key=lambda k: singles[k])
        out["best_single_source"] = best
        out["all_vs_best_single_top1"] = stud["top1"] - singles[best]
        if stud["top1"] < singles[best]:
            hurting = sorted(s for s, t in singles.items() if t < base["top1"])
            out["warning"] = (f"all sources together ({100 * stud['top1']:.1f}%) do worse than {best} alone "
                              f"({100 * singles[best]:.1f}%)"
                              + (f"; on its own, {', '.join(hurting)} is below the target-only baseline"
                                 if hurting else ""))
    return out


def _file_hash(path: Path) -> str | None:
    from omnisource.utils.io import sha1_file

    return sha1_file(path) if Path(path).is_file() else None


def _save_config(cfg: Any, path: Path) -> Path:
    """The run's config as a loadable recipe (teachers and tests rebuild the model from it)."""
    import yaml

    data = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    for key in ("_source", "derived"):
        data.pop(key, None)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _count_records(path: Path) -> int:
    if not Path(path).is_file():
        return 0
    from omnisource.data.annotations import iter_manifest

    return sum(1 for _ in iter_manifest(path))


def _hard_label(rec: Any) -> int | None:
    lab = rec.label
    if isinstance(lab, list):
        if not lab:
            return None
        if any(isinstance(v, float) for v in lab):     # a soft label: its argmax
            return int(max(range(len(lab)), key=lambda i: lab[i]))
        return int(lab[0])
    return None if lab is None else int(lab)


def _query_labelled(src: Path, dest: Path) -> None:
    """Copy a manifest with ``label = query_label`` (what training on raw crawls would use)."""
    from omnisource.data.annotations import ManifestWriter, iter_manifest

    recs = []
    for r in iter_manifest(src):
        if r.query_label is None:
            continue
        r.label = int(r.query_label)
        r.score = None
        recs.append(r)
    with ManifestWriter(dest) as w:
        for r in recs:
            w.write(r)


def evaluate_checkpoint(config: str, checkpoint: str, ann_file: Path, data_root: Path, preset: str,
                        preset_overrides: dict, label_map: Path,
                        report_dir: Path | None = None) -> dict[str, float]:
    """Top-1/top-5/mean-class accuracy of a trained run on a labelled list (one view per video);
    with ``report_dir``, also its per-class page (:mod:`omnisource.engine.eval_report`)."""
    import torch

    from omnisource.data.datasets import build_dataset
    from omnisource.engine import checkpoint_io as ckio
    from omnisource.engine.evaluate import compute_metrics, run_inference
    from omnisource.engine.loaders import eval_loader
    from omnisource.engine.modeling import build_model
    from omnisource.config import load_config

    cfg = load_config(config)
    model = build_model(cfg)
    state = ckio.load_training_checkpoint(checkpoint)["state_dict"]
    ckio.load_model_state(model, state, checkpoint)
    ds = build_dataset(ann_file, data_root, preset, test_mode=True, label_map=str(label_map),
                       **preset_overrides)
    loader = eval_loader(ds, 16)
    scores, labels = run_inference(model, loader, len(ds), device=torch.device("cpu"),
                                   show_progress=False)
    m = compute_metrics(scores, labels, ("top_k_accuracy", "mean_class_accuracy"), (1, 5))
    if report_dir is not None:
        from omnisource.data.annotations import read_label_map
        from omnisource.engine.eval_report import write_eval_report

        write_eval_report(report_dir, scores, labels, paths=[s.path for s in ds.samples],
                          data_root=data_root, class_names=read_label_map(label_map), average="prob",
                          metrics=m, meta={"checkpoint": checkpoint, "test list": str(ann_file),
                                           "test preset": preset})
    return {k: None if v is None else float(v) for k, v in m.items()}


def format_table(results: dict[str, Any]) -> str:
    """The paper's Table 2 shape: one row per run, top-1 / top-5 (measured)."""
    rows = results.get("table") or []
    if not rows:
        return "(no trained model was evaluated)"
    w = max(len(r["description"]) for r in rows)
    lines = [f"{'run':<{w}}  top-1   top-5", "-" * (w + 16)]
    for r in rows:
        t1 = "  n/a " if r["top1"] is None else f"{100 * r['top1']:5.1f}%"
        t5 = "  n/a " if r["top5"] is None else f"{100 * r['top5']:5.1f}%"
        lines.append(f"{r['description']:<{w}}  {t1}  {t5}")
    return "\n".join(lines)


def format_table2(results: dict[str, Any]) -> str:
    """The paper's Table 2 layout: one column per training set, cells ``top-1/top-5`` (%)."""
    rows = {r["run"]: r for r in results.get("table") or []}
    cols = [("target", "baseline" if "baseline" in rows else "teacher"), ("+web_images", "only-web_images"), ("+web_videos", "only-web_videos"),
            ("+untrimmed", "only-untrimmed"), ("+all", "student"), ("+all unfiltered", "unfiltered")]
    cols = [(h, k) for h, k in cols if k in rows]
    if not cols:
        return ""

    def cell(r: dict) -> str:
        t1 = "n/a" if r["top1"] is None else f"{100 * r['top1']:.1f}"
        t5 = "n/a" if r["top5"] is None else f"{100 * r['top5']:.1f}"
        return f"{t1}/{t5}"

    cells = [cell(rows[k]) for _, k in cols]
    widths = [max(len(h), len(c)) for (h, _), c in zip(cols, cells)]
    head = "  ".join(h.ljust(w) for (h, _), w in zip(cols, widths))
    body = "  ".join(c.ljust(w) for c, w in zip(cells, widths))
    return f"{head}\n{body}"


def results_html(results: dict[str, Any]) -> str:
    """``W/report/results.html``: the accuracy table, teacher filtering and stage status, styled
    like the other report pages, numbers rounded; links back to the web-stage report."""
    from omnisource.utils.html_report import escape, page, table

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    rows = [[r["description"], pct(r["top1"]), pct(r["top5"]), pct(r.get("mean_class_accuracy"))]
            for r in results.get("table", [])]
    filt = []
    for src, f in (results.get("filtering") or {}).items():
        prec = f.get("pseudo_label_precision")
        gain = f.get("ablation_gain_top1")
        filt.append([src, f.get("kept", ""), f.get("crawl_size", ""),
                     "" if f.get("relevant_in_crawl") is None else f"{100 * f['relevant_in_crawl']:.0f}",
                     "" if prec is None else f"{100 * prec:.0f}", "" if gain is None else f"{100 * gain:+.1f}"])
    stages = [[n, s["status"], f"{float(s.get('seconds') or 0):.1f}", s.get("reason") or ""]
              for n, s in (results.get("stages") or {}).items()]
    body = ["<h1>omnisource run: results</h1>",
            f"<p>seed {escape(results.get('seed'))}, data {escape(results.get('data'))}, "
            f"{float(results.get('seconds') or 0):.0f} s</p>"]
    if results.get("report"):
        body.append('<p><a href="index.html">web stages report</a> (counts, filtering, de-duplication, samples)</p>')
    tests = results.get("test_reports") or {}
    if tests:   # results.html sits in the work folder's report/
        body.append("<p>per-class test reports: " + ", ".join(
            f'<a href="../{escape(p)}">{escape(n)}</a>' for n, p in tests.items()) + "</p>")
    for key, label in (("omnisource_gain_top1", "OmniSource vs target only"),
                       ("unfiltered_gain_top1", "unfiltered web data vs target only")):
        if results.get(key) is not None:
            body.append(f"<p>{escape(label)}: <b>{100 * results[key]:+.1f}</b> top-1 points (measured)</p>")
    if results.get("warning"):
        body.append(f"<p style='color:#b00'><b>Warning:</b> {escape(results['warning'])}</p>")
    body += ["<h2>Accuracy on target val (measured, %)</h2>",
             table(["run", "top-1", "top-5", "mean class"], rows) if rows else "<p><i>no run was evaluated</i></p>",
             "<h2>Teacher filtering</h2>",
             table(["source", "kept", "crawled", "relevant in crawl %", "pseudo-label precision %",
                    "target + this source alone vs target (top-1 points)"], filt)
             if filt else "<p><i>no source was filtered</i></p>",
             "<h2>Stages (pipeline order)</h2>", table(["stage", "status", "seconds", "note"], stages)]
    return page("omnisource run: results", body)


def run_pipeline(work_dir: str | Path, data_dir: str | Path | None = None, config: str | Path | None = None,
                 sets: tuple[str, ...] = (), ablations: bool | None = None, world_spec: Any = None,
                 say: Callable[[str], None] = print, progress: bool | None = None) -> dict[str, Any]:
    """Python entry point of ``omnisource run``."""
    settings = load_run_settings(config, sets)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise InputError("data folder not found", file=data_dir)
    from omnisource.pipeline.release import adapt_release, is_release

    if data_dir is not None and is_release(Path(data_dir)):
        # the OmniSource release layout: our layout built beside the run (links + lists, no copies)
        say(f"{data_dir}: the OmniSource web-data release; its lists are read through {Path(work_dir) / 'release_data'}")
        data_dir = adapt_release(Path(data_dir), Path(work_dir) / "release_data")
    pipe = Pipeline(work_dir, data_dir, settings, ablations=ablations, world_spec=world_spec, say=say,
                    progress=progress)
    return pipe.run()
