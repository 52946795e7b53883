"""k-means kernels (docs §6), numba versions of ``csrc/cpu/kmeans.cpp``, bit for bit.

The sums follow the native kernels' order: per chunk of rows, each cluster's members in
increasing row order in float64 (the products of two float32 values are exact), chunk partials
added in chunk order by ``fold_sums``. Dot products and squared distances use the native
kernels' lane orders (csrc/cpu/kmeans.h), so the results do not depend on the backend.
"""
import math

import numba as nb
import numpy as np

PP_BLOCK = 1024  # kPPBlock of csrc/cpu/kmeans.h


@nb.njit(cache=True)
def top2_update(tile, bias, col0, best_s, best_i, second_s):
    """Each tile row's best column (tile + bias, bias empty: none; the smaller column on
    ties) replaces (best_s, best_i) when strictly larger; second_s keeps the largest score of
    every other candidate seen."""
    rows, cols = tile.shape
    biased = bias.shape[0] > 0
    for r in range(rows):
        m = tile[r, 0] + bias[0] if biased else tile[r, 0]
        m2 = np.float32(-np.inf)
        at = 0
        for c in range(1, cols):
            s = tile[r, c] + bias[c] if biased else tile[r, c]
            if s > m:
                m2 = max(m2, m)
                m, at = s, c
            else:
                m2 = max(m2, s)
        if m > best_s[r]:
            second_s[r] = max(second_s[r], best_s[r])
            second_s[r] = max(second_s[r], m2)
            best_s[r] = m
            best_i[r] = col0 + at
        else:
            second_s[r] = max(second_s[r], m)


@nb.njit(cache=True)
def set_bounds(rows, best_s, best_i, second_s, sq_norms, eps, kappa, labels, upper, lower):
    """The scored rows' labels and Hamerly bounds from their float32 best and second-best
    scores (formulas of csrc/cpu/kmeans.h)."""
    for r in range(rows.shape[0]):
        i = rows[r]
        best = np.float64(best_s[r])
        second = np.float64(second_s[r])
        base = sq_norms[i] + kappa
        e = 2.0 * eps[i] + 1e-15 * (base + 2.0 * abs(best))
        hi = base - 2.0 * best + e
        lo = base - 2.0 * second - e
        labels[i] = best_i[r]
        upper[i] = math.sqrt(hi if hi > 0.0 else 0.0) * (1.0 + 1e-9)
        lower[i] = math.sqrt(lo if lo > 0.0 else 0.0) * (1.0 - 1e-9)


@nb.njit(cache=True)
def bound_test(labels, delta, first, first_max, rest_max, eps, upper, lower, need):
    """Hamerly's test on one chunk's rows after the centroids moved (formulas of
    csrc/cpu/kmeans.h); the rows that need scoring go to need, their count is returned."""
    count = 0
    for i in range(labels.shape[0]):
        c = labels[i]
        u = upper[i] + delta[c]
        l = lower[i] - (rest_max if c == first else first_max)
        upper[i] = u
        lower[i] = l
        if not (l > u and (l - u) * (l + u) > 4.0 * eps[i] * (1.0 + 1e-9)):
            need[count] = i
            count += 1
    return count


@nb.njit(inline="always", cache=True)
def _slot(c, slot_of, clusters, used):
    """Cluster c's slot among the first ``used``, or -1 (slot_of is a sparse set: any stale
    value is safe)."""
    s = slot_of[c]
    return s if 0 <= s < used and clusters[s] == c else -1


@nb.njit(inline="always", cache=True)
def _empty_slot(s, psums, pcounts):
    pcounts[s] = 0
    for j in range(psums.shape[1]):
        psums[s, j] = 0.0


@nb.njit(inline="always", cache=True)
def _add_row(x, i, inv, s, psums, pcounts):
    """Row i of x, times inv[i] (inv empty: 1), added to slot s."""
    w = np.float64(inv[i]) if inv.shape[0] > 0 else 1.0
    pcounts[s] += 1
    for j in range(x.shape[1]):
        psums[s, j] += np.float64(x[i, j]) * w


@nb.njit(cache=True)
def chunk_sums(x, inv, labels, slot_of, clusters, psums, pcounts):
    """One chunk's rows x * inv (inv empty: weight 1) added in row order to the partial sums
    of their clusters' slots (slot_of: scratch of any contents, a sparse set); returns the
    slots in use."""
    used = 0
    for i in range(x.shape[0]):
        c = labels[i]
        s = _slot(c, slot_of, clusters, used)
        if s < 0:  # slots are taken in order of first appearance
            s = used
            used += 1
            slot_of[c], clusters[s] = s, c
            _empty_slot(s, psums, pcounts)
        _add_row(x, i, inv, s, psums, pcounts)
    return used


