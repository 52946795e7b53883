"""Labeling kernels (docs §2-3), numba version of ``csrc/cpu/hdl.cpp``.

Votes: weight max(sim, 0) (or 1 for uniform voting); winner = largest vote, then largest raw
similarity sum, then smallest class id; confidence = winning vote / total vote. Per-class sums
are float64, accumulated in the order the voters appear, so both backends agree bit for bit.
"""
import heapq

import numba as nb
import numpy as np


@nb.njit(inline="always", cache=True, nogil=True)
def _holds(a, n, v):
    """Whether v is among a[:n] (a linear scan: the lists here are short)."""
    for j in range(n):
        if a[j] == v:
            return True
    return False


@nb.njit(cache=True, nogil=True)
def vote(cls, sim, n, uniform):
    """(label, confidence) of the n voters cls[:n] with similarities sim[:n]; (-1, 0) if n=0."""
    best_c, best_v, best_r, total = -1, -1.0, 0.0, 0.0
    for i in range(n):
        total += 1.0 if uniform else max(np.float64(sim[i]), 0.0)
        c = cls[i]
        if _holds(cls, i, c):  # this class was counted at its first voter
            continue
        v, r = 0.0, 0.0
        for j in range(i, n):
            if cls[j] == c:
                v += 1.0 if uniform else max(np.float64(sim[j]), 0.0)
                r += np.float64(sim[j])
        if best_c < 0 or v > best_v or (v == best_v and (r > best_r or (r == best_r and c < best_c))):
            best_c, best_v, best_r = c, v, r
    conf = best_v / total if total > 0 else 0.0
    return best_c, conf


@nb.njit(cache=True)
def reverse_csr(idx, k, n):
    """In-edges: for target t, entries indptr[t]:indptr[t+1] of the sources listing t, in
    increasing order (counting sort, O(N k))."""
    indptr = np.zeros(n + 1, np.int64)
    rows = idx.shape[0]
    for r in range(rows):
        for c in range(k):
            indptr[idx[r, c] + 1] += 1
    for t in range(n):
        indptr[t + 1] += indptr[t]
    fill = indptr[:-1].copy()
    src = np.empty(indptr[n], np.int32)
    for r in range(rows):
        for c in range(k):
            t = idx[r, c]
            src[fill[t]] = r
            fill[t] += 1
    return indptr, src


@nb.njit(parallel=True, cache=True)
def vote_rows(nbr_idx, nbr_sims, db_labels, uniform, out_lab, out_conf):
    """kNN-DV: row r votes over the database labels of its neighbours."""
    rows, k = nbr_idx.shape
    for r in nb.prange(rows):
        cls = np.empty(k, np.int64)
        for c in range(k):
            cls[c] = db_labels[nbr_idx[r, c]]
        lab, conf = vote(cls, nbr_sims[r], k, uniform)
        out_lab[r] = lab
        out_conf[r] = conf


@nb.njit(inline="always", cache=True, nogil=True)
def _labeled_voters(u, idx, sims, k, labels, cls, sim):
    """The labels and similarities of u's labeled neighbours, in graph order, into cls and
    sim; returns how many."""
    n = 0
    for c in range(k):
        lab = labels[idx[u, c]]
        if lab >= 0:
            cls[n] = lab
            sim[n] = sims[u, c]
            n += 1
    return n


@nb.njit(parallel=True, cache=True)
def _vote_members(idx, sims, k, labels, members, uniform, out_lab, out_conf):
    for m in nb.prange(members.shape[0]):
        u = members[m]
        cls = np.empty(k, np.int64)
        sim = np.empty(k, np.float32)
        n = _labeled_voters(u, idx, sims, k, labels, cls, sim)
        lab, conf = vote(cls, sim, n, uniform)
        out_lab[m] = lab
        out_conf[m] = conf


