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
measured on a seeded sample of query rows, searched exactly. Unless ``nprobe`` is given, that
sample also chooses it: the sample rows alone are searched with 8, 16, 32, ... probes (cheap:
a thousand rows) and the smallest count whose recall reaches the target is used for all rows.
A row's result depends only on its own probes, so the sample's recall at the chosen count is
the graph's estimate.
"""
from __future__ import annotations

import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .._host import num_workers, run_all, scratch, single_threaded_blas
from .host import (_INDEX_SENTINEL, _MAX_WORKERS_BUDGETED, block_sizes, check_filled,
                   duplicate_reps, tie_duplicates, tile_product, topk)

LISTS_PER_SQRT = 1.0  # lists ~ this * sqrt(database rows)
TRAIN_PER_LIST = 64  # the coarse k-means trains on at most this many rows per list
TRAIN_ITERS = 10
DEFAULT_NPROBE = 32  # when nprobe is neither given nor chosen (no recall sample)
FIRST_NPROBE = 8  # the probe counts tried for a target recall: 8, 16, 32, ... lists
_CHUNK = 4096  # queries per task


def n_lists(nd: int) -> int:
    """The number of inverted lists for a database of ``nd`` rows."""
    return max(1, min(nd, int(round(LISTS_PER_SQRT * math.sqrt(nd)))))


def train_rows(nd: int, nlist: int, seed: int) -> np.ndarray | None:
    """The sorted rows of a ``nd``-row database the coarse k-means trains on (None: all)."""
    n_train = min(nd, nlist * TRAIN_PER_LIST)
    if n_train == nd:
        return None
    rng = np.random.default_rng([seed, 0x1F])
    return np.sort(rng.choice(nd, n_train, replace=False))


def coarse_centroids(train: np.ndarray, nlist: int, seed: int, backend: str) -> np.ndarray:
    """Unit float32 centroids of a spherical k-means of the unit rows ``train`` (the whole
    database or its :func:`train_rows`)."""
    from ..kmeans import kmeans

    c = kmeans(train, nlist, spherical=True, n_iters=TRAIN_ITERS, tol=None, init="random",
               seed=seed, backend=backend).centroids
    return np.ascontiguousarray(c, dtype=np.float32)  # unit rows already


def sample_rows(nq: int, recall_sample: int, seed: int) -> np.ndarray:
    """The sorted query rows whose recall is measured (all rows when there are fewer)."""
    if recall_sample >= nq:
        return np.arange(nq, dtype=np.int64)
    rng = np.random.default_rng([seed, 0x2E])
    return np.sort(rng.choice(nq, recall_sample, replace=False)).astype(np.int64)


def probe_counts(nlist: int, nprobe: int | None) -> list[int]:
    """The probe counts the recall sample tries, increasing: ``nprobe`` alone when given,
    else 8, 16, 32, ... up to every list."""
    if nprobe is not None:
        return [min(nprobe, nlist)]
    return sorted({min(FIRST_NPROBE << i, nlist)
                   for i in range(max(1, (nlist // FIRST_NPROBE).bit_length() + 1))})


class InvertedLists(NamedTuple):
    """The database ordered by list: ``rows`` (Nd, d) and their original ``ids`` (Nd,), list
    l being ``rows[start[l]:start[l + 1]]``."""

    rows: np.ndarray
    ids: np.ndarray
    start: np.ndarray

    @classmethod
    def build(cls, db: np.ndarray, assignment: np.ndarray, nlist: int) -> "InvertedLists":
        ids = np.argsort(assignment, kind="stable").astype(np.int64)
        return cls(db[ids], ids, list_starts(assignment, nlist))


def list_starts(assignment: np.ndarray, nlist: int) -> np.ndarray:
    """(nlist + 1,) offsets of the lists in the database ordered by list."""
    start = np.zeros(nlist + 1, np.int64)
    np.cumsum(np.bincount(assignment, minlength=nlist), out=start[1:])
    return start


def exact_rows(kernels, q: np.ndarray, q_ids: np.ndarray, db: np.ndarray, k: int,
               exclude_self: bool, budget: int):
    """The exact top-k of the rows ``q`` (query ids ``q_ids``) against all of ``db``."""
    m = q.shape[0]
    hs = np.full((m, k), -np.inf, np.float32)
    hi = np.full((m, k), _INDEX_SENTINEL, np.int64)
    local = np.arange(m, dtype=np.int64)
    width = block_sizes(m, db.shape[0], budget, False)[1]
    ids = np.arange(db.shape[0], dtype=np.int64)
    with single_threaded_blas():
        for d0 in range(0, db.shape[0], width):
            kernels.merge_listed(tile_product(q, db[d0:d0 + width]), local, q_ids,
                                 ids[d0:d0 + width], hs, hi, exclude_self)
    kernels.finalize(hs, hi)
    return hs, hi


def search_lists(kernels, lists: InvertedLists, q_rows: np.ndarray, heap_rows: np.ndarray,
                 self_ids: np.ndarray, probes: np.ndarray, heap_s: np.ndarray,
                 heap_i: np.ndarray, exclude_self: bool, budget: int, threads: int,
                 done=None) -> None:
    """Merge every query ``q_rows[j]`` (heap row ``heap_rows[j]``, own index ``self_ids[j]``)
    with the rows of its lists ``probes[j]``, in chunks of queries on ``threads`` workers;
    ``done(rows)`` (a progress bar's update) after each chunk."""
    nq, nprobe = probes.shape
    # sized as the exact search's tiles, never by the thread count: how a list is split
    # into tiles moves BLAS's rounding, and the graph must not depend on the threads
    tile_elems = max(budget // (4 * _MAX_WORKERS_BUDGETED), 1 << 16)
    cancel = threading.Event()

    def chunk(c0):
        c1 = min(c0 + _CHUNK, nq)
        pr = probes[c0:c1].ravel()
        pos = np.repeat(np.arange(c1 - c0, dtype=np.int64), nprobe)
        by_list = np.argsort(pr, kind="stable")  # queries ascending within a list
        pr, pos = pr[by_list], pos[by_list]
        starts = np.r_[0, np.flatnonzero(pr[1:] != pr[:-1]) + 1]
        ends = np.r_[starts[1:], pr.size]
        # lists most of the chunk ranks first go first: the heaps' thresholds rise early and
        # later tiles push few candidates (the result does not depend on the order)
        rank = np.add.reduceat(by_list % nprobe, starts) / (ends - starts)
        for g in np.argsort(rank, kind="stable"):
            if cancel.is_set():
                return
            lo, hi = lists.start[pr[starts[g]]], lists.start[pr[starts[g]] + 1]
            if lo == hi:
                continue
            sel = c0 + pos[starts[g]:ends[g]]
            qs = np.take(q_rows, sel, axis=0,
                         out=scratch("queries", (sel.size, q_rows.shape[1])))
            rows, own = heap_rows[sel], self_ids[sel]
            width = max(1, tile_elems // qs.shape[0])
            for d0 in range(lo, hi, width):  # a large list in several tiles
                d1 = min(d0 + width, hi)
                kernels.merge_listed(tile_product(qs, lists.rows[d0:d1]), rows, own,
                                     lists.ids[d0:d1], heap_s, heap_i, exclude_self)
        if done is not None:
            done(c1 - c0)

    with single_threaded_blas(), ThreadPoolExecutor(threads) as pool:
        run_all(pool, chunk, range(0, nq, _CHUNK), cancel)


def empty_heaps(n: int, k: int):
    return (np.full((n, k), -np.inf, np.float32), np.full((n, k), _INDEX_SENTINEL, np.int64))


def _fill_short(kernels, q, ids, db, k, exclude_self, budget, heap_s, heap_i):
    """Rows whose probed lists held fewer than k candidates (the heap's root still empty):
    an exact search instead. ``ids``: the rows' own indices."""
    short = np.flatnonzero(heap_i[:, 0] == _INDEX_SENTINEL)
    if short.size:
        heap_s[short], heap_i[short] = exact_rows(kernels, q[short], ids[short], db, k,
                                                  exclude_self, budget)


def tied(graph, rep, exclude_self: bool, own=None):
    """``graph`` (sims, idx) with exact copies tied in place (``rep``: ``duplicate_reps`` of
    the database, None when there are none; ``own``: the rows' own indices)."""
    if rep is not None:
        tie_duplicates(*graph, rep, exclude_self, own)
    return graph


def recall(idx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours ``exact`` that ``idx`` lists."""
    return float((idx[:, :, None] == exact[:, None, :]).any(axis=1).mean())


def ivf_topk(kernels, backend: str, q: np.ndarray, db: np.ndarray | None, k: int,
             exclude_self: bool, nprobe: int | None, target_recall: float, seed: int,
             budget: int, recall_sample: int, progress: bool = False):
    """(sims, idx, recall, nprobe) of the approximate top-k of unit float32 rows (``db``
    None: the self-graph of ``q``), in the layout and tie order of
    :func:`hdlfast.knn.host.topk`. ``recall`` is the mean recall@k over ``recall_sample``
    seeded rows (None when 0); ``nprobe`` None chooses the probe count reaching
    ``target_recall`` on those rows (DEFAULT_NPROBE without a sample). ``progress``: a
    progress bar (tqdm, on stderr) through the stages and the search's rows."""
    from tqdm.auto import tqdm

    with tqdm(total=q.shape[0], desc="ivf: coarse k-means", unit="rows", leave=False,
              disable=not progress, file=sys.stderr) as bar:
        return _ivf_topk(kernels, backend, q, db, k, exclude_self, nprobe, target_recall, seed,
                         budget, recall_sample, bar)


def _ivf_topk(kernels, backend, q, db, k, exclude_self, nprobe, target_recall, seed, budget,
              recall_sample, bar):
    symmetric = db is None
    if symmetric:
        db = q
    nq, nd = q.shape[0], db.shape[0]
    nlist = n_lists(nd)
    threads = num_workers()
    train = train_rows(nd, nlist, seed)
    cent = coarse_centroids(db if train is None else db[train], nlist, seed, backend)
    lists = InvertedLists.build(db, topk(kernels, db, cent, 1, False, budget)[1][:, 0], nlist)
    all_ids = np.arange(nq, dtype=np.int64)
    rep = duplicate_reps(db)  # exact copies, tied as the tie rule says in every result

    bar.set_description("ivf: recall sample")
    got = None
    if recall_sample > 0:
        rows = sample_rows(nq, recall_sample, seed)
        qs = q[rows]
        exact = tied(exact_rows(kernels, qs, rows, db, k, exclude_self, budget), rep,
                     exclude_self, rows)[1]
        counts = probe_counts(nlist, nprobe)
        ranked = topk(kernels, qs, cent, counts[-1], False, budget)[1]
        for p in counts:  # increasing: the first that reaches the target is kept
            hs, hi = empty_heaps(rows.size, k)
            search_lists(kernels, lists, qs, np.arange(rows.size, dtype=np.int64), rows,
                         np.ascontiguousarray(ranked[:, :p]), hs, hi, exclude_self, budget,
                         threads)
            _fill_short(kernels, qs, rows, db, k, exclude_self, budget, hs, hi)
            kernels.finalize(hs, hi)
            got = recall(tied((hs, hi), rep, exclude_self, rows)[1], exact)
            if got >= target_recall:
                break
        nprobe = p
    elif nprobe is None:
        nprobe = DEFAULT_NPROBE
    nprobe = min(nprobe, nlist)

    bar.set_description(f"ivf: probing {nprobe} of {nlist} lists")
    probes = topk(kernels, q, cent, nprobe, False, budget)[1]
    bar.set_description(f"ivf: search ({nprobe} of {nlist} lists)")
    # queries in the order of their first probe: a chunk then probes few distinct lists
    order = np.argsort(probes[:, 0], kind="stable").astype(np.int64)
    heap_s, heap_i = empty_heaps(nq, k)
    search_lists(kernels, lists, q[order], order, order, probes[order], heap_s, heap_i,
                 exclude_self, budget, threads, bar.update)
    _fill_short(kernels, q, all_ids, db, k, exclude_self, budget, heap_s, heap_i)
    kernels.finalize(heap_s, heap_i)
    check_filled(heap_s, "inverted-file search")
    tied((heap_s, heap_i), rep, exclude_self)
    return heap_s, heap_i, got, nprobe
