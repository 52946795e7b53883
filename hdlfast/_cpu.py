"""Blocked exact top-k on the CPU, shared by the native and numba backends.

Tiles of the similarity matrix are BLAS products (numpy matmul); the backend's merge kernel
folds each tile into per-row running top-k heaps. One worker thread per core runs
"multiply a tile, merge it" with single-threaded BLAS, so every core merges the tile it just
wrote while it is still in its cache, and no idle BLAS or OpenMP threads spin against the merges.
Workers only ever run tiles whose heaps are disjoint, so no heap is shared.

For a self-graph only tiles on and above the block diagonal are multiplied: each off-diagonal
tile is merged once by rows and once by columns, halving the matrix-product work.
Peak extra memory: one tile per worker (``memory_budget`` bytes in all) plus the normalised
float32 copy of the data. The tiling does not depend on the number of threads, so results are
identical for any thread count.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from . import _arrays, _checks

DEFAULT_BUDGET = 256 << 20
_MAX_WORKERS_BUDGETED = 64  # tiles are sized as if this many workers could be live
_INDEX_SENTINEL = np.iinfo(np.int64).max


@functools.lru_cache(maxsize=None)
def _blas_controller() -> ThreadpoolController:
    """Built once: inspecting the loaded BLAS libraries costs about half a millisecond."""
    return ThreadpoolController()


_local = threading.local()
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = None


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread while any caller is inside; the original limits come back when the
    last one leaves. (BLAS thread counts are process-wide: nested or concurrent callers, such
    as dask tasks on threads, must not restore each other's limits half-way.)"""
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = _blas_controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_saved.restore_original_limits()
                _blas_saved = None


@contextlib.contextmanager
def threads(n: int):
    """Run this thread's hdlfast CPU work on ``n`` worker threads (dask block tasks: the
    scheduler already runs one task per core)."""
    old = getattr(_local, "threads", None)
    _local.threads = n
    try:
        yield
    finally:
        _local.threads = old


