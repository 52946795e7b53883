"""k-means state on the host, driven by ``hdlfast.kmeans``: assignment by the blocked top-2
search of ``knn.host`` on the rows whose label may change (Hamerly's bounds), update by the
native or numba ``cluster_sums``.

Pruning (Hamerly 2010): each row keeps an upper bound ``u`` on its distance to its centroid
and a lower bound ``l`` on its distance to every other one. When the centroids move by
``delta``, ``u += delta[label]`` and ``l -= max(delta of the others)`` (triangle inequality);
a row is searched again only while ``u + 2 m >= l``, where ``m`` bounds the float32 search's
error in a distance. A skipped row therefore has the label a full search would give it (its
label beats every other centroid by more than the rounding), so the labels are Lloyd's.
"""
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
        # Hamerly bounds (None until the first full search), the centroids they refer to, the
        # current search rows and scale, and which rows' scores predate their centroid's move
        self._upper = self._lower = self._prev = self._db = self._stale = None
        self._scale = 1.0

    def host_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.rows[rows].astype(np.float64)

    def assign(self, db: np.ndarray, centroids: np.ndarray, scale: float) -> int:
        """Labels against the centroids (float64, C x d) whose unit search rows are ``db``
        (``scale`` as ``hdlfast.kmeans._search_rows`` returns it); returns how many labels
        changed. Only rows whose bounds allow a change are searched."""
        n = self.q.shape[0]
        centroids = np.asarray(centroids, np.float64)
        if self._spherical:  # the search's unit centroids
            centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        # bound on the search's error in a distance: float32 similarities of unit rows are
        # off by at most (d + 8) 2^-23, a distance^2 = a - b s by b times that
        b = 2.0 if self._spherical else 2.0 * scale * self.aug_norms
        margin = np.sqrt(b * (self.q.shape[1] + 8) * 2.0 ** -23) * np.ones(n)
        if self._upper is None or centroids.shape[0] < 2:
            rows = None
        else:
            move = centroids - self._prev
            delta = np.sqrt(np.einsum("ij,ij->i", move, move))
            top = np.argmax(delta)
            others = np.full(delta.shape[0], delta[top])  # largest move of another centroid
            others[top] = np.max(np.delete(delta, top))
            self._upper += delta[self.labels]
            self._lower -= others[self.labels]
            rows = np.nonzero(self._upper + 2 * margin >= self._lower)[0]
            # a moved centroid makes its rows' scores old; a new scale (Euclidean) every score
            self._stale |= (delta[self.labels] > 0) | (scale != self._scale)
        self._prev, self._scale, self._db = centroids, scale, db
        if rows is not None and rows.size == 0:
            return 0
        q = self.q if rows is None else self.q[rows]
        k = min(2, db.shape[0])
        sims, idx = topk(self._kern, q, db, k, False, self._budget)
        new = idx[:, 0]
        dist = self._distances(sims, rows)
        if rows is None:
            changed = int(np.count_nonzero(new != self.labels))
            self.labels, self._sims = new.copy(), sims[:, 0].copy()
            self._upper = dist[:, 0] + margin
            self._lower = (dist[:, 1] - margin) if k == 2 else np.full(n, np.inf)
            self._stale = np.zeros(n, bool)
            return changed
        changed = int(np.count_nonzero(new != self.labels[rows]))
        self.labels[rows], self._sims[rows], self._stale[rows] = new, sims[:, 0], False
        self._upper[rows] = dist[:, 0] + margin[rows]
        self._lower[rows] = dist[:, 1] - margin[rows]
        return changed

    def _distances(self, sims: np.ndarray, rows) -> np.ndarray:
        """Distances (float64) of the searched rows from their top-k similarities."""
        s = sims.astype(np.float64)
        if self._spherical:
            sq = 2.0 - 2.0 * s
        else:
            xn = self.aug_norms if rows is None else self.aug_norms[rows]
            sq = (xn * xn - 1.0)[:, None] - 2.0 * self._scale * xn[:, None] * s
        return np.sqrt(np.maximum(sq, 0.0))

    def fit_scores(self) -> np.ndarray:
        """Top-1 similarity of every row to its centroid (rows skipped since their centroid
        moved: a row-wise product with it)."""
        rows = np.nonzero(self._stale)[0]
        if rows.size:
            self._sims[rows] = np.einsum("ij,ij->i", self.q[rows], self._db[self.labels[rows]])
            self._stale[rows] = False
        return self._sims.astype(np.float64)

    def update(self, n_clusters: int):
        sums = np.empty((n_clusters, self.rows.shape[1]), np.float64)
        counts = np.empty(n_clusters, np.int64)
        self._km.cluster_sums(self.rows, np.empty(0, np.float32), self.labels, sums, counts)
        return sums, counts

    def labels_out(self):
        return _arrays.from_host(self.labels, self._like)
