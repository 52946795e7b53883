"""Indexed row pairs (docs §6), numba version of ``csrc/cpu/pairs.cpp``: dot products and
unit mixtures in the same order of operations (eight interleaved accumulators summed
pairwise), so the same bits."""
import numba as nb
import numpy as np


@nb.njit(parallel=True, cache=True)
def pair_dots(a, b, ra, rb, out):
    """out[p] = a[ra[p]] . b[rb[p]] in float64."""
    d = a.shape[1]
    for p in nb.prange(ra.shape[0]):
        x, y = a[ra[p]], b[rb[p]]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        j = 0
        while j + 8 <= d:
            s0 += x[j] * y[j]
            s1 += x[j + 1] * y[j + 1]
            s2 += x[j + 2] * y[j + 2]
            s3 += x[j + 3] * y[j + 3]
            s4 += x[j + 4] * y[j + 4]
            s5 += x[j + 5] * y[j + 5]
            s6 += x[j + 6] * y[j + 6]
            s7 += x[j + 7] * y[j + 7]
            j += 8
        while j < d:
            s0 += x[j] * y[j]
            j += 1
        out[p] = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@nb.njit(parallel=True, cache=True)
def mix_rows(a, b, ra, rb, w, out):
    """out[p] = m / max(|m|, 1e-12) for m = a[ra[p]] w[p] + b[rb[p]] (1 - w[p]) in float32,
    |m| summed in float64 and rounded to float32."""
    d = a.shape[1]
    for p in nb.prange(ra.shape[0]):
        x, y, row = a[ra[p]], b[rb[p]], out[p]
        wp = w[p]
        v = np.float32(1.0) - wp
        for j in range(d):
            row[j] = x[j] * wp + y[j] * v
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        j = 0
        while j + 8 <= d:
            s0 += np.float64(row[j]) * np.float64(row[j])
            s1 += np.float64(row[j + 1]) * np.float64(row[j + 1])
            s2 += np.float64(row[j + 2]) * np.float64(row[j + 2])
            s3 += np.float64(row[j + 3]) * np.float64(row[j + 3])
            s4 += np.float64(row[j + 4]) * np.float64(row[j + 4])
            s5 += np.float64(row[j + 5]) * np.float64(row[j + 5])
            s6 += np.float64(row[j + 6]) * np.float64(row[j + 6])
            s7 += np.float64(row[j + 7]) * np.float64(row[j + 7])
            j += 8
        while j < d:
            s0 += np.float64(row[j]) * np.float64(row[j])
            j += 1
        norm = np.float32(np.sqrt(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))))
        den = max(norm, np.float32(1e-12))
        for j in range(d):
            row[j] = row[j] / den
