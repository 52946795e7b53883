"""Blocked exact top-k on the CPU, driven alike for the native and numba merge kernels.

Tiles of the similarity matrix are BLAS products (numpy matmul); the backend's merge kernel
folds each tile into per-row running top-k heaps. One worker thread per core runs
"multiply a tile, merge it" with single-threaded BLAS, so every core merges the tile it just
wrote while it is still in its cache, and no idle BLAS or OpenMP threads spin against the merges.
Workers only ever run tiles whose heaps are disjoint, so no heap is shared.

For a self-graph only tiles on and above the block diagonal are multiplied: each off-diagonal
tile is merged once by rows and once by columns, halving the matrix-product work.
Peak extra memory: one tile per worker (``memory_budget`` bytes in all; each worker reuses
its tile's buffer) plus the normalised float32 copy of the data. The tiling does not depend
on the number of threads, so results are identical for any thread count.
"""
from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from .. import _arrays, _backend
from .._host import (DEFAULT_BUDGET, normalize, num_workers, run_all, scratch,
                     single_threaded_blas)

_MAX_WORKERS_BUDGETED = 64  # tiles are sized as if this many workers could be live
_INDEX_SENTINEL = np.iinfo(np.int64).max


def native_kernels(mod):
    """The merge kernels of the compiled module ``mod`` (same names and arguments as
    ``numba_kernels``)."""
    return SimpleNamespace(merge_rows=mod.merge_rows, merge_cols=mod.merge_cols,
                           merge_listed=mod.merge_listed, finalize=mod.finalize,
                           reservoir_merge=mod.reservoir_merge,
                           reservoir_finish=mod.reservoir_finish)


def duplicate_reps(u: np.ndarray):
    """For each row of ``u``, the smallest index of a row holding the same bytes (itself for
    a row without copies); None when no row has a copy. Rows are hashed (64-bit), then rows
    with equal hashes compared exactly."""
    cand = hash_candidates(row_hashes(u))
    return None if cand is None else reps_of(cand, u[cand], u.shape[0])


def row_hashes(u: np.ndarray) -> np.ndarray:
    """A 64-bit hash of the bytes of every row of the float32 array ``u``."""
    n, d = u.shape
    mult = np.random.default_rng(0x5EED).integers(1, 2**62, d, dtype=np.uint64) * 2 + 1
    h = np.empty(n, np.uint64)
    _backend.host_kernel("row_hashes")(np.ascontiguousarray(u).view(np.uint32), mult, h)
    return h


def hash_candidates(h: np.ndarray):
    """The rows (ascending) whose hash another row shares, or None."""
    hs = np.sort(h)  # a value sort (SIMD in numpy 2): the common no-copy case stops here
    same = hs[1:] == hs[:-1]
    if not same.any():
        return None
    return np.nonzero(np.isin(h, np.unique(hs[1:][same])))[0]


def reps_of(cand: np.ndarray, rows: np.ndarray, n: int):
    """:func:`duplicate_reps` of ``n`` rows from its candidates ``cand`` (ascending) and their
    ``rows``, compared exactly."""
    _, first, inv = np.unique(np.ascontiguousarray(rows).view(
        np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))),
        return_index=True, return_inverse=True)
    rep = np.arange(n, dtype=np.int64)
    rep[cand] = cand[first[inv.ravel()]]  # cand ascending: the first copy is the smallest
    return None if (rep == np.arange(n)).all() else rep