def propagate_levels(idx, sims, k, indptr, src, labels, conf, level, prov, uniform):
    """Phase A, schedule "levels", in place on labels/conf/level/prov (-1 = unlabeled).
    Returns the number of levels that labeled at least one point. One compiled call per
    level, so Ctrl-C (KeyboardInterrupt) is seen between levels."""
    support = _initial_support(idx, k, labels)
    frontier = np.nonzero((labels < 0) & (support > 0))[0]
    h = 0
    while frontier.shape[0] > 0:
        h += 1
        frontier = _level(idx, sims, k, indptr, src, labels, conf, level, prov, uniform,
                          support, frontier, h)
    return h


@nb.njit(cache=True)
def _initial_support(idx, k, labels):
    """Labeled out-neighbours of every unlabeled point."""
    n = idx.shape[0]
    support = np.zeros(n, np.int64)
    for u in range(n):
        if labels[u] < 0:
            for c in range(k):
                if labels[idx[u, c]] >= 0:
                    support[u] += 1
    return support


@nb.njit(cache=True)
def _level(idx, sims, k, indptr, src, labels, conf, level, prov, uniform, support, frontier, h):
    """Level h of phase A: label the frontier sub-level by sub-level, update the supports
    through the reverse graph; returns the next frontier."""
    s_u = support[frontier]
    # sub-levels in decreasing recorded support; members in increasing index
    order = np.argsort(-s_u, kind="mergesort")
    start = 0
    while start < order.shape[0]:
        stop = start
        while stop < order.shape[0] and s_u[order[stop]] == s_u[order[start]]:
            stop += 1
        members = frontier[order[start:stop]]
        new_lab = np.empty(members.shape[0], np.int64)
        new_conf = np.empty(members.shape[0], np.float64)
        _vote_members(idx, sims, k, labels, members, uniform, new_lab, new_conf)
        for m in range(members.shape[0]):
            u = members[m]
            labels[u] = new_lab[m]
            conf[u] = new_conf[m]
            level[u] = h
            prov[u] = 1
        start = stop
    # supports through the reverse graph; the next frontier is who rose from 0
    nxt = []
    for f in range(frontier.shape[0]):
        w = frontier[f]
        for e in range(indptr[w], indptr[w + 1]):
            u = src[e]
            if labels[u] < 0:
                if support[u] == 0:
                    nxt.append(u)
                support[u] += 1
    return np.sort(np.array(nxt, np.int64)) if len(nxt) else np.empty(0, np.int64)


@nb.njit(cache=True, nogil=True)
def _candidates(c, idx, sims, k, indptr, src, cand, cand_s):
    """Out-neighbours of c in column order, then in-neighbours not already listed, by edge
    similarity descending (ties: smaller source). Returns the count written to cand/cand_s."""
    n = 0
    for j in range(k):
        cand[n] = idx[c, j]
        cand_s[n] = sims[c, j]
        n += 1
    b, e = indptr[c], indptr[c + 1]
    m = e - b
    ins = np.empty(m, np.int64)
    ins_s = np.empty(m, np.float32)
    cnt = 0
    for t in range(b, e):
        v = src[t]
        dup = False
        for j in range(k):
            if idx[c, j] == v:
                dup = True
                break
        if not dup:
            col = 0
            while idx[v, col] != c:
                col += 1
            ins[cnt] = v
            ins_s[cnt] = sims[v, col]
            cnt += 1
    # stable sort by similarity descending keeps sources ascending among ties
    order = np.argsort(-ins_s[:cnt], kind="mergesort")
    for t in range(cnt):
        cand[n] = ins[order[t]]
        cand_s[n] = ins_s[order[t]]
        n += 1
    return n


