"""k-means centroid update (docs §6), numba version of ``csrc/cpu/kmeans.cpp``.

Members of each cluster are summed in increasing row order in float64 (the products of two
float32 values are exact), so the sums are bit-identical to the native and CUDA kernels.
"""
import numba as nb
import numpy as np


@nb.njit(parallel=True, cache=True)
def cluster_sums(x, inv, labels, sums, counts):
    """sums[c] = sum of x[i] * inv[i] over rows with labels[i] == c (inv empty: weight 1);
    counts[c] = their number."""
    n, d = x.shape
    n_clusters = sums.shape[0]
    start = np.zeros(n_clusters + 1, np.int64)
    for i in range(n):
        start[labels[i] + 1] += 1
    for c in range(n_clusters):
        counts[c] = start[c + 1]
        start[c + 1] += start[c]
    members = np.empty(n, np.int64)
    fill = start[:-1].copy()
    for i in range(n):
        members[fill[labels[i]]] = i
        fill[labels[i]] += 1
    weighted = inv.shape[0] > 0
    for c in nb.prange(n_clusters):
        for j in range(d):
            sums[c, j] = 0.0
        for m in range(start[c], start[c + 1]):
            i = members[m]
            w = np.float64(inv[i]) if weighted else 1.0
            for j in range(d):
                sums[c, j] += np.float64(x[i, j]) * w
