"""k-means on the host, driven by ``hdlfast.kmeans``: one fused pass per iteration assigns
every row to its best centroid and sums the rows per cluster for the update.

The rows are cut into chunks of ``SUM_CHUNK`` rows; one worker thread per core takes a chunk:
tile products of its rows with the centroids (numpy matmul, single-threaded BLAS), the best and
second-best centroid of each row (``top2_update``), then the chunk's rows, still in cache,
added to per-cluster partial sums (``chunk_sums``). Partials are added to the totals chunk
after chunk in row order (``fold_sums`` through :class:`InOrder`), so the sums are the same
for any thread count and on the native and numba kernels, whose results agree bit for bit
(csrc/cpu/kmeans.h defines the order). Each chunk's partials are kept for the next pass (when
they take at most half the rows' memory), which re-adds only the clusters that lost or gained
a row in that chunk: late passes move a few hundred labels, and summing afresh would read
every row from memory again.

Hamerly's bounds skip the scoring of rows whose label provably stays: each row keeps an upper
bound on its distance to its own centroid and a lower bound on the distance to every other,
moved by how far the centroids moved; a row is scored again only when the bounds leave less
than twice the float32 scoring error between its own centroid and the others, so a skipped
row keeps the label a full pass would give it (later passes score 10-50% of the rows). The
rows scored are multiplied in other tiles than in a full pass, where BLAS may round a score
by one unit differently: only a near-tie within float32 rounding can come out otherwise.

Spherical k-means scores unit rows against unit centroids (cosine). Euclidean k-means scores
x . c - |c|^2 / 2, the nearest centroid's being the largest, as scikit-learn's Lloyd does.
"""
from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from .. import _arrays
from .._host import InOrder, normalize, num_workers, run_all, scratch, single_threaded_blas
from ..knn.host import tile_product

SUM_CHUNK = 4096  # rows per partial sum: kSumChunk of csrc/cpu/kmeans.h (part of the result)
# float32 tile of at most 2 MiB (a whole chunk for up to 128 centroids): measured on 2 cores
# (100,000 x 128, 100 centroids), taller products beat L2-sized ones (256 KiB) by 5-15%
_TILE_ELEMENTS = 1 << 19
_MAX_TILE_COLS = 4096  # more centroids than this: column blocks, rows keep a running best
_NO_WEIGHTS = np.empty(0, np.float32)
_U32 = 2.0 ** -24  # float32's unit roundoff
PRUNE = True  # skip rows whose label provably stays (tests compare with False)


def native_kernels(mod):
    """The k-means kernels of the compiled module ``mod`` (names of ``numba_kernels``)."""
    return SimpleNamespace(top2_update=mod.top2_update, set_bounds=mod.set_bounds,
                           bound_test=mod.bound_test,
                           chunk_sums=mod.chunk_sums, chunk_sums_update=mod.chunk_sums_update,
                           fold_sums=mod.fold_sums,
                           row_sq_dists=mod.row_sq_dists, pp_trials=mod.pp_trials)


class _Partials:
    """One chunk's partial sums: slots taken in order of first appearance (see
    ``chunk_sums``); ``used`` slots hold the chunk's clusters."""

    def __init__(self, n_clusters: int, d: int):
        cap = min(n_clusters, SUM_CHUNK)
        self.slot_of = np.full(n_clusters, -1, np.int32)
        self.clusters = np.empty(cap, np.int64)
        self.psums = np.empty((cap, d), np.float64)
        self.pcounts = np.empty(cap, np.int64)
        self.used = 0

    def add(self, km, x, inv, labels):
        self.used = km.chunk_sums(x, inv, labels, self.slot_of, self.clusters, self.psums,
                                  self.pcounts)

    def update(self, km, x, inv, old_labels, labels, mark):
        """Bring partials added for ``old_labels`` up to date for ``labels`` (``mark``: int8
        zeros of n_clusters, left zero), re-adding only the clusters that changed."""
        self.used = km.chunk_sums_update(x, inv, old_labels, labels, mark, self.slot_of,
                                         self.clusters, self.psums, self.pcounts, self.used)

    @staticmethod
    def nbytes(n_clusters: int, d: int) -> int:
        return 4 * n_clusters + min(n_clusters, SUM_CHUNK) * (8 * d + 16)

    def fold_into(self, km, sums, counts):
        km.fold_sums(self.clusters, self.used, self.psums, self.pcounts, sums, counts)


def cluster_sums(km, x: np.ndarray, inv: np.ndarray, labels: np.ndarray, n_clusters: int):
    """(sums (C, d) float64, counts (C,) int64) of the rows x * inv (inv empty: weight 1) per
    label, in the fused pass's order: the reference the CUDA kernel is checked against."""
    n, d = x.shape
    sums = np.zeros((n_clusters, d), np.float64)
    counts = np.zeros(n_clusters, np.int64)
    part = _Partials(n_clusters, d)
    for r0 in range(0, n, SUM_CHUNK):
        rows = slice(r0, r0 + SUM_CHUNK)
        part.add(km, x[rows], inv[rows] if inv.size else inv, labels[rows])
        part.fold_into(km, sums, counts)
    return sums, counts