@nb.njit(cache=True, nogil=True)
def _search_one(u, idx, sims, k, indptr, src, labels, max_visits, uniform, max_deg):
    """Phase B from u: (label, confidence, steps, cycles); label -1 when the search fails."""
    cap = k + max_deg
    visited = np.empty(max_visits + 1, np.int64)
    path = np.empty(max_visits + 1, np.int64)
    scan = np.empty(max_visits + 1, np.int64)
    cand = np.empty(cap, np.int64)
    cand_s = np.empty(cap, np.float32)
    vcls = np.empty(cap, np.int64)
    vsim = np.empty(cap, np.float32)
    n_vis, depth, cycles = 1, 1, 0
    visited[0] = u
    path[0] = u
    scan[0] = 0
    arrived = True
    while depth > 0:
        c = path[depth - 1]
        n = _candidates(c, idx, sims, k, indptr, src, cand, cand_s)
        if arrived:
            nv = 0
            for t in range(n):
                lab = labels[cand[t]]
                if lab >= 0:
                    vcls[nv] = lab
                    vsim[nv] = cand_s[t]
                    nv += 1
            if nv > 0:
                lab, conf = vote(vcls, vsim, nv, uniform)
                return lab, conf, n_vis - 1, cycles
        arrived = False
        t = scan[depth - 1]
        moved = False
        while t < n:
            v = cand[t]
            t += 1
            if _holds(visited, n_vis, v):
                cycles += 1
                continue
            scan[depth - 1] = t
            if n_vis == max_visits:
                return -1, 0.0, n_vis, cycles
            visited[n_vis] = v
            n_vis += 1
            path[depth] = v
            scan[depth] = 0
            depth += 1
            moved = True
            arrived = True
            break
        if not moved:
            depth -= 1
    return -1, 0.0, n_vis, cycles


@nb.njit(parallel=True, cache=True)
def search(idx, sims, k, indptr, src, labels, targets, max_visits, uniform, out_lab,
           out_conf, out_steps, out_cycles):
    """Phase B for every target, independently (labels found here are not used by others)."""
    max_deg = 0
    for t in range(indptr.shape[0] - 1):
        max_deg = max(max_deg, indptr[t + 1] - indptr[t])
    for i in nb.prange(targets.shape[0]):
        lab, conf, steps, cycles = _search_one(targets[i], idx, sims, k, indptr, src, labels,
                                               max_visits, uniform, max_deg)
        out_lab[i] = lab
        out_conf[i] = conf
        out_steps[i] = steps
        out_cycles[i] = cycles


@nb.njit(cache=True)
def _neighbour_key(u, idx, sims, k, labels, uniform):
    """(support, vote purity, similarity sum, label, confidence) of u's labeled neighbours."""
    cls = np.empty(k, np.int64)
    sim = np.empty(k, np.float32)
    n = _labeled_voters(u, idx, sims, k, labels, cls, sim)
    raw = 0.0
    for j in range(n):
        raw += np.float64(sim[j])
    lab, conf = vote(cls, sim, n, uniform)
    return n, conf, raw, lab


@nb.njit(cache=True)
def propagate_sequential(idx, sims, k, indptr, src, labels, conf, level, prov, uniform):
    """Phase A, schedule "sequential": one point at a time, the unlabeled point with the most
    labeled neighbours (then vote purity, similarity sum, smaller index), updating after each.
    level = the step at which a point was labeled. Returns the number of steps."""
    n = idx.shape[0]
    key_s = np.zeros(n, np.int64)
    key_p = np.zeros(n, np.float64)
    key_r = np.zeros(n, np.float64)
    heap = [(0.0, 0.0, 0.0, np.int64(0))]
    heap.pop()
    for u in range(n):
        if labels[u] < 0:
            s, p, r, _ = _neighbour_key(u, idx, sims, k, labels, uniform)
            key_s[u], key_p[u], key_r[u] = s, p, r
            if s > 0:
                heap.append((-np.float64(s), -p, -r, np.int64(u)))
    heapq.heapify(heap)
    step = 0
    while len(heap) > 0:
        ns, npur, nr, u = heapq.heappop(heap)
        if labels[u] >= 0 or -ns != key_s[u] or -npur != key_p[u] or -nr != key_r[u]:
            continue  # stale entry
        s, p, r, lab = _neighbour_key(u, idx, sims, k, labels, uniform)
        step += 1
        labels[u] = lab
        conf[u] = p
        level[u] = step
        prov[u] = 1
        for e in range(indptr[u], indptr[u + 1]):
            v = src[e]
            if labels[v] < 0:
                s, p, r, _ = _neighbour_key(v, idx, sims, k, labels, uniform)
                key_s[v], key_p[v], key_r[v] = s, p, r
                heapq.heappush(heap, (-np.float64(s), -p, -r, np.int64(v)))
    return step
