"""Ablation harness for joint training (issue 19): target / + each source / + all / unfiltered,
over several generated worlds and seeds, printing the mean and spread of every run.

    python benchmarks/joint_ablation.py [--worlds demo weak-teacher motion-few] [--seeds 0 1 2]
                                        [--work DIR] [--set key=value ...] [--out results.json]

Each (world, seed) is one ``omnisource run --ablations`` in ``WORK/<world>/seed<N>`` (finished
stages are reused on a re-run, so an interrupted harness resumes). The worlds differ from the demo
in the ways the paper's claim depends on:

* ``demo``          the README world (8 classes, 3 pairs separable only by motion, 12 labelled
                    clips per class);
* ``weak-teacher``  6 labelled clips per class and twice the pixel noise: a teacher near 50% top-1,
                    so its pseudo-labels are noisy;
* ``motion-few``    4 motion-only pairs (every class shares its appearance with another) and a
                    small crawl (20 images, 30 videos, 3 untrimmed per class): few kept samples,
                    and images that cannot show what separates the classes.

Printed per world: each run's top-1 (mean +- std over seeds, in %), each source's kept count and
pseudo-label precision against the world's truth, and the three checks of the issue: all sources
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
    "weak-teacher": {"train_per_class": 6, "noise": 12.0},
    "motion-few": {"motion_pairs": 4, "web_images_per_class": 20, "web_videos_per_class": 30,
                   "untrimmed_per_class": 3},
}

RUNS = ["teacher", "only-web_images", "only-web_videos", "only-untrimmed", "student", "unfiltered"]
LABELS = {"teacher": "target only", "only-web_images": "+ web images", "only-web_videos": "+ web videos",
          "only-untrimmed": "+ untrimmed", "student": "+ all sources", "unfiltered": "+ all, unfiltered"}


def run_one(world: str, seed: int, work: Path, sets: list[str], reduced: bool) -> dict[str, Any]:
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
    res = run_pipeline(work / world / f"seed{seed}", None, None, (f"seed={seed}", *sets), ablations=True,
                       world_spec=spec, say=lambda m: None, progress=False)
    top1 = {r["run"]: r["top1"] for r in res.get("table", [])}
    return {"world": world, "seed": seed, "seconds": round(time.time() - t0, 1), "top1": top1,
            "filtering": res.get("filtering", {}), "warning": res.get("warning")}


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
            if kept:
                lines.append(f"  {src:<20} kept {statistics.mean(kept):6.1f}; pseudo-label precision "
                             + (f"{statistics.mean(prec):.0f}%" if prec else "n/a"))
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
    args = ap.parse_args(argv)
    import logging
    import platform

    # the web stages log their first drops one by one; the runs count them in their meta.json
    logging.getLogger("omnisource.web").setLevel(logging.ERROR)

    print(f"joint ablation harness: worlds {args.worlds}, seeds {args.seeds}; CPU {platform.processor() or platform.machine()}",
          flush=True)
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
