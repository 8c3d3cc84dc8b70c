"""Ablation harness for joint training (issue 19): target / + each source / + all / unfiltered,
over several generated worlds and seeds, printing the mean and spread of every run.

    python benchmarks/joint_ablation.py [--worlds demo weak-teacher motion-few] [--seeds 0 1 2]
                                        [--work DIR] [--set key=value ...] [--out results.json]
                                        [--sweep key=v1,v2,...]

Each (world, seed) is one ``omnisource run --ablations`` in ``WORK/<world>/seed<N>`` (finished
stages are reused on a re-run, so an interrupted harness resumes). The worlds differ from the demo
in the ways the paper's claim depends on:

* ``demo``          the README world (8 classes, 3 pairs separable only by motion, 12 labelled
                    clips per class);
* ``weak-teacher``  8 labelled clips per class, more pixel noise and untrimmed action segments
                    shorter than a clip: a teacher near 50% top-1, so its pseudo-labels are
                    noisy, and few untrimmed windows are all action;
* ``motion-few``    4 motion-only pairs (every class shares its appearance with another) and a
                    small crawl (20 images, 30 videos, 3 untrimmed per class): few kept samples,
                    and images that cannot show what separates the classes.

``--sweep key=v1,v2`` measures one setting instead: for each value, the student (target + all
sources) is trained again in a copy of each (world, seed) folder with ``--set key=value`` (the
world, teachers and filtering are reused when the setting does not change them), and the table
is the student's top-1 per value.

Printed per world: each run's top-1 (mean +- std over seeds, in %), each source's kept count,
its pseudo-label precision against the world's truth next to the calibrated estimate the run
weighted it with, the student's batch size and loss weight for it, and the three checks of the issue: all sources
>= the best single source (within the seeds' spread), all sources >= target + 4 points where a
single source helps, unfiltered < filtered. Measured numbers only; nothing is asserted. Each
(world, seed) costs 4-5 minutes on 2 CPU cores (``--reduced``: a seconds-long smoke run).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

WORLDS: dict[str, dict[str, Any]] = {
    "demo": {},
    "weak-teacher": {"train_per_class": 8, "noise": 10.0, "segment_scale": 0.5},
    "motion-few": {"motion_pairs": 4, "web_images_per_class": 20, "web_videos_per_class": 30,
                   "untrimmed_per_class": 3},
}

RUNS = ["teacher", "only-web_images", "only-web_videos", "only-untrimmed", "student", "unfiltered"]
LABELS = {"teacher": "target only", "only-web_images": "+ web images", "only-web_videos": "+ web videos",
          "only-untrimmed": "+ untrimmed", "student": "+ all sources", "unfiltered": "+ all, unfiltered"}


def run_one(world: str, seed: int, work: Path, sets: list[str], reduced: bool, ablations: bool = True,
            folder: str | None = None) -> dict[str, Any]:
    from omnisource.pipeline.run import run_pipeline
    from omnisource.pipeline.world import WorldSpec

    knobs = dict(WORLDS[world])
    if reduced:
        from omnisource.commands.run import REDUCED_SETS

        spec = WorldSpec.reduced(seed=seed, **{k: v for k, v in knobs.items() if k in ("noise",)})
        sets = REDUCED_SETS + sets
    else:
        spec = WorldSpec(seed=seed, **knobs)
    t0 = time.time()
    res = run_pipeline(work / world / (folder or f"seed{seed}"), None, None, (f"seed={seed}", *sets),
                       ablations=ablations, world_spec=spec, say=lambda m: None, progress=False)
    top1 = {r["run"]: r["top1"] for r in res.get("table", [])}
    return {"world": world, "seed": seed, "seconds": round(time.time() - t0, 1), "top1": top1,
            "filtering": res.get("filtering", {}), "warning": res.get("warning"),
            "calibration": res.get("calibration")}


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The student's top-1 for each value of one setting, in copies of the (world, seed) folders."""
    import shutil

    key, _, values = args.sweep.partition("=")
    if not key or not values:
        raise SystemExit("--sweep expects key=v1,v2,...")
    results = []
    for world in args.worlds:
        for seed in args.seeds:
            base = Path(args.work) / world / f"seed{seed}"
            for v in values.split(","):
                folder = f"seed{seed}-sweep-{key}={v}"
                dest = Path(args.work) / world / folder
                if not dest.exists() and (base / "results.json").is_file():
                    shutil.copytree(base, dest, ignore=shutil.ignore_patterns(".lock*"))
                r = run_one(world, seed, Path(args.work), list(args.sets) + [f"{key}={v}"], args.reduced,
                            ablations=False, folder=folder)
                r["value"] = v
                results.append(r)
                print(f"{world} seed {seed} {key}={v}: student {100 * (r['top1'].get('student') or 0):.1f}, "
                      f"target only {100 * (r['top1'].get('teacher') or 0):.1f} ({r['seconds']:.0f} s)", flush=True)
    print()
    for world in args.worlds:
        print(f"world {world}: {key}")
        for v in values.split(","):
            rs = [r for r in results if r["world"] == world and r["value"] == v]
            st = [100 * r["top1"]["student"] for r in rs if r["top1"].get("student") is not None]
            te = [100 * r["top1"]["teacher"] for r in rs if r["top1"].get("teacher") is not None]
            if st:
                m, sd = _ms(st)
                print(f"  {key}={v:<12} student {m:5.1f} +- {sd:4.1f}   (target only {_ms(te)[0]:5.1f}; "
                      f"{len(st)} seed(s))")
    return results


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: list[dict[str, Any]]) -> str:
    lines = []
    for world in dict.fromkeys(r["world"] for r in results):
        rs = [r for r in results if r["world"] == world]
        lines.append(f"world {world}: {len(rs)} seed(s) ({', '.join(str(r['seed']) for r in rs)}); "
                     f"{sum(r['seconds'] for r in rs):.0f} s")
        stats = {}
        for run in RUNS:
            vals = [100 * r["top1"][run] for r in rs if r["top1"].get(run) is not None]
            if vals:
                stats[run] = _ms(vals)
                lines.append(f"  {LABELS[run]:<20} {stats[run][0]:5.1f} +- {stats[run][1]:4.1f}")
        for src in ("web_images", "web_videos", "untrimmed"):
            kept = [r["filtering"][src]["kept"] for r in rs if src in r["filtering"]]
            prec = [r["filtering"][src].get("pseudo_label_precision") for r in rs if src in r["filtering"]]
            prec = [100 * p for p in prec if p is not None]
            est = [100 * r["filtering"][src]["estimated_precision"] for r in rs
                   if r["filtering"].get(src, {}).get("estimated_precision") is not None]
            bsz = [r["filtering"][src]["student_batch_size"] for r in rs
                   if r["filtering"].get(src, {}).get("student_batch_size") is not None]
            lw = [r["filtering"][src]["student_loss_weight"] for r in rs
                  if r["filtering"].get(src, {}).get("student_loss_weight") is not None]
            if kept:
                lines.append(f"  {src:<20} kept {statistics.mean(kept):6.1f}; pseudo-label precision "
                             + (f"{statistics.mean(prec):.0f}%" if prec else "n/a")
                             + (f" (calibrated estimate {statistics.mean(est):.0f}%)" if est else "")
                             + (f"; student batch {statistics.mean(bsz):.1f}, loss weight {statistics.mean(lw):.2f}"
                                if bsz and lw else ""))
        cals = [r["calibration"] for r in rs if r.get("calibration")]
        for key in ("video_ensemble", "video_teacher", "image"):
            acc = [100 * c[key]["accuracy"] for c in cals if key in c]
            thr = [c[key]["threshold"] for c in cals if key in c and c[key].get("threshold") is not None]
            if acc:
                lines.append(f"  calibration {key:<15} held-out top-1 {statistics.mean(acc):4.0f}%; threshold "
                             + (f"{statistics.mean(thr):.2f}" if thr else "n/a"))
        singles = {k: v for k, v in stats.items() if k.startswith("only-")}
        if "student" in stats and "teacher" in stats and singles:
            best = max(singles, key=lambda k: singles[k][0])
            spread = max(stats["student"][1], singles[best][1])
            ok1 = stats["student"][0] >= singles[best][0] - spread
            helps = any(v[0] > stats["teacher"][0] for v in singles.values())
            ok2 = (not helps) or stats["student"][0] >= stats["teacher"][0] + 4
            ok3 = "unfiltered" not in stats or stats["unfiltered"][0] < stats["student"][0]
            lines.append(f"  all >= best single ({LABELS[best]}) within spread: {'yes' if ok1 else 'NO'}; "
                         f"all >= target + 4 where a source helps: {'yes' if ok2 else 'NO'}; "
                         f"unfiltered < filtered: {'yes' if ok3 else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--work", default="work_dirs/joint_ablation", help="one run folder per world and seed")
    ap.add_argument("--set", dest="sets", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="run settings applied to every run (omnisource run --set)")
    ap.add_argument("--reduced", action="store_true", help="tiny worlds and short training (smoke test)")
    ap.add_argument("--out", default=None, help="write every run's numbers as JSON")
    ap.add_argument("--sweep", default=None, metavar="KEY=V1,V2",
                    help="the student's top-1 for each value of one run setting (after the ablation runs)")
    args = ap.parse_args(argv)
    import logging
    from omnisource.engine.hardware import cpu_name

    # the web stages log their first drops one by one; the runs count them in their meta.json
    logging.getLogger("omnisource.web").setLevel(logging.ERROR)

    print(f"joint ablation harness: worlds {args.worlds}, seeds {args.seeds}; CPU {cpu_name()}",
          flush=True)
    if args.sweep:
        results = sweep(args)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    results = []
    for world in args.worlds:
        for seed in args.seeds:
            r = run_one(world, seed, Path(args.work), list(args.sets), args.reduced)
            results.append(r)
            t = r["top1"]
            print(f"{world} seed {seed}: " + ", ".join(f"{LABELS[k]} {100 * t[k]:.1f}" for k in RUNS
                                                      if t.get(k) is not None) + f" ({r['seconds']:.0f} s)",
                  flush=True)
    print()
    print(summarise(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
