"""CUDA labeling kernels (hdlfast._cuda via hdlfast.labeling.cuda.CudaLabeling) against the CPU kernels:
every output must be identical (labels, level, provenance, steps, cycles; confidence to float
rounding of the final float32 cast). Skipped where no CUDA GPU with torch or cupy is visible."""
import numpy as np
import pytest

import hdlfast
from hdlfast import _arrays, _backend, datasets
from hdlfast.labeling.cuda import CudaLabeling
from conftest import GPU_KINDS, to_kind, to_numpy
from test_labeling import BACKTRACK, CLOSED, SUBLEVEL, block_graph, clustered, few_labels

KINDS = GPU_KINDS or ["torch-cuda"]
CPU = "native" if _backend.usable("native") else "numba"


def cpu_labeling():
    return _backend.select(CPU, False).labeling


def gpu_labeling(kind):
    like = to_kind(np.zeros(1, np.float32), kind)
    return CudaLabeling(_backend._module("cuda"), like)


def dup_graph(n, k, seed):
    """Random rows with repeated neighbours and self loops (a user-given graph may have them)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n, k)).astype(np.int64)
    sims = (np.round(rng.uniform(-.3, 1, (n, k)) * 4) / 4).astype(np.float32)
    sims[rng.random((n, k)) < .1] = np.float32(-0.0)
    return idx, sims


def graphs():
    """(name, idx, sims, labels) covering k <= 32 (staged votes) and k > 32, exact ties,
    negative similarities, closed regions, repeated neighbours."""
    out = []
    for n, k, seed in [(300, 4, 1), (700, 10, 2), (400, 40, 3)]:
        idx, sims, block = block_graph(n, k, max(n // 40, 2), .01, seed, 4)
        y = np.full(n, -1, np.int64)
        pool = np.nonzero(block < 3)[0]
        pick = np.random.default_rng(seed).choice(pool, 6, replace=False)
        y[pick] = block[pick] % 3
        out.append((f"block-n{n}-k{k}", idx, sims, y))
    for n, k, seed in [(200, 3, 4), (150, 36, 5)]:
        idx, sims = dup_graph(n, k, seed)
        out.append((f"dup-n{n}-k{k}", idx, sims, few_labels(np.arange(n) % 4, 5, seed)))
    idx, sims, y, _ = datasets.ring_graph(20000, 10)
    out.append(("ring-20000-10", idx, sims, y))
    return out


GRAPHS = graphs() if GPU_KINDS else []
GRAPH_IDS = [g[0] for g in GRAPHS]


def initial_state(y):
    return [y.copy(), np.where(y >= 0, 1.0, 0.0), np.where(y >= 0, 0, -1).astype(np.int32),
            np.where(y >= 0, 0, -1).astype(np.int8)]


def run_kernels(kern, idx, sims, y, k, uniform, max_visits, method="hdl"):
    """The orchestrator's kernel sequence (phases A and B) on host arrays."""
    n = idx.shape[0]
    indptr, src = kern.reverse_csr(idx, k, n)
    state = initial_state(y)
    h = 0
    if method == "hdl":
        h = kern.propagate_levels(idx, sims, k, indptr, src, *state, uniform)
    todo = np.nonzero(state[0] < 0)[0]
    outs = [np.empty(todo.size, t) for t in (np.int64, np.float64, np.int64, np.int64)]
    if todo.size:
        kern.search(idx, sims, k, indptr, src, state[0], todo, max_visits, uniform, *outs)
    return indptr, src, state, h, outs


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["hdl", "tree"])
@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("graph", GRAPHS, ids=GRAPH_IDS)
def test_kernels_match_cpu(kind, method, uniform, graph):
    _, idx, sims, y = graph
    k = idx.shape[1]
    for max_visits in (3, 64):
        got = run_kernels(gpu_labeling(kind), idx, sims, y, k, uniform, max_visits, method)
        exp = run_kernels(cpu_labeling(), idx, sims, y, k, uniform, max_visits, method)
        for a, b in zip(got[:2], exp[:2]):  # reverse CSR
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert got[3] == exp[3]  # levels
        for a, b in zip(got[2] + got[4], exp[2] + exp[4]):  # state, then search outputs
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)  # float64 confidences bit for bit


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["hdl", "tree"])
@pytest.mark.parametrize("graph,labels,k", [(SUBLEVEL, [0, 1, 1, -1, -1], 2),
                                            (CLOSED, [0, 1, -1, -1, -1, -1], 2),
                                            (BACKTRACK, [0, 1, -1, -1, -1, -1], 1)],
                         ids=["sublevel", "closed", "backtrack"])
