"""Similarity math for content-based de-duplication: PCA-whitening and thresholded search.

Kept free of I/O and models so that it is easy to test and benchmark on random features.

Why whitening: raw CNN features share a few dominant directions (every natural image activates
them), which pushes the cosine similarity of *unrelated* images up and makes one threshold
meaningless. PCA-whitening fitted on the target set equalises the variance of all directions,
so after L2 normalisation the cosine measures content agreement (Jegou & Chum, ECCV 2012; the
OmniSource paper, section 3.3). The fit streams: only the ``D x D`` second-moment matrix is
kept, so memory does not grow with the number of target frames.

Why "candidates with slack, then exact re-scoring": faiss and torch compute dot products with
different BLAS kernels, so a pair whose similarity lies within ~1e-6 of the threshold may be
kept by one and dropped by the other. Both backends therefore only *propose* candidates above
``threshold - slack``; every candidate is re-scored in float64 and the same comparison decides.
That makes the faiss and the exact backend return identical pairs, and it keeps an approximate
faiss index (IVF) from reporting different scores than the exact one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from omnisource.errors import ConfigError

log = logging.getLogger("omnisource.web.similarity")

#: candidates are proposed above ``threshold - SLACK`` and decided after float64 re-scoring
SLACK = 1e-3


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    # einsum: no squared copy of the input (np.linalg.norm makes one; slow for wide rows)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x / np.maximum(norm, eps)


class CovarianceAccumulator:
    """Streaming mean and covariance (float64) of L2-normalised feature rows."""

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.n = 0
        self.sum = np.zeros(self.dim, dtype=np.float64)
        self.outer = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape [N, {self.dim}], got {list(x.shape)}")
        # the D x D product of one chunk in float32 (BLAS sgemm: ~2x faster than double; rows are
        # unit vectors, so a chunk's sum loses nothing that matters), accumulated in float64
        for i in range(0, x.shape[0], 8192):
            part = np.ascontiguousarray(x[i:i + 8192], dtype=np.float32)
            self.n += part.shape[0]
            self.sum += part.sum(0, dtype=np.float64)
            self.outer += (part.T @ part).astype(np.float64)

    def finalize(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"whitening needs at least 2 target features, got {self.n}")
        mean = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        return mean, (cov + cov.T) / 2


@dataclass
class Whitening:
    """``y = normalize((normalize(x) - mean) @ proj)``; ``proj`` is ``[D, d]``."""

    mean: np.ndarray
    proj: np.ndarray
    eigenvalues: np.ndarray

    @property
    def in_dim(self) -> int:
        return int(self.proj.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.proj.shape[1])

    def apply(self, x: np.ndarray, block: int = 16384) -> np.ndarray:
        """Whiten and L2-normalise rows of raw features ``[N, D]`` -> ``[N, d]`` float32.

        Computed as ``(x @ P) / |x| - mean @ P`` (equal to ``(x/|x| - mean) @ P``): one pass
        over the wide ``[N, D]`` input instead of three, which matters for millions of rows.
        Runs in float32 blocks of ``block`` rows through torch: the temporaries stay small
        whatever ``N`` is, and torch's row norm is ~20x faster than ``np.linalg.norm``'s
        (which squares the whole input into a temporary first).
        """
        import torch

        x = np.ascontiguousarray(x, dtype=np.float32)      # torch.from_numpy: no negative strides
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"features have {x.shape[-1]} dims, the whitening was fitted on {self.in_dim}")
        proj = torch.from_numpy(np.ascontiguousarray(self.proj, dtype=np.float32))
        shift = torch.from_numpy(self.mean.astype(np.float32)) @ proj
        out = np.empty((x.shape[0], self.out_dim), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, x.shape[0], block):
                xb = torch.from_numpy(x[i:i + block])
                norm = torch.linalg.vector_norm(xb, dim=1, keepdim=True).clamp_min_(1e-12)
                y = (xb @ proj).div_(norm).sub_(shift)
                y.div_(torch.linalg.vector_norm(y, dim=1, keepdim=True).clamp_min_(1e-12))
                out[i:i + block] = y.numpy()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "proj": self.proj, "eigenvalues": self.eigenvalues}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Whitening":
        return cls(np.asarray(state["mean"]), np.asarray(state["proj"]), np.asarray(state["eigenvalues"]))


def fit_whitening(acc_or_features: CovarianceAccumulator | np.ndarray, dim: int | None = None,
                  rel_eps: float = 1e-6, reg: float = 1e-3) -> Whitening:
    """Fit PCA-whitening on target features (raw rows, or a filled accumulator).

    ``dim``: keep at most this many principal directions (None: all that are not degenerate).
    Directions whose eigenvalue is below ``rel_eps * largest`` carry no information (fewer
    target frames than feature dims) and are dropped; ``reg * largest`` is added to every
    eigenvalue before the inverse square root so that tiny directions do not amplify noise.
    """
    if isinstance(acc_or_features, CovarianceAccumulator):
        acc = acc_or_features
    else:
        feats = np.asarray(acc_or_features)
        acc = CovarianceAccumulator(feats.shape[1])
        acc.update(l2_normalize(feats))
    mean, cov = acc.finalize()
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    top = max(float(evals[0]), 1e-30)
    keep = int(np.sum(evals > rel_eps * top))
    keep = max(1, min(keep, acc.n - 1))
    if dim is not None:
        keep = min(keep, int(dim))
    evals, evecs = evals[:keep], evecs[:, :keep]
    # deterministic signs (eigh may flip a vector between BLAS builds; cosine does not care,
    # but saved artefacts should be reproducible)
    signs = np.sign(evecs[np.abs(evecs).argmax(0), np.arange(keep)])
    signs[signs == 0] = 1
    evecs = evecs * signs
    proj = evecs / np.sqrt(np.maximum(evals, 0) + reg * top)
    return Whitening(mean=mean.astype(np.float32), proj=proj.astype(np.float32),
                     eigenvalues=evals.astype(np.float32))


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class SimilarityIndex:
    """Thresholded inner-product search of query rows against a fixed set of target rows.

    ``backend``: 'faiss' (IndexFlatIP, or IVF when ``ivf_lists > 0``: approximate, faster),
    'torch' (exact blocked matmul, no extra dependency) or 'auto' (faiss when importable).
    Rows must already be whitened and L2-normalised (see :class:`Whitening`).
    """

    def __init__(self, targets: np.ndarray, backend: str = "auto", ivf_lists: int = 0,
                 nprobe: int = 8, block: int = 4096, seed: int = 0):
        self.targets = np.ascontiguousarray(targets, dtype=np.float32)
        if self.targets.ndim != 2 or self.targets.shape[0] == 0:
            raise ValueError("the target index needs at least one feature row")
        if backend == "auto":
            backend = "faiss" if faiss_available() else "torch"
        if backend not in ("faiss", "torch"):
            raise ValueError(f"unknown search backend {backend!r} (faiss | torch | auto)")
        if backend == "torch" and ivf_lists:
            raise ValueError("an IVF index needs the faiss backend (pip install faiss-cpu)")
        self.backend = backend
        self.block = int(block)
        self._index = None
        if backend == "faiss":
            import faiss  # lazy: faiss is an optional extra

            d = self.targets.shape[1]
            rows = self.targets.shape[0]
            if ivf_lists and ivf_lists > rows:
                # faiss would stop deep inside its k-means (a C++ assertion): say what to change
                raise ConfigError(f"ivf_lists={int(ivf_lists)} needs at least that many target feature rows "
                                  f"to train its lists, but the target index has {rows}: use "
                                  f"ivf_lists <= {max(rows // 39, 1)} (faiss wants ~39 rows per list) or 0 "
                                  f"for the exact index")
            if ivf_lists and ivf_lists > 0:
                quantizer = faiss.IndexFlatIP(d)
                index = faiss.IndexIVFFlat(quantizer, d, int(ivf_lists), faiss.METRIC_INNER_PRODUCT)
                index.cp.seed = seed
                index.train(self.targets)
                index.nprobe = int(nprobe)
                self._quantizer = quantizer  # keep alive alongside the index
            else:
                index = faiss.IndexFlatIP(d)
            index.add(self.targets)
            self._index = index
        else:
            import torch

            self._targets_t = torch.from_numpy(self.targets)

    @property
    def exact(self) -> bool:
        return self.backend == "torch" or type(self._index).__name__ == "IndexFlatIP"

    def _candidates(self, queries: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query rows, target rows) with inner product > ``radius``, and every query's best score."""
        if self.backend == "faiss":
            # nearest neighbour first: duplicates are rare, so the range search only runs on the
            # few query rows whose best match can pass (faiss keeps inner products > radius)
            best = self._index.search(queries, 1)[0][:, 0].astype(np.float64)
            rows = np.nonzero(best > radius)[0]
            if rows.size == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.int64), best
            lims, _dist, ids = self._index.range_search(np.ascontiguousarray(queries[rows]), float(radius))
            counts = np.diff(lims.astype(np.int64))
            qi = np.repeat(rows.astype(np.int64), counts)
            return qi, ids.astype(np.int64), best
        import torch

        q_all = torch.from_numpy(queries)
        best = np.full(queries.shape[0], -np.inf, dtype=np.float64)
        qis, tis = [], []
        tblock = max(1, (1 << 26) // max(1, self.block))  # ~256 MB of float32 scores per block pair
        for q0 in range(0, queries.shape[0], self.block):
            q = q_all[q0:q0 + self.block]
            for t0 in range(0, self.targets.shape[0], tblock):
                sims = q @ self._targets_t[t0:t0 + tblock].T
                rowmax = sims.max(dim=1).values
                np.maximum(best[q0:q0 + q.shape[0]], rowmax.double().numpy(), out=best[q0:q0 + q.shape[0]])
                rows = (rowmax > radius).nonzero()[:, 0]
                if rows.numel() == 0:
                    continue
                hit = (sims[rows] > radius).nonzero()
                qis.append(rows[hit[:, 0]].numpy() + q0)
                tis.append(hit[:, 1].numpy() + t0)
        if not qis:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), best
        return np.concatenate(qis).astype(np.int64), np.concatenate(tis).astype(np.int64), best

    def search(self, queries: np.ndarray, threshold: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All (query row, target row, similarity) with similarity >= ``threshold``, plus the
        best similarity of every query row (approximate with IVF).

        Pairs are sorted by query row then target row; their similarities re-scored in float64.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.targets.shape[1]:
            raise ValueError(f"queries must be [N, {self.targets.shape[1]}], got {list(queries.shape)}")
        empty = np.zeros(0, np.int64)
        if queries.shape[0] == 0:
            return empty, empty, np.zeros(0, np.float64), np.zeros(0, np.float64)
        qi, ti, best = self._candidates(queries, threshold - SLACK)
        if qi.size == 0:
            return qi, ti, np.zeros(0, np.float64), best
        sims = np.einsum("ij,ij->i", queries[qi].astype(np.float64), self.targets[ti].astype(np.float64))
        keep = sims >= threshold
        qi, ti, sims = qi[keep], ti[keep], sims[keep]
        order = np.lexsort((ti, qi))
        return qi[order], ti[order], sims[order], best


def aggregate_pairs(qi: np.ndarray, ti: np.ndarray, sims: np.ndarray, query_owner: np.ndarray,
                    target_owner: np.ndarray) -> dict[tuple[int, int], tuple[float, int, int]]:
    """Frame pairs -> record pairs, keeping the best frame pair (max similarity).

    Returns ``{(query_record, target_record): (similarity, query_row, target_row)}``; a video
    is a suspected duplicate of a target video when *any* pair of their frames matches.
    """
    out: dict[tuple[int, int], tuple[float, int, int]] = {}
    for q, t, s in zip(qi.tolist(), ti.tolist(), sims.tolist()):
        key = (int(query_owner[q]), int(target_owner[t]))
        best = out.get(key)
        if best is None or s > best[0]:
            out[key] = (float(s), int(q), int(t))
    return out


def crop_similarity(features: np.ndarray, num_crops: int) -> tuple[float, float, np.ndarray]:
    """Mean cosine similarity between different crops of the same frame.

    ``features``: whitened, normalised rows grouped as ``[frame0 crop0..cropK-1, frame1 ...]``.
    Returns (mean over all same-frame crop pairs, their std, per-frame means).
    """
    if num_crops < 2:
        raise ValueError("the crop threshold needs at least 2 crops per frame")
    f = np.asarray(features, dtype=np.float64)
    if f.shape[0] % num_crops:
        raise ValueError(f"{f.shape[0]} crop features are not a multiple of {num_crops} crops")
    f = f.reshape(-1, num_crops, f.shape[1])
    gram = np.einsum("nkd,nld->nkl", f, f)
    iu = np.triu_indices(num_crops, k=1)
    pair_sims = gram[:, iu[0], iu[1]]  # [frames, pairs]
    return float(pair_sims.mean()), float(pair_sims.std()), pair_sims.mean(1)
