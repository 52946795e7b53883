"""Determinism: the same inputs give bit-identical outputs across runs and across thread counts.

Every public CPU computation (knn, reverse_graph, hdl, knn_vote, sinkhorn, kmeans,
select_to_label) runs twice with one worker and then with 2, 3 and 7 workers, on both CPU
backends, and every output array must be byte-for-byte the same (floats included: no
tolerance). Workers: HDLFAST_NUM_THREADS, which the Python tile pool and the native kernels
read at each call, and ``numba.set_num_threads`` for the numba kernels (capped at
``numba.config.NUMBA_NUM_THREADS``; a subprocess with a larger NUMBA_NUM_THREADS covers 3 and
7 numba threads on small machines). Thread counts above the core count still change how the
work is partitioned, which is the point.

The data are full of exact ties (quantised values, duplicated rows, quantised similarities),
since tie handling is where nondeterminism hides, and large enough that every parallel loop
splits into several chunks: more than 65536 points for the reverse graph, sub-levels of more
than 4096 points in phase A, more than 2048 rows per Sinkhorn column-sum chunk, more than 256
rows for the votes, and a small memory budget so that kNN and k-means search many tiles.
"""
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hdlfast
from conftest import CPU_BACKENDS

THREADS = (1, 2, 3, 7)
BUDGET = 1 << 18  # 1024-element tiles per worker slot: 32 x 32 self-graph blocks


def tied(n, d, seed, levels=5, dup=0.5):
    """Rows of values in {-1, -0.5, 0, 0.5, 1} (``levels`` of them), the last ``dup`` share
    duplicating earlier rows: many exactly equal similarities. No zero rows."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, levels, (n, d)) - levels // 2).astype(np.float32) / 2
    m = int(n * dup)
    x[n - m:] = x[rng.integers(0, n - m, m)]
    x[~x.any(axis=1), 0] = 1.0
    return x


def random_graph(n, k, seed):
    """A (idx, sims) graph without self-loops, similarities in quarter steps (ties), rows
    sorted by decreasing similarity."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n - 1, (n, k))
    idx += idx >= np.arange(n)[:, None]
    sims = np.sort(rng.integers(0, 4, (n, k)).astype(np.float32) / 4, axis=1)[:, ::-1]
    return idx.astype(np.int64), np.ascontiguousarray(sims)


@functools.cache
def data():
    rng = np.random.default_rng(0)
    d = {"X": tied(400, 8, 1), "Q": tied(300, 8, 2), "Xl": tied(3000, 6, 3, levels=3),
         "K": tied(5000, 8, 6, levels=4), "G": random_graph(70_000, 4, 4)}
    d["X16"] = d["X"].astype(np.float16)
    try:
        import ml_dtypes

        d["Xbf"] = d["X"].astype(ml_dtypes.bfloat16)
    except ImportError:  # bfloat16 numpy arrays need ml_dtypes; torch's bfloat16 then
        torch = pytest.importorskip("torch")
        d["Xbf"] = torch.from_numpy(d["X"]).to(torch.bfloat16)
    lab = np.full(3000, -1)
    lab[::50] = np.arange(60) % 5
    d["lab"] = lab
    lab_g = np.full(70_000, -1)
    lab_g[::97] = np.arange(lab_g[::97].size) % 7
    d["lab_g"] = lab_g
    s = (rng.integers(0, 5, (7000, 40)) / 4).astype(np.float32)  # argmax ties
    d["S"] = s
    dead = s.copy()
    dead[:, 3] = -100.0  # a column the shifted kernel cannot reach: the log-domain path
    d["S_dead"] = dead
    d["prior"] = rng.dirichlet(np.ones(40))
    d["weight"] = rng.integers(1, 4, 7000).astype(np.float64)
    return d


