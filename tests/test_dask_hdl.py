"""hdlfast.dask.hdl equals the single-machine hdlfast.hdl: every provenance (given,
propagated, searched, fallback), every method/schedule/weighting, embeddings as dask arrays,
stored files or zarr, a precomputed graph from the cluster or from disk, on the threaded
scheduler and on a LocalCluster."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import hdlfast  # noqa: E402
import hdlfast.dask as hdask  # noqa: E402
from test_dask import count_block_tasks, local_cluster  # noqa: E402

FIELDS = ("labels", "confidence", "level", "provenance", "cycles")


def data(seed=0, n=600, d=16):
    """Six classes with two labels each, a far tight island nobody lists (phase B cannot
    reach a label: fallback) and a tight satellite of class 0 that only its neighbours list
    (closed for propagation, found by the search)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, d))
    truth = rng.integers(0, 6, n)
    x = centres[truth] + 0.45 * rng.standard_normal((n, d))
    island = 5 * rng.standard_normal(d) + 0.05 * rng.standard_normal((30, d))
    satellite = 1.6 * centres[0] + 0.02 * rng.standard_normal((12, d))
    x = np.concatenate([x, island, satellite]).astype(np.float32)
    y = np.full(len(x), -1, np.int64)
    for c in range(6):
        y[np.flatnonzero(truth == c)[:2]] = c
    return x, y


X, Y = data()
K = 8


def same(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
        assert np.asarray(getattr(a, f)).dtype == np.asarray(getattr(b, f)).dtype, f
    assert a.n_levels == b.n_levels and a.k == b.k


def test_data_reaches_every_provenance():
    counts = hdlfast.hdl(X, Y, K).counts()
    assert all(counts[p] > 0 for p in ("given", "propagated", "searched", "fallback")), counts


@pytest.mark.parametrize("make", [
    lambda: da.from_array(X, chunks=(100, 16)),
    lambda: da.from_array(X, chunks=((5, 300, 1, 336), 16)),
    lambda: X,  # a numpy array read in blocks by the tasks
])
@pytest.mark.parametrize("kw", [
    {},
    {"max_visits": 3},
    {"method": "tree"},
    {"schedule": "sequential"},
    {"weighting": "uniform"},
    {"fallback": None},
])
def test_equals_single_machine(make, kw):
    same(hdask.hdl(make(), Y, K, block_rows=150, **kw), hdlfast.hdl(X, Y, K, **kw))


def test_stored_npy_and_zarr(tmp_path):
    ref = hdlfast.hdl(X, Y, K)
    p = tmp_path / "x.npy"
    np.save(p, X)
    same(hdask.hdl(str(p), Y, K, block_rows=97), ref)
    same(hdask.hdl(np.load(p, mmap_mode="r"), Y, K, block_rows=200), ref)
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=X.shape, chunks=(64, 16),
                        dtype="float32")
    z[:] = X
    same(hdask.hdl(z, Y, K, block_rows=128), ref)


def test_labels_as_dask_array_and_n_classes():
    same(hdask.hdl(X, da.from_array(Y, chunks=100), K, n_classes=9),
         hdlfast.hdl(X, Y, K, n_classes=9))


@pytest.mark.parametrize("fmt", ["dask", "numpy", "npy", "zarr"])
def test_precomputed_graph(tmp_path, fmt):
    sims, idx = hdask.knn(da.from_array(X, chunks=(111, 16)), K + 3)  # more columns than k
    if fmt == "numpy":
        sims, idx = dask.compute(sims, idx)
    elif fmt in ("npy", "zarr"):
        if fmt == "zarr":
            pytest.importorskip("zarr")
        path = tmp_path / ("g.zarr" if fmt == "zarr" else "g")
        hdask.save_graph(sims, idx, path)
        sims, idx = hdask.load_graph(path)
    same(hdask.hdl(X, Y, K, graph=(idx, sims)), hdlfast.hdl(X, Y, K))
    # without X: no fallback, as hdlfast.hdl
    same(hdask.hdl(labels=Y, k=K, graph=(idx, sims)),
         hdlfast.hdl(labels=Y, k=K, graph=dask.compute(idx, sims)))


def test_npy_paths_as_graph(tmp_path):
    s, i = hdlfast.knn(X, K)
    np.save(tmp_path / "s.npy", s)
    np.save(tmp_path / "i.npy", i)
    same(hdask.hdl(X, Y, K, graph=(str(tmp_path / "i.npy"), tmp_path / "s.npy")),
         hdlfast.hdl(X, Y, K))


@pytest.fixture(scope="module")
def client():
    yield from local_cluster(processes=False)


