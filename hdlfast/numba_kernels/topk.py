"""Running top-k merge of similarity tiles, numba version of ``csrc/cpu/topk.cpp``.

Per row a heap of k (sim, index) pairs, worst at the root; the order is sim descending, then
index ascending (SPEC tie rule), so results equal the native kernels bit for bit.
"""
import numba as nb
import numpy as np

_CHUNK = 16


@nb.njit(inline="always", cache=True)
def _worse(as_, ai, bs, bi):
    return as_ < bs or (as_ == bs and ai > bi)


@nb.njit(cache=True)
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


@nb.njit(cache=True)
def _merge_row(t, col0, skip, hs, hi, k):
    thr = hs[0]
    cols = t.shape[0]
    c = 0
    while c < cols:
        e = min(c + _CHUNK, cols)
        hit = False
        for j in range(c, e):
            hit |= t[j] >= thr
        if hit:
            for j in range(c, e):
                v = t[j]
                if v >= thr and col0 + j != skip and _worse(hs[0], hi[0], v, col0 + j):
                    _replace_root(hs, hi, k, v, col0 + j)
                    thr = hs[0]
        c = e


@nb.njit(parallel=True, cache=True)
def merge_rows(tile, row0, col0, heap_s, heap_i, exclude_self):
    """Merge tile rows into the heaps of rows row0.. (candidates col0..)."""
    rows = tile.shape[0]
    k = heap_s.shape[1]
    for r in nb.prange(rows):
        row = row0 + r
        skip = row if exclude_self else -1
        _merge_row(tile[r], col0, skip, heap_s[row], heap_i[row], k)


@nb.njit(cache=True)
def _merge_col_range(tile, row0, col0, b, e, heap_s, heap_i):
    k = heap_s.shape[1]
    thr = np.empty(e - b, np.float32)
    for c in range(b, e):
        thr[c - b] = heap_s[col0 + c, 0]
    for r in range(tile.shape[0]):
        t = tile[r]
        c = b
        while c < e:
            ce = min(c + _CHUNK, e)
            hit = False
            for j in range(c, ce):
                hit |= t[j] >= thr[j - b]
            if hit:
                for j in range(c, ce):
                    v = t[j]
                    if v < thr[j - b]:
                        continue
                    hs = heap_s[col0 + j]
                    hi = heap_i[col0 + j]
                    if _worse(hs[0], hi[0], v, row0 + r):
                        _replace_root(hs, hi, k, v, row0 + r)
                        thr[j - b] = hs[0]
            c = ce


def merge_cols(tile, row0, col0, heap_s, heap_i):
    """Merge tile columns into the heaps of rows col0.. (candidates row0..)."""
    _merge_cols(tile, row0, col0, heap_s, heap_i, nb.get_num_threads())


@nb.njit(parallel=True, cache=True)
def _merge_cols(tile, row0, col0, heap_s, heap_i, nthreads):
    cols = tile.shape[1]
    chunks = (cols + _CHUNK - 1) // _CHUNK
    per = (chunks + nthreads - 1) // nthreads
    for t in nb.prange(nthreads):
        b = min(cols, t * per * _CHUNK)
        e = min(cols, (t + 1) * per * _CHUNK)
        if b < e:
            _merge_col_range(tile, row0, col0, b, e, heap_s, heap_i)


@nb.njit(parallel=True, cache=True)
def finalize(heap_s, heap_i):
    """Sort every heap: similarity descending, index ascending."""
    n, k = heap_s.shape
    for r in nb.prange(n):
        hs = heap_s[r]
        hi = heap_i[r]
        # lexsort key: (-sim, index); both stable under argsort with kind="mergesort"
        order = np.argsort(hi, kind="mergesort")
        order = order[np.argsort(-hs[order], kind="mergesort")]
        s = hs[order].copy()
        i = hi[order].copy()
        hs[:] = s
        hi[:] = i
