"""Exact cosine k-nearest-neighbour graphs (docs §1)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._typing import ArrayLike, BackendName
from .. import _arrays, _backend, _checks


class _Pair(NamedTuple):
    sims: object
    idx: object


class KNNGraph(_Pair):
    """A kNN graph as :func:`knn` returns it: ``sims`` (N, k) float32 by decreasing
    similarity and ``idx`` (N, k) int64. Unpacks as ``sims, idx = knn(...)``; every function
    taking ``graph=`` accepts it as is (or a plain ``(sims, idx)`` pair).

    Attributes say how it was found: ``method``, "exact" or "ivf" (the search that ran;
    ``method="auto"`` resolves to one of them); ``recall``, the mean fraction of each row's
    exact k neighbours that the graph lists: 1.0 for the exact search, for "ivf" the
    measurement on ``recall_sample`` rows searched exactly (None when that is 0); and
    ``nprobe``, the lists each query probed ("ivf"; None for the exact search)."""

    def __new__(cls, sims, idx, method: str = "exact", recall: float | None = 1.0,
                nprobe: int | None = None):
        self = super().__new__(cls, sims, idx)
        self.method, self.recall, self.nprobe = method, recall, nprobe
        return self


METHODS = ("exact", "ivf", "auto")
#: "auto" searches exactly up to this many multiply-adds (queries x database rows x width):
#: about 20 s for a self-graph on 2 cores (130,000 x 128), beyond which the inverted file is
#: several times faster at recall >= 0.99 (README, "Approximate graphs").
AUTO_EXACT_WORK = 2 ** 41


def knn(queries: ArrayLike, k: int, *, database: ArrayLike | None = None,
        exclude_self: bool | None = None, method: str = "exact", nprobe: int | None = None,
        target_recall: float = 0.99, seed: int = 0, recall_sample: int = 1000,
        progress: bool = False, backend: BackendName = None,
        memory_budget: int | None = None, allow_tf32: bool = False) -> KNNGraph:
    """Cosine top-k: for each query row, the ``k`` most similar database rows (exact by
    default; an inverted-file search with measured recall for million-row data on the CPU).

    Parameters
    ----------
    queries : (Nq, d) float array (numpy, torch or cupy; float32, float16, bfloat16, or
        float64 which is computed in float32).
    k : number of neighbours, 1 <= k <= database size (minus one with ``exclude_self``).
    database : (Nd, d) array, or None for the graph of ``queries`` against itself.
    exclude_self : drop the point itself, by index (duplicates of it stay neighbours).
        Default True for the self-graph, False with a database; with a database it drops
        database row i for query row i (queries must then have as many rows as the database).
    method : "exact"; "ivf", an approximate inverted-file search (CPU backends): a spherical
        k-means splits the database into about sqrt(Nd) lists and each query is compared
        exactly with the rows of its ``nprobe`` most similar lists; or "auto", exact up to
        ``AUTO_EXACT_WORK`` multiply-adds (and always on the GPU), "ivf" beyond.
        ``graph.method`` says which ran.
    target_recall : the one knob trading speed for recall ("ivf"): the recall the search
        aims at. The recall sample's rows are searched with 8, 16, 32, ... probes and the
        smallest count reaching it is used for every row (``graph.nprobe``).
    nprobe : lists each query probes, fixed instead of chosen ("ivf"; capped at the number
        of lists; 32 when ``recall_sample`` is 0 and nprobe is not given).
    seed : the coarse k-means' seed and the recall sample's ("ivf"): the same seed gives the
        same graph on every CPU backend and thread count.
    recall_sample : rows whose exact neighbours estimate ``graph.recall`` ("ivf"; 0 skips it).
    progress : a progress bar on stderr through the CPU search (the exact graph's tiles, or
        the inverted file's stages and rows): either takes minutes at a million rows.
    backend : "cuda", "native" or "numba"; default from where the data lives.
    memory_budget : bytes of scratch memory for one similarity tile (CPU, default 256 MiB) or
        the workspace (GPU, default half the free memory). Never N x N.
    allow_tf32 : let float32 inputs use TF32 tensor cores on the GPU (faster, ~1e-3 error).

    Returns
    -------
    KNNGraph(sims, idx), which unpacks as ``sims, idx`` (and has ``.method``, ``.recall``):
    sims : (Nq, k) float32, rows sorted by decreasing similarity.
    idx : (Nq, k) int64 database indices; among equal similarities the smaller index first.
    Both in the kind and on the device of ``queries``.
    """
    return checked_knn(queries, k, database, exclude_self, backend, memory_budget, allow_tf32,
                       method=method, nprobe=nprobe, target_recall=target_recall, seed=seed,
                       recall_sample=recall_sample, progress=progress)


def checked_knn(queries, k, database=None, exclude_self=None, backend=None, memory_budget=None,
                allow_tf32=False, q_name="queries", db_name="database", method="exact",
                nprobe=None, target_recall=0.99, seed=0, recall_sample=1000,
                method_name="method", progress=False):
    """:func:`knn` with bad-input errors naming the caller's arguments ``q_name``,
    ``db_name`` and ``method_name`` (for the functions of hdlfast built on it)."""
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
    _checks.choice(method, method_name, METHODS)
    nprobe = None if nprobe is None else _checks.positive_int(nprobe, "nprobe")
    target_recall = _checks.fraction(target_recall, "target_recall")
    seed = _checks.seed(seed)
    recall_sample = _checks.positive_int(recall_sample, "recall_sample", zero=True)
    impl = _backend.select(backend, q_info.on_gpu)
    if method == "auto":
        work = q_info.shape[0] * nd * q_info.shape[1]
        method = "ivf" if not impl.on_gpu and work > AUTO_EXACT_WORK else "exact"
    if method == "exact":
        return KNNGraph(*impl.knn(queries, database, k, exclude_self=exclude_self,
                                  allow_tf32=allow_tf32, memory_budget=memory_budget,
                                  q_name=q_name, db_name=db_name, progress=bool(progress)))
    if impl.on_gpu:
        raise ValueError(f"{method_name}='ivf' runs on the CPU backends: the exact graph is "
                         "fast on the GPU (method='exact'), or pass backend='native' to copy "
                         "the arrays to the host")
    sims, idx, recall, used = impl.knn.ivf(
        queries, database, k, exclude_self=exclude_self, nprobe=nprobe,
        target_recall=target_recall, seed=seed, recall_sample=recall_sample,
        memory_budget=memory_budget, q_name=q_name, db_name=db_name, progress=bool(progress))
    return KNNGraph(sims, idx, "ivf", recall, used)


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
