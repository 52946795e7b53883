"""hdlfast.dask.knn(method="ivf" | "auto") and hdlfast.dask.hdl(knn_method=...): the inverted
file as dask tasks equals hdlfast.knn(method="ivf") with the same seed (lists, probe count,
recall estimate and graph) for dask arrays and stored embeddings, on the local and the
distributed scheduler; rows with too few candidates get the exact search; bad input."""
import importlib

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import conftest  # noqa: E402
import hdlfast  # noqa: E402
import hdlfast.dask as hdask  # noqa: E402
from conftest import assert_knn, few_labels, reference_knn  # noqa: E402
from hdlfast.datasets import hypersphere_mixture  # noqa: E402

ivf = importlib.import_module("hdlfast.knn.ivf")


def clustered(n, d, seed):
    return conftest.clustered(n, d, seed=seed, n_centres=12, spread=0.4)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request):
    """The scheduler every compute of a test runs on (the eager stages included)."""
    if request.param == "threads":
        with dask.config.set(scheduler="threads"):
            yield
    else:
        with request.getfixturevalue("client").as_current():
            yield


def computed(g):
    assert isinstance(g, hdlfast.KNNGraph)
    assert isinstance(g.sims, da.Array) and isinstance(g.idx, da.Array)
    return dask.compute(g.sims, g.idx)


def check_same_as_local(g, s, i, q, db, k, exclude_self, **kw):
    """The dask graph ``g`` (computed: s, i) equals hdlfast.knn's on the whole arrays: the
    same probe count and recall estimate, similarities to 1e-6, indices wherever the row has
    no near-tie (the tiles differ, so BLAS may round a near-tie the other way)."""
    local = hdlfast.knn(q, k, database=None if db is q else db, exclude_self=exclude_self,
                        method="ivf", **kw)
    assert (g.method, g.nprobe, g.recall) == ("ivf", local.nprobe, local.recall)
    assert s.shape == i.shape == (q.shape[0], k) and s.dtype == np.float32
    np.testing.assert_allclose(s, local.sims, atol=1e-6, rtol=0)
    gaps = np.abs(np.diff(local.sims.astype(np.float64), axis=1)).min(axis=1)
    clear = gaps > 2e-5
    assert clear.mean() > 0.5  # the check has rows to compare
    np.testing.assert_array_equal(i[clear], local.idx[clear])


@pytest.mark.parametrize("chunks,nprobe", [(600, None), ((250, 900, 1, 649), 3), (1800, 5)])
def test_self_graph_matches_single_machine(scheduler, chunks, nprobe):
    x = clustered(1800, 16, seed=4)
    g = hdask.knn(da.from_array(x, chunks=(chunks, 16)), 10, method="ivf", nprobe=nprobe,
                  recall_sample=400)
    s, i = computed(g)
    check_same_as_local(g, s, i, x, x, 10, True, nprobe=nprobe, recall_sample=400)
    if nprobe is None:  # chose from the doubling counts, honestly estimated
        assert g.nprobe in ivf.probe_counts(ivf.n_lists(1800), None)
        assert g.recall >= 0.99


def test_stored_embeddings_give_the_dask_array_result(tmp_path):
    x = clustered(1500, 12, seed=5)
    np.save(tmp_path / "x.npy", x)
    want = hdask.knn(da.from_array(x, chunks=500), 8, method="ivf", nprobe=4, seed=3)
    want_s, want_i = computed(want)
    for stored in (str(tmp_path / "x.npy"), np.load(tmp_path / "x.npy", mmap_mode="r"), x):
        g = hdask.knn(stored, 8, method="ivf", nprobe=4, seed=3, block_rows=400)
        s, i = computed(g)
        assert (g.nprobe, g.recall) == (want.nprobe, want.recall)
        np.testing.assert_allclose(s, want_s, atol=1e-6, rtol=0)
        assert (i == want_i).mean() > 0.999


@pytest.mark.parametrize("exclude_self", [False, True])
def test_queries_against_a_database(scheduler, exclude_self):
    db = clustered(2000, 16, seed=6)
    q = db if exclude_self else clustered(500, 16, seed=7)
    g = hdask.knn(da.from_array(q, chunks=300), 7, database=da.from_array(db, chunks=700),
                  exclude_self=exclude_self, method="ivf", nprobe=4, recall_sample=200)
    s, i = computed(g)
    local_db = db.copy()  # a separate database: the local search is not a self-graph either
    check_same_as_local(g, s, i, q, local_db, 7, exclude_self, nprobe=4, recall_sample=200)
    if exclude_self:
        assert not (i == np.arange(len(q))[:, None]).any()


def test_probing_every_list_is_the_exact_graph():
    x = clustered(1200, 16, seed=8)
    nlist = ivf.n_lists(1200)
    g = hdask.knn(da.from_array(x, chunks=350), 9, method="ivf", nprobe=nlist)
    s, i = computed(g)
    assert g.recall == 1.0 and g.nprobe == nlist
    assert_knn(s, i, x, x, 9, exclude_self=True)