class KMeansState:
    """One k-means run on the host: the rows it clusters (unit float32 rows for spherical
    k-means, the float32 rows for Euclidean), the labels of the last assignment, the sums that
    assignment gathered for the update, and Hamerly's bounds on every row's distances."""

    def __init__(self, kmeans_kernels, x, spherical: bool, memory_budget):
        self._km, self._spherical = kmeans_kernels, spherical
        self._like = x
        self.rows = normalize(x, "X") if spherical else _arrays.host_float32(x)
        n, d = self.rows.shape
        self.labels = np.full(n, -1, np.int64)
        self._spare = np.empty(n, np.int64)  # the next assignment's labels
        tile = _TILE_ELEMENTS if memory_budget is None else \
            max(1, min(_TILE_ELEMENTS, int(memory_budget) // (4 * num_workers())))
        self._tile_elements = tile
        self._memory_budget = memory_budget
        self._centroids = self._sums = self._counts = None
        self._parts = None  # every chunk's partials, kept between passes (see _pass)
        self.scored = 0  # rows the last pass scored
        self._upper = np.empty(n, np.float64)  # >= the distance to the own centroid
        self._lower = np.empty(n, np.float64)  # <= the distance to every other centroid
        self._sq_norms = np.empty(n, np.float64)  # |x|^2: the distance of x to the origin
        self._km.row_sq_dists(self.rows, np.zeros((1, d)), np.zeros(n, np.int64),
                              self._sq_norms)
        self._norms = np.sqrt(self._sq_norms)

    def host_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.rows[rows].astype(np.float64)

    def assign(self, centroids: np.ndarray) -> int:
        """Every row's best centroid of ``centroids`` (C, d) float64 (unit rows when
        spherical) and the per-cluster sums of the rows, in one pass; returns how many labels
        changed. Rows whose bounds prove their label cannot change keep it unscored (see
        :meth:`_bounds`)."""
        centroids = np.ascontiguousarray(centroids, np.float64)
        c32 = centroids.astype(np.float32)
        c_sq = np.einsum("ij,ij->i", centroids, centroids)
        bias = _NO_WEIGHTS if self._spherical else (-0.5 * c_sq).astype(np.float32)
        eps = self._score_error(float(np.sqrt(c_sq.max())), bias)
        bounds = None
        if self._centroids is not None and PRUNE:
            bounds = self._bounds(centroids)
        new = self._spare
        new[:] = self.labels
        self._sums, self._counts = self._pass(c32, bias, new, bounds, eps)
        changed = int(np.count_nonzero(new != self.labels))
        self._spare, self.labels = self.labels, new
        self._centroids = centroids
        return changed

    def _score_error(self, c_max: float, bias: np.ndarray) -> np.ndarray:
        """Per row, a bound on |float32 score - exact score| for every centroid (c_max: the
        largest centroid norm): the product's rounding (at most d + 2 roundings of |x| |c| in
        any summation order, the float32 centroid's own rounding included), the bias's and the
        sum's, doubled for safety."""
        d = self.rows.shape[1]
        b_max = float(np.abs(bias).max()) if bias.size else 0.0
        return 2.0 * _U32 * ((d + 4) * c_max * self._norms + 3.0 * b_max) + 1e-300

    def _bounds(self, centroids) -> SimpleNamespace:
        """What Hamerly's test (``bound_test``, run per chunk) needs after the centroids moved
        by delta: the own centroid is at most upper + delta(own) away, every other at least
        lower - the largest other move; when the resulting gap between the scores exceeds the
        float32 scoring error twice over, the float32 argmax picks the own centroid again.
        (Measured and dropped: scoring the few farthest-moved centroids exactly against every
        row, so that one far move does not lower every bound, skipped more rows in that pass
        but left looser bounds for the next ones, and the runs were 5-15% slower.)"""
        delta = np.sqrt(((centroids - self._centroids) ** 2).sum(axis=1)) * (1 + 1e-9)
        first = int(np.argmax(delta))
        rest = float(np.delete(delta, first).max()) if delta.size > 1 else 0.0
        return SimpleNamespace(delta=delta, first=first, first_max=float(delta[first]),
                               rest_max=rest)

    def _keeps_partials(self, n_clusters: int) -> bool:
        """Whether every chunk's partials stay between passes: when they take at most half
        the rows' memory (and fit memory_budget when given), which holds up to about 1,000
        clusters for any width."""
        n, d = self.rows.shape
        total = -(-n // SUM_CHUNK) * _Partials.nbytes(n_clusters, d)
        budget = self.rows.nbytes // 2
        if self._memory_budget is not None:
            budget = min(budget, self._memory_budget)
        return total <= budget

    def _pass(self, c32, bias, labels, bounds, eps):
        """One assignment pass; returns the sums and counts of the new ``labels``, and counts
        the rows scored in ``self.scored`` (all of them when ``bounds`` is None). When the
        chunks' partials are kept (:meth:`_keeps_partials`), a later pass re-adds in each
        chunk only the clusters that lost or gained a row (``chunk_sums_update``: the same
        partials, bit for bit): late passes change a few hundred labels, and re-adding every
        row read them all again from memory."""
        km, x = self._km, self.rows
        (n, d), n_clusters = x.shape, c32.shape[0]
        n_chunks = -(-n // SUM_CHUNK)
        sums = np.zeros((n_clusters, d), np.float64)
        counts = np.zeros(n_clusters, np.int64)
        bc = min(n_clusters, _MAX_TILE_COLS)
        br = max(1, min(SUM_CHUNK, self._tile_elements // bc))
        spare = queue.SimpleQueue()  # partials folded and free again (when not kept)
        marks = queue.SimpleQueue()  # int8 zeros of n_clusters for chunk_sums_update
        parts = self._parts
        if parts is None and self._keeps_partials(n_clusters):
            parts = [None] * n_chunks
        old = self.labels
        kappa = 1.0 if self._spherical else 0.0
        scored = np.zeros(n_chunks, np.int64)

        def fold(part):
            part.fold_into(km, sums, counts)
            if parts is None:
                spare.put(part)

        in_order = InOrder(fold)

        def score(r0, r1):
            """Best centroids and bounds of the rows of [r0, r1) that Hamerly's test leaves
            to score (all of them without bounds); returns how many."""
            if bounds is None:
                rows, q = np.arange(r0, r1, dtype=np.int64), x[r0:r1]
            else:
                b = bounds
                need = scratch("kmeans_need", (r1 - r0,), np.int64)
                count = km.bound_test(old[r0:r1], b.delta, b.first, b.first_max, b.rest_max,
                                      eps[r0:r1], self._upper[r0:r1], self._lower[r0:r1],
                                      need)
                if count == 0:
                    return 0
                rows = need[:count]
                rows += r0
                q = np.take(x, rows, axis=0, out=scratch("kmeans_rows", (count, d)))
            m = rows.size
            best = scratch("kmeans_best", (m,))
            second = scratch("kmeans_second", (m,))
            idx = scratch("kmeans_idx", (m,), np.int64)
            best.fill(-np.inf)
            second.fill(-np.inf)
            for a in range(0, m, br):
                e = min(m, a + br)
                for c0 in range(0, n_clusters, bc):
                    tile = tile_product(q[a:e], c32[c0:c0 + bc])
                    km.top2_update(tile, bias[c0:c0 + bc] if bias.size else bias, c0,
                                   best[a:e], idx[a:e], second[a:e])
            # exact distances are d^2 = |x|^2 + kappa - 2 score (kappa = |c|^2 = 1 for
            # spherical k-means, 0 for Euclidean, whose score holds -|c|^2 / 2)
            km.set_bounds(rows, best, idx, second, self._sq_norms, eps, kappa, labels,
                          self._upper, self._lower)
            return m

        def chunk(i):
            r0, r1 = i * SUM_CHUNK, min(n, (i + 1) * SUM_CHUNK)
            scored[i] = score(r0, r1)
            part = None if parts is None else parts[i]
            if part is not None:
                try:
                    mark = marks.get_nowait()
                except queue.Empty:
                    mark = np.zeros(n_clusters, np.int8)
                part.update(km, x[r0:r1], _NO_WEIGHTS, old[r0:r1], labels[r0:r1], mark)
                marks.put(mark)
            else:
                try:
                    part = spare.get_nowait()
                except queue.Empty:  # every partial waits for an earlier chunk: one more
                    part = _Partials(n_clusters, d)
                part.add(km, x[r0:r1], _NO_WEIGHTS, labels[r0:r1])
                if parts is not None:
                    parts[i] = part
            in_order.put(i, part)

        with single_threaded_blas():  # as knn.host: results independent of the thread count
            if n_chunks == 1:
                chunk(0)
            else:
                with ThreadPoolExecutor(min(num_workers(), n_chunks)) as pool:
                    run_all(pool, chunk, range(n_chunks))
        if in_order.done != n_chunks:
            raise RuntimeError("hdlfast internal error: k-means folded the sums of "
                               f"{in_order.done} of {n_chunks} chunks; please report this")
        self._parts = parts
        self.scored = int(scored.sum())
        return sums, counts

    def update(self, n_clusters: int):
        """The per-cluster sums and counts gathered by the last assignment."""
        return self._sums, self._counts

    def sq_dists(self) -> np.ndarray:
        """Squared distance of every row to the centroid it was last assigned to (float64)."""
        out = np.empty(self.rows.shape[0], np.float64)
        self._km.row_sq_dists(self.rows, self._centroids, self.labels, out)
        return out

    def labels_out(self):
        return _arrays.from_host(self.labels, self._like)
