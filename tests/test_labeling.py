"""hdlfast.hdl and hdlfast.knn_vote (docs §2-3): hand-made graphs with known answers, random
graphs against the plain-Python reference (tests/hdl_reference.py) on every CPU backend,
array kinds, bad input, and the quality claim on scikit-learn digits."""
import functools

import numpy as np
import pytest

import hdl_reference as ref
import hdlfast
from hdlfast import datasets
from conftest import CPU_BACKENDS, to_numpy

GIVEN, PROPAGATED, SEARCHED, FALLBACK = 0, 1, 2, 3


def graph(rows):
    """(idx, sims) from {point: [(neighbour, similarity), ...]} (rows already sorted)."""
    n = len(rows)
    idx = np.array([[v for v, _ in rows[u]] for u in range(n)], np.int64)
    sims = np.array([[s for _, s in rows[u]] for u in range(n)], np.float32)
    return idx, sims


def run(backend, idx, sims, labels, k, **kw):
    """hdl on a precomputed graph; numpy arrays out."""
    res = hdlfast.hdl(labels=np.asarray(labels, np.int64), k=k, graph=(idx, sims),
                      backend=backend, **kw)
    return {name: to_numpy(getattr(res, name))
            for name in ("labels", "confidence", "level", "provenance", "cycles")}


def check(out, labels, confidence, level, provenance, cycles=None):
    np.testing.assert_array_equal(out["labels"], labels)
    np.testing.assert_allclose(out["confidence"], confidence, atol=1e-6)
    np.testing.assert_array_equal(out["level"], level)
    np.testing.assert_array_equal(out["provenance"], provenance)
    if cycles is not None:
        np.testing.assert_array_equal(out["cycles"], cycles)


def test_provenance_codes():
    assert hdlfast.PROVENANCE == ("given", "propagated", "searched", "fallback")


# --------------------------------------------------------------------------- a) hand-made graphs

# 0 (class 0) <- 1 <- 2 <- 3: one hop per level. 4 (class 1) lists 3, but nobody lists 4.
CHAIN = graph({0: [(1, .9)], 1: [(0, .9)], 2: [(1, .8)], 3: [(2, .7)], 4: [(3, .6)]})


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_chain_gives_one_level_per_hop(backend):
    out = run(backend, *CHAIN, [0, -1, -1, -1, 1], 1)
    check(out, labels=[0, 0, 0, 0, 1], confidence=[1, 1, 1, 1, 1], level=[0, 1, 2, 3, 0],
          provenance=[GIVEN, PROPAGATED, PROPAGATED, PROPAGATED, GIVEN])


