"""Which points to label first: USL's unsupervised selective labeling (docs §6).

USL (Wang, Lian et al., ECCV 2022) spends a labeling budget of B points on points that are
both representative (dense: close to their k nearest neighbours) and diverse (one per k-means
cluster, pushed away from the picks of the other clusters). This module follows its reference
code (``shared/utils/nn_utils.py``): density = 1 / mean squared distance of the unit rows to
their k neighbours (the point itself counted, as USL's kNN includes it), k-means into B
clusters, the densest point of each cluster, then a few rounds of re-picking the point that
maximises density - w * penalty, the penalty being a moving average of sum 1 / d^(2 alpha)
over the picks of the other clusters.
"""
from __future__ import annotations

import numpy as np

from ._typing import ArrayLike, BackendName
from . import _arrays, _checks, _host
from .kmeans import kmeans
from .knn import checked_knn

_BLOCK = 8192  # rows per block of the penalty (a block x B similarity tile)
_MIN_SQ_DIST = 1e-12  # duplicates of a pick get a large, finite penalty
_SAME_CLUSTER_SQ_DIST = 1e10  # USL's mask value: picks of the point's own cluster do not count


def knn_density(sims: ArrayLike, *, count_self: bool = True):
    """USL's density from the (N, k) cosine similarities of ``knn``: 1 / mean squared distance
    of the unit rows, 2 - 2 cos, over the k neighbours (plus the point itself at distance 0
    with ``count_self``, as USL's neighbour lists include it). Higher = denser; a point whose
    neighbours all coincide with it gets inf. Returns (N,) float64 in the kind of ``sims``."""
    sims = _arrays.as_array(sims, "sims")
    info = _arrays.info(sims, "sims")
    if not info.dtype.startswith(("float", "bfloat")):
        raise TypeError(f"sims must hold cosine similarities (floats), got dtype {info.dtype}")
    if len(info.shape) != 2 or 0 in info.shape:
        raise ValueError(f"sims must be a non-empty 2-D (N, k) array, got shape {info.shape}")
    host = _arrays.to_numpy(sims).astype(np.float64)
    if not np.isfinite(host).all():
        raise ValueError("sims holds NaN or Inf")
    return _arrays.from_host(_density(host, bool(count_self)), sims)


def _density(sims: np.ndarray, count_self: bool) -> np.ndarray:
    total = np.maximum(2.0 - 2.0 * sims, 0.0).sum(axis=1)
    with np.errstate(divide="ignore"):
        return (sims.shape[1] + int(count_self)) / total