def test_hand_made_graphs_match_cpu(kind, method, graph, labels, k):
    idx, sims = graph
    y = np.array(labels, np.int64)
    for max_visits in (3, 4, 64):
        got = run_kernels(gpu_labeling(kind), idx, sims, y, k, False, max_visits, method)
        exp = run_kernels(cpu_labeling(), idx, sims, y, k, False, max_visits, method)
        assert got[3] == exp[3]
        for a, b in zip([got[0], got[1], *got[2], *got[4]], [exp[0], exp[1], *exp[2], *exp[4]]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_search_in_chunks(kind, monkeypatch):
    monkeypatch.setattr(_arrays, "GPU_FREE_FRACTION", 0.0)  # budget 0: one target per launch
    _, idx, sims, y = GRAPHS[0]
    k = idx.shape[1]
    got = run_kernels(gpu_labeling(kind), idx, sims, y, k, False, 16, "tree")
    exp = run_kernels(cpu_labeling(), idx, sims, y, k, False, 16, "tree")
    for a, b in zip(got[4], exp[4]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 7, 32, 33, 50])
@pytest.mark.parametrize("uniform", [False, True])
def test_vote_rows_match_cpu(kind, k, uniform):
    rng = np.random.default_rng(k)
    rows, n_db = 3000, 500
    nbr = rng.integers(0, n_db, (rows, k)).astype(np.int64)
    sims = (np.round(rng.uniform(-.5, 1, (rows, k)) * 8) / 8).astype(np.float32)  # ties
    db = rng.integers(0, 5, n_db).astype(np.int64)
    got = [np.empty(rows, np.int64), np.empty(rows, np.float64)]
    exp = [np.empty(rows, np.int64), np.empty(rows, np.float64)]
    gpu_labeling(kind).vote_rows(nbr, sims, db, uniform, *got)
    cpu_labeling().vote_rows(nbr, sims, db, uniform, *exp)
    np.testing.assert_array_equal(got[0], exp[0])
    np.testing.assert_array_equal(got[1], exp[1])


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_sequential_schedule_is_cpu_only(kind):
    with pytest.raises(ValueError, match="CPU only"):
        gpu_labeling(kind).propagate_sequential()


# --- end to end: hdlfast.hdl / knn_vote on GPU data against backend="native" ----------------


def compare(res, exp):
    for name in ("labels", "level", "provenance", "cycles"):
        np.testing.assert_array_equal(to_numpy(getattr(res, name)), to_numpy(getattr(exp, name)))
    np.testing.assert_allclose(to_numpy(res.confidence), to_numpy(exp.confidence), atol=1e-6)
    assert res.n_levels == exp.n_levels


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["hdl", "tree"])
@pytest.mark.parametrize("case", [(600, 8, 5, 6, .2, 4, (0, 1, 2), 64, 1),
                                  (3000, 16, 12, 10, .5, 12, None, 8, 2),
                                  (2000, 8, 40, 8, .3, 10, (0, 1, 2, 3), 64, 3)],
                         ids=lambda c: f"n{c[0]}k{c[2]}")
def test_hdl_on_gpu_matches_native(kind, method, case):
    n, d, k, n_clusters, spread, n_labels, labeled, max_visits, seed = case
    x, cls = clustered(n, d, seed, n_clusters, spread)
    y = few_labels(cls, n_labels, seed, labeled)
    sims, idx = (to_numpy(a) for a in hdlfast.knn(x, k, backend=CPU))  # one host graph
    res = hdlfast.hdl(to_kind(x, kind), y, k, graph=(idx, sims), method=method,
                      max_visits=max_visits, fallback=None)
    assert type(res.labels) is type(to_kind(x, kind))
    exp = hdlfast.hdl(x, y, k, graph=(idx, sims), method=method, max_visits=max_visits,
                      fallback=None, backend=CPU)
    compare(res, exp)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_hdl_on_gpu_matches_native_ring_graph(kind):
    idx, sims, y, _ = datasets.ring_graph(20000, 10)
    x = np.random.default_rng(0).standard_normal((idx.shape[0], 4)).astype(np.float32)
    res = hdlfast.hdl(to_kind(x, kind), y, 10, graph=(idx, sims), fallback=None)
    exp = hdlfast.hdl(x, y, 10, graph=(idx, sims), fallback=None, backend=CPU)
    compare(res, exp)
    assert to_numpy(res.provenance).max() == 2  # the cliques are searched


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weighting", ["similarity", "uniform"])
def test_knn_vote_on_gpu_matches_native(kind, weighting):
    x, cls = clustered(2000, 16, 7, 8, .3)
    y = few_labels(cls, 40, 7)
    lab, conf = hdlfast.knn_vote(to_kind(x, kind), y, 10, weighting=weighting)
    lab_e, conf_e = hdlfast.knn_vote(x, y, 10, weighting=weighting, backend=CPU)
    # the GPU builds its own kNN lists (fp32 on another device): similarities agree to float
    # rounding, and the clusters are well separated, so the votes agree
    np.testing.assert_array_equal(to_numpy(lab), to_numpy(lab_e))
    np.testing.assert_allclose(to_numpy(conf), to_numpy(conf_e), atol=1e-5)
