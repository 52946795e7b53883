"""Plain-Python reference of knn_vote (docs §2) and hdl (docs §3), for the labeling tests.

Clarity over speed: loops, lists and dicts. Works on a graph (idx, sims) whose first k columns
are used, labels (-1 = unlabeled) and, for the fallback, float64 NumPy kNN on the embeddings.

Rules where the docs are silent (the implementation follows the same):
- vote: weight max(s, 0) (or 1 for uniform); per class vote = sum of weights, raw = sum of s;
  winner = largest vote, then largest raw, then smallest class; confidence = vote / total vote
  (0 when the total is 0). float32 similarities, float64 sums in the order of the voters.
- phase B: candidates = out-neighbours in column order, then in-neighbours not among the
  out-neighbours by edge similarity descending (ties: smaller source). Depth-first search with
  a visited set; level = len(visited) - 1; fails when a new centre would make
  len(visited) > max_visits, or when the path is exhausted.
- phase C: kNN-DV over everything labeled after phases A and B; level = phase-A levels + 1.
"""
import numpy as np

from conftest import reference_knn  # float64 cosine top-k, ties to the smaller index

GIVEN, PROPAGATED, SEARCHED, FALLBACK = 0, 1, 2, 3


def vote(voters, uniform=False):
    """(label, confidence) of voters = [(class, similarity), ...]; (-1, 0.0) without voters."""
    if not voters:
        return -1, 0.0
    votes, raws = {}, {}
    total = 0.0
    for c, s in voters:
        s = float(np.float32(s))
        w = 1.0 if uniform else max(s, 0.0)
        votes[c] = votes.get(c, 0.0) + w
        raws[c] = raws.get(c, 0.0) + s
        total += w
    best = min(votes, key=lambda c: (-votes[c], -raws[c], c))
    return int(best), (votes[best] / total if total > 0 else 0.0)


def knn_vote(X, labels, k, uniform=False):
    """docs §2: each unlabeled point votes over its min(k, n_labeled) nearest labeled points."""
    labels = [int(v) for v in labels]
    out_lab = list(labels)
    out_conf = [1.0 if v >= 0 else 0.0 for v in labels]
    known = [i for i, v in enumerate(labels) if v >= 0]
    todo = [i for i, v in enumerate(labels) if v < 0]
    if todo:
        sims, nbr, _ = reference_knn(np.asarray(X)[todo], np.asarray(X)[known],
                                     min(k, len(known)), exclude_self=False)
        for r, u in enumerate(todo):
            out_lab[u], out_conf[u] = vote(
                [(labels[known[j]], np.float32(s)) for j, s in zip(nbr[r], sims[r])], uniform)
    return np.array(out_lab, np.int64), np.array(out_conf, np.float64)


def in_neighbours(idx, k):
    """ins[c] = [(v, similarity of the edge v -> c)] for every v listing c in its first k."""
    ins = [[] for _ in range(len(idx))]
    for v in range(len(idx)):
        for col in range(k):
            ins[int(idx[v][col])].append(v)
    return ins


def candidates(c, idx, sims, k, ins):
    """[(point, similarity to c)]: out-neighbours in column order, then the in-neighbours
    that are not out-neighbours, by edge similarity descending, ties by smaller source."""
    out = [(int(idx[c][col]), np.float32(sims[c][col])) for col in range(k)]
    listed = {p for p, _ in out}
    inn = []
    for v in ins[c]:
        if v in listed:
            continue
        col = [int(t) for t in idx[v][:k]].index(c)
        inn.append((v, np.float32(sims[v][col])))
    inn.sort(key=lambda e: (-float(e[1]), e[0]))
    return out + inn


def search(u, cand_of, labels, max_visits, uniform=False):
    """Phase B from u: (label, confidence, level, cycles); label -1 if the search fails.
    cand_of(c) gives the candidates of centre c."""
    visited, path, scan, cycles = {u}, [u], {u: 0}, 0
    arrived = True
    while path:
        c = path[-1]
        cand = cand_of(c)
        if arrived:
            voters = [(labels[p], s) for p, s in cand if labels[p] >= 0]
            if voters:
                lab, conf = vote(voters, uniform)
                return lab, conf, len(visited) - 1, cycles
        arrived = False
        while scan[c] < len(cand):
            p = cand[scan[c]][0]
            scan[c] += 1
            if p in visited:
                cycles += 1
                continue
            visited.add(p)
            if len(visited) > max_visits:
                return -1, 0.0, -1, cycles
            path.append(p)
            scan[p] = 0
            arrived = True
            break
        else:
            path.pop()
    return -1, 0.0, -1, cycles


