"""k-means (docs §6): spherical or Euclidean Lloyd iterations on every backend.

Each iteration assigns every row to its best centroid by tile products with the centroids:
spherical k-means the largest cosine of the unit rows with the unit centroids, Euclidean
k-means the largest x . c - |c|^2 / 2 (the nearest centroid; the GPU runs the same search as
a cosine search of augmented rows, see ``kmeans.cuda``). The update sums the members of each
cluster in float64: within chunks of 4,096 rows in row order, chunks added in order
(bit-identical on the native, numba and CUDA kernels; the CPU sums during the assignment
pass, and skips the scoring of rows whose label provably stays, see ``kmeans.host``).
k-means++ runs on the host on a seeded sample of rows, so the initial centroids are the same
on every backend. Empty clusters are re-seeded from the worst-fitted points.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._typing import ArrayLike, BackendName
from .. import _arrays, _backend, _checks, _host

_INITS = ("k-means++", "random")
_SAMPLE_PER_CLUSTER = 256  # k-means++ sees at most this many rows per cluster (as faiss)


class KMeansResult(NamedTuple):
    """centroids (C, d) float32 and labels (N,) int64 in the kind and on the device of X;
    inertia = sum of squared distances to the assigned centroid (for spherical k-means the
    chord distance of unit vectors, 2 - 2 cos); n_iter = centroid updates performed."""

    centroids: Any
    labels: Any
    inertia: float
    n_iter: int


def kmeans(X: ArrayLike, n_clusters: int, *, spherical: bool = True, n_iters: int = 100,
           tol: float | None = 0.0, init: str | ArrayLike = "k-means++", seed: int = 0,
           backend: BackendName = None, memory_budget: int | None = None,
           allow_tf32: bool = False, progress: bool = False) -> KMeansResult:
    """Lloyd's k-means of the rows of ``X`` into ``n_clusters`` clusters.

    spherical : cluster directions (cosine; rows and centroids unit-normalised, as SCAN and
        USL features are), else plain Euclidean k-means on the raw rows.
    n_iters : at most this many updates. tol : stop once at most ``tol * N`` labels change in
        an assignment (0: stop at a fixed point); None runs exactly ``n_iters`` updates.
    init : "k-means++" (greedy, 2 + ln C candidates per step as scikit-learn, on a seeded sample
        of at most 256 rows per cluster), "random" (distinct rows) or a (C, d) array.
    seed : the only source of randomness; the same seed gives the same initial centroids on
        every backend.
    backend, memory_budget, allow_tf32 : as in :func:`hdlfast.knn`.
    progress : a progress bar on stderr through the updates, with the labels the last
        assignment changed (a million rows into thousands of clusters take minutes on a CPU).
    """
    X, x_info = _checks.embeddings(X, "X")
    n, d = x_info.shape
    n_clusters = _checks.positive_int(n_clusters, "n_clusters")
    if n_clusters > n:
        raise ValueError(f"n_clusters={n_clusters} is larger than the {n} rows of X")
    n_iters = _checks.positive_int(n_iters, "n_iters")
    if tol is not None:
        tol = _checks.positive_float(tol, "tol", zero=True)
    seed = _checks.seed(seed)
    progress = bool(progress)
    given = None
    if isinstance(init, str):
        _checks.choice(init, "init", _INITS)
    else:
        given = _initial_centroids(init, n_clusters, d, spherical)
    if memory_budget is not None:
        memory_budget = _checks.positive_int(memory_budget, "memory_budget")
    impl = _backend.select(backend, x_info.on_gpu, like=X)
    exponent = 0 if spherical else _euclidean_exponent(X)
    if exponent:  # computed on X * 2**-exponent, results scaled back
        X_run = _arrays.scaled(X, -exponent)
        given = None if given is None else np.ldexp(given, -exponent)
    else:
        X_run = X
    state = impl.kmeans_state(X_run, bool(spherical), memory_budget, allow_tf32)

    rng = np.random.default_rng(seed)
    if given is not None:
        centroids = given
    elif init == "random":
        centroids = state.host_rows(np.sort(rng.choice(n, n_clusters, replace=False)))
    else:
        sample = n_clusters * _SAMPLE_PER_CLUSTER
        rows = np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
        centroids = _kmeans_pp(impl.kmeans, state.host_rows(rows), n_clusters, rng, spherical)

    updates = 0
    # BLAS stays on one thread for the whole run: each CPU assignment pass needs it so (see
    # kmeans.host), and setting it once instead of per pass saves ~0.1 ms a pass, most of a
    # small run's time. Harmless on the GPU, where the host does no BLAS work.
    with _progress_bar(progress, n_iters) as bar, _host.single_threaded_blas():
        while True:
            changed = state.assign(centroids)
            bar.set_postfix(changed=changed)
            converged = tol is not None and updates > 0 and changed <= tol * n
            if converged or updates == n_iters:
                break
            sums, counts = state.update(n_clusters)
            centroids = _update(sums, counts, spherical, state)
            updates += 1
            bar.update()
    inertia = float(np.ldexp(state.sq_dists().sum(), 2 * exponent))
    centroids = np.ldexp(centroids, exponent)  # float32 below: values under its range are 0
    out = _arrays.from_host(centroids.astype(np.float32), X)
    return KMeansResult(out, state.labels_out(), inertia, updates)


def _progress_bar(progress: bool, n_iters: int):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=n_iters, desc="k-means", unit="update", leave=False,
                disable=not progress, file=sys.stderr)


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SAFE_EXPONENT = 20  # |X| within 2**+-20 runs as it is


def _euclidean_exponent(X) -> int:
    """e such that Euclidean k-means runs on X * 2**-e: 0 when X's largest magnitude is
    within 2**+-20, else the exponent bringing it into [0.5, 1). The float32 search squares
    distances, which would overflow or underflow for data far from unit scale; a power of two
    scales exactly. Values beyond float32's range cannot be returned as float32 centroids and
    are refused."""
    peak = _checks.rows(X, "X", zero_ok=True)
    if peak > _FLOAT32_MAX:
        raise ValueError(f"X holds values up to {peak:.3g}, beyond float32's range (about "
                         "3.4e38): Euclidean k-means returns float32 centroids; scale X first "
                         "(spherical k-means takes any finite scale)")
    if peak == 0.0:
        return 0
    exponent = math.frexp(peak)[1]
    return exponent if abs(exponent) > _SAFE_EXPONENT else 0


def _initial_centroids(init, n_clusters: int, d: int, spherical: bool) -> np.ndarray:
    init = _arrays.as_array(init, "init")
    info = _arrays.info(init, "init")
    if info.shape != (n_clusters, d):
        raise ValueError(f"init must have shape ({n_clusters}, {d}) (n_clusters, width of X), "
                         f"got {info.shape}")
    if not info.dtype.startswith(("float", "bfloat")):
        raise TypeError(f"init must hold floats, got dtype {info.dtype}")
    c = _arrays.to_numpy(init).astype(np.float64)
    if not np.isfinite(c).all():
        raise ValueError("init holds NaN or Inf")
    if spherical:
        norms = np.linalg.norm(c, axis=1)
        if not (norms > 0).all():
            raise ValueError(f"init has a zero-norm row (row {int(np.argmin(norms > 0))})")
        c = c / norms[:, None]
    return c


def _kmeans_pp(km, p: np.ndarray, n_clusters: int, rng, spherical: bool) -> np.ndarray:
    """Greedy k-means++ (Arthur and Vassilvitskii; local trials as in scikit-learn) on the
    sample rows ``p``. Each step is one pass of the host kernel ``pp_trials`` over the sample
    (float32 dot products, float64 distances; the same bits from the native and numba
    kernels, so the same centres on every backend); a chosen row's own distance is set to 0,
    as exact arithmetic gives, so it is never drawn again."""
    s = p.shape[0]
    trials = 2 + int(math.log(n_clusters))
    pp = np.full(s, 1.0) if spherical else np.einsum("ij,ij->i", p, p)
    p32 = np.ascontiguousarray(p, np.float32)
    out = np.empty((s, trials), np.float64)
    colsum = np.empty(trials, np.float64)

    chosen = [int(rng.integers(s))]
    first = np.empty((s, 1), np.float64)
    km.pp_trials(p32, pp, np.array(chosen, np.int64), np.full(s, np.inf), first, colsum[:1])
    d2 = first[:, 0].copy()
    d2[chosen[0]] = 0.0
    for _ in range(1, n_clusters):
        pot = d2.sum()
        if pot > 0:
            cand = np.searchsorted(np.cumsum(d2), rng.random(trials) * pot, side="right")
            cand = np.minimum(cand, s - 1)
        else:  # every row coincides with a centre already chosen
            cand = rng.integers(s, size=trials)
        km.pp_trials(p32, pp, cand.astype(np.int64), d2, out, colsum)
        best = int(np.argmin(colsum))
        chosen.append(int(cand[best]))
        d2 = out[:, best].copy()
        d2[chosen[-1]] = 0.0
    return p[chosen].copy()


def _update(sums: np.ndarray, counts: np.ndarray, spherical: bool, state):
    """Cluster means (unit means when spherical); empty clusters re-seeded with the worst-fitted
    rows (largest distance to their centroid, the smaller index first on ties)."""
    if spherical:
        norms = np.linalg.norm(sums, axis=1)
        empty = norms == 0
        c = sums / np.where(empty, 1.0, norms)[:, None]
    else:
        empty = counts == 0
        c = sums / np.maximum(counts, 1)[:, None]
    if empty.any():
        worst = np.argsort(-state.sq_dists(), kind="stable")
        c[empty] = state.host_rows(np.sort(worst[:int(empty.sum())]))
    return c
