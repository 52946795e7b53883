"""Running top-k merge of similarity tiles, numba version of ``csrc/cpu/topk.cpp``.

Per row a heap of k (sim, index) pairs, worst at the root; the order is sim descending, then
index ascending (docs: tie rules), so results equal the native kernels bit for bit. The merges
are serial and release the GIL: the driver runs one per core on disjoint heaps.
"""
import numba as nb
import numpy as np

_CHUNK = 16


@nb.njit(inline="always", cache=True, nogil=True)
def _worse(as_, ai, bs, bi):
    return as_ < bs or (as_ == bs and ai > bi)


@nb.njit(cache=True, nogil=True)
def _replace_root(hs, hi, k, s, i):
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        if child + 1 < k and _worse(hs[child + 1], hi[child + 1], hs[child], hi[child]):
            child += 1
        if not _worse(hs[child], hi[child], s, i):
            break
        hs[pos] = hs[child]
        hi[pos] = hi[child]
        pos = child
    hs[pos] = s
    hi[pos] = i


@nb.njit(inline="always", cache=True, nogil=True)
def _merge_top1(t, col0, hs, hi):
    """k = 1: the row maximum, then the first column holding it (smaller index on ties)."""
    m = -np.inf
    for v in t:
        m = v if v > m else m
    if m < hs[0]:
        return
    j = 0
    while t[j] != m:
        j += 1
    if _worse(hs[0], hi[0], m, col0 + j):
        hs[0] = m
        hi[0] = col0 + j


@nb.njit(cache=True, nogil=True)
def merge_rows(tile, row0, col0, heap_s, heap_i, exclude_self):
    """Merge tile rows into the heaps of rows row0.. (candidates col0..)."""
    rows, cols = tile.shape
    k = heap_s.shape[1]
    for r in range(rows):
        row = row0 + r
        skip = row if exclude_self else -1
        t, hs, hi = tile[r], heap_s[row], heap_i[row]
        if k == 1 and (skip < col0 or skip >= col0 + cols):
            _merge_top1(t, col0, hs, hi)
            continue
        thr = hs[0]
        for c in range(0, cols, _CHUNK):
            e = min(c + _CHUNK, cols)
            hit = False
            for j in range(c, e):
                hit |= t[j] >= thr
            if not hit:
                continue
            for j in range(c, e):
                v = t[j]
                if v >= thr and col0 + j != skip and _worse(hs[0], hi[0], v, col0 + j):
                    _replace_root(hs, hi, k, v, col0 + j)
                    thr = hs[0]


@nb.njit(cache=True, nogil=True)
def merge_cols(tile, row0, col0, heap_s, heap_i):
    """Merge tile columns into the heaps of rows col0.. (candidates row0..)."""
    rows, cols = tile.shape
    k = heap_s.shape[1]
    thr = np.empty(cols, np.float32)
    for c in range(cols):
        thr[c] = heap_s[col0 + c, 0]
    for r in range(rows):
        t = tile[r]
        for c in range(0, cols, _CHUNK):
            e = min(c + _CHUNK, cols)
            hit = False
            for j in range(c, e):
                hit |= t[j] >= thr[j]
            if not hit:
                continue
            for j in range(c, e):
                v = t[j]
                if v < thr[j]:
                    continue
                hs, hi = heap_s[col0 + j], heap_i[col0 + j]
                if _worse(hs[0], hi[0], v, row0 + r):
                    _replace_root(hs, hi, k, v, row0 + r)
                    thr[j] = hs[0]


@nb.njit(parallel=True, cache=True)
def finalize(heap_s, heap_i):
    """Sort every heap: similarity descending, index ascending."""
    n, k = heap_s.shape
    if k == 1:  # nothing to sort
        return
    for r in nb.prange(n):
        hs = heap_s[r]
        hi = heap_i[r]
        order = np.argsort(hi, kind="mergesort")
        order = order[np.argsort(-hs[order], kind="mergesort")]
        s = hs[order].copy()
        i = hi[order].copy()
        hs[:] = s
        hi[:] = i


@nb.njit(cache=True, nogil=True)
def merge_sorted(sa, ia, sb, ib, out_s, out_i):
    """Row by row, the first ``out.shape[1]`` entries of two lists each sorted by the tie rule
    (sim descending, index ascending): a two-pointer merge, O(k) per row. For the tree
    reduction of ``hdlfast.dask`` (host data whatever the backend, so no native twin)."""
    n, k = out_s.shape
    ka, kb = sa.shape[1], sb.shape[1]
    for r in range(n):
        p = 0
        q = 0
        for c in range(k):
            if q >= kb or (p < ka and not _worse(sa[r, p], ia[r, p], sb[r, q], ib[r, q])):
                out_s[r, c] = sa[r, p]
                out_i[r, c] = ia[r, p]
                p += 1
            else:
                out_s[r, c] = sb[r, q]
                out_i[r, c] = ib[r, q]
                q += 1