def test_on_a_local_cluster(client):
    with client.as_current():
        out = hdask.hdl(da.from_array(X, chunks=(90, 16)), Y, K, max_visits=5)
    same(out, hdlfast.hdl(X, Y, K, max_visits=5))


@pytest.mark.parametrize("make", [lambda: X, lambda: da.from_array(X, chunks=(128, 16))])
def test_graph_tasks_run_once(monkeypatch, make):
    """Gathering idx and sims to the labeling task computes the graph's tasks once."""
    calls = count_block_tasks(monkeypatch)
    hdask.hdl(make(), Y, K, block_rows=128, fallback=None)  # 6 blocks
    assert sorted(calls) == ["_block_knn"] * 6 + ["_pair_knn"] * 15


def test_fallback_search_runs_on_the_cluster(monkeypatch):
    """Phase C's kNN search goes through hdlfast.dask.knn: only the unreached rows against
    the labeled ones."""
    calls = []
    real = hdask.knn

    def spy(q, k, **kw):
        calls.append((q.shape, kw.get("database") is not None and kw["database"].shape, k))
        return real(q, k, **kw)

    monkeypatch.setattr(hdask, "knn", spy)
    out = hdask.hdl(X, Y, K, block_rows=128)
    n_fallback = out.counts()["fallback"]
    assert calls[0] == ((len(X), 16), False, K)
    assert calls[1] == ((n_fallback, 16), (len(X) - n_fallback, 16), K)


# ---------------------------------------------------------------- bad input, before any work

@pytest.mark.parametrize("call,exc,words", [
    (lambda: hdask.hdl(X, Y, 0), ValueError, ["k"]),
    (lambda: hdask.hdl(X, Y, len(X)), ValueError, ["k=642", "641"]),
    (lambda: hdask.hdl(X, Y[:-1], K), ValueError, ["labels", "641", "642"]),
    (lambda: hdask.hdl(X, np.full(len(X), -1), K), ValueError, ["labels", "no labeled"]),
    (lambda: hdask.hdl(X, Y.astype(float), K), TypeError, ["labels"]),
    (lambda: hdask.hdl(X, Y, K, method="x"), ValueError, ["method"]),
    (lambda: hdask.hdl(X, Y, K, schedule="x"), ValueError, ["schedule"]),
    (lambda: hdask.hdl(X, Y, K, fallback="x"), ValueError, ["fallback"]),
    (lambda: hdask.hdl(X, Y, K, weighting="x"), ValueError, ["weighting"]),
    (lambda: hdask.hdl(X, Y, K, max_visits=0), ValueError, ["max_visits"]),
    (lambda: hdask.hdl(X, Y, K, backend="x"), ValueError, ["backend"]),
    (lambda: hdask.hdl(X, Y, K, threads_per_task=0), ValueError, ["threads_per_task"]),
    (lambda: hdask.hdl(X, Y, K, block_rows=-3), ValueError, ["block_rows"]),
    (lambda: hdask.hdl(None, Y, K), ValueError, ["X", "graph"]),
    (lambda: hdask.hdl(labels=Y, k=K, graph=(np.zeros((642, K), np.int64),),), TypeError,
     ["graph", "pair"]),
    (lambda: hdask.hdl(X, Y, K, graph=(np.zeros((5, K), np.int64), np.zeros((5, K)))),
     ValueError, ["graph has 5 rows", "642"]),
    (lambda: hdask.hdl(labels=Y, k=K, graph=(np.zeros((642, K), np.int64),
                                             np.zeros((642, K), np.float32)),
                       fallback="knn-dv"), ValueError, ["fallback", "X"]),
    (lambda: hdask.hdl(X, Y, K, schedule="sequential", backend="cuda"), ValueError,
     ["sequential"]),
    (lambda: hdask.hdl(X.astype(np.int32), Y, K), TypeError, ["X", "int32"]),
])
def test_bad_input(call, exc, words, monkeypatch):
    def no_work(*a, **kw):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(hdask, "_block_knn", no_work)
    monkeypatch.setattr(hdask, "_label_gathered", no_work)
    with pytest.raises(exc) as err:
        call()
    for w in words:
        assert w in str(err.value)


def test_bad_graph_named_when_gathered():
    idx = np.zeros((len(X), K), np.int64)
    idx[3, 2] = len(X) + 5
    with pytest.raises(ValueError, match="graph idx holds indices outside"):
        hdask.hdl(X, Y, K, graph=(idx, np.zeros((len(X), K), np.float32)))


def test_inputs_unchanged(tmp_path):
    x, y = X.copy(), Y.copy()
    hdask.hdl(x, y, K, block_rows=100)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)