# Level 1: 3 has support 2 (1 and 2, class 1), 4 has support 1 (0, class 0, sim .5) and lists
# 3 (sim .9). 3 speaks first; 4 then counts it: class 1 with .9 against class 0 with .5.
SUBLEVEL = graph({0: [(4, .5), (1, .2)], 1: [(3, .8), (2, .6)], 2: [(3, .7), (1, .6)],
                  3: [(1, .8), (2, .7)], 4: [(3, .9), (0, .5)]})


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_higher_support_speaks_first_within_a_level(backend):
    out = run(backend, *SUBLEVEL, [0, 1, 1, -1, -1], 2)
    check(out, labels=[0, 1, 1, 1, 1], confidence=[1, 1, 1, 1, 0.9 / 1.4],
          level=[0, 0, 0, 1, 1], provenance=[GIVEN] * 3 + [PROPAGATED] * 2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_point_gaining_support_inside_a_level_waits_for_the_next(backend):
    # 5 lists only 4 and 3 (unlabeled at the start of level 1): it is not in F_1 even though
    # both are labeled during level 1, so it is labeled in level 2.
    rows = {0: [(4, .5), (1, .2)], 1: [(3, .8), (2, .6)], 2: [(3, .7), (1, .6)],
            3: [(1, .8), (2, .7)], 4: [(3, .9), (0, .5)], 5: [(4, .75), (3, .25)]}
    out = run(backend, *graph(rows), [0, 1, 1, -1, -1, -1], 2)
    check(out, labels=[0, 1, 1, 1, 1, 1], confidence=[1, 1, 1, 1, 0.9 / 1.4, 1],
          level=[0, 0, 0, 1, 1, 2], provenance=[GIVEN] * 3 + [PROPAGATED] * 3)


# {2, 3, 4} only list each other (closed, no label); 0 (class 0) lists 4, so the search
# reaches a label only through the in-edge 0 -> 4. 5 lists 1 and 0 (propagated, level 1).
CLOSED = graph({0: [(4, .6), (1, .5)], 1: [(0, .5), (5, .4)], 2: [(3, .9), (4, .8)],
                3: [(2, .9), (4, .7)], 4: [(2, .8), (3, .7)], 5: [(1, .4), (0, .3)]})


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_closed_component_is_reached_through_an_in_edge(backend):
    out = run(backend, *CLOSED, [0, 1, -1, -1, -1, -1], 2)
    # 2: 2 -> 3 -> (2 visited: cycle) -> 4, whose in-neighbour 0 is labeled: 2 steps.
    # 3: 3 -> 2 -> (3 visited: cycle) -> 4: 2 steps. 4: its in-neighbour 0 is in view at once.
    check(out, labels=[0, 1, 0, 0, 0, 1], confidence=[1, 1, 1, 1, 1, 0.4 / 0.7],
          level=[0, 0, 2, 2, 0, 1],
          provenance=[GIVEN, GIVEN, SEARCHED, SEARCHED, SEARCHED, PROPAGATED],
          cycles=[0, 0, 1, 1, 0, 0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_tree_method_searches_from_every_unlabeled_point(backend):
    out = run(backend, *CLOSED, [0, 1, -1, -1, -1, -1], 2, method="tree")
    check(out, labels=[0, 1, 0, 0, 0, 1], confidence=[1, 1, 1, 1, 1, 0.4 / 0.7],
          level=[0, 0, 2, 2, 0, 0],
          provenance=[GIVEN, GIVEN, SEARCHED, SEARCHED, SEARCHED, SEARCHED],
          cycles=[0, 0, 1, 1, 0, 0])


# k = 1. 2 <-> 3 is a 2-cycle, 4 -> 2, 5 -> 4, and 0 (class 0) -> 5; 1 (class 1) -> 0.
# From 2: candidates [3, 4 (in)]; 3 is a dead end (its only candidate 2 is visited: cycle),
# back to 2, on to 4 (candidates [2: cycle, 5 (in)]), then 5 sees 0 through the in-edge.
BACKTRACK = graph({0: [(5, .4)], 1: [(0, .8)], 2: [(3, .9)], 3: [(2, .9)], 4: [(2, .5)],
                   5: [(4, .7)]})
BACKTRACK_X = np.array([[1, 0], [0, 1], [.1, 1], [.2, 1], [.3, 1], [1, .1]], np.float32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_search_counts_cycles_and_backtracks(backend):
    out = run(backend, *BACKTRACK, [0, 1, -1, -1, -1, -1], 1)
    check(out, labels=[0, 1, 0, 0, 0, 0], confidence=[1] * 6, level=[0, 0, 3, 3, 3, 0],
          provenance=[GIVEN, GIVEN] + [SEARCHED] * 4, cycles=[0, 0, 2, 2, 2, 0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_max_visits_exhausted_leaves_points_unlabeled_without_fallback(backend):
    out = run(backend, *BACKTRACK, [0, 1, -1, -1, -1, -1], 1, max_visits=3, fallback=None)
    check(out, labels=[0, 1, -1, -1, -1, 0], confidence=[1, 1, 0, 0, 0, 1],
          level=[0, 0, -1, -1, -1, 0], provenance=[GIVEN, GIVEN, -1, -1, -1, SEARCHED],
          cycles=[0, 0, 2, 2, 2, 0])
    # max_visits=4 is just enough (u, then 3 more centres)
    out = run(backend, *BACKTRACK, [0, 1, -1, -1, -1, -1], 1, max_visits=4, fallback=None)
    np.testing.assert_array_equal(out["labels"], [0, 1, 0, 0, 0, 0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_max_visits_exhausted_falls_back_to_knn_vote(backend):
    # in embedding space 2, 3, 4 are closest to 1 (class 1), among the labeled {0, 1, 5}
    res = hdlfast.hdl(BACKTRACK_X, np.array([0, 1, -1, -1, -1, -1]), 1, graph=BACKTRACK,
                      max_visits=3, backend=backend)  # fallback "auto" = knn-dv with X
    out = {name: to_numpy(getattr(res, name)) for name in
           ("labels", "confidence", "level", "provenance")}
    # no phase-A level labeled anything: fallback level 0 + 1
    check(out, labels=[0, 1, 1, 1, 1, 0], confidence=[1] * 6, level=[0, 0, 1, 1, 1, 0],
          provenance=[GIVEN, GIVEN, FALLBACK, FALLBACK, FALLBACK, SEARCHED])
    explicit = hdlfast.hdl(BACKTRACK_X, np.array([0, 1, -1, -1, -1, -1]), 1, graph=BACKTRACK,
                           max_visits=3, fallback="knn-dv", backend=backend)
    np.testing.assert_array_equal(to_numpy(explicit.labels), out["labels"])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fallback_level_is_one_past_the_last_phase_a_level(backend):
    # CHAIN has 3 phase-A levels; with 5 -> 6 -> 5 closed off (nobody lists them) the search
    # from 5 and 6 fails and they fall back at level 4.
    rows = {0: [(1, .9)], 1: [(0, .9)], 2: [(1, .8)], 3: [(2, .7)], 4: [(3, .6)],
            5: [(6, .9)], 6: [(5, .9)]}
    x = np.array([[1, 0], [1, .1], [1, .2], [1, .3], [0, 1], [.1, 1], [.2, 1]], np.float32)
    res = hdlfast.hdl(x, np.array([0, -1, -1, -1, 1, -1, -1]), 1, graph=graph(rows),
                      backend=backend)
    np.testing.assert_array_equal(to_numpy(res.labels), [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(to_numpy(res.level), [0, 1, 2, 3, 0, 4, 4])
    np.testing.assert_array_equal(to_numpy(res.provenance), [0, 1, 1, 1, 0, 3, 3])


# 0, 1: class 0; 2, 3: class 1. Point 4: class 0 gets .5 + .25, class 1 gets .75 (equal vote
# and equal raw sum -> smaller class 0). Point 5: class 0 vote .5 (raw .5 - .25), class 1
# vote .5 (raw .5) -> larger raw sum, class 1. All values exact in binary.
TIES = graph({0: [(1, .5), (2, .4), (3, .3)], 1: [(0, .5), (2, .4), (3, .3)],
              2: [(3, .5), (0, .4), (1, .3)], 3: [(2, .5), (0, .4), (1, .3)],
              4: [(2, .75), (0, .5), (1, .25)], 5: [(0, .5), (2, .5), (1, -.25)]})


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exact_vote_ties(backend):
    out = run(backend, *TIES, [0, 0, 1, 1, -1, -1], 3)
    check(out, labels=[0, 0, 1, 1, 0, 1], confidence=[1, 1, 1, 1, .5, .5],
          level=[0, 0, 0, 0, 1, 1], provenance=[GIVEN] * 4 + [PROPAGATED] * 2)
    # uniform: 4 has two class-0 voters against one; so has 5 (the anti-similar one counts)
    out = run(backend, *TIES, [0, 0, 1, 1, -1, -1], 3, weighting="uniform")
    check(out, labels=[0, 0, 1, 1, 0, 0], confidence=[1, 1, 1, 1, 2 / 3, 2 / 3],
          level=[0, 0, 0, 0, 1, 1], provenance=[GIVEN] * 4 + [PROPAGATED] * 2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_uniform_tie_goes_to_the_larger_similarity_sum(backend):
    rows = {0: [(1, .5), (2, .25)], 1: [(0, .5), (3, .25)], 2: [(1, .625), (0, .375)],
            3: [(0, .5), (1, .5)]}
    out = run(backend, *graph(rows), [0, 1, -1, -1], 2, weighting="uniform")
    check(out, labels=[0, 1, 1, 0], confidence=[1, 1, .5, .5], level=[0, 0, 1, 1],
          provenance=[GIVEN, GIVEN, PROPAGATED, PROPAGATED])
    out = run(backend, *graph(rows), [0, 1, -1, -1], 2)
    check(out, labels=[0, 1, 1, 0], confidence=[1, 1, .625, .5], level=[0, 0, 1, 1],
          provenance=[GIVEN, GIVEN, PROPAGATED, PROPAGATED])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_negative_similarities(backend):
    # 2: both labeled neighbours anti-similar: no support at all -> confidence 0, the label by
    # the raw sum (-.25 beats -.5). 3: the anti-similar class-0 neighbour gives no weight.
    rows = {0: [(1, .5), (2, -.25)], 1: [(0, .5), (3, .25)], 2: [(0, -.25), (1, -.5)],
            3: [(1, .25), (0, -.75)]}
    out = run(backend, *graph(rows), [0, 1, -1, -1], 2)
    check(out, labels=[0, 1, 0, 1], confidence=[1, 1, 0, 1], level=[0, 0, 1, 1],
          provenance=[GIVEN, GIVEN, PROPAGATED, PROPAGATED])
    out = run(backend, *graph(rows), [0, 1, -1, -1], 2, weighting="uniform")
    check(out, labels=[0, 1, 0, 1], confidence=[1, 1, .5, .5], level=[0, 0, 1, 1],
          provenance=[GIVEN, GIVEN, PROPAGATED, PROPAGATED])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_knn_vote_by_hand(backend):
    # labeled: 0 at (1, 0) class 0, 1 at (-1, 0) class 1, 2 at (0, 1) class 1.
    x = np.array([[1, 0], [-1, 0], [0, 1], [1, .1], [-1, .05]], np.float32)
    y = np.array([0, 1, 1, -1, -1])
    lab, conf = (to_numpy(a) for a in hdlfast.knn_vote(x, y, 3, backend=backend))
    s3 = x[3] / np.linalg.norm(x[3])  # sims of 3: (.995, -.995, .0995); 4 sees only class 1
    np.testing.assert_array_equal(lab, [0, 1, 1, 0, 1])
    np.testing.assert_allclose(conf, [1, 1, 1, s3[0] / (s3[0] + s3[1]), 1], atol=1e-6)
    # uniform: 3 has one class-0 voter and two class-1 voters
    lab, conf = (to_numpy(a) for a in
                 hdlfast.knn_vote(x, y, 3, weighting="uniform", backend=backend))
    np.testing.assert_array_equal(lab, [0, 1, 1, 1, 1])
    np.testing.assert_allclose(conf, [1, 1, 1, 2 / 3, 2 / 3], atol=1e-6)
    # k larger than the number of labeled points: all 3 of them vote
    lab2, conf2 = (to_numpy(a) for a in
                   hdlfast.knn_vote(x, y, 4, weighting="uniform", backend=backend))
    np.testing.assert_array_equal(lab2, lab)
    np.testing.assert_allclose(conf2, conf, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_only_first_k_columns_are_used(backend):
    idx, sims = SUBLEVEL
    # widen with junk columns pointing at labeled points of another class
    wide_idx = np.concatenate([idx, np.zeros((5, 3), np.int64)], axis=1)
    wide_idx[0, 2:] = 2
    wide_sims = np.concatenate([sims, np.full((5, 3), .1, np.float32)], axis=1)
    a = run(backend, idx, sims, [0, 1, 1, -1, -1], 2)
    b = run(backend, wide_idx, wide_sims, [0, 1, 1, -1, -1], 2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sequential_schedule_on_a_small_graph(backend):
    # one point at a time: 3 (support 2) first, then 4 (now support 2: 3 and 0), then 5.
    rows = {0: [(4, .5), (1, .2)], 1: [(3, .8), (2, .6)], 2: [(3, .7), (1, .6)],
            3: [(1, .8), (2, .7)], 4: [(3, .9), (0, .5)], 5: [(4, .75), (3, .25)]}
    out = run(backend, *graph(rows), [0, 1, 1, -1, -1, -1], 2, schedule="sequential")
    check(out, labels=[0, 1, 1, 1, 1, 1], confidence=[1, 1, 1, 1, 0.9 / 1.4, 1],
          level=[0, 0, 0, 1, 2, 3], provenance=[GIVEN] * 3 + [PROPAGATED] * 3)


# --------------------------------------------------------------------------- b) random graphs

def clustered(n, d, seed, n_clusters, spread):
    """Clustered points; class = cluster. Tight clusters give closed kNN components."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    cls = rng.integers(0, n_clusters, n)
    x = centres[cls] + spread * rng.standard_normal((n, d))
    return x.astype(np.float32), cls.astype(np.int64)


def few_labels(cls, n_labels, seed, labeled_clusters=None):
    """n_labels random labels, only from the given clusters (None: all)."""
    rng = np.random.default_rng(seed + 1000)
    pool = np.arange(len(cls)) if labeled_clusters is None else \
        np.nonzero(np.isin(cls, labeled_clusters))[0]
    pick = rng.choice(pool, size=n_labels, replace=False)
    y = np.full(len(cls), -1, np.int64)
    y[pick] = cls[pick]
    return y


# (n, d, k, n_clusters, spread, n_labels, labeled clusters, max_visits, seed)
EMBEDDING_CASES = [
    (50, 4, 3, 3, .3, 3, None, 64, 0),
    (120, 8, 5, 6, .2, 4, (0, 1, 2,), 64, 1),        # closed unlabeled clusters
    (300, 16, 8, 8, .4, 6, (0, 1, 2, 3, 4,), 16, 2),
    (500, 6, 4, 10, .15, 8, (0, 2, 4, 6,), 8, 3),     # tight clusters, short searches
    (800, 32, 15, 5, .8, 5, None, 64, 4),
    (2000, 16, 30, 12, .5, 12, None, 64, 5),
    (1000, 3, 3, 20, .05, 10, tuple(range(10)), 4, 6),
]


@functools.lru_cache(maxsize=None)
def embedding_case(case):
    n, d, k, n_clusters, spread, n_labels, labeled, max_visits, seed = case
    x, cls = clustered(n, d, seed, n_clusters, spread)
    y = few_labels(cls, n_labels, seed, labeled)
    sims, idx = (to_numpy(a) for a in hdlfast.knn(x, k, backend=CPU_BACKENDS[0]))
    return x, y, idx, sims


@functools.lru_cache(maxsize=None)
def embedding_reference(case, method, fallback):
    x, y, idx, sims = embedding_case(case)
    k, max_visits = case[2], case[7]
    return ref.hdl(idx, sims, y, k, method=method, max_visits=max_visits, X=x,
                   fallback=fallback)


def assert_matches_reference(res, expected):
    np.testing.assert_array_equal(to_numpy(res.labels), expected["labels"])
    np.testing.assert_array_equal(to_numpy(res.level), expected["level"])
    np.testing.assert_array_equal(to_numpy(res.provenance), expected["provenance"])
    np.testing.assert_array_equal(to_numpy(res.cycles), expected["cycles"])
    np.testing.assert_allclose(to_numpy(res.confidence), expected["confidence"], atol=1e-6)
    conf = to_numpy(res.confidence)
    assert conf.dtype == np.float32 and to_numpy(res.labels).dtype == np.int64
    assert to_numpy(res.level).dtype == np.int32 and to_numpy(res.provenance).dtype == np.int8
    assert ((conf >= 0) & (conf <= 1)).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fallback", [None, "knn-dv"])
@pytest.mark.parametrize("method", ["hdl", "tree"])
@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=lambda c: f"n{c[0]}k{c[2]}")
def test_random_embeddings_match_reference(backend, method, fallback, case):
    x, y, idx, sims = embedding_case(case)
    expected = embedding_reference(case, method, fallback)
    res = hdlfast.hdl(x, y, case[2], graph=(idx, sims), method=method, max_visits=case[7],
                      fallback=fallback, backend=backend)
    assert_matches_reference(res, expected)
    if fallback is None:
        # the same without embeddings
        res = hdlfast.hdl(labels=y, k=case[2], graph=(idx, sims), method=method,
                          max_visits=case[7], backend=backend)
        assert_matches_reference(res, expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_graph_built_from_embeddings_is_the_knn_graph(backend):
    case = EMBEDDING_CASES[2]
    x, y, idx, sims = embedding_case(case)
    a = hdlfast.hdl(x, y, case[2], max_visits=case[7], backend=backend)
    b = hdlfast.hdl(x, y, case[2], graph=(idx, sims), max_visits=case[7], backend=backend)
    for key in ("labels", "confidence", "level", "provenance"):
        np.testing.assert_array_equal(to_numpy(getattr(a, key)), to_numpy(getattr(b, key)))
    assert_matches_reference(a, embedding_reference(case, "hdl", "knn-dv"))


def block_graph(n, k, n_blocks, cross, seed, quantize):
    """A random directed graph: edges inside blocks plus a fraction ``cross`` of edges to
    anywhere; similarities sorted per row, optionally rounded to multiples of 1/quantize
    (many exact ties)."""
    rng = np.random.default_rng(seed)
    block = rng.integers(0, n_blocks, n)
    idx = np.empty((n, k), np.int64)
    for u in range(n):
        mates = np.nonzero(block == block[u])[0]
        mates = mates[mates != u]
        others = np.delete(np.arange(n), u)
        chosen = []
        while len(chosen) < k:
            pool = others if (rng.random() < cross or len(mates) <= len(chosen)) else mates
            v = int(rng.choice(pool))
            if v not in chosen:
                chosen.append(v)
        idx[u] = chosen
    sims = rng.uniform(-.3, 1, (n, k))
    if quantize:
        sims = np.round(sims * quantize) / quantize
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(idx, order, 1), np.take_along_axis(sims, order, 1).astype(
        np.float32), block


# (n, k, n_blocks, cross, n_labels, labeled blocks, max_visits, quantize, seed)
GRAPH_CASES = [
    (12, 2, 3, 0.0, 2, (0,), 64, 4, 10),
    (60, 3, 6, .02, 3, (0, 1,), 64, 8, 11),
    (200, 5, 10, .01, 5, (0, 1, 2,), 16, 4, 12),
    (400, 4, 20, .005, 6, (0, 1, 2, 3,), 64, 0, 13),
    (700, 10, 7, .05, 4, (0,), 32, 2, 14),
    (300, 6, 30, 0.0, 10, None, 5, 8, 15),
]


@functools.lru_cache(maxsize=None)
def graph_case(case):
    n, k, n_blocks, cross, n_labels, labeled, max_visits, quantize, seed = case
    idx, sims, block = block_graph(n, k, n_blocks, cross, seed, quantize)
    y = few_labels(block % 3, n_labels, seed, None)  # class = block % 3
    if labeled is not None:  # labels only inside the labeled blocks
        y = np.full(n, -1, np.int64)
        pool = np.nonzero(np.isin(block, labeled))[0]
        pick = np.random.default_rng(seed).choice(pool, min(n_labels, len(pool)),
                                                  replace=False)
        y[pick] = block[pick] % 3
    return idx, sims, y


@functools.lru_cache(maxsize=None)
def graph_reference(case, method, schedule, uniform):
    idx, sims, y = graph_case(case)
    return ref.hdl(idx, sims, y, case[1], method=method, schedule=schedule,
                   max_visits=case[6], uniform=uniform)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("method,schedule,weighting", [
    ("hdl", "levels", "similarity"), ("tree", "levels", "similarity"),
    ("hdl", "levels", "uniform"), ("tree", "levels", "uniform"),
    ("hdl", "sequential", "similarity")])
@pytest.mark.parametrize("case", GRAPH_CASES, ids=lambda c: f"n{c[0]}k{c[1]}s{c[8]}")
def test_random_block_graphs_match_reference(backend, method, schedule, weighting, case):
    idx, sims, y = graph_case(case)
    expected = graph_reference(case, method, schedule, weighting == "uniform")
    res = hdlfast.hdl(labels=y, k=case[1], graph=(idx, sims), method=method,
                      schedule=schedule, max_visits=case[6], weighting=weighting,
                      backend=backend)
    assert_matches_reference(res, expected)
    assert res.n_levels == expected["n_levels"]


def test_random_cases_exercise_every_phase():
    """Guard against the random cases silently testing only phase A."""
    seen = set()
    for case in EMBEDDING_CASES:
        for method in ("hdl", "tree"):
            seen.update(embedding_reference(case, method, "knn-dv")["provenance"].tolist())
            seen.update(embedding_reference(case, method, None)["provenance"].tolist())
    assert seen == {-1, 0, 1, 2, 3}
    cycles = sum(int(graph_reference(c, "hdl", "levels", False)["cycles"].sum())
                 for c in GRAPH_CASES)
    searched = sum(int((graph_reference(c, "hdl", "levels", False)["provenance"] == 2).sum())
                   for c in GRAPH_CASES)
    assert cycles > 0 and searched > 0


# --------------------------------------------------------------------------- c) kNN-DV

@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("weighting", ["similarity", "uniform"])
@pytest.mark.parametrize("n,d,k,n_labels,seed", [(30, 3, 1, 3, 0), (200, 8, 5, 20, 1),
                                                 (500, 16, 20, 10, 2), (1500, 32, 10, 150, 3),
                                                 (300, 4, 50, 40, 4)])
def test_knn_vote_matches_reference(backend, weighting, n, d, k, n_labels, seed):
    x, cls = clustered(n, d, seed, 6, .6)
    y = few_labels(cls, n_labels, seed)
    lab, conf = hdlfast.knn_vote(x, y, k, weighting=weighting, backend=backend)
    exp_lab, exp_conf = ref.knn_vote(x, y, k, uniform=weighting == "uniform")
    lab, conf = to_numpy(lab), to_numpy(conf)
    assert lab.dtype == np.int64 and conf.dtype == np.float32
    np.testing.assert_array_equal(lab, exp_lab)
    np.testing.assert_allclose(conf, exp_conf, atol=1e-6)
    np.testing.assert_array_equal(lab[y >= 0], y[y >= 0])
    assert (conf[y >= 0] == 1).all()


# --------------------------------------------------------------------------- d) array kinds

def test_torch_inputs_give_the_numpy_result():
    torch = pytest.importorskip("torch")
    case = EMBEDDING_CASES[1]
    x, y, idx, sims = embedding_case(case)
    a = hdlfast.hdl(x, y, case[2], max_visits=case[7])
    b = hdlfast.hdl(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), case[2],
                    max_visits=case[7])
    for key in ("labels", "confidence", "level", "provenance"):
        assert isinstance(getattr(b, key), torch.Tensor)
        np.testing.assert_array_equal(to_numpy(getattr(a, key)), to_numpy(getattr(b, key)))
    # graph given as torch tensors (int32 labels too)
    c = hdlfast.hdl(labels=torch.from_numpy(y.astype(np.int32)), k=case[2],
                    graph=(torch.from_numpy(idx.copy()), torch.from_numpy(sims.copy())),
                    max_visits=case[7], fallback=None)
    d = hdlfast.hdl(labels=y, k=case[2], graph=(idx, sims), max_visits=case[7], fallback=None)
    for key in ("labels", "confidence", "level", "provenance"):
        np.testing.assert_array_equal(to_numpy(getattr(c, key)), to_numpy(getattr(d, key)))
    la, ca = hdlfast.knn_vote(x, y, 5)
    lb, cb = hdlfast.knn_vote(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), 5)
    assert isinstance(lb, torch.Tensor)
    np.testing.assert_array_equal(to_numpy(la), to_numpy(lb))
    np.testing.assert_array_equal(to_numpy(ca), to_numpy(cb))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_caller_arrays_are_not_modified(backend):
    case = EMBEDDING_CASES[1]
    x, y, idx, sims = (a.copy() for a in embedding_case(case))
    wide_idx = np.concatenate([idx, idx[:, :1]], axis=1)  # non-contiguous slices inside
    wide_sims = np.concatenate([sims, sims[:, -1:]], axis=1)
    before = [a.copy() for a in (x, y, wide_idx, wide_sims)]
    y32 = y.astype(np.int32)
    y32_before = y32.copy()
    for method in ("hdl", "tree"):
        hdlfast.hdl(x, y, case[2], graph=(wide_idx, wide_sims), method=method, backend=backend)
        hdlfast.hdl(x, y32, case[2], method=method, backend=backend)
    hdlfast.knn_vote(x, y, 4, backend=backend)
    for a, b in zip((x, y, wide_idx, wide_sims), before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(y32, y32_before)


def test_cpu_backends_are_identical():
    if len(CPU_BACKENDS) < 2:
        pytest.skip("needs both the native and the numba backend")
    for case in EMBEDDING_CASES[:5]:
        x, y, idx, sims = embedding_case(case)
        for method in ("hdl", "tree"):
            out = [hdlfast.hdl(x, y, case[2], graph=(idx, sims), method=method,
                               max_visits=case[7], backend=b) for b in CPU_BACKENDS]
            for key in ("labels", "confidence", "level", "provenance", "cycles"):
                np.testing.assert_array_equal(to_numpy(getattr(out[0], key)),
                                              to_numpy(getattr(out[1], key)))
        votes = [hdlfast.knn_vote(x, y, 7, backend=b) for b in CPU_BACKENDS]
        for a, b in zip(*votes):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


# --------------------------------------------------------------------------- e) bad input

_Y = np.array([0, 1, -1, -1, -1, -1])
_BAD = [
    (dict(labels=_Y[:5], k=2, graph=CLOSED), ValueError, "labels"),
    (dict(labels=np.array([0, 1, -2, -1, -1, -1]), k=2, graph=CLOSED), ValueError, "labels"),
    (dict(labels=np.full(6, -1), k=2, graph=CLOSED), ValueError, "labels"),
    (dict(labels=_Y.astype(np.float32), k=2, graph=CLOSED), TypeError, "labels"),
    (dict(labels=_Y, k=2, graph=(CLOSED[0] + 1, CLOSED[1])), ValueError, "graph"),
    (dict(labels=_Y, k=2, graph=(CLOSED[0] - 1, CLOSED[1])), ValueError, "graph"),
    (dict(labels=_Y, k=2, graph=(CLOSED[0], CLOSED[1][:, :1])), ValueError, "graph"),
    (dict(labels=_Y, k=2, graph=(CLOSED[0][:5], CLOSED[1][:5])), ValueError, "graph"),
    (dict(labels=_Y, k=2, graph=(CLOSED[0][0], CLOSED[1][0])), ValueError, "graph"),
    (dict(labels=_Y, k=2, graph=CLOSED[0]), TypeError, "graph"),
    (dict(labels=_Y, k=3, graph=CLOSED), ValueError, "k"),
    (dict(labels=_Y, k=0, graph=CLOSED), ValueError, "k"),
    (dict(labels=_Y, k=2, graph=CLOSED, method="bfs"), ValueError, "method"),
    (dict(labels=_Y, k=2, graph=CLOSED, schedule="greedy"), ValueError, "schedule"),
    (dict(labels=_Y, k=2, graph=CLOSED, weighting="rank"), ValueError, "weighting"),
    (dict(labels=_Y, k=2, graph=CLOSED, max_visits=0), ValueError, "max_visits"),
    (dict(labels=_Y, k=2, graph=CLOSED, fallback="knn-dv"), ValueError, "X"),
    (dict(labels=_Y, k=2, graph=CLOSED, fallback="nearest"), ValueError, "fallback"),
    (dict(labels=_Y, k=2, graph=CLOSED, n_classes=1), ValueError, "labels"),
    (dict(X=BACKTRACK_X, labels=_Y, k=6), ValueError, "k"),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kwargs,exc,word", _BAD)
def test_hdl_bad_input_names_the_argument(backend, kwargs, exc, word):
    arrays = [a.copy() for a in (CLOSED[0], CLOSED[1], _Y)]
    with pytest.raises(exc, match=rf"\b{word}\b"):
        hdlfast.hdl(backend=backend, **kwargs)
    for a, b in zip((CLOSED[0], CLOSED[1], _Y), arrays):
        np.testing.assert_array_equal(a, b)


def test_n_classes_larger_than_the_labels_is_accepted():
    out = hdlfast.hdl(labels=_Y, k=2, graph=CLOSED, n_classes=5)
    np.testing.assert_array_equal(to_numpy(out.labels), [0, 1, 0, 0, 0, 1])


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(labels=_Y[:5], k=2), ValueError, "labels"),
    (dict(labels=np.array([0, -3, -1, -1, -1, -1]), k=2), ValueError, "labels"),
    (dict(labels=np.full(6, -1), k=2), ValueError, "labels"),
    (dict(labels=_Y, k=0), ValueError, "k"),
    (dict(labels=_Y, k=2, weighting="rank"), ValueError, "weighting"),
])
def test_knn_vote_bad_input_names_the_argument(kwargs, exc, word):
    with pytest.raises(exc, match=rf"\b{word}\b"):
        hdlfast.knn_vote(BACKTRACK_X, **kwargs)


# --------------------------------------------------------------------------- f) digits

def test_hdl_beats_knn_vote_on_digits():
    x, target = datasets.digits()
    acc_hdl, acc_dv = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        y = np.full(len(target), -1, np.int64)
        for c in range(10):
            pick = rng.choice(np.nonzero(target == c)[0], 4, replace=False)
            y[pick] = c
        hidden = y < 0
        res = hdlfast.hdl(x, y, 20)
        lab, _ = hdlfast.knn_vote(x, y, 20)
        acc_hdl.append((to_numpy(res.labels)[hidden] == target[hidden]).mean())
        acc_dv.append((to_numpy(lab)[hidden] == target[hidden]).mean())
        assert (to_numpy(res.labels) >= 0).all()  # the fallback labels everyone
    # docs §3: 15-20 points better at 1-4 labels per class (measured: ~0.90 against ~0.69)
    assert np.mean(acc_hdl) > np.mean(acc_dv) + 0.10, (acc_hdl, acc_dv)


def test_graph_is_knns_result_in_either_order():
    """hdl and select_k take hdlfast.knn's result as is; a (sims, idx) or the older
    (idx, sims) pair gives the same labels; two float or two integer arrays are refused."""
    x, y_true = datasets.hypersphere_mixture(600, 16, 4, spread=0.6, seed=3)
    y = np.full(600, -1)
    y[:40] = y_true[:40]
    g = hdlfast.knn(x, 10)
    assert isinstance(g, hdlfast.KNNGraph) and g.sims is g[0] and g.idx is g[1]
    base = hdlfast.hdl(x, y, 10).labels
    for graph in (g, (g.sims, g.idx), (g.idx, g.sims), [g.idx, g.sims]):
        np.testing.assert_array_equal(hdlfast.hdl(x, y, 10, graph=graph).labels, base)
        np.testing.assert_array_equal(hdlfast.hdl(labels=y, k=10, graph=graph,
                                                  fallback=None).labels,
                                      hdlfast.hdl(labels=y, k=10, graph=g, fallback=None).labels)
    assert hdlfast.select_k(x, y, [5, 10], graph=g).k == hdlfast.select_k(x, y, [5, 10]).k
    for bad, what in (((g.sims, g.sims), "two float"), ((g.idx, g.idx), "two integer")):
        with pytest.raises(TypeError, match=f"graph must be the \\(sims, idx\\) result of "
                                            f"hdlfast.knn.*{what}"):
            hdlfast.hdl(labels=y, k=10, graph=bad)
    with pytest.raises(TypeError, match="graph must be the \\(sims, idx\\) pair"):
        hdlfast.hdl(labels=y, k=10, graph=g.sims)
