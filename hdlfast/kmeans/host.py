"""k-means state on the host, driven by ``hdlfast.kmeans``: assignment by the blocked top-1
search of ``knn.host``, update by the native or numba ``cluster_sums``."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .. import _arrays
from .._host import normalize
from ..knn.host import topk


def native_kernels(mod):
    """The k-means kernels of the compiled module ``mod`` (names of ``numba_kernels``)."""
    return SimpleNamespace(cluster_sums=mod.cluster_sums)


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
