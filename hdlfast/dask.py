"""Exact cosine kNN graph of a dask array (SPEC section 1, beyond one machine).

``hdlfast.dask.knn(X, k)`` splits the work by row blocks: one task per (query block,
database block) pair runs the local :func:`hdlfast.knn` on the two numpy blocks, and the
partial top-k lists of each query block are merged by a tree reduction over the database
blocks (:func:`merge`, which keeps the SPEC tie rule, so the result does not depend on the
chunking or on the shape of the tree). The answer equals the single-machine ``hdlfast.knn``
on the same data: the same indices, similarities up to float32 rounding of the products.

Needs the optional ``dask`` extra: ``pip install hdlfast[dask]``.
"""
from __future__ import annotations

import math

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        "hdlfast.dask needs dask: pip install hdlfast[dask]  (or: pip install 'dask[array]')"
    ) from exc

from . import _arrays, _backend, _checks
from .knn import knn as _local_knn

__all__ = ["knn", "merge"]

PAD_SIM = np.float32(-np.inf)
PAD_IDX = np.iinfo(np.int64).max


def merge(a, b):
    """Merge two partial top-k results ``(sims, idx)`` of the same query rows.

    Concatenates the columns and keeps the ``max`` of the two widths best entries per row by
    (similarity descending, index ascending) — the SPEC tie rule — with a stable lexsort.
    Padding entries (sim -inf, idx int64 max) sort last. Pure, associative and commutative.
    """
    (sa, ia), (sb, ib) = a, b
    k = max(sa.shape[1], sb.shape[1])
    s = np.concatenate([sa, sb], axis=1)
    i = np.concatenate([ia, ib], axis=1)
    order = np.lexsort((i, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def _merge_all(*parts):
    out = parts[0]
    for p in parts[1:]:
        out = merge(out, p)
    return out


def _check_rows(block, name, offset):
    finite, nonzero = _arrays.row_flags(block)
    if not finite.all():
        _checks.bad_rows(name, offset + int(np.argmin(finite)), None)
    if not nonzero.all():
        _checks.bad_rows(name, None, offset + int(np.argmin(nonzero)))


def _block_knn(q, d, k, q_off, d_off, exclude, q_name, d_name, backend, memory_budget):
    """Top-k of one query block against one database block, global indices, padded to k."""
    _check_rows(q, q_name, q_off)
    _check_rows(d, d_name, d_off)
    nq = q.shape[0]
    sims = np.full((nq, k), PAD_SIM, np.float32)
    idx = np.full((nq, k), PAD_IDX, np.int64)
    kk = min(k, d.shape[0] - (1 if exclude else 0))
    if kk > 0:
        s, i = _local_knn(q, kk, database=d, exclude_self=exclude, backend=backend,
                          memory_budget=memory_budget)
        sims[:, :kk] = _arrays.to_numpy(s)
        idx[:, :kk] = _arrays.to_numpy(i) + d_off
    return sims, idx


def _as_dask(x, name):
    if not isinstance(x, da.Array):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"{name} must be a dask array (or numpy array), "
                            f"got {type(x).__name__}")
        x = da.from_array(np.asarray(x), chunks=(-1, -1) if np.ndim(x) == 2 else -1)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {x.shape}")
    dt = _arrays._np_dtype_name(x.dtype)
    if dt not in _arrays.FLOAT_DTYPES:
        kind = "floating-point embeddings (float32, float16 or bfloat16)"
        raise TypeError(f"{name} must hold {kind}, got dtype {dt}")
    if any(math.isnan(c) for c in x.chunks[0]) or any(math.isnan(c) for c in x.chunks[1]):
        raise ValueError(f"{name} has unknown chunk sizes: call {name}.compute_chunk_sizes()")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {x.shape}")
    if len(x.chunks[1]) > 1:  # a block task needs whole rows
        x = x.rechunk({1: -1})
    return x


def _offsets(chunks):
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64).tolist()


def knn(X, k, *, database=None, exclude_self=None, backend=None, memory_budget=None,
        split_every=4):
    """Exact cosine top-k of the rows of a dask array, as dask arrays.

    Parameters
    ----------
    X : (N, d) dask array of float embeddings, chunked by rows (column chunks are merged into
        one). A numpy array is taken as a single block.
    k, exclude_self, backend, memory_budget : as in :func:`hdlfast.knn`; ``backend`` and
        ``memory_budget`` apply to each block task. With a database and ``exclude_self=True``
        the database is rechunked to X's row chunks (query i is database row i).
    database : (Nd, d) dask or numpy array, or None for the graph of X against itself.
    split_every : fan-in of the tree reduction over the database blocks (>= 2).

    Returns
    -------
    sims, idx : (N, k) dask arrays (float32, int64) chunked like X's rows, equal to
        ``hdlfast.knn(X.compute(), k, ...)``: rows by decreasing similarity, equal
        similarities by increasing database index. Compute both together,
        ``dask.compute(sims, idx)``, so that the block tasks run once. A bad row (NaN/Inf
        or zero norm) raises ValueError naming the argument and the global row at compute
        time.
    """
    X = _as_dask(X, "X")
    k = _checks.positive_int(k, "k")
    split_every = _checks.positive_int(split_every, "split_every")
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    if memory_budget is not None:
        memory_budget = _checks.positive_int(memory_budget, "memory_budget")
    _backend.select(backend, False)  # a bad or unusable backend fails here, not in a task
    n = X.shape[0]
    if database is None:
        exclude_self = True if exclude_self is None else bool(exclude_self)
        D, d_name = X, "X"
    else:
        D, d_name = _as_dask(database, "database"), "database"
        if D.shape[1] != X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} columns but database has {D.shape[1]}")
        exclude_self = False if exclude_self is None else bool(exclude_self)
        if exclude_self:
            if D.shape[0] != n:
                raise ValueError(
                    f"exclude_self=True with a database needs as many rows in X as in the "
                    f"database (row i is database row i), got {n} and {D.shape[0]}")
            D = D.rechunk({0: X.chunks[0]})
    nd = D.shape[0]
    if exclude_self:
        _checks.k_at_most(k, nd - 1, "database rows other than the point itself")
    else:
        _checks.k_at_most(k, nd, "database rows")

    q_blocks = X.to_delayed().ravel()
    d_blocks = q_blocks if D is X else D.to_delayed().ravel()
    q_off, d_off = _offsets(X.chunks[0]), _offsets(D.chunks[0])
    block = dask.delayed(_block_knn, pure=True)
    merge_all = dask.delayed(_merge_all, pure=True)
    sims_parts, idx_parts = [], []
    for i, qb in enumerate(q_blocks):
        level = [block(qb, db, k, q_off[i], d_off[j], exclude_self and i == j, "X", d_name,
                       backend, memory_budget)
                 for j, db in enumerate(d_blocks)]
        while len(level) > 1:  # tree reduction over the database blocks
            level = [merge_all(*level[g:g + split_every])
                     for g in range(0, len(level), split_every)]
        rows = X.chunks[0][i]
        res = level[0]
        sims_parts.append(da.from_delayed(res[0], (rows, k), dtype=np.float32))
        idx_parts.append(da.from_delayed(res[1], (rows, k), dtype=np.int64))
    return da.concatenate(sims_parts, axis=0), da.concatenate(idx_parts, axis=0)