def _cases():
    D = data
    return {
        # knn: self-graph and database, k small and large, float32 / float16 / bfloat16
        "knn_self_k5": lambda b: hdlfast.knn(D()["X"], 5, backend=b, memory_budget=BUDGET),
        "knn_self_k150": lambda b: hdlfast.knn(D()["X"], 150, backend=b, memory_budget=BUDGET),
        "knn_self_one_tile": lambda b: hdlfast.knn(D()["X"], 20, backend=b),
        "knn_db_k1": lambda b: hdlfast.knn(D()["Q"], 1, database=D()["X"], backend=b,
                                           memory_budget=BUDGET),
        "knn_db_k5": lambda b: hdlfast.knn(D()["Q"], 5, database=D()["X"], backend=b,
                                           memory_budget=BUDGET),
        "knn_db_k200": lambda b: hdlfast.knn(D()["Q"], 200, database=D()["X"], backend=b,
                                             memory_budget=BUDGET),
        "knn_float16": lambda b: hdlfast.knn(D()["X16"], 30, backend=b, memory_budget=BUDGET),
        "knn_bfloat16_db_exclude_self": lambda b: hdlfast.knn(
            D()["Xbf"], 30, database=D()["Xbf"], exclude_self=True, backend=b,
            memory_budget=BUDGET),
        "reverse_graph": lambda b: hdlfast.reverse_graph(D()["G"][0], backend=b),
        # hdl: labels, confidence, level, provenance (and cycles, n_levels)
        "hdl": lambda b: hdlfast.hdl(D()["Xl"], D()["lab"], 10, backend=b),
        "hdl_uniform": lambda b: hdlfast.hdl(D()["Xl"], D()["lab"], 25, weighting="uniform",
                                             backend=b),
        "hdl_tree": lambda b: hdlfast.hdl(D()["Xl"], D()["lab"], 10, method="tree",
                                          max_visits=8, backend=b),
        "hdl_sequential": lambda b: hdlfast.hdl(D()["Xl"], D()["lab"], 10,
                                                schedule="sequential", backend=b),
        "hdl_graph_70k": lambda b: hdlfast.hdl(None, D()["lab_g"], 4, graph=D()["G"],
                                               max_visits=6, backend=b),
        "hdl_graph_70k_tree": lambda b: hdlfast.hdl(None, D()["lab_g"], 4, graph=D()["G"],
                                                    method="tree", max_visits=6, backend=b),
        "knn_vote": lambda b: hdlfast.knn_vote(D()["Xl"], D()["lab"], 15, backend=b),
        "knn_vote_uniform": lambda b: hdlfast.knn_vote(D()["Xl"], D()["lab"], 16,
                                                       weighting="uniform", backend=b),
        # sinkhorn: Q and labels
        "sinkhorn_swav": lambda b: hdlfast.sinkhorn(D()["S"], backend=b),
        "sinkhorn_sela": lambda b: hdlfast.sinkhorn(D()["S"], kind="sela", n_iters=50,
                                                    backend=b),
        "sinkhorn_float16_prior_weights": lambda b: hdlfast.sinkhorn(
            D()["S"].astype(np.float16), kind="sela", n_iters=30, tol=0.0,
            cluster_prior=D()["prior"], sample_weight=D()["weight"], backend=b),
        "sinkhorn_log_domain": lambda b: hdlfast.sinkhorn(D()["S_dead"], epsilon=0.01,
                                                          backend=b),
        # kmeans: centroids, labels, inertia, iterations
        "kmeans_spherical": lambda b: hdlfast.kmeans(D()["K"], 12, n_iters=20, backend=b,
                                                     memory_budget=BUDGET),
        "kmeans_euclidean": lambda b: hdlfast.kmeans(D()["K"], 12, spherical=False,
                                                     init="random", n_iters=20, backend=b,
                                                     memory_budget=BUDGET),
        "kmeans_many_clusters": lambda b: hdlfast.kmeans(D()["X"], 120, n_iters=10, seed=3,
                                                         backend=b),
        "select_to_label": lambda b: hdlfast.select_to_label(D()["Xl"], 8, k=10, n_iters=5,
                                                             kmeans_iters=20, backend=b),
    }


CASES = _cases()


def outputs(result) -> list:
    """Every output of a result as numpy arrays (scalars as 0-d arrays), in a fixed order."""
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in outputs(r)]
    if isinstance(result, hdlfast.HDLResult):
        return [np.asarray(getattr(result, f)) for f in
                ("labels", "confidence", "level", "provenance", "cycles", "n_levels", "k")]
    if isinstance(result, hdlfast.KMeansResult):
        return [np.asarray(result.centroids), np.asarray(result.labels),
                np.asarray(result.inertia), np.asarray(result.n_iters)]
    return [np.asarray(result)]


def mismatches(ref: list, out: list) -> list:
    """Indices of the outputs that are not bit-identical (dtype, shape and bytes)."""
    if len(ref) != len(out):
        return ["count"]
    return [i for i, (a, b) in enumerate(zip(ref, out))
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes()]