def tie_duplicates(sims: np.ndarray, idx: np.ndarray, rep: np.ndarray, exclude_self: bool,
                   own: np.ndarray | None = None):
    """Enforce the tie rule on exact copies of database rows, in place. BLAS rounds a dot
    product differently depending on where a row sits in the tile (OpenBLAS: by column
    panel), so two copies of a row can come out one rounding apart. Every copy a row lists
    takes the largest similarity computed for the copies it lists, the copies listed become
    the group's smallest indices (the point itself left out with ``exclude_self``), and the
    row is sorted again (similarity descending, index ascending). ``own``: each row's own
    database index (default: row i is point i), the point that exclude_self leaves out."""
    n = rep.shape[0]
    members = np.lexsort((np.arange(n), rep))  # grouped by representative, ascending
    start = np.searchsorted(rep[members], np.arange(n))
    size = np.bincount(rep, minlength=n)
    rank = np.empty(n, np.int64)
    rank[members] = np.arange(n) - start[rep[members]]
    rows = np.nonzero((size[rep[idx]] > 1).any(axis=1))[0]
    if rows.size == 0:
        return
    s, i = sims[rows], idx[rows]
    g = rep[i]
    nr, k = i.shape
    r = np.repeat(np.arange(nr, dtype=np.int64), k)
    order = np.argsort(r * n + g.ravel(), kind="stable")  # runs: one row's copies of a group
    g_o, r_o = g.ravel()[order], r[order]
    new_run = np.ones(order.size, bool)
    new_run[1:] = (g_o[1:] != g_o[:-1]) | (r_o[1:] != r_o[:-1])
    starts = np.nonzero(new_run)[0]
    run_start = np.repeat(starts, np.diff(np.append(starts, order.size)))
    pos = np.arange(order.size) - run_start  # rank of the entry among its row's copies
    if exclude_self:  # skip the point itself among its group's members
        me = rows[r_o] if own is None else own[rows[r_o]]
        pos = pos + ((rep[me] == g_o) & (pos >= rank[me]))
    out_s = np.empty(order.size, np.float32)
    out_i = np.empty(order.size, np.int64)
    out_s[order] = np.repeat(np.maximum.reduceat(s.ravel()[order], starts),
                             np.diff(np.append(starts, order.size)))
    out_i[order] = members[start[g_o] + pos]
    # sort again by row, similarity descending, index ascending (similarities in [-1, 1]:
    # order-preserving integer keys of -s)
    neg = (-out_s).view(np.int32).astype(np.int64)
    neg = np.where(neg < 0, -(neg & 0x7FFFFFFF), neg) + 2**31
    # one key of row and similarity (rows < 2**30: hdlfast handles at most 2**31 - 1 points)
    resort = np.lexsort((out_i, (r << 33) | neg)).reshape(nr, k) - np.arange(nr)[:, None] * k
    sims[rows] = np.take_along_axis(out_s.reshape(nr, k), resort, 1)
    idx[rows] = np.take_along_axis(out_i.reshape(nr, k), resort, 1)


def check_filled(heap_s: np.ndarray, what: str = "kNN search") -> None:
    """Internal check after a top-k of unit rows: every entry must hold a real neighbour
    (similarity in [-1, 1]), never the (-inf, index sentinel) padding, which would reach the
    caller or index arrays out of bounds in the kernels that read the graph."""
    if heap_s.size and not (heap_s[:, -1] >= -1.5).all():
        row = int(np.argmin(heap_s[:, -1] >= -1.5))
        raise RuntimeError(f"hdlfast internal error: the {what} left row {row} without its "
                           "k neighbours; please report this with the input's shape and dtype")


