"""De-duplication speed and recall: N random web features against M target features (default
1M vs 20K, 2048-d), as ``omnisource dedup`` does it once the features exist:

1. fit PCA-whitening on the target features (streaming covariance + eigendecomposition),
   keeping the leading ``--pca-dim`` directions (default: ``DedupSettings.pca_dim``, 256;
   ``full`` keeps all);
2. whiten + L2-normalise the targets, build the index (faiss IVF over the targets by default);
3. calibrate the threshold as the stage does: mean similarity between "crops" of the same
   target frame, in the same projected space (a crop = the target feature + relative noise);
4. stream the web features in chunks: project (float32 blocks) and search every web row against
   the targets; candidates are re-scored exactly and turned into pairs.

Timed: 1-4 (the TOTAL). Not timed: making the random web rows (a pool of random rows,
shuffled and with per-dimension sign flips per chunk: every chunk differs, memory stays flat).

Recall: ``--planted`` web rows are noisy copies of target rows (same noise level as the crops).
The exact answer (blocked torch search against all targets, re-scored in float64) is computed
for the planted rows and ``--check`` other random web rows; the report gives how many planted
copies the exact search and each backend find, and each backend's pair recall against the
exact pairs on those rows.

    python benchmarks/dedup.py                                  # 1M x 20K, 256 dims, faiss IVF
    python benchmarks/dedup.py --n 100000 --backends faiss-ivf,faiss,torch
    python benchmarks/dedup.py --pca-dim full --n 50000
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from typing import Iterator

import numpy as np


def _pca_dim(text: str) -> int | None:
    return None if text in ("full", "0") else int(text)


def _noisy(rows: np.ndarray, scales: np.ndarray, rel: float, rng: np.random.Generator) -> np.ndarray:
    """Copies of ``rows`` plus Gaussian noise shaped like the data, ``rel`` x the row norm."""
    noise = rng.standard_normal(rows.shape, dtype=np.float32) * scales
    noise *= (rel * np.linalg.norm(rows, axis=1) / np.linalg.norm(noise, axis=1))[:, None]
    return rows + noise


class Clock:
    """Wall and process CPU seconds (all threads) per named step, summed over calls.

    CPU seconds say what a step costs independently of the machine's load: on a shared 2-core
    machine the wall time of a loaded run can be several times what an idle one would take.
    """

    def __init__(self) -> None:
        self._t: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            acc = self._t.setdefault(name, [0.0, 0.0])
            acc[0] += time.perf_counter() - w
            acc[1] += time.process_time() - c

    def get(self, name: str) -> tuple[float, float]:
        return tuple(self._t.get(name, (0.0, 0.0)))  # type: ignore[return-value]

    def items(self) -> list[tuple[str, tuple[float, float]]]:
        return [(k, (v[0], v[1])) for k, v in self._t.items()]


def main(argv: list[str] | None = None) -> int:
    from omnisource.web.dedup import DedupSettings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="web features (default 1M)")
    ap.add_argument("--m", type=int, default=20_000, help="target features (default 20K)")
    ap.add_argument("--dim", type=int, default=2048, help="feature dimension (default 2048)")
    ap.add_argument("--pca-dim", type=_pca_dim, default=DedupSettings.pca_dim,
                    help=f"whitened dimensions kept (default {DedupSettings.pca_dim}; 'full' = all)")
    ap.add_argument("--chunk", type=int, default=50_000, help="web rows per chunk (default 50K)")
    ap.add_argument("--noise", type=float, default=0.5,
                    help="relative noise of crops and planted copies (default 0.5)")
    ap.add_argument("--crop-frames", type=int, default=DedupSettings.threshold_frames)
    ap.add_argument("--num-crops", type=int, default=DedupSettings.num_crops)
    ap.add_argument("--planted", type=int, default=1000, help="near-duplicates planted among the web rows")
    ap.add_argument("--check", type=int, default=20_000, help="other web rows checked against exact search")
    ap.add_argument("--backends", default="faiss-ivf",
                    help="comma list of faiss-ivf[:LISTS:NPROBE] | faiss | torch (default faiss-ivf; "
                         "the exact ones take minutes at 1M)")
    ap.add_argument("--ivf-lists", type=int, default=1024,
                    help="IVF lists over the targets for a plain faiss-ivf (default 1024: ~20 targets a list)")
    ap.add_argument("--nprobe", type=int, default=8, help="lists probed per web row (default 8)")
    args = ap.parse_args(argv)

    import torch

    from omnisource.web.similarity import (CovarianceAccumulator, SimilarityIndex, aggregate_pairs, crop_similarity,
                                           faiss_available, fit_whitening, l2_normalize)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if any(b.startswith("faiss") for b in backends) and not faiss_available():
        print("faiss not installed: skipping the faiss backends")
        backends = [b for b in backends if not b.startswith("faiss")]
    print(f"{args.n} web x {args.m} target features, {args.dim}-d -> {args.pca_dim or 'all'} whitened dims; "
          f"cpu cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load {os.getloadavg()}")

    rng = np.random.default_rng(0)
    # anisotropic features (a few strong directions, like CNN features) so whitening matters
    scales = np.linspace(3.0, 0.3, args.dim).astype(np.float32)
    targets = rng.standard_normal((args.m, args.dim), dtype=np.float32) * scales
    crop_src = rng.choice(args.m, size=min(args.crop_frames, args.m), replace=False)
    crops = _noisy(np.repeat(targets[crop_src], args.num_crops, axis=0), scales, args.noise, rng)
    clock = Clock()

    with clock("whitening fit"):
        acc = CovarianceAccumulator(args.dim)
        for part in np.array_split(targets, max(1, args.m // 5000)):
            acc.update(l2_normalize(part))
        wh = fit_whitening(acc, dim=args.pca_dim)
    with clock("whiten targets + threshold"):
        tw = wh.apply(targets)
        threshold = crop_similarity(wh.apply(crops), args.num_crops)[0]
    print(f"whitening keeps {wh.out_dim} dims; crop threshold {threshold:.4f} "
          f"({len(crop_src)} frames x {args.num_crops} crops, noise {args.noise})")

    indexes = {}
    for b in backends:
        with clock(f"{b} build"):
            if b == "faiss":
                indexes[b] = SimilarityIndex(tw, backend="faiss")
            elif b.startswith("faiss-ivf"):
                lists, nprobe = (int(x) for x in b.split(":")[1:3]) if ":" in b else (args.ivf_lists, args.nprobe)
                indexes[b] = SimilarityIndex(tw, backend="faiss", ivf_lists=lists, nprobe=nprobe)
            elif b == "torch":
                indexes[b] = SimilarityIndex(tw, backend="torch")
            else:
                raise SystemExit(f"unknown backend {b!r}")

    exact = SimilarityIndex(tw, backend="torch")   # blocked float32 matmul + float64 re-scoring
    n_planted = min(args.planted, args.n)
    special = rng.choice(args.n, size=min(args.n, n_planted + args.check), replace=False)
    planted = dict(zip(special[:n_planted].tolist(), rng.integers(0, args.m, size=n_planted).tolist()))
    checked = set(special.tolist())
    pool = rng.standard_normal((min(args.chunk, args.n), args.dim), dtype=np.float32) * scales
    found: dict[str, set] = {b: set() for b in backends}          # (web row, target row) on checked rows
    n_pairs = {b: 0 for b in backends}
    exact_pairs: set[tuple[int, int]] = set()
    for c0 in range(0, args.n, args.chunk):
        c1 = min(args.n, c0 + args.chunk)
        with clock("feature generation (not counted)"):
            crng = np.random.default_rng([1, c0])
            signs = np.where(crng.random(args.dim) < 0.5, -1, 1).astype(np.float32)
            web = pool[crng.permutation(len(pool))[: c1 - c0]] * signs
            rows = sorted(r - c0 for r in planted if c0 <= r < c1)
            if rows:
                web[rows] = _noisy(targets[[planted[r + c0] for r in rows]], scales, args.noise, crng)
        with clock("project web rows"):
            q = wh.apply(web)
        local = np.array(sorted(r - c0 for r in checked if c0 <= r < c1), dtype=np.int64)
        owner = np.arange(len(q))
        for b, idx in indexes.items():
            with clock(f"{b} search+pairs"):
                qi, ti, sims, _best = idx.search(q, threshold)
                pairs = aggregate_pairs(qi, ti, sims, owner, np.arange(len(tw)))
            n_pairs[b] += len(pairs)
            found[b] |= {(w + c0, t) for (w, t) in pairs if w + c0 in checked}
        with clock("exact reference (not counted)"):
            if local.size:
                w, t, _, _ = exact.search(q[local], threshold)
                exact_pairs |= {(int(local[i]) + c0, int(j)) for i, j in zip(w, t)}
        print(f"  {c1}/{args.n} web rows ...", end="\r", file=sys.stderr)
    print(file=sys.stderr)

    print("step                               wall s    cpu s   (cpu s = all threads; 2 idle cores: wall >= cpu/2)")
    for name, (wall, cpu) in clock.items():
        print(f"  {name:32s} {wall:7.1f}  {cpu:7.1f}")
    shared = ("whitening fit", "whiten targets + threshold", "project web rows")
    planted_pairs = set(planted.items())
    print(f"exact (blocked torch search, float64 re-scored) on {len(checked)} checked rows: {len(exact_pairs)} "
          f"pairs, planted found {len(planted_pairs & exact_pairs)}/{len(planted_pairs)}")
    for b in backends:
        steps = shared + (f"{b} build", f"{b} search+pairs")
        wall, cpu = (sum(clock.get(k)[j] for k in steps) for j in (0, 1))
        rec = len(found[b] & exact_pairs) / max(1, len(exact_pairs))
        print(f"{b:16s} TOTAL {wall:6.1f}s wall ({cpu:6.1f} cpu-s)  pairs {n_pairs[b]}  planted found "
              f"{len(planted_pairs & found[b])}/{len(planted_pairs)}  recall vs exact {rec:.4f}  "
              f"extra {len(found[b] - exact_pairs)}" + ("   (approximate)" if b.startswith("faiss-ivf") else ""))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