def select_to_label(X: ArrayLike, budget: int, *, k: int = 20, n_iters: int = 10,
                    weight: float = 0.5, momentum: float = 0.9, alpha: float = 0.5,
                    horizon_dist: float | None = None, cluster_labels: ArrayLike | None = None,
                    spherical: bool = True, kmeans_iters: int = 100, seed: int = 0,
                    knn_method: str = "exact", backend: BackendName = None):
    """Indices of ``budget`` points to label first (USL), one per k-means cluster.

    k : neighbours for the density, the point itself not counted (USL's KNN_K counts it:
        its CIFAR setting KNN_K = 400 is k = 399 here, ImageNet's 20 is k = 19).
    n_iters : selection rounds, as USL's ``iters`` (its default 10): round 1 picks the
        densest point of each cluster (no penalty yet), every later round re-picks with the
        penalty of the picks before it; 1 keeps the densest points.
    weight, momentum, alpha : USL's w, momentum and alpha of the penalty
        sum over other clusters' picks of 1 / |x - pick|^(2 alpha) (unit rows).
    horizon_dist : picks at squared distance >= horizon_dist add no penalty (USL's
        HORIZON_DIST; its CIFAR-100 setting is 1; None: no horizon).
    cluster_labels : (N,) ints in [0, budget): use these clusters (for example USL's own
        k-means) instead of running :func:`hdlfast.kmeans`.
    spherical, kmeans_iters, seed : the k-means into ``budget`` clusters: spherical
        k-means++ (default), or with ``spherical=False`` Euclidean Lloyd from random rows for
        exactly ``kmeans_iters`` updates, as USL runs it (its random draw is torch's, so the
        clusters differ from USL's; pass ``cluster_labels`` to reuse them).
    knn_method : the kNN search, as ``method`` of :func:`hdlfast.knn`: "exact" (default),
        "ivf" (approximate, recall measured) or "auto" (exact while cheap).

    The kNN graph and k-means run on the backend (the GPU for GPU arrays); the refinement runs
    on the host in float64 over blocks of rows. Returns (budget,) int64 indices, ordered by
    cluster, in the kind and on the device of ``X``; for a given seed the same on every backend.
    """
    X, x_info = _checks.embeddings(X, "X")
    n = x_info.shape[0]
    budget = _checks.positive_int(budget, "budget")
    if budget > n:
        raise ValueError(f"budget={budget} is larger than the {n} rows of X")
    k = _checks.positive_int(k, "k")
    _checks.k_at_most(k, n - 1, "rows of X other than the point itself")
    if isinstance(n_iters, bool) or not isinstance(n_iters, (int, np.integer)) or n_iters < 1:
        raise ValueError(f"n_iters must be an integer >= 1 (USL's iters: round 1 picks the "
                         f"densest points), got {n_iters!r}")
    weight = _checks.positive_float(weight, "weight", zero=True)
    momentum = _checks.positive_float(momentum, "momentum", zero=True)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    alpha = _checks.positive_float(alpha, "alpha")
    if horizon_dist is not None:
        horizon_dist = _checks.positive_float(horizon_dist, "horizon_dist")
    clusters = None
    if cluster_labels is not None:
        clusters = _checks.int_vector(cluster_labels, "cluster_labels", n, "X")
        if clusters.min() < 0 or clusters.max() >= budget:
            raise ValueError(f"cluster_labels must be in [0, budget={budget}), got "
                             f"[{clusters.min()}, {clusters.max()}]")
    kmeans_iters = _checks.positive_int(kmeans_iters, "kmeans_iters")
    seed = _checks.seed(seed)
    sims, _ = checked_knn(X, k, backend=backend, q_name="X",  # its row check names X
                          method=knn_method, method_name="knn_method", seed=seed)
    density = _density(_arrays.to_numpy(sims).astype(np.float64), count_self=True)
    if clusters is None:
        km = kmeans(X, budget, spherical=bool(spherical), n_iters=kmeans_iters,
                    init="k-means++" if spherical else "random",
                    tol=0.0 if spherical else None, seed=seed, backend=backend)
        clusters = _arrays.to_numpy(km.labels).astype(np.int64)
    picks = _best_per_cluster(density, clusters, budget)
    if n_iters > 1 and budget > 1:
        rows = _host.normalize(X, "X")
        penalty = np.zeros(n)
        for _ in range(n_iters - 1):
            new = _penalty(rows, clusters, picks, alpha, horizon_dist)
            penalty = penalty * momentum + new * (1.0 - momentum)
            picks = _best_per_cluster(density - weight * penalty, clusters, budget)
    return _arrays.from_host(picks, X)


def _best_per_cluster(score: np.ndarray, clusters: np.ndarray, n_clusters: int) -> np.ndarray:
    """For each cluster in order, the member with the highest score (smaller index on ties)."""
    order = np.lexsort((np.arange(score.shape[0]), -score, clusters))
    first = np.minimum(np.searchsorted(clusters[order], np.arange(n_clusters)), len(order) - 1)
    picks = order[first].astype(np.int64)
    empty = clusters[picks] != np.arange(n_clusters)
    if empty.any():  # k-means left a cluster empty: the best points not picked yet stand in
        taken = np.zeros(score.shape[0], bool)
        taken[picks[~empty]] = True
        spare = [i for i in np.lexsort((np.arange(score.shape[0]), -score)) if not taken[i]]
        picks[empty] = spare[:int(empty.sum())]
    return picks


def _penalty(rows: np.ndarray, clusters: np.ndarray, picks: np.ndarray, alpha: float,
             horizon_dist: float | None = None):
    """sum over picks of other clusters (and, with a horizon, closer than it) of
    1 / (squared distance)^alpha, per row (float64). USL gives a pick of the row's own
    cluster, or one beyond the horizon, the squared distance 1e10 (nearly no penalty)."""
    p = rows[picks]
    pick_cluster = clusters[picks]
    out = np.empty(rows.shape[0])
    for b in range(0, rows.shape[0], _BLOCK):
        dots = (rows[b:b + _BLOCK] @ p.T).astype(np.float64)
        sq = np.maximum(2.0 - 2.0 * dots, _MIN_SQ_DIST)
        sq[clusters[b:b + _BLOCK, None] == pick_cluster[None, :]] = _SAME_CLUSTER_SQ_DIST
        if horizon_dist is not None:
            sq[sq >= horizon_dist] = _SAME_CLUSTER_SQ_DIST
        out[b:b + _BLOCK] = (sq ** -alpha).sum(axis=1)
    return out
