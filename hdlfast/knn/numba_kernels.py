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


@nb.njit(inline="always", cache=True, nogil=True)
def _any_at_least(t, c, e, thr):
    """Whether some t[c:e] >= thr: the chunk test that skips most of a tile."""
    hit = False
    for j in range(c, e):
        hit |= t[j] >= thr
    return hit


@nb.njit(inline="always", cache=True, nogil=True)
def _merge_row(t, col0, ids, skip, hs, hi, k):
    """One tile row into its heap; candidate j is database index ids[j], or col0 + j when
    ids is empty (a contiguous tile), looked up only for the survivors of the chunk test."""
    listed = ids.shape[0] > 0
    thr = hs[0]
    for c in range(0, t.shape[0], _CHUNK):
        e = min(c + _CHUNK, t.shape[0])
        if not _any_at_least(t, c, e, thr):
            continue
        for j in range(c, e):
            v = t[j]
            if v < thr:
                continue
            i = ids[j] if listed else col0 + j
            if i != skip and _worse(hs[0], hi[0], v, i):
                _replace_root(hs, hi, k, v, i)
                thr = hs[0]


_CONTIGUOUS = np.empty(0, np.int64)


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
        _merge_row(t, col0, _CONTIGUOUS, skip, hs, hi, k)


@nb.njit(cache=True, nogil=True)
def merge_listed(tile, row_ids, self_ids, col_ids, heap_s, heap_i, exclude_self):
    """Merge tile[r, c] into the heap of row row_ids[r] (distinct) as candidate col_ids[c],
    skipping col_ids[c] == self_ids[r] with exclude_self."""
    k = heap_s.shape[1]
    for r in range(tile.shape[0]):
        row = row_ids[r]
        skip = self_ids[r] if exclude_self else -1
        _merge_row(tile[r], 0, col_ids, skip, heap_s[row], heap_i[row], k)


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


_LOW = np.uint64(0xFFFFFFFF)


@nb.njit(inline="always", cache=True, nogil=True)
def _float_key(f32, u32, v):
    """Order-preserving bits of the float32 v (-0 canonicalised to +0), through the one-element
    scratch f32 and its uint32 view u32."""
    f32[0] = v + np.float32(0.0)
    b = np.uint64(u32[0])
    return (~b & _LOW) if b & np.uint64(0x80000000) else (b | np.uint64(0x80000000))


@nb.njit(inline="always", cache=True, nogil=True)
def _key_float(f32, u32, key):
    """The float32 of the 32-bit key (the inverse of _float_key)."""
    if key & np.uint64(0x80000000):
        u32[0] = np.uint32(key & np.uint64(0x7FFFFFFF))
    else:
        u32[0] = np.uint32(~key & _LOW)
    return f32[0]


@nb.njit(inline="always", cache=True, nogil=True)
def _threshold_sim(f32, u32, thr):
    if thr == 0:
        return -np.inf
    return _key_float(f32, u32, thr >> np.uint64(32))


@nb.njit(cache=True, nogil=True)
def _keep_best(buf, n, k):
    """The best k of buf[:n] into buf[:k] (any order); returns the k-th best key."""
    part = np.partition(buf[:n], n - k)
    buf[:k] = part[n - k:]
    return part[n - k]


@nb.njit(cache=True, nogil=True)
def reservoir_merge(tile, row0, col0, keys, count, thr, k, exclude_self):
    """Merge tile rows into the reservoirs of rows row0.. (see csrc/cpu/topk.h): candidates
    enter as keys (float bits << 32 | 2**32 - 1 - index) when they beat thr[r]; a full
    reservoir keeps its best k and raises thr[r]."""
    rows, cols = tile.shape
    cap = keys.shape[1]
    f32 = np.empty(1, np.float32)
    u32 = f32.view(np.uint32)
    for r in range(rows):
        skip = row0 + r if exclude_self else -1
        t, buf = tile[r], keys[r]
        n, th = count[r], thr[r]
        th_s = _threshold_sim(f32, u32, th)
        for c in range(0, cols, _CHUNK):
            e = min(c + _CHUNK, cols)
            if not _any_at_least(t, c, e, th_s):
                continue
            for j in range(c, e):
                if t[j] < th_s or col0 + j == skip:
                    continue
                key = (_float_key(f32, u32, t[j]) << np.uint64(32)) | \
                    (_LOW - np.uint64(col0 + j))
                if key <= th:
                    continue
                buf[n] = key
                n += 1
                if n == cap:
                    th = _keep_best(buf, n, k)
                    th_s = _threshold_sim(f32, u32, th)
                    n = k
        count[r] = n
        thr[r] = th


@nb.njit(cache=True, nogil=True)
def reservoir_finish(keys, count, out_s, out_i):
    """The best k of each reservoir, sorted (sim descending, index ascending), decoded.
    Serial: the driver runs one block of rows per core."""
    rows, k = out_s.shape
    f32 = np.empty(1, np.float32)
    u32 = f32.view(np.uint32)
    for r in range(rows):
        n = count[r]
        m = min(n, k)
        if n > k:
            _keep_best(keys[r], n, k)
        best = np.sort(keys[r, :m])[::-1]
        for j in range(k):
            if j < m:
                out_s[r, j] = _key_float(f32, u32, best[j] >> np.uint64(32))
                out_i[r, j] = np.int64(_LOW - (best[j] & _LOW))
            else:
                out_s[r, j] = -np.inf
                out_i[r, j] = np.iinfo(np.int64).max


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
