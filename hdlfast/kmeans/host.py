"""k-means on the host, driven by ``hdlfast.kmeans``: one fused pass per iteration assigns
every row to its best centroid and sums the rows per cluster for the update.

The rows are cut into chunks of ``SUM_CHUNK`` rows; one worker thread per core takes a chunk:
tile products of its rows with the centroids (numpy matmul, single-threaded BLAS), the best
centroid of each row (``top1_update``), then the chunk's rows, still in cache, added to
per-cluster partial sums (``chunk_sums``). Partials are added
to the totals chunk after chunk in row order (``fold_sums`` through :class:`InOrder`), so
the sums are the same for any thread count and on the native and numba kernels, whose
results agree bit for bit (csrc/cpu/kmeans.h defines the order).

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


def native_kernels(mod):
    """The k-means kernels of the compiled module ``mod`` (names of ``numba_kernels``)."""
    return SimpleNamespace(top1_update=mod.top1_update, chunk_sums=mod.chunk_sums,
                           fold_sums=mod.fold_sums, row_sq_dists=mod.row_sq_dists,
                           pp_trials=mod.pp_trials)


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
    k-means, the float32 rows for Euclidean), the labels of the last assignment and the sums
    that assignment gathered for the update."""

    def __init__(self, kmeans_kernels, x, spherical: bool, memory_budget):
        self._km, self._spherical = kmeans_kernels, spherical
        self._like = x
        self.rows = normalize(x, "X") if spherical else _arrays.host_float32(x)
        n = self.rows.shape[0]
        self.labels = np.full(n, -1, np.int64)
        self._spare = np.empty(n, np.int64)  # the next assignment's labels
        tile = _TILE_ELEMENTS if memory_budget is None else \
            max(1, min(_TILE_ELEMENTS, int(memory_budget) // (4 * num_workers())))
        self._tile_elements = tile
        self._centroids = self._sums = self._counts = None

    def host_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.rows[rows].astype(np.float64)

    def assign(self, centroids: np.ndarray) -> int:
        """Every row's best centroid of ``centroids`` (C, d) float64 (unit rows when
        spherical) and the per-cluster sums of the rows, in one pass; returns how many labels
        changed."""
        c32 = np.ascontiguousarray(centroids, np.float32)
        bias = _NO_WEIGHTS if self._spherical else \
            (-0.5 * np.einsum("ij,ij->i", centroids, centroids)).astype(np.float32)
        new = self._spare
        self._sums, self._counts = self._pass(c32, bias, new)
        changed = int(np.count_nonzero(new != self.labels))
        self._spare, self.labels = self.labels, new
        self._centroids = np.ascontiguousarray(centroids, np.float64)
        return changed

    def _pass(self, c32: np.ndarray, bias: np.ndarray, labels: np.ndarray):
        km, x = self._km, self.rows
        (n, d), n_clusters = x.shape, c32.shape[0]
        sums = np.zeros((n_clusters, d), np.float64)
        counts = np.zeros(n_clusters, np.int64)
        bc = min(n_clusters, _MAX_TILE_COLS)
        br = max(1, min(SUM_CHUNK, self._tile_elements // bc))
        spare = queue.SimpleQueue()  # partials folded and free again

        def fold(part):
            part.fold_into(km, sums, counts)
            spare.put(part)

        in_order = InOrder(fold)

        def chunk(i):
            r0, r1 = i * SUM_CHUNK, min(n, (i + 1) * SUM_CHUNK)
            best = scratch("kmeans_best", (r1 - r0,))
            best.fill(-np.inf)
            for a in range(r0, r1, br):
                b = min(r1, a + br)
                for c0 in range(0, n_clusters, bc):
                    tile = tile_product(x[a:b], c32[c0:c0 + bc])
                    km.top1_update(tile, bias[c0:c0 + bc] if bias.size else bias, c0,
                                   best[a - r0:b - r0], labels[a:b])
            try:
                part = spare.get_nowait()
            except queue.Empty:  # every partial waits for an earlier chunk: one more
                part = _Partials(n_clusters, d)
            part.add(km, x[r0:r1], _NO_WEIGHTS, labels[r0:r1])
            in_order.put(i, part)

        n_chunks = -(-n // SUM_CHUNK)
        with single_threaded_blas():  # as knn.host: results independent of the thread count
            if n_chunks == 1:
                chunk(0)
            else:
                with ThreadPoolExecutor(min(num_workers(), n_chunks)) as pool:
                    run_all(pool, chunk, range(n_chunks))
        if in_order.done != n_chunks:
            raise RuntimeError("hdlfast internal error: k-means folded the sums of "
                               f"{in_order.done} of {n_chunks} chunks; please report this")
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
