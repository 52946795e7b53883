"""Exact cosine k-nearest-neighbour graphs (docs §1)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._typing import ArrayLike, BackendName
from .. import _arrays, _backend, _checks


class KNNGraph(NamedTuple):
    """A kNN graph as :func:`knn` returns it: ``sims`` (N, k) float32 by decreasing
    similarity and ``idx`` (N, k) int64. Unpacks as ``sims, idx = knn(...)``; every function
    taking ``graph=`` accepts it as is (or a plain ``(sims, idx)`` pair)."""

    sims: object
    idx: object


def knn(queries: ArrayLike, k: int, *, database: ArrayLike | None = None,
        exclude_self: bool | None = None, backend: BackendName = None,
        memory_budget: int | None = None, allow_tf32: bool = False) -> KNNGraph:
    """Exact cosine top-k: for each query row, the ``k`` most similar database rows.

    Parameters
    ----------
    queries : (Nq, d) float array (numpy, torch or cupy; float32, float16, bfloat16, or
        float64 which is computed in float32).
    k : number of neighbours, 1 <= k <= database size (minus one with ``exclude_self``).
    database : (Nd, d) array, or None for the graph of ``queries`` against itself.
    exclude_self : drop the point itself, by index (duplicates of it stay neighbours).
        Default True for the self-graph, False with a database; with a database it drops
        database row i for query row i (queries must then have as many rows as the database).
    backend : "cuda", "native" or "numba"; default from where the data lives.
    memory_budget : bytes of scratch memory for one similarity tile (CPU, default 256 MiB) or
        the workspace (GPU, default half the free memory). Never N x N.
    allow_tf32 : let float32 inputs use TF32 tensor cores on the GPU (faster, ~1e-3 error).

    Returns
    -------
    KNNGraph(sims, idx), which unpacks as ``sims, idx``:
    sims : (Nq, k) float32, rows sorted by decreasing similarity.
    idx : (Nq, k) int64 database indices; among equal similarities the smaller index first.
    Both in the kind and on the device of ``queries``.
    """
    return checked_knn(queries, k, database, exclude_self, backend, memory_budget, allow_tf32)


def checked_knn(queries, k, database=None, exclude_self=None, backend=None, memory_budget=None,
                allow_tf32=False, q_name="queries", db_name="database"):
    """:func:`knn` with bad-input errors naming the caller's arguments ``q_name`` and
    ``db_name`` (for the functions of hdlfast built on it)."""
    queries, q_info = _checks.embeddings(queries, q_name)
    k = _checks.positive_int(k, "k")
    if database is None:
        exclude_self = True if exclude_self is None else bool(exclude_self)
        db_info, db_name = q_info, q_name
    else:
        database, db_info = _checks.embeddings(database, db_name)
        _checks.same_device(q_info, db_info, q_name, db_name)
        _checks.same_width(q_info, db_info, q_name, db_name)
        exclude_self = False if exclude_self is None else bool(exclude_self)
        if exclude_self and q_info.shape[0] != db_info.shape[0]:
            raise ValueError(
                f"exclude_self=True with a {db_name} needs as many {q_name} as {db_name} rows "
                f"(query i is {db_name} row i), got {q_info.shape[0]} and {db_info.shape[0]}"
            )
    nd = db_info.shape[0]
    if exclude_self:
        _checks.k_at_most(k, nd - 1, f"{db_name} rows other than the point itself")
    else:
        _checks.k_at_most(k, nd, f"{db_name} rows")
    if memory_budget is not None:
        memory_budget = _checks.positive_int(memory_budget, "memory_budget")
    impl = _backend.select(backend, q_info.on_gpu)
    return KNNGraph(*impl.knn(queries, database, k, exclude_self=exclude_self,
                              allow_tf32=allow_tf32, memory_budget=memory_budget,
                              q_name=q_name, db_name=db_name))


_MAX_POINTS = 2**31 - 1  # as labels: the labeling kernels index points with int32


def reverse_graph(idx: ArrayLike, n: int | None = None, *, backend: BackendName = None):
    """Who lists whom: CSR ``(indptr, indices)`` with ``indices[indptr[j]:indptr[j+1]]`` the
    rows i that have j among their neighbours, in increasing i (numpy arrays, int64).

    ``idx`` is an (N, k) neighbour-index array (any kind); ``n`` the number of database points
    (default: max index + 1, at least N). O(N k), a counting sort in the CPU kernels.
    """
    n_given = n is not None
    if n_given:
        n = _checks.positive_int(n, "n")
    host, n = _checks.indices(idx, "idx", n)
    what = "n" if n_given else "idx (n = max(idx) + 1)"
    if n > _MAX_POINTS:
        raise ValueError(f"{what}: {n} points; at most 2**31 - 1 on one machine")
    _checks.fits_in_memory(8 * (n + 1) + 4 * host.size, f"{what}: the reverse graph of {n} points")
    like = _arrays.as_array(idx, "idx")
    on_gpu = _arrays.info(like, "idx").on_gpu  # GPU indices: the CUDA kernel by default
    kern = _backend.select(backend, on_gpu, like=like if on_gpu else None).labeling
    indptr, src = kern.reverse_csr(host, host.shape[1], n)
    return indptr, src.astype(np.int64)
