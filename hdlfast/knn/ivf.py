"""Approximate cosine top-k by an inverted file (IVF) on the host (docs/algorithms.md §1b).

A coarse spherical k-means (hdlfast's own, on a seeded sample) splits the database into about
``LISTS_PER_SQRT * sqrt(Nd)`` lists; every database row joins the list of its most similar
centroid and every query probes its ``nprobe`` most similar lists. The search itself is
exact within what is probed: queries are taken in chunks, ordered by their first list so
that a chunk's queries probe few distinct lists, and for each list the chunk's queries
probing it are multiplied by the list's rows in one BLAS tile, merged into the queries' heaps
by ``merge_listed`` (the native or numba kernel: same results bit for bit). Chunks have
disjoint heaps, so one worker per core runs them with single-threaded BLAS, as the exact
search does. Nothing depends on the thread count, so a seed gives the same graph anywhere.

Rows whose probed lists hold fewer than k candidates get an exact search. The recall is
estimated on a seeded sample of query rows by an exact search of those rows alone.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._host import num_workers, run_all, single_threaded_blas
from .host import _INDEX_SENTINEL, check_filled, tile_product, topk

LISTS_PER_SQRT = 1.0  # lists ~ this * sqrt(database rows)
TRAIN_PER_LIST = 64  # the coarse k-means trains on at most this many rows per list
TRAIN_ITERS = 10
DEFAULT_NPROBE = 32
RECALL_SAMPLE = 1000  # query rows whose exact neighbours estimate the recall
_CHUNK = 4096  # queries per task


def n_lists(nd: int) -> int:
    """The number of inverted lists for a database of ``nd`` rows."""
    return max(1, min(nd, int(round(LISTS_PER_SQRT * math.sqrt(nd)))))


def coarse_centroids(db: np.ndarray, nlist: int, seed: int, backend: str) -> np.ndarray:
    """Unit float32 centroids of a spherical k-means of (a seeded sample of) ``db``."""
    from ..kmeans import kmeans

    nd = db.shape[0]
    n_train = min(nd, nlist * TRAIN_PER_LIST)
    rng = np.random.default_rng([seed, 0x1F])
    train = db if n_train == nd else db[np.sort(rng.choice(nd, n_train, replace=False))]
    c = kmeans(train, nlist, spherical=True, n_iters=TRAIN_ITERS, tol=None, init="random",
               seed=seed, backend=backend).centroids
    return np.ascontiguousarray(c, dtype=np.float32)  # unit rows already


class InvertedLists:
    """The database ordered by list: ``rows`` (Nd, d) and their original ``ids`` (Nd,), list
    l being ``rows[start[l]:start[l + 1]]``."""

    def __init__(self, db: np.ndarray, assignment: np.ndarray, nlist: int):
        self.ids = np.argsort(assignment, kind="stable").astype(np.int64)
        self.start = np.zeros(nlist + 1, np.int64)
        np.cumsum(np.bincount(assignment, minlength=nlist), out=self.start[1:])
        self.rows = db[self.ids]

    def size(self, lists: np.ndarray) -> np.ndarray:
        return self.start[lists + 1] - self.start[lists]


def exact_rows(kernels, q: np.ndarray, q_ids: np.ndarray, db: np.ndarray, k: int,
               exclude_self: bool, budget: int):
    """The exact top-k of the rows ``q`` (query ids ``q_ids``) against all of ``db``: k + 1
    candidates with ``exclude_self``, then the row's own id is dropped (the last entry when it
    is not among them)."""
    m = q.shape[0]
    kk = k + 1 if exclude_self else k
    hs = np.full((m, kk), -np.inf, np.float32)
    hi = np.full((m, kk), _INDEX_SENTINEL, np.int64)
    local = np.arange(m, dtype=np.int64)
    width = max(1024, budget // (4 * max(m, 1) * max(num_workers(), 1)))
    ids = np.arange(db.shape[0], dtype=np.int64)
    with single_threaded_blas():
        for d0 in range(0, db.shape[0], width):
            kernels.merge_listed(tile_product(q, db[d0:d0 + width]), local,
                                 ids[d0:d0 + width], hs, hi, False)
    kernels.finalize(hs, hi)
    if not exclude_self:
        return hs, hi
    own = hi == q_ids[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones((m, kk), bool)
    keep[local, drop] = False
    return hs[keep].reshape(m, k), hi[keep].reshape(m, k)


def ivf_topk(kernels, backend: str, q: np.ndarray, db: np.ndarray | None, k: int,
             exclude_self: bool, nprobe: int, seed: int, budget: int, recall_sample: int):
    """(sims, idx, recall) of the approximate top-k of unit float32 rows (``db`` None: the
    self-graph of ``q``), in the layout and tie order of :func:`hdlfast.knn.host.topk`;
    ``recall`` is the mean recall@k over ``recall_sample`` seeded rows (None when 0)."""
    symmetric = db is None
    if symmetric:
        db = q
    nq, nd = q.shape[0], db.shape[0]
    nlist = n_lists(nd)
    nprobe = min(nprobe, nlist)
    cent = coarse_centroids(db, nlist, seed, backend)
    probes = topk(kernels, q, cent, nprobe, False, budget)[1]
    first = probes[:, 0] if symmetric else topk(kernels, db, cent, 1, False, budget)[1][:, 0]
    lists = InvertedLists(db, first, nlist)
    # queries in the order of their first probe: a chunk then probes few distinct lists
    q_order = lists.ids if symmetric else np.argsort(probes[:, 0], kind="stable")
    q_rows = lists.rows if symmetric else q[q_order]

    heap_s = np.full((nq, k), -np.inf, np.float32)
    heap_i = np.full((nq, k), _INDEX_SENTINEL, np.int64)
    tile_elems = max(budget // (4 * max(num_workers(), 1)), 1 << 16)
    cancel = threading.Event()

    def chunk(c0):
        c1 = min(c0 + _CHUNK, nq)
        qc, ids = q_rows[c0:c1], q_order[c0:c1]
        pr = probes[ids].ravel()
        pos = np.repeat(np.arange(c1 - c0, dtype=np.int64), nprobe)
        by_list = np.argsort(pr, kind="stable")  # queries ascending within a list
        pr, pos = pr[by_list], pos[by_list]
        starts = np.r_[0, np.flatnonzero(pr[1:] != pr[:-1]) + 1]
        ends = np.r_[starts[1:], pr.size]
        # lists most of the chunk ranks first go first: the heaps' thresholds rise early and
        # later tiles push few candidates (the result does not depend on the order)
        rank = np.add.reduceat(by_list % nprobe, starts) / (ends - starts)
        for g in np.argsort(rank, kind="stable"):
            g0, g1 = starts[g], ends[g]
            if cancel.is_set():
                return
            lo, hi = lists.start[pr[g0]], lists.start[pr[g0] + 1]
            if lo == hi:
                continue
            sel = pos[g0:g1]
            qs, row_ids = qc[sel], ids[sel]
            width = max(1, tile_elems // qs.shape[0])
            for d0 in range(lo, hi, width):  # a large list in several tiles
                d1 = min(d0 + width, hi)
                kernels.merge_listed(tile_product(qs, lists.rows[d0:d1]), row_ids,
                                     lists.ids[d0:d1], heap_s, heap_i, exclude_self)

    with single_threaded_blas(), ThreadPoolExecutor(num_workers()) as pool:
        run_all(pool, chunk, range(0, nq, _CHUNK), cancel)
    short = np.flatnonzero(heap_i[:, 0] == _INDEX_SENTINEL)  # the root of a heap not filled
    if short.size:
        heap_s[short], heap_i[short] = exact_rows(kernels, q[short], short, db, k,
                                                  exclude_self, budget)
    kernels.finalize(heap_s, heap_i)
    check_filled(heap_s, "inverted-file search")
    return heap_s, heap_i, estimate_recall(kernels, q, db, heap_i, k, exclude_self, seed,
                                           budget, recall_sample)


def estimate_recall(kernels, q, db, idx, k, exclude_self, seed, budget, sample):
    """Mean over ``sample`` seeded rows of the fraction of a row's exact k neighbours that
    ``idx`` lists (None when ``sample`` is 0)."""
    nq = q.shape[0]
    if sample <= 0:
        return None
    rng = np.random.default_rng([seed, 0x2E])
    rows = np.arange(nq) if sample >= nq else np.sort(rng.choice(nq, sample, replace=False))
    rows = rows.astype(np.int64)
    _, exact = exact_rows(kernels, q[rows], rows, db, k, exclude_self, budget)
    found = (idx[rows][:, :, None] == exact[:, None, :]).any(axis=1)
    return float(found.mean())
