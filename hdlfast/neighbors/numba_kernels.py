"""Indexed row pairs (docs §6), numba version of ``csrc/cpu/pairs.cpp``: dot products and
unit mixtures in the same order of operations (eight interleaved accumulators summed
pairwise), so the same bits."""
import numba as nb
import numpy as np

from .._numba import dot8


@nb.njit(parallel=True, cache=True)
def pair_dots(a, b, ra, rb, out):
    """out[p] = a[ra[p]] . b[rb[p]] in float64."""
    for p in nb.prange(ra.shape[0]):
        out[p] = dot8(a[ra[p]], b[rb[p]])


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
        den = max(np.float32(np.sqrt(dot8(row, row))), np.float32(1e-12))
        for j in range(d):
            row[j] = row[j] / den
