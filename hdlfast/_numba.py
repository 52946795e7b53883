"""The dot product every numba kernel sums the same way as the native ones (csrc/cpu: dot8 of
sinkhorn.cpp and pairs.cpp, the squared norm of pairs.cpp's mix)."""
import math

import numba as nb
import numpy as np


@nb.njit(inline="always", cache=True, nogil=True)
def dot8(x, y):
    """sum_j x[j] y[j] in float64 with eight interleaved accumulators summed pairwise (the
    order of the native kernels); float32 entries are widened exactly first."""
    k = x.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    j = 0
    while j + 8 <= k:
        s0 += np.float64(x[j]) * np.float64(y[j])
        s1 += np.float64(x[j + 1]) * np.float64(y[j + 1])
        s2 += np.float64(x[j + 2]) * np.float64(y[j + 2])
        s3 += np.float64(x[j + 3]) * np.float64(y[j + 3])
        s4 += np.float64(x[j + 4]) * np.float64(y[j + 4])
        s5 += np.float64(x[j + 5]) * np.float64(y[j + 5])
        s6 += np.float64(x[j + 6]) * np.float64(y[j + 6])
        s7 += np.float64(x[j + 7]) * np.float64(y[j + 7])
        j += 8
    while j < k:
        s0 += np.float64(x[j]) * np.float64(y[j])
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@nb.njit(parallel=True, cache=True)
def unit_rows(x, out, bad):
    """Twin of the native unit_rows (csrc/cpu/rows.cpp), the same float64 operations in the
    same order: out[i] = (x[i] 2^-e) / |x[i] 2^-e| (2^-e brings the row's peak into
    [0.5, 1)), the squares summed as dot8 sums them, the inverse norm multiplied in;
    bad = [first NaN/Inf row, first zero row] (-1: none)."""
    n, d = x.shape
    flag = np.zeros(n, np.int8)  # 1: NaN/Inf, 2: zero
    for i in nb.prange(n):
        peak = 0.0
        finite = True
        for j in range(d):
            v = abs(np.float64(x[i, j]))
            finite &= np.isfinite(v)
            peak = v if v > peak else peak
        if not finite:
            flag[i] = 1
            continue
        if peak == 0.0:
            flag[i] = 2
            continue
        scale = math.ldexp(1.0, -math.frexp(peak)[1])  # a power of two: exact products
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        j = 0
        while j + 8 <= d:
            v0 = np.float64(x[i, j]) * scale
            v1 = np.float64(x[i, j + 1]) * scale
            v2 = np.float64(x[i, j + 2]) * scale
            v3 = np.float64(x[i, j + 3]) * scale
            v4 = np.float64(x[i, j + 4]) * scale
            v5 = np.float64(x[i, j + 5]) * scale
            v6 = np.float64(x[i, j + 6]) * scale
            v7 = np.float64(x[i, j + 7]) * scale
            s0 += v0 * v0
            s1 += v1 * v1
            s2 += v2 * v2
            s3 += v3 * v3
            s4 += v4 * v4
            s5 += v5 * v5
            s6 += v6 * v6
            s7 += v7 * v7
            j += 8
        while j < d:
            v = np.float64(x[i, j]) * scale
            s0 += v * v
            j += 1
        inv = 1.0 / np.sqrt(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))
        for j in range(d):
            out[i, j] = np.float64(x[i, j]) * scale * inv + 0.0
    bad[0] = -1
    bad[1] = -1
    for i in range(n):
        if flag[i] == 1 and bad[0] < 0:
            bad[0] = i
        if flag[i] == 2 and bad[1] < 0:
            bad[1] = i


@nb.njit(parallel=True, cache=True)
def rows_are_unit(x):
    """Twin of the native rows_are_unit (csrc/cpu/rows.h): every float32 row of unit norm to
    float32 precision (the squares summed as dot8), none holding NaN, Inf or -0."""
    n, d = x.shape
    tol = 2.0 * (d + 8) * 2.0 ** -24
    ok = np.ones(n, np.bool_)
    for i in nb.prange(n):
        row = x[i]
        for j in range(d):
            v = row[j]
            if not np.isfinite(v) or (v == 0.0 and math.copysign(1.0, v) < 0.0):
                ok[i] = False
        if ok[i]:
            ok[i] = abs(dot8(row, row) - 1.0) <= tol
    return ok.all()


@nb.njit(parallel=True, cache=True)
def row_hashes(words, mult, hashes):
    """Twin of the native row_hashes: sum_j words[i, j] * mult[j] modulo 2**64."""
    n, d = words.shape
    for i in nb.prange(n):
        h = np.uint64(0)
        for j in range(d):
            h += np.uint64(words[i, j]) * mult[j]
        hashes[i] = h