def block_sizes(nq: int, nd: int, budget: int, symmetric: bool) -> tuple[int, int]:
    """Query and database block sizes such that the tiles of all workers fit in ``budget``."""
    elems = max(budget // (4 * _MAX_WORKERS_BUDGETED), 1)
    if symmetric:
        b = int(min(nq, 1024, max(int(np.sqrt(elems)), 1)))
        return b, b
    bd = int(min(nd, elems, max(1024, elems // min(nq, 1024))))  # few queries: wider tiles
    bq = int(min(nq, max(1024, elems // bd)))  # a small database: taller tiles, fewer tasks
    return bq, bd


def symmetric_rounds(nb: int):
    """Every block pair (i <= j) once, in rounds where no block appears twice (the circle
    method of round-robin tournaments; diagonal tiles fill the bye). A generator: one round
    (nb / 2 pairs) exists at a time, so the schedule's memory does not grow as nb^2."""
    m = nb + nb % 2
    ids = list(range(m))
    for _ in range(m - 1):
        pairs = []
        for t in range(m // 2):
            a, b = ids[t], ids[m - 1 - t]
            if a >= nb or b >= nb:  # the bye: this block gets its diagonal tile
                pairs.append((min(a, b), min(a, b)))
            else:
                pairs.append((min(a, b), max(a, b)))
        yield pairs
        ids = [ids[0], ids[-1]] + ids[1:-1]
    if nb % 2 == 0:
        yield [(i, i) for i in range(nb)]


def _two_rows(x: np.ndarray) -> np.ndarray:
    """x itself when it has two rows or more, else its row twice."""
    return x if x.shape[0] > 1 else np.concatenate([x, x])


def tile_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The similarity tile a @ b.T (C-contiguous), in this thread's scratch buffer (see
    :func:`hdlfast._host.scratch`: merge it before the thread's next tile). A one-row
    operand would make BLAS take its matrix-vector path, which rounds a dot product
    differently depending on the row's position: identical rows would no longer tie. Padding
    to two rows keeps every tile on the matrix-matrix path."""
    if a.shape[0] > 1 and b.shape[0] > 1:
        return np.matmul(a, b.T, out=scratch("tile", (a.shape[0], b.shape[0])))
    tile = np.matmul(_two_rows(a), _two_rows(b).T)
    return np.ascontiguousarray(tile[:a.shape[0], :b.shape[0]])


RESERVOIR_K = 64  # from this k on, per-row reservoirs instead of heaps (measured: README)
SYMMETRIC_RESERVOIR_SLACK = 96  # a self-graph switches from k >= d + this
_RESERVOIR_BYTES = 32 << 20  # reservoir keys per worker


def uses_reservoir(k: int, d: int, symmetric: bool) -> bool:
    """Whether :func:`topk` takes the reservoir path. Measured on 2 cores (50,000 rows): a
    query-database search gains from k = 64 on; a self-graph, which then gives up its halved
    products, from about k = d + 96 (d = 128: heap faster at k = 128, reservoir at 256; d =
    256: heap at 200, reservoir at 400)."""
    if symmetric:
        return k >= max(RESERVOIR_K, d + SYMMETRIC_RESERVOIR_SLACK)
    return k >= RESERVOIR_K


def topk(kernels, q: np.ndarray, db: np.ndarray | None, k: int, exclude_self: bool,
         memory_budget: int | None, done=None):
    """(sims, idx) of the k most similar rows of ``db`` (``q`` itself when None) for each row
    of ``q``; rows already unit-norm float32. ``kernels`` is the backend's merge kernels.

    Small k: running heaps, and a self-graph multiplies only the tiles on and above the
    diagonal. Large k (:func:`uses_reservoir`): the heap's O(log k) per surviving candidate
    dominates, so each worker takes a block of query rows through every database tile with
    one reservoir per row (O(1) per candidate, see csrc/cpu/topk.h), which also keeps the
    scratch to one block of rows; a self-graph then multiplies every tile. Both give the
    exact top k under the tie rule. ``done(fraction)``, when given, is called as the work
    advances (a progress bar's update; fractions sum to 1)."""
    symmetric = db is None
    if symmetric:
        db = q
    nq, nd = q.shape[0], db.shape[0]
    budget = DEFAULT_BUDGET if memory_budget is None else int(memory_budget)
    reservoir = uses_reservoir(k, q.shape[1], symmetric)
    bq, bd = block_sizes(nq, nd, budget, symmetric)
    parts = _database_bounds(nd, bd, min(num_workers(), nd // _MIN_PART_ROWS))
    if not symmetric and nq <= bq and len(parts) > 1 and \
            min(hi - lo for lo, hi in parts) > k:  # every part fills its k (self excluded)
        return _database_parts(kernels, q, db, k, exclude_self, bd, parts, reservoir, done)
    if reservoir:
        return _reservoir_topk(kernels, q, db, k, exclude_self, budget, done)
    nbq, nbd = -(-nq // bq), -(-nd // bd)
    step = 1 / (nbq * (nbq + 1) // 2 if symmetric else nbq * nbd)  # one tile's share
    heap_s = np.full((nq, k), -np.inf, dtype=np.float32)
    heap_i = np.full((nq, k), _INDEX_SENTINEL, dtype=np.int64)
    workers = num_workers()

    def product(q0, d0):
        return tile_product(q[q0:q0 + bq], db[d0:d0 + bd])

    def symmetric_tile(pair):
        i, j = pair
        tile = product(i * bq, j * bd)
        kernels.merge_rows(tile, i * bq, j * bd, heap_s, heap_i, exclude_self)
        if i != j:
            kernels.merge_cols(tile, i * bq, j * bd, heap_s, heap_i)
        if done is not None:
            done(step)

    cancel = threading.Event()

    def query_block(q0):
        for d0 in range(0, nd, bd):
            if cancel.is_set():  # the caller was interrupted: stop between tiles
                return
            kernels.merge_rows(product(q0, d0), q0, d0, heap_s, heap_i, exclude_self)
            if done is not None:
                done(step)

    # BLAS on one thread everywhere: OpenBLAS rounds a product differently on several
    # threads than on one, which would make results depend on the thread count.
    with single_threaded_blas():
        if nq <= bq and symmetric:  # a single tile: no pool
            symmetric_tile((0, 0))
        elif nq <= bq:  # a single row of tiles
            query_block(0)
        else:
            with ThreadPoolExecutor(workers) as pool:
                if symmetric:
                    for pairs in symmetric_rounds(-(-nq // bq)):
                        run_all(pool, symmetric_tile, pairs, cancel)  # a round: disjoint heaps
                else:
                    run_all(pool, query_block, range(0, nq, bq), cancel)
    kernels.finalize(heap_s, heap_i)
    check_filled(heap_s)
    return heap_s, heap_i


_MIN_PART_ROWS = 16384  # few queries: a database part per worker, at least this many rows
_PART_ALIGN = 256  # parts start at multiples of this many rows (whole BLAS column panels)


def _database_bounds(nd: int, bd: int, parts: int) -> list:
    """[lo, hi) of about ``parts`` database parts: whole tiles of ``bd`` rows, so the tiles
    are those of one worker's pass (the same bits), or when fewer tiles than parts, runs of
    whole BLAS column panels."""
    if parts < 2:
        return [(0, nd)]
    align = bd if nd // bd >= parts else _PART_ALIGN
    size = -(-(-(-nd // parts)) // align) * align
    return [(lo, min(nd, lo + size)) for lo in range(0, nd, size)]


def _database_parts(kernels, q, db, k, exclude_self, bd, bounds, reservoir, done=None):
    """Few queries (one block of rows): each worker takes a part of the database (``bounds``,
    each holding more than k rows), its tiles merged into heaps (or reservoirs) of its own,
    and the parts' top k are merged under the tie rule (similarity descending, index
    ascending). One block of rows would otherwise keep every product on one core: a single
    query against 400,000 rows was one matrix-vector-shaped product on one thread."""
    nq = q.shape[0]
    step = 1 / sum(-(-(hi - lo) // bd) for lo, hi in bounds)
    cancel = threading.Event()
    out_s = np.empty((nq, len(bounds) * k), np.float32)
    out_i = np.empty((nq, len(bounds) * k), np.int64)

    def part(p):
        lo, hi = bounds[p]
        sims, idx = out_s[:, p * k:(p + 1) * k], out_i[:, p * k:(p + 1) * k]
        if reservoir:
            cap = 2 * k
            keys = np.empty((nq, cap), np.uint64)
            count, thr = np.zeros(nq, np.int64), np.zeros(nq, np.uint64)
        else:
            heap_s = np.full((nq, k), -np.inf, dtype=np.float32)
            heap_i = np.full((nq, k), _INDEX_SENTINEL, dtype=np.int64)
        for d0 in range(lo, hi, bd):
            if cancel.is_set():
                return
            tile = tile_product(q, db[d0:min(hi, d0 + bd)])
            if reservoir:
                kernels.reservoir_merge(tile, 0, d0, keys, count, thr, k, exclude_self)
            else:
                kernels.merge_rows(tile, 0, d0, heap_s, heap_i, exclude_self)
            if done is not None:
                done(step)
        if reservoir:
            got_s, got_i = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
            kernels.reservoir_finish(keys, count, got_s, got_i)
        else:
            kernels.finalize(heap_s, heap_i)
            got_s, got_i = heap_s, heap_i
        sims[:], idx[:] = got_s, got_i

    with single_threaded_blas(), ThreadPoolExecutor(len(bounds)) as pool:
        run_all(pool, part, range(len(bounds)), cancel)
    order = np.lexsort((out_i, -out_s), axis=1)[:, :k]
    sims = np.ascontiguousarray(np.take_along_axis(out_s, order, 1))
    idx = np.ascontiguousarray(np.take_along_axis(out_i, order, 1))
    check_filled(sims)
    return sims, idx


def _reservoir_topk(kernels, q, db, k, exclude_self, budget, done=None):
    nq, nd = q.shape[0], db.shape[0]
    cap = 2 * k  # as faiss: a full reservoir keeps its best k, so selections are rare
    bq, bd = block_sizes(nq, nd, budget, symmetric=False)
    bq = max(1, min(bq, _RESERVOIR_BYTES // (8 * cap)))
    step = 1 / (-(-nq // bq) * -(-nd // bd))
    sims = np.empty((nq, k), np.float32)
    idx = np.empty((nq, k), np.int64)
    cancel = threading.Event()

    def query_block(q0):
        rows = min(bq, nq - q0)
        keys = np.empty((rows, cap), np.uint64)
        count = np.zeros(rows, np.int64)
        thr = np.zeros(rows, np.uint64)
        for d0 in range(0, nd, bd):
            if cancel.is_set():
                return
            kernels.reservoir_merge(tile_product(q[q0:q0 + rows], db[d0:d0 + bd]), q0, d0,
                                    keys, count, thr, k, exclude_self)
            if done is not None:
                done(step)
        kernels.reservoir_finish(keys, count, sims[q0:q0 + rows], idx[q0:q0 + rows])

    with single_threaded_blas():
        if nq <= bq:
            query_block(0)
        else:
            with ThreadPoolExecutor(num_workers()) as pool:
                run_all(pool, query_block, range(0, nq, bq), cancel)
    check_filled(sims)
    return sims, idx


def bipartite_rounds(nbq: int, nbd: int):
    """Every (query block, database block) pair once, in rounds where no query block and no
    database block appears twice (pairs on the same wrapped diagonal of the grid). A
    generator, one round at a time, as :func:`symmetric_rounds`."""
    m = max(nbq, nbd)
    for r in range(m):
        pairs = [(a, (a + r) % m) for a in range(nbq) if (a + r) % m < nbd]
        if pairs:
            yield pairs


def topk_pair(kernels, q: np.ndarray, db: np.ndarray, kq: int, kd: int,
              memory_budget: int | None, floors=(None, None)):
    """From one pass of tile products q @ db.T, both halves of an off-diagonal block pair of a
    self-graph: the ``kq`` most similar ``db`` rows of each ``q`` row and the ``kd`` most
    similar ``q`` rows of each ``db`` row (local indices; rows already unit-norm float32).
    Half the products of two :func:`topk` calls.

    ``floors``: per row of q and of db, a similarity the row's final k-th neighbour is known
    to reach (e.g. its k-th best within its own block), or None. Heaps start full of
    (floor, index sentinel) entries, so candidates below the floor are never pushed; entries
    still holding the sentinel index at the end mean "nothing above the floor"."""
    nq, nd = q.shape[0], db.shape[0]
    budget = DEFAULT_BUDGET if memory_budget is None else int(memory_budget)
    b = block_sizes(max(nq, nd), max(nq, nd), budget, True)[0]
    heaps = []
    for n, kk, floor in ((nq, kq, floors[0]), (nd, kd, floors[1])):
        hs = np.full((n, kk), -np.inf, np.float32)
        if floor is not None:
            hs[:] = np.asarray(floor, np.float32)[:, None]
        heaps.append((hs, np.full((n, kk), _INDEX_SENTINEL, np.int64)))
    (qs, qi), (ds, di) = heaps

    def tile(pair):
        a, c = pair[0] * b, pair[1] * b
        t = tile_product(q[a:a + b], db[c:c + b])
        kernels.merge_rows(t, a, c, qs, qi, False)
        kernels.merge_cols(t, a, c, ds, di)

    rounds = bipartite_rounds(-(-nq // b), -(-nd // b))
    workers = num_workers()
    with single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        for pairs in rounds:
            run_all(pool, tile, pairs)  # a round's tiles: disjoint heaps on both sides
    for hs, hi in heaps:
        kernels.finalize(hs, hi)
    return heaps


class HostKNN:
    """The kNN search of a CPU backend: unit float32 copies of the rows, blocked tile products
    merged by ``kernels`` (native or numba), exact copies tied as the tie rule says; results
    in the caller's array kind."""

    def __init__(self, kernels, backend: str):
        self.kernels, self.backend = kernels, backend

    def __call__(self, q, db, k, *, exclude_self, allow_tf32, memory_budget, q_name, db_name,
                 progress=False):
        del allow_tf32  # fp32 BLAS on the CPU
        bar = None
        if progress:  # only then: a small call should not pay for the bar
            from tqdm.auto import tqdm

            bar = tqdm(total=1.0, desc="kNN search (exact)", leave=False, file=sys.stderr,
                       bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
        try:
            sims, idx, _ = self._search(q, db, q_name, db_name, exclude_self, lambda qn, dn: (
                *topk(self.kernels, qn, dn, k, exclude_self, memory_budget,
                      bar.update if bar else None), 1.0))
        finally:
            if bar is not None:
                bar.close()
        return sims, idx

    def ivf(self, q, db, k, *, exclude_self, nprobe, target_recall, seed, recall_sample,
            memory_budget, q_name, db_name, progress=False):
        """(sims, idx, recall, nprobe) of the inverted-file search of ``knn.ivf``."""
        from .ivf import ivf_topk

        budget = DEFAULT_BUDGET if memory_budget is None else int(memory_budget)
        return self._search(q, db, q_name, db_name, exclude_self, lambda qn, dn: ivf_topk(
            self.kernels, self.backend, qn, dn, k, exclude_self, nprobe, target_recall, seed,
            budget, recall_sample, progress), tie=False)

    def _search(self, q, db, q_name, db_name, exclude_self, search, tie=True):
        """search(unit q, unit db or None) -> (sims, idx, *info), exact copies tied as the
        tie rule says (unless ``tie`` is False: the search did it), the arrays in the
        caller's kind."""
        qn = normalize(q, q_name)
        dn = None if db is None else normalize(db, db_name)
        sims, idx, *info = search(qn, dn)
        rep = duplicate_reps(qn if dn is None else dn) if tie else None
        if rep is not None:
            tie_duplicates(sims, idx, rep, exclude_self)
        return (_arrays.from_host(sims, q), _arrays.from_host(idx, q), *info)

    def pair(self, q, db, kq, kd, *, allow_tf32, memory_budget, floors=(None, None)):
        """(top-kq of q against db, top-kd of db against q) as numpy, from one pass of tile
        products (an off-diagonal block pair of a self-graph; rows already checked). With
        ``floors`` (see :func:`topk_pair`) entries may hold the index sentinel int64 max."""
        del allow_tf32
        return topk_pair(self.kernels, normalize(q, "X"), normalize(db, "X"), kq, kd,
                         memory_budget, floors)