@pytest.fixture
def workers(monkeypatch):
    """set(n): n workers for the tile pool, the native kernels and the numba kernels."""
    try:
        import numba
    except ImportError:
        numba = None
    saved = numba.get_num_threads() if numba is not None else None

    def set_workers(n):
        monkeypatch.setenv("HDLFAST_NUM_THREADS", str(n))
        if numba is not None:
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))

    yield set_workers
    if numba is not None:
        numba.set_num_threads(saved)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bit_identical_across_runs_and_thread_counts(backend, case, workers):
    workers(1)
    ref = outputs(CASES[case](backend))
    for n in THREADS:  # 1 again: a second run with the same setting
        workers(n)
        bad = mismatches(ref, outputs(CASES[case](backend)))
        assert not bad, f"{case} on {backend}: outputs {bad} differ with {n} workers"


def test_thread_counts_reach_the_backends(workers):
    from hdlfast import _host

    for n in THREADS:
        workers(n)
        assert _host.num_workers() == n == hdlfast.info()["cpu_threads"]
    if "numba" in CPU_BACKENDS:
        import numba

        workers(2)
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)


_SUBPROCESS = """
import os, sys
sys.path.insert(0, {tests!r})
import numba
import test_determinism as t

refs, bad = {{}}, []
for n in (1, 2, 3, 7):
    os.environ["HDLFAST_NUM_THREADS"] = str(n)
    numba.set_num_threads(n)
    for name, case in t.CASES.items():
        out = t.outputs(case("numba"))
        ref = refs.setdefault(name, out)
        if t.mismatches(ref, out):
            bad.append(f"{{name}}: outputs {{t.mismatches(ref, out)}} differ with {{n}} threads")
print("\\n".join(bad) or "identical")
sys.exit(1 if bad else 0)
"""


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba backend not usable")
def test_numba_beyond_the_default_thread_cap():
    """3 and 7 numba threads even where NUMBA_NUM_THREADS (default: the cores) is lower."""
    tests = str(Path(__file__).resolve().parent)
    root = str(Path(tests).parent)
    env = {**os.environ, "NUMBA_NUM_THREADS": "8",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(_SUBPROCESS.format(tests=tests))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "identical"


def test_cases_exercise_the_parallel_paths(monkeypatch):
    """The data are big enough that each parallel loop really splits (see the module doc)."""
    d = data()
    assert d["G"][0].shape[0] > 65536  # reverse_indptr / reverse_fill: 1 << 16 per worker
    res = hdlfast.hdl(None, d["lab_g"], 4, graph=d["G"], max_visits=6)
    level, idx = np.asarray(res.level), d["G"][0]
    biggest = 0  # the largest phase-A sub-level: points of one level with equal support
    for h in range(1, res.n_levels + 1):
        nbr = level[idx[level == h]]
        support = ((nbr >= 0) & (nbr < h)).sum(axis=1)
        biggest = max(biggest, np.bincount(support).max())
    assert biggest > 4096  # the votes of a sub-level split over workers, 4096 per chunk
    res = hdlfast.hdl(d["Xl"], d["lab"], 10)
    counts = res.counts()
    assert counts["searched"] > 16 and counts["fallback"] > 0  # search and fallback both run
    assert d["S"].shape[0] > 3 * 2048  # Sinkhorn: several column-sum chunks
    from hdlfast.knn.host import block_sizes

    bq, _ = block_sizes(400, 400, BUDGET, True)
    assert 400 // bq >= 8  # many self-graph tiles, many rounds
    import importlib

    sk = importlib.import_module("hdlfast.sinkhorn")
    calls = []
    real = sk._log_domain
    monkeypatch.setattr(sk, "_log_domain", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    CASES["sinkhorn_log_domain"](None)
    assert calls, "the dead-column case no longer reaches the log-domain path"


def test_poisoned_allocations_change_nothing(monkeypatch):
    """HDLFAST_POISON=1 (set by the GPU smoke checks) fills every output hdlfast allocates
    with NaN / the most negative integer / 0xA5; results are the same, so every element of
    every output is written."""
    from hdlfast import _arrays

    x = np.random.default_rng(40).standard_normal((600, 16)).astype(np.float32)
    labels = np.full(600, -1)
    labels[::30] = np.arange(20) % 4
    torch = pytest.importorskip("torch")
    xt = torch.from_numpy(x)

    def run():
        return [hdlfast.knn(xt, 7), hdlfast.hdl(xt, torch.from_numpy(labels), 7).labels,
                hdlfast.mine_neighbors(xt, 5), hdlfast.sinkhorn(xt[:, :8], kind="sela")[0]]

    clean = run()
    monkeypatch.setenv(_arrays.POISON_ENV, "1")
    probe = _arrays.empty(xt, (3,), "float32")
    assert torch.isnan(probe).all()
    assert (_arrays.empty(xt, (2,), "int64") == torch.iinfo(torch.int64).min).all()
    for a, b in zip(clean, run()):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(torch.as_tensor(u), torch.as_tensor(v))