def propagate_levels(idx, sims, k, lab, conf, level, prov, uniform=False):
    """Phase A, schedule "levels", in place. Returns the number of levels."""
    n = len(idx)
    h = 0
    while True:
        support = {u: sum(lab[int(idx[u][col])] >= 0 for col in range(k))
                   for u in range(n) if lab[u] < 0}
        frontier = {u: s for u, s in support.items() if s >= 1}
        if not frontier:
            return h
        h += 1
        for s_val in sorted(set(frontier.values()), reverse=True):
            members = sorted(u for u, s in frontier.items() if s == s_val)
            new = {}
            for u in members:  # everyone votes with the labels known at the sub-level start
                new[u] = vote([(lab[int(idx[u][col])], sims[u][col]) for col in range(k)
                               if lab[int(idx[u][col])] >= 0], uniform)
            for u, (c, p) in new.items():
                lab[u], conf[u], level[u], prov[u] = c, p, h, PROPAGATED


def propagate_sequential(idx, sims, k, lab, conf, level, prov, uniform=False):
    """Phase A, schedule "sequential": one point at a time, the unlabeled point with the
    largest (support, vote purity, summed similarity of its labeled neighbours), then the
    smaller index. level = the step. Returns the number of steps."""
    n = len(idx)
    step = 0
    while True:
        best = None
        for u in range(n):
            if lab[u] >= 0:
                continue
            voters = [(lab[int(idx[u][col])], sims[u][col]) for col in range(k)
                      if lab[int(idx[u][col])] >= 0]
            if not voters:
                continue
            c, p = vote(voters, uniform)
            raw = 0.0
            for _, s in voters:
                raw += float(np.float32(s))
            key = (len(voters), p, raw, -u)
            if best is None or key > best[0]:
                best = (key, u, c, p)
        if best is None:
            return step
        step += 1
        _, u, c, p = best
        lab[u], conf[u], level[u], prov[u] = c, p, step, PROPAGATED


def hdl(idx, sims, labels, k, *, method="hdl", schedule="levels", max_visits=64, X=None,
        fallback=None, uniform=False):
    """docs §3 on the graph (idx, sims). fallback: None or "knn-dv" (needs X).
    Returns dict of numpy arrays labels, confidence, level, provenance, cycles, and n_levels."""
    idx = np.asarray(idx)[:, :k]
    sims = np.asarray(sims, np.float32)[:, :k]
    n = len(idx)
    given = [int(v) for v in labels]
    lab = list(given)
    conf = [1.0 if v >= 0 else 0.0 for v in given]
    level = [0 if v >= 0 else -1 for v in given]
    prov = [GIVEN if v >= 0 else -1 for v in given]
    cycles = [0] * n
    n_levels = 0
    if method == "hdl":
        run = propagate_levels if schedule == "levels" else propagate_sequential
        n_levels = run(idx, sims, k, lab, conf, level, prov, uniform)
    ins = in_neighbours(idx, k)
    cache = {}

    def cand_of(c):
        if c not in cache:
            cache[c] = candidates(c, idx, sims, k, ins)
        return cache[c]

    frozen = list(lab)  # phase-B labels do not count for other searches
    for u in range(n):
        if frozen[u] < 0:
            c, p, steps, cycles[u] = search(u, cand_of, frozen, max_visits, uniform)
            if c >= 0:
                lab[u], conf[u], level[u], prov[u] = c, p, steps, SEARCHED
    todo = [u for u in range(n) if lab[u] < 0]
    if todo and fallback == "knn-dv":
        fb_lab, fb_conf = knn_vote(X, lab, k, uniform)
        for u in todo:
            lab[u], conf[u], level[u], prov[u] = int(fb_lab[u]), fb_conf[u], n_levels + 1, \
                FALLBACK
    return dict(labels=np.array(lab, np.int64), confidence=np.array(conf, np.float64),
                level=np.array(level, np.int32), provenance=np.array(prov, np.int8),
                cycles=np.array(cycles, np.int64), n_levels=n_levels)