@nb.njit(cache=True)
def chunk_sums_update(x, inv, old_labels, labels, mark, slot_of, clusters, psums, pcounts,
                      used):
    """One chunk's partial sums, filled for old_labels, brought up to date for labels: the
    slots of the clusters that lost or gained a row refilled in row order (the rule of
    csrc/cpu/kmeans.h; mark: zeros, left zero); returns the slots in use."""
    rows = x.shape[0]
    touched = np.empty(2 * rows, np.int64)
    n_touched = 0
    for i in range(rows):
        if old_labels[i] != labels[i]:
            for c in (old_labels[i], labels[i]):
                if mark[c] == 0:
                    mark[c] = 1
                    touched[n_touched] = c
                    n_touched += 1
    fits = True
    for t in range(n_touched):
        c = touched[t]
        s = _slot(c, slot_of, clusters, used)
        if s < 0:  # a cluster new to the chunk
            if used == clusters.shape[0]:
                fits = False
                break
            s = used
            used += 1
            slot_of[c], clusters[s] = s, c
        _empty_slot(s, psums, pcounts)
    if fits:
        for i in range(rows):
            c = labels[i]
            s = _slot(c, slot_of, clusters, used) if mark[c] else -1
            if s >= 0:
                _add_row(x, i, inv, s, psums, pcounts)
    for t in range(n_touched):
        mark[touched[t]] = 0
    if fits:
        return used
    return chunk_sums(x, inv, labels, slot_of, clusters, psums, pcounts)


@nb.njit(cache=True)
def fold_sums(clusters, n_slots, psums, pcounts, sums, counts):
    """Add one chunk's partial sums and counts (its first n_slots slots) to the totals."""
    d = sums.shape[1]
    for s in range(n_slots):
        c = clusters[s]
        for j in range(d):
            sums[c, j] += psums[s, j]
        counts[c] += pcounts[s]


@nb.njit(parallel=True, cache=True)
def row_sq_dists(x, centroids, labels, out):
    """Squared distance of every row to its centroid in float64, by four lanes."""
    n, d = x.shape
    for i in nb.prange(n):
        c = labels[i]
        l0 = l1 = l2 = l3 = 0.0
        j = 0
        while j + 4 <= d:
            e0 = np.float64(x[i, j]) - centroids[c, j]
            e1 = np.float64(x[i, j + 1]) - centroids[c, j + 1]
            e2 = np.float64(x[i, j + 2]) - centroids[c, j + 2]
            e3 = np.float64(x[i, j + 3]) - centroids[c, j + 3]
            l0 += e0 * e0
            l1 += e1 * e1
            l2 += e2 * e2
            l3 += e3 * e3
            j += 4
        if j < d:
            e = np.float64(x[i, j]) - centroids[c, j]
            l0 += e * e
        if j + 1 < d:
            e = np.float64(x[i, j + 1]) - centroids[c, j + 1]
            l1 += e * e
        if j + 2 < d:
            e = np.float64(x[i, j + 2]) - centroids[c, j + 2]
            l2 += e * e
        out[i] = (l0 + l1) + (l2 + l3)


@nb.njit(cache=True)
def _dot8(p, i, q):
    """p[i] . p[q] in float32 by the eight-lane order of csrc/cpu/kmeans.h."""
    d = p.shape[1]
    z = np.float32(0.0)
    l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = z
    j = 0
    while j + 8 <= d:
        l0 += p[i, j] * p[q, j]
        l1 += p[i, j + 1] * p[q, j + 1]
        l2 += p[i, j + 2] * p[q, j + 2]
        l3 += p[i, j + 3] * p[q, j + 3]
        l4 += p[i, j + 4] * p[q, j + 4]
        l5 += p[i, j + 5] * p[q, j + 5]
        l6 += p[i, j + 6] * p[q, j + 6]
        l7 += p[i, j + 7] * p[q, j + 7]
        j += 8
    s = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))
    while j < d:
        s += p[i, j] * p[q, j]
        j += 1
    return s


@nb.njit(parallel=True, cache=True)
def pp_trials(p, pp, cand, d2, out, colsum):
    """One k-means++ step: out[i, t] = min(d2[i], max(0, -2 p_i . p_cand[t] + pp_i +
    pp_cand[t])); colsum[t] its sum over i, in blocks of PP_BLOCK rows added in order."""
    s = p.shape[0]
    n_cand = cand.shape[0]
    blocks = (s + PP_BLOCK - 1) // PP_BLOCK
    part = np.zeros((blocks, n_cand))
    for blk in nb.prange(blocks):
        for i in range(blk * PP_BLOCK, min(s, (blk + 1) * PP_BLOCK)):
            for t in range(n_cand):
                c = cand[t]
                v = -2.0 * np.float64(_dot8(p, i, c))
                v = (v + pp[i]) + pp[c]
                v = v if v > 0.0 else 0.0
                v = v if v < d2[i] else d2[i]
                out[i, t] = v
                part[blk, t] += v
    for t in range(n_cand):
        colsum[t] = 0.0
    for blk in range(blocks):
        for t in range(n_cand):
            colsum[t] += part[blk, t]
