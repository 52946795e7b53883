"""k-means state on the GPU, driven by ``hdlfast.kmeans`` as the host state is: assignment by
the fused top-1 search of ``knn.cuda``, update by ``cluster_sums`` of ``hdlfast._cuda``
(members grouped by CUB's stable radix sort, summed in the CPU's chunked row order).

Euclidean k-means runs the cosine search on augmented rows: x' = [x, 1, 0] and c'_j = [c_j,
-|c_j|^2 / 2, s_j] with s_j chosen so that every c'_j has the same norm R; then x' . c'_j =
x . c_j - |c_j|^2 / 2, the score the CPU maximises, and the most similar c'_j is the nearest
centroid."""
from __future__ import annotations

import math

import numpy as np

from .. import _arrays
from ..knn.cuda import inverse_norms, operand, safe_rows, topk


class KMeansState:
    """One k-means run on the device of ``x`` behind the interface of ``kmeans.host.KMeansState``:
    the rows (in the caller's dtype; [x, 1, 0] for Euclidean k-means), the labels and the
    top-1 similarities stay on the device; the centroids (C x d) and their float64 sums cross
    to the host once per iteration."""

    def __init__(self, cuda_module, x, spherical: bool, memory_budget, allow_tf32: bool):
        self._m, self._budget, self._tf32 = cuda_module, memory_budget, bool(allow_tf32)
        with _arrays.device_ctx(x):
            x = operand(x, "X")
            self._x, self._spherical = x, spherical
            if spherical:
                x = self._x = safe_rows(x, "X")
                self._inv = inverse_norms(cuda_module, x, "X")  # the update sums unit rows
                self.q = x
            else:
                self._inv = None
                # [x, 1, 0] padded with zero columns to a multiple of 8, so the rows stay
                # 16-byte aligned and the kernels keep their vector loads (zeros add nothing)
                self._pad = (-(x.shape[1] + 2)) % 8
                self.q = _arrays.with_columns(x, (1.0, 0.0) + (0.0,) * self._pad)
                self.aug_norms = 1.0 / _arrays.to_numpy(
                    inverse_norms(cuda_module, self.q, "X")).astype(np.float64)
        self.labels = None
        self._sims = None
        self._workspace = None  # uint8 scratch of cluster_sums, allocated at the first update

    def host_rows(self, rows: np.ndarray) -> np.ndarray:
        out = _arrays.to_numpy(_arrays.take_rows(self._x, rows)).astype(np.float64)
        if self._spherical:
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def assign(self, centroids: np.ndarray) -> int:
        db, self._scale = _search_rows(centroids, self._spherical)
        if not self._spherical and self._pad:
            db = np.pad(db, ((0, 0), (0, self._pad)))
        with _arrays.device_ctx(self._x):
            d_db = _arrays.as_dtype_of(db, self.q)
            sims, idx = topk(self._m, self.q, d_db, 1, False, self._tf32, self._budget)
            new = idx[:, 0]
            changed = self._x.shape[0] if self.labels is None else \
                int(_arrays.to_numpy((new != self.labels).sum()))
            self.labels, self._sims = new, sims[:, 0]
            return changed

    def sq_dists(self) -> np.ndarray:
        """Squared distance of every row to its assigned centroid, from the top-1 similarity
        of the last assignment (float64 on the host)."""
        sims = _arrays.to_numpy(self._sims).astype(np.float64)
        if self._spherical:
            return np.maximum(2.0 - 2.0 * sims, 0.0)
        xn = self.aug_norms  # |x'| = sqrt(|x|^2 + 1)
        return np.maximum(xn * xn - 1.0 - 2.0 * sims * xn * self._scale, 0.0)

    def update(self, n_clusters: int):
        n, d = self._x.shape
        with _arrays.device_ctx(self._x):
            sums = _arrays.empty(self._x, (n_clusters, d), "float64")
            counts = _arrays.empty(self._x, (n_clusters,), "int64")
            if self._workspace is None:  # a run keeps n_clusters
                self._workspace = _arrays.empty(
                    self._x, (self._m.cluster_sums_workspace_bytes(n, n_clusters),), "uint8")
            self._m.cluster_sums(_arrays.cuda_view(self._x), self._inv, self.labels, sums,
                                 counts, self._workspace, _arrays.cuda_stream(self._x))
            return _arrays.to_numpy(sums), _arrays.to_numpy(counts)

    def labels_out(self):
        return self.labels


def _search_rows(c: np.ndarray, spherical: bool):
    """Unit float32 rows whose cosine argmax is the assignment, and the scale R such that
    x' . c'_j (before normalising x') = R * cosine (Euclidean; 1 for spherical)."""
    if spherical:
        return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32), 1.0
    sq = np.einsum("ij,ij->i", c, c)
    a = -0.5 * sq
    norm2 = sq + a * a
    big = float(norm2.max())
    if big == 0.0:  # a single centroid at the origin
        big = 1.0
    s = np.sqrt(np.maximum(big - norm2, 0.0))
    scale = math.sqrt(big)
    return (np.column_stack([c, a, s]) / scale).astype(np.float32), scale