def num_workers() -> int:
    """This thread's :func:`threads` setting, else HDLFAST_NUM_THREADS, else the cores this
    process may run on."""
    if getattr(_local, "threads", None):
        return _local.threads
    env = os.environ.get("HDLFAST_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def description() -> dict:
    """The host CPU as benchmark records need it: model name, and on Linux x86 the family and
    model numbers (a VM often hides the name: "AMD EPYC" is Zen 3 at family 25 model 1, Zen 4
    at model 17) and whether AVX-512 is there."""
    out = {"model": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n", 1)[0]
    except OSError:
        return out
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" in fields:
        out["model"] = fields["model name"]
    for key, name in (("cpu family", "family"), ("model", "model_number")):
        if fields.get(key, "").isdigit():
            out[name] = int(fields[key])
    if "flags" in fields:
        out["avx512"] = "avx512f" in fields["flags"].split()
    return out


_NORM_BLOCK_ELEMENTS = 1 << 14  # float64 temporaries of normalize: 128 KiB per block


def normalize(x, name: str, dtype=np.float32) -> np.ndarray:
    """Rows of the 2-D array ``x`` (any kind, on the host or copied there block by block)
    scaled to unit L2 norm, as a C-contiguous copy of ``dtype``. NaN/Inf and zero rows are
    bad input.

    Scale-safe: in float64, each row is first divided by its largest magnitude, then by its
    norm, so every finite non-zero row works however tiny (1e-40, 1e-300) or large (1e300)
    its entries are: the norm can neither underflow to 0 nor overflow to Inf. Rows are done
    in blocks, so the temporaries stay a few MiB whatever N is."""
    n, d = x.shape
    out = np.empty((n, d), dtype)
    step = max(1, _NORM_BLOCK_ELEMENTS // max(d, 1))
    for b in range(0, n, step):
        blk = np.array(_arrays.to_host(x[b:b + step]), dtype=np.float64)
        peak = _arrays.row_peaks(blk)
        _checks.bad_peaks(peak, name, b)
        blk /= peak[:, None]
        blk /= np.sqrt(np.einsum("ij,ij->i", blk, blk))[:, None]
        blk += 0.0  # -0.0 -> +0.0: rows of equal values are equal bytes (duplicate_reps)
        out[b:b + step] = blk
    return out


_HASH_BLOCK_ELEMENTS = 1 << 15  # uint64 temporaries of duplicate_reps: 256 KiB per block


def duplicate_reps(u: np.ndarray):
    """For each row of ``u``, the smallest index of a row holding the same bytes (itself for
    a row without copies); None when no row has a copy. Rows are hashed (64-bit, blocks of
    rows), then rows with equal hashes compared exactly."""
    n, d = u.shape
    words = u.view(np.uint32)
    mult = np.random.default_rng(0x5EED).integers(1, 2**62, d, dtype=np.uint64) * 2 + 1
    h = np.empty(n, np.uint64)
    step = max(1, _HASH_BLOCK_ELEMENTS // d)
    for b in range(0, n, step):
        h[b:b + step] = words[b:b + step].astype(np.uint64) @ mult
    order = np.argsort(h, kind="stable")
    hs = h[order]
    same = hs[1:] == hs[:-1]
    if not same.any():
        return None
    cand = np.sort(order[np.concatenate([same, [False]]) | np.concatenate([[False], same])])
    _, first, inv = np.unique(np.ascontiguousarray(u[cand]).view(np.dtype((np.void, 4 * d))),
                              return_index=True, return_inverse=True)
    rep = np.arange(n, dtype=np.int64)
    rep[cand] = cand[first[inv.ravel()]]  # cand ascending: the first copy is the smallest
    return None if (rep == np.arange(n)).all() else rep


def tie_duplicates(sims: np.ndarray, idx: np.ndarray, rep: np.ndarray, exclude_self: bool):
    """Enforce the tie rule on exact copies of database rows, in place. BLAS rounds a dot
    product differently depending on where a row sits in the tile (OpenBLAS: by column
    panel), so two copies of a row can come out one rounding apart. Every copy a row lists
    takes the largest similarity computed for the copies it lists, the copies listed become
    the group's smallest indices (the point itself left out with ``exclude_self``), and the
    row is sorted again (similarity descending, index ascending)."""
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
        me = rows[r_o]
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
    bd = int(min(nd, 1024, elems))
    bq = int(min(nq, 1024, max(elems // bd, 1)))
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
    """The similarity tile a @ b.T (C-contiguous). A one-row operand would make BLAS take its
    matrix-vector path, which rounds a dot product differently depending on the row's
    position: identical rows would no longer tie. Padding to two rows keeps every tile on
    the matrix-matrix path."""
    if a.shape[0] > 1 and b.shape[0] > 1:
        return np.matmul(a, b.T)
    tile = np.matmul(_two_rows(a), _two_rows(b).T)
    return np.ascontiguousarray(tile[:a.shape[0], :b.shape[0]])


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
    workers = num_workers()

    def product(q0, d0):
        return tile_product(q[q0:q0 + bq], db[d0:d0 + bd])

    def symmetric_tile(pair):
        i, j = pair
        tile = product(i * bq, j * bd)
        kernels.merge_rows(tile, i * bq, j * bd, heap_s, heap_i, exclude_self)
        if i != j:
            kernels.merge_cols(tile, i * bq, j * bd, heap_s, heap_i)

    cancel = threading.Event()

    def query_block(q0):
        for d0 in range(0, nd, bd):
            if cancel.is_set():  # the caller was interrupted: stop between tiles
                return
            kernels.merge_rows(product(q0, d0), q0, d0, heap_s, heap_i, exclude_self)

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


def run_all(pool: ThreadPoolExecutor, fn, items, cancel: threading.Event | None = None):
    """fn(item) for every item on the pool, waiting for all; when the wait is interrupted
    (Ctrl-C) or a task fails, the tasks not yet started are cancelled and ``cancel`` is set
    (long tasks check it between tiles), so the call returns soon instead of after all."""
    futures = [pool.submit(fn, item) for item in items]
    try:
        for f in futures:
            f.result()
    except BaseException:
        if cancel is not None:
            cancel.set()
        for f in futures:
            f.cancel()
        raise


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


class SinkhornState:
    """One Sinkhorn run on the host: Q (the only N x K buffer, float32) and the float64 row
    scaling u, driven by ``hdlfast.sinkhorn`` through the backend's kernels."""

    def __init__(self, kernels, scores, beta: float, r: np.ndarray, power=None):
        n, k = scores.shape
        self._kern, self._r, self._beta, self._like = kernels, r, beta, scores
        self.q = np.empty((n, k), np.float32)
        self._rowmax = np.empty(n, np.float64)  # NaN marks a bad row
        if power is None:
            src = _arrays.host_view(scores)  # read by prepare, never written
            if src is None:
                _arrays.copy_to_host(self.q, scores)  # cast in place: no temporary
                src = self.q
            kernels.prepare(src, self.q, beta, self._rowmax)
        else:  # probabilities, raised to the integer power beta
            src = _arrays.host_view(scores, (np.float32, np.float64))
            if src is None:
                src = np.empty((n, k), np.float64)
                _arrays.copy_to_host(src, scores)
            kernels.prepare_power(src, self.q, power, self._rowmax)
        finite = np.isfinite(self._rowmax)
        #: the first row prepare refused (NaN or Inf; with a power, not probabilities), or -1
        self.bad_row = -1 if finite.all() else int(np.argmin(finite))
        if power is not None:
            with np.errstate(invalid="ignore"):
                self._rowmax = np.log(self._rowmax)  # Q = exp(beta (log p - log max p))
        self._u = np.empty(n, np.float64)
        self._colsum = np.empty(k, np.float64)

    def rowmax(self) -> np.ndarray:
        """The row maxima m_i of the scores (Q holds exp(beta (s - m_i)))."""
        return self._rowmax

    def start(self, u: np.ndarray) -> np.ndarray:
        """Column sums for the first step, from the initial row scaling ``u`` (host float64)."""
        self._u[:] = u
        self._kern.colsum(self.q, self._u, self._colsum)
        return self._colsum.copy()

    def row_scaling(self) -> np.ndarray:
        """A copy of the current row scaling u (for SeLa's stopping rule)."""
        return self._u.copy()

    def iterate(self, v: np.ndarray):
        """One fused pass; returns (local column sums, whether u stayed finite)."""
        self._kern.iterate(self.q, np.ascontiguousarray(v, np.float64), self._r, self._u,
                           self._colsum)
        return self._colsum.copy(), bool(np.isfinite(self._u).all())

    #: finalize does the last row scaling itself, so the driver skips the last iterate
    fused_finalize = True

    def finalize(self, v: np.ndarray):
        """The plan with column scaling ``v``, rows normalised (the last row scaling):
        (Q, labels, the plan's column marginals (host), whether every row had mass)."""
        labels = np.empty(self.q.shape[0], np.int64)
        marginals = np.empty(self.q.shape[1], np.float64)
        ok = bool(self._kern.finalize(self.q, np.ascontiguousarray(v, np.float64), self._r,
                                      labels, marginals))
        return (_arrays.from_host(self.q, self._like), _arrays.from_host(labels, self._like),
                marginals, ok)

    def host_buffer(self) -> np.ndarray:
        return self.q


class KMeansState:
    """One k-means run on the host: the rows the top-1 search sees (unit rows for spherical
    k-means; [x, 1, 0] rows, unit-scaled, for Euclidean, see ``hdlfast.kmeans``) and the
    current labels, driven by ``hdlfast.kmeans`` through the backend's kernels."""

    def __init__(self, kernels, kmeans_kernels, x, spherical: bool, memory_budget):
        self._kern, self._km, self._budget = kernels, kmeans_kernels, memory_budget
        self._like, self._spherical = x, spherical
        if spherical:
            self.rows = normalize(x, "X")  # the update sums unit rows
            self.q = self.rows
        else:
            host = _arrays.host_float32(x)
            self.rows = host
            aug = np.concatenate([host, np.ones((host.shape[0], 1), np.float32),
                                  np.zeros((host.shape[0], 1), np.float32)], axis=1)
            sq = np.einsum("ij,ij->i", aug, aug, dtype=np.float64)
            self.q = normalize(aug, "X")
            self.aug_norms = np.sqrt(sq)
        self.labels = np.full(x.shape[0], -1, np.int64)
        self._sims = None

    def host_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.rows[rows].astype(np.float64)

    def assign(self, db: np.ndarray) -> int:
        """Top-1 of every row against the unit centroid rows ``db``; returns how many labels
        changed."""
        sims, idx = topk(self._kern, self.q, db, 1, False, self._budget)
        new = idx[:, 0]
        changed = int(np.count_nonzero(new != self.labels))
        self.labels, self._sims = new, sims[:, 0]
        return changed

    def fit_scores(self) -> np.ndarray:
        return self._sims.astype(np.float64)

    def update(self, n_clusters: int):
        sums = np.empty((n_clusters, self.rows.shape[1]), np.float64)
        counts = np.empty(n_clusters, np.int64)
        self._km.cluster_sums(self.rows, np.empty(0, np.float32), self.labels, sums, counts)
        return sums, counts

    def labels_out(self):
        return _arrays.from_host(self.labels, self._like)
