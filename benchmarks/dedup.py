"""De-duplication speed: N random web features against M target features (default 1M vs 20K,
2048-d), as ``omnisource dedup`` does it after feature extraction:

1. fit PCA-whitening on the target features (streaming covariance, eigendecomposition);
2. whiten + L2-normalise the targets, build the index;
3. stream the web features in chunks: whiten, search every web row against the targets with
   the threshold (pairs re-scored exactly), keep every query's best similarity.

Backends: faiss flat (exact), faiss IVF (approximate), torch exact (blocked matmul). Web
features are made chunk by chunk (not timed; memory stays flat) from a pool of random rows,
shuffled and with random per-dimension sign flips (cheap, and every chunk differs), with planted
near-duplicates of target rows, so the benchmark also checks that every planted pair is found.

    python benchmarks/dedup.py                          # 1M vs 20K, 2048-d -> 128 whitened dims
    python benchmarks/dedup.py --n 100000 --backends faiss,torch
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="web features (default 1M)")
    ap.add_argument("--m", type=int, default=20_000, help="target features (default 20K)")
    ap.add_argument("--dim", type=int, default=2048, help="feature dimension (default 2048)")
    ap.add_argument("--pca-dim", type=int, default=128, help="whitened dimensions (default 128)")
    ap.add_argument("--chunk", type=int, default=50_000, help="web rows per chunk (default 50K)")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--planted", type=int, default=200, help="near-duplicates planted among the web rows")
    ap.add_argument("--backends", default="faiss,faiss-ivf,torch",
                    help="comma list of faiss | faiss-ivf | torch (default all)")
    ap.add_argument("--ivf-lists", type=int, default=256)
    ap.add_argument("--nprobe", type=int, default=8)
    args = ap.parse_args(argv)

    import torch

    from omnisource.web.similarity import (CovarianceAccumulator, SimilarityIndex, faiss_available, fit_whitening,
                                           l2_normalize)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if any(b.startswith("faiss") for b in backends) and not faiss_available():
        print("faiss not installed: skipping the faiss backends")
        backends = [b for b in backends if not b.startswith("faiss")]
    print(f"{args.n} web x {args.m} target features, {args.dim}-d -> {args.pca_dim} whitened dims, "
          f"threshold {args.threshold}; cpu cores {os.cpu_count()}, torch threads {torch.get_num_threads()}")

    rng = np.random.default_rng(0)
    # anisotropic features (a few strong directions, like CNN features) so whitening matters
    scales = np.linspace(3.0, 0.3, args.dim).astype(np.float32)
    targets = rng.standard_normal((args.m, args.dim), dtype=np.float32) * scales
    t0 = time.perf_counter()
    acc = CovarianceAccumulator(args.dim)
    for part in np.array_split(targets, max(1, args.m // 5000)):
        acc.update(l2_normalize(part))
    wh = fit_whitening(acc, dim=args.pca_dim)
    t_white = time.perf_counter() - t0
    t0 = time.perf_counter()
    tw = wh.apply(targets)
    t_tw = time.perf_counter() - t0

    indexes = {}
    t_build = {}
    for b in backends:
        t0 = time.perf_counter()
        if b == "faiss":
            indexes[b] = SimilarityIndex(tw, backend="faiss")
        elif b == "faiss-ivf":
            indexes[b] = SimilarityIndex(tw, backend="faiss", ivf_lists=args.ivf_lists, nprobe=args.nprobe)
        elif b == "torch":
            indexes[b] = SimilarityIndex(tw, backend="torch")
        else:
            raise SystemExit(f"unknown backend {b!r}")
        t_build[b] = time.perf_counter() - t0

    planted_rows = set(rng.choice(args.n, size=min(args.planted, args.n), replace=False).tolist())
    pool = rng.standard_normal((min(args.chunk, args.n), args.dim), dtype=np.float32) * scales
    t_search = {b: 0.0 for b in backends}
    found = {b: 0 for b in backends}
    pairs = {b: 0 for b in backends}
    t_whiten_web = 0.0
    t_gen = 0.0
    for c0 in range(0, args.n, args.chunk):
        c1 = min(args.n, c0 + args.chunk)
        g0 = time.perf_counter()
        crng = np.random.default_rng([1, c0])
        signs = np.where(crng.random(args.dim) < 0.5, -1, 1).astype(np.float32)
        web = pool[crng.permutation(len(pool))[: c1 - c0]] * signs
        rows = sorted(r - c0 for r in planted_rows if c0 <= r < c1)
        src = crng.integers(0, args.m, size=len(rows))
        if rows:
            web[rows] = targets[src] + 0.05 * crng.standard_normal((len(rows), args.dim), dtype=np.float32) * scales
        t_gen += time.perf_counter() - g0
        t0 = time.perf_counter()
        q = wh.apply(web)
        t_whiten_web += time.perf_counter() - t0
        for b, idx in indexes.items():
            t0 = time.perf_counter()
            qi, ti, sims, best = idx.search(q, args.threshold)
            t_search[b] += time.perf_counter() - t0
            pairs[b] += len(qi)
            hit = set(zip(qi.tolist(), ti.tolist()))
            found[b] += sum((r, int(s)) in hit for r, s in zip(rows, src))
        done = c1
        print(f"  {done}/{args.n} web rows ...", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    common = t_white + t_tw + t_whiten_web
    print(f"whitening fit {t_white:.1f}s, whiten targets {t_tw:.1f}s, whiten web rows {t_whiten_web:.1f}s "
          f"(shared by all backends); feature generation {t_gen:.1f}s (not counted)")
    for b in backends:
        total = common + t_build[b] + t_search[b]
        print(f"{b:10s} build {t_build[b]:6.1f}s  search {t_search[b]:7.1f}s  TOTAL {total:7.1f}s  "
              f"pairs {pairs[b]}  planted found {found[b]}/{len(planted_rows)}"
              + ("   (approximate)" if b == "faiss-ivf" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
