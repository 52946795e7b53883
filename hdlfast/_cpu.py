"""Blocked exact top-k on the CPU, shared by the native and numba backends.

Tiles of the similarity matrix are BLAS products (numpy matmul, which releases the GIL and
uses every core); the backend's merge kernel folds each tile into per-row running top-k heaps.
For a self-graph only tiles on and above the block diagonal are multiplied: each off-diagonal
tile is merged once by rows and once by columns, halving the matrix-product work.
Peak extra memory: one tile (``memory_budget`` bytes) plus the normalised copy of the data.
"""
from __future__ import annotations

import numpy as np

from . import _checks

DEFAULT_BUDGET = 256 << 20
_INDEX_SENTINEL = np.iinfo(np.int64).max


def normalize(x: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32 copy); NaN/Inf and zero rows are bad input."""
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    finite = np.isfinite(sq)
    if not finite.all():
        _checks.bad_rows(name, int(np.argmin(finite)), None)
    if not (sq > 0).all():
        _checks.bad_rows(name, None, int(np.argmin(sq > 0)))
    inv = (1.0 / np.sqrt(sq)).astype(np.float32)
    return x * inv[:, None]


def block_sizes(nq: int, nd: int, budget: int, symmetric: bool) -> tuple[int, int]:
    """Query and database block sizes whose float32 tile fits in ``budget`` bytes."""
    elems = max(budget // 4, 1)
    if symmetric:
        b = int(min(nq, 1024, max(int(np.sqrt(elems)), 1)))
        return b, b
    bq = int(min(nq, 4096, max(elems // min(nd, 1024), 1)))
    bd = int(min(nd, max(elems // bq, 1)))
    return bq, bd


def topk(kernels, q: np.ndarray, db: np.ndarray | None, k: int, exclude_self: bool,
         memory_budget: int | None):
    """(sims, idx) of the k most similar rows of ``db`` (``q`` itself when None) for each row
    of ``q``; rows already unit-norm float32. ``kernels`` is the backend's merge kernels."""
    symmetric = db is None
    if symmetric:
        db = q
    nq, nd = q.shape[0], db.shape[0]
    budget = DEFAULT_BUDGET if memory_budget is None else int(memory_budget)
    bq, bd = block_sizes(nq, nd, budget, symmetric)
    heap_s = np.full((nq, k), -np.inf, dtype=np.float32)
    heap_i = np.full((nq, k), _INDEX_SENTINEL, dtype=np.int64)
    buf = np.empty(bq * bd, dtype=np.float32)
    for q0 in range(0, nq, bq):
        q1 = min(q0 + bq, nq)
        for d0 in range(q0 if symmetric else 0, nd, bd):
            d1 = min(d0 + bd, nd)
            tile = buf[: (q1 - q0) * (d1 - d0)].reshape(q1 - q0, d1 - d0)
            np.matmul(q[q0:q1], db[d0:d1].T, out=tile)
            kernels.merge_rows(tile, q0, d0, heap_s, heap_i, exclude_self)
            if symmetric and d0 != q0:
                kernels.merge_cols(tile, q0, d0, heap_s, heap_i)
    kernels.finalize(heap_s, heap_i)
    return heap_s, heap_i
