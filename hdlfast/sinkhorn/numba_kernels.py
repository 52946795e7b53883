"""Sinkhorn-Knopp kernels (docs §5), numba version of ``csrc/cpu/sinkhorn.cpp``.

The (N, K) matrix lives in Q (float32): first the kernel exp(beta (s - row max)), finally the
soft assignment. Scalings and sums are float64. Column sums are reduced over fixed chunks of
CHUNK rows in chunk order, so results do not depend on the number of threads.
"""

import numba as nb
import numpy as np

from .._numba import dot8

CHUNK = 2048


_LOG2E, _SHIFT = 1.4426950408889634, 6755399441055744.0  # 1.5 * 2^52
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_POW2_NEG = np.array([2.0 ** -i for i in range(200)])  # exact: 2^-i, i <= 159 is reached


@nb.njit(inline="always", cache=True, nogil=True)
def _exp_nonpositive(t):
    """exp(t) for t <= 0 by the native kernel's steps (Cody-Waite reduction, degree-10
    Taylor polynomial, exact scaling by 2^n from a table; math.ldexp costs a library call
    per element), so both give the same bits."""
    t = -110.0 if t < -110.0 else t
    kd = t * _LOG2E + _SHIFT
    nd = kd - _SHIFT
    r = (t - nd * _LN2_HI) - nd * _LN2_LO
    p = 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _POW2_NEG[-int(nd)]  # times 2^n exactly, as the native kernel's exponent bits


@nb.njit(parallel=True, cache=True)
def prepare(src, q, beta, rowmax):
    """q[i, j] = exp(beta * (src[i, j] - m_i)) with m_i = max_j src[i, j] (stored in rowmax),
    so no exp of a raw logit is ever taken (src may be q). A row holding NaN or Inf gets
    rowmax NaN and its q row is left as it was."""
    n, k = q.shape
    for i in nb.prange(n):
        finite = True
        m = src[i, 0]
        for j in range(k):
            x = src[i, j]
            if not np.isfinite(x):
                finite = False
            m = max(m, x)
        if not finite:
            rowmax[i] = np.nan
            continue
        rowmax[i] = m
        for j in range(k):
            q[i, j] = np.float32(_exp_nonpositive(beta * (np.float64(src[i, j]) - m)))


@nb.njit(parallel=True, cache=True)
def prepare_power(p, q, power, rowmax):
    """q[i, j] = (p[i, j] / m_i) ** power with m_i = max_j p[i, j] (stored in rowmax), by
    binary powering in float64 from the lowest bit, the native kernel's order of multiplies;
    rounded once to float32. A row holding NaN, Inf or a negative entry, or no positive one,
    gets rowmax NaN and its q row is left as it was."""
    n, k = q.shape
    for i in nb.prange(n):
        ok = True
        m = 0.0
        for j in range(k):
            x = np.float64(p[i, j])
            if not (x >= 0.0 and x < np.inf):
                ok = False
            m = x if x > m else m
        if not ok or m == 0.0:
            rowmax[i] = np.nan
            continue
        rowmax[i] = m
        for j in range(k):
            b = np.float64(p[i, j]) / m
            a = 1.0
            e = power
            while e > 0:
                if e & 1:
                    a *= b
                if e > 1:
                    b *= b
                e >>= 1
            q[i, j] = np.float32(a)


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
            ui = r[i] / dot8(q[i], v)
            u[i] = ui
            for j in range(k):
                part[c, j] += np.float64(q[i, j]) * ui
    out_colsum[:] = 0.0
    for c in range(chunks):
        out_colsum += part[c]


@nb.njit(parallel=True, cache=True)
def finalize(q, v, r, labels, out_colsum):
    """In place: rows of q * v normalised to sum 1 (the last row scaling, as x * v * (1 / s));
    labels = argmax of each output row (smaller index on ties); out_colsum[j] = sum_i r[i]
    q_out[i, j] (before the rounding to float32). Returns False when some row has no mass where v > 0 (left unscaled)."""
    n, k = q.shape
    chunks = (n + CHUNK - 1) // CHUNK
    part = np.zeros((chunks, k))
    ok = np.ones(chunks, np.bool_)
    for c in nb.prange(chunks):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            inv_s = 1.0 / dot8(q[i], v)
            if not (inv_s > 0.0 and inv_s < np.inf):
                ok[c] = False
                continue
            for j in range(k):
                t = np.float64(q[i, j]) * v[j] * inv_s
                q[i, j] = np.float32(t)
                part[c, j] += t * r[i]
            labels[i] = np.argmax(q[i])
    out_colsum[:] = 0.0
    for c in range(chunks):
        out_colsum += part[c]
    return ok.all()