@pytest.mark.parametrize("k,nprobe", [(30, 1), (35, 2)])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_rows_with_too_few_candidates_get_the_exact_search(monkeypatch, k, nprobe,
                                                           exclude_self):
    # ~20 lists of ~20 rows: one or two probed lists hold fewer than k rows for many rows
    x = np.random.default_rng(1).standard_normal((400, 8)).astype(np.float32)
    searched = []

    def recording(src, dsrc, rows, *a, _real=hdask._exact_rows):
        searched.append(rows)
        return _real(src, dsrc, rows, *a)

    monkeypatch.setattr(hdask, "_exact_rows", recording)
    g = hdask.knn(da.from_array(x, chunks=90), k, database=da.from_array(x, chunks=70),
                  exclude_self=exclude_self, method="ivf", nprobe=nprobe, recall_sample=100)
    s, i = computed(g)
    assert len(searched) == 1 and searched[0].size > 0  # the case under test occurs
    local = hdlfast.knn(x, k, database=x.copy(), exclude_self=exclude_self, method="ivf",
                        nprobe=nprobe, recall_sample=100)
    np.testing.assert_array_equal(i, local.idx)
    np.testing.assert_allclose(s, local.sims, atol=1e-6, rtol=0)
    assert g.recall == local.recall
    ref_s = reference_knn(x, x, k, exclude_self)[0]  # those rows: the exact top-k
    np.testing.assert_allclose(s[searched[0]], ref_s[searched[0]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("stored", [False, True])
def test_exact_copies_are_tied_as_on_one_machine(tmp_path, stored):
    base = clustered(300, 12, seed=12)
    rng = np.random.default_rng(3)
    x = base[rng.integers(0, 300, 1200)]  # every row has copies, spread over the blocks
    X = str(tmp_path / "x.npy") if stored else da.from_array(x, chunks=250)
    if stored:
        np.save(X, x)
    g = hdask.knn(X, 8, method="ivf", nprobe=3, recall_sample=300, block_rows=250)
    s, i = computed(g)
    local = hdlfast.knn(x, 8, method="ivf", nprobe=3, recall_sample=300)
    np.testing.assert_array_equal(i, local.idx)  # copies: equal similarities, smaller first
    np.testing.assert_allclose(s, local.sims, atol=1e-6, rtol=0)
    eq = np.diff(s, axis=1) == 0
    assert eq.any() and (np.diff(i, axis=1)[eq] > 0).all()
    assert g.recall == local.recall


def test_recall_estimate_is_honest_on_every_row():
    x = clustered(1600, 24, seed=9)
    g = hdask.knn(da.from_array(x, chunks=500), 10, method="ivf", nprobe=2,
                  recall_sample=1600)
    s, i = computed(g)
    ref_i = reference_knn(x, x, 10, True)[1]
    true = float((i[:, :, None] == ref_i[:, None, :]).any(axis=1).mean())
    assert 0.5 < true < 1.0
    assert g.recall == pytest.approx(true, abs=2e-3)


def test_auto_is_exact_when_cheap_and_ivf_beyond(monkeypatch):
    x = clustered(900, 16, seed=10)
    X = da.from_array(x, chunks=300)
    g = hdask.knn(X, 5, method="auto")
    assert (g.method, g.recall, g.nprobe) == ("exact", 1.0, None)
    monkeypatch.setattr(hdask, "AUTO_EXACT_WORK", 900 * 900 * 16 - 1)
    g = hdask.knn(X, 5, method="auto", recall_sample=200)
    assert g.method == "ivf" and g.nprobe is not None
    g = hdask.knn(X, 5, method="auto", backend="cuda")  # the workers' GPUs: exact
    assert g.method == "exact"


def test_same_seed_same_graph():
    x = clustered(1500, 16, seed=11)
    X = da.from_array(x, chunks=400)
    a = computed(hdask.knn(X, 6, method="ivf", nprobe=3, seed=7))
    b = computed(hdask.knn(X, 6, method="ivf", nprobe=3, seed=7, threads_per_task=2))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_hdl_on_the_inverted_file_matches_single_machine(scheduler):
    x, y = hypersphere_mixture(2400, 16, n_classes=6, seed=3)
    labels = few_labels(y, 4, seed=1)
    local = hdlfast.hdl(x, labels, k=10, knn_method="ivf")
    res = hdask.hdl(da.from_array(x, chunks=800), labels, k=10, knn_method="ivf")
    assert (res.knn_method, res.knn_recall) == ("ivf", local.knn_recall)
    np.testing.assert_array_equal(res.labels, local.labels)
    exact = hdask.hdl(da.from_array(x, chunks=800), labels, k=10)
    assert (exact.knn_method, exact.knn_recall) == ("exact", 1.0)


@pytest.mark.parametrize("kw,exc,words", [
    ({"method": "annoy"}, ValueError, "method"),
    ({"method": "ivf", "backend": "cuda"}, ValueError, "method='ivf'"),
    ({"method": "ivf", "target_recall": 1.5}, ValueError, "target_recall"),
    ({"method": "ivf", "nprobe": 0}, ValueError, "nprobe"),
    ({"method": "ivf", "recall_sample": -1}, ValueError, "recall_sample"),
    ({"method": "ivf", "seed": "x"}, TypeError, "seed"),
])
def test_bad_input(kw, exc, words):
    X = da.from_array(clustered(100, 8, seed=1), chunks=50)
    with pytest.raises(exc, match=words):
        hdask.knn(X, 5, **kw)
    if "method" in kw and kw["method"] == "annoy":
        with pytest.raises(ValueError, match="knn_method"):
            hdask.hdl(X, np.zeros(100, np.int64), 5, knn_method="annoy")


def test_bad_database_row_is_named_when_called():
    x = clustered(600, 8, seed=2)
    x[433] = np.nan
    before = x.copy()
    with pytest.raises(ValueError, match="433"):
        hdask.knn(da.from_array(x, chunks=200), 5, method="ivf")
    np.testing.assert_array_equal(x, before)  # the caller's array untouched
