"""Sinkhorn-Knopp kernels (SPEC 5), numba version of ``csrc/cpu/sinkhorn.cpp``.

The (N, K) matrix lives in Q (float32): first the kernel exp(beta (s - row max)), finally the
soft assignment. Scalings and sums are float64. Column sums are reduced over fixed chunks of
CHUNK rows in chunk order, so results do not depend on the number of threads.
"""
import numba as nb
import numpy as np

CHUNK = 2048


@nb.njit(parallel=True, cache=True)
def prepare(q, beta, rowmax):
    """In place: q[i, j] = exp(beta * (q[i, j] - m_i)) with m_i = max_j q[i, j] (stored in
    rowmax), so no exp of a raw logit is ever taken."""
    n, k = q.shape
    for i in nb.prange(n):
        m = q[i, 0]
        for j in range(1, k):
            m = max(m, q[i, j])
        rowmax[i] = m
        for j in range(k):
            q[i, j] = np.float32(np.exp(beta * (np.float64(q[i, j]) - m)))


@nb.njit(inline="always", cache=True, nogil=True)
def _dot4(row, w):
    """sum_j row[j] w[j] in float64 with four interleaved accumulators (the order of the
    native kernels): breaks the add-latency chain of one running sum."""
    k = row.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= k:
        s0 += np.float64(row[j]) * w[j]
        s1 += np.float64(row[j + 1]) * w[j + 1]
        s2 += np.float64(row[j + 2]) * w[j + 2]
        s3 += np.float64(row[j + 3]) * w[j + 3]
        j += 4
    while j < k:
        s0 += np.float64(row[j]) * w[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@nb.njit(parallel=True, cache=True)
def colsum(q, u, out):
    """out[j] = sum_i q[i, j] u[i]."""
    n, k = q.shape
    chunks = (n + CHUNK - 1) // CHUNK
    part = np.zeros((chunks, k))
    for c in nb.prange(chunks):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            for j in range(k):
                part[c, j] += np.float64(q[i, j]) * u[i]
    out[:] = 0.0
    for c in range(chunks):
        out += part[c]


@nb.njit(parallel=True, cache=True)
def iterate(q, v, r, u, out_colsum):
    """One fused pass: u[i] = r[i] / sum_j q[i, j] v[j], then out_colsum[j] = sum_i q[i, j]
    u[i] with the new u."""
    n, k = q.shape
    chunks = (n + CHUNK - 1) // CHUNK
    part = np.zeros((chunks, k))
    for c in nb.prange(chunks):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            ui = r[i] / _dot4(q[i], v)
            u[i] = ui
            for j in range(k):
                part[c, j] += np.float64(q[i, j]) * ui
    out_colsum[:] = 0.0
    for c in range(chunks):
        out_colsum += part[c]


@nb.njit(parallel=True, cache=True)
def finalize(q, v, labels):
    """In place: rows of q * v normalised to sum 1; labels = row argmax in float64 (smaller
    index on ties). The row scaling u cancels in the normalisation."""
    n, k = q.shape
    for i in nb.prange(n):
        s = _dot4(q[i], v)
        best = 0
        top = -1.0
        for j in range(k):
            t = np.float64(q[i, j]) * v[j]
            if t > top:
                top = t
                best = j
        for j in range(k):
            q[i, j] = np.float32(np.float64(q[i, j]) * v[j] / s)
        labels[i] = best
