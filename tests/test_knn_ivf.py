"""hdlfast.knn(method="ivf" | "auto"): the inverted-file search against the float64 reference,
its merge kernel against a NumPy model, recall estimates, determinism and bad input."""
import importlib

import numpy as np
import pytest

import conftest
import hdlfast
from hdlfast import _backend, _host
from hdlfast.datasets import hypersphere_mixture
from conftest import CPU_BACKENDS, assert_knn, few_labels, reference_knn, to_kind, to_numpy

ivf = importlib.import_module("hdlfast.knn.ivf")
SENTINEL = np.iinfo(np.int64).max


def _kernels(backend):
    return _backend.select(backend, False).knn.kernels


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("exclude_self", [False, True])
def test_merge_listed_matches_a_numpy_model(backend, exclude_self):
    rng = np.random.default_rng(0)
    n, k = 40, 5
    heap_s = np.full((n, k), -np.inf, np.float32)
    heap_i = np.full((n, k), SENTINEL, np.int64)
    seen = [[] for _ in range(n)]
    kern = _kernels(backend)
    lists = rng.permutation(6 * 37).reshape(6, 37).astype(np.int64)  # disjoint, as in IVF
    for cols in lists:
        rows = rng.choice(n, 13, replace=False).astype(np.int64)
        # coarse values: many exact ties, which the index rule must order
        tile = rng.integers(0, 8, (13, 37)).astype(np.float32) / 8
        kern.merge_listed(tile, rows, rows, cols, heap_s, heap_i, exclude_self)
        for r, row in enumerate(rows):
            seen[row] += [(float(tile[r, c]), int(col)) for c, col in enumerate(cols)
                          if not (exclude_self and col == row)]
    kern.finalize(heap_s, heap_i)
    for row in range(n):
        best = sorted(seen[row], key=lambda p: (-p[0], p[1]))[:k]
        best += [(-np.inf, SENTINEL)] * (k - len(best))
        np.testing.assert_array_equal(heap_s[row], [s for s, _ in best])
        np.testing.assert_array_equal(heap_i[row], [i for _, i in best])


def test_merge_listed_rejects_rows_outside_the_heaps():
    if "native" not in CPU_BACKENDS:
        pytest.skip("native module not built")
    kern = _kernels("native")
    heap_s = np.full((4, 2), -np.inf, np.float32)
    heap_i = np.full((4, 2), SENTINEL, np.int64)
    with pytest.raises(ValueError, match="row_ids"):
        kern.merge_listed(np.zeros((1, 3), np.float32), np.array([4]), np.array([4]),
                          np.arange(3), heap_s, heap_i, False)


def clustered(n, d, seed):
    return conftest.clustered(n, d, seed=seed, n_centres=12, spread=0.4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("exclude_self", [True, False])
def test_probing_every_list_is_the_exact_graph(backend, exclude_self):
    x = clustered(2000, 24, seed=1)
    nlist = ivf.n_lists(len(x))
    g = hdlfast.knn(x, 10, method="ivf", nprobe=nlist, exclude_self=exclude_self,
                    backend=backend)
    assert g.method == "ivf" and g.recall == 1.0 and g.nprobe == nlist
    assert_knn(g.sims, g.idx, x, x, 10, exclude_self=exclude_self)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_queries_against_a_database(backend):
    q, db = clustered(700, 16, seed=2), clustered(3000, 16, seed=3)
    g = hdlfast.knn(q, 7, database=db, method="ivf", nprobe=ivf.n_lists(3000),
                    backend=backend)
    assert_knn(g.sims, g.idx, q, db, 7, exclude_self=False)
    g = hdlfast.knn(db, 7, database=db.copy(), exclude_self=True, method="ivf",
                    nprobe=ivf.n_lists(3000), backend=backend)
    assert_knn(g.sims, g.idx, db, db, 7, exclude_self=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_few_probes_give_true_neighbours_and_an_honest_recall(backend):
    x = conftest.clustered(6000, 32, seed=4, n_centres=40, spread=0.6)
    k = 15
    ref_s, ref_i, full = reference_knn(x, x, k, True)
    g = hdlfast.knn(x, k, method="ivf", nprobe=3, recall_sample=6000, backend=backend)
    sims, idx = to_numpy(g.sims), to_numpy(g.idx)
    rows = np.arange(len(x))[:, None]
    # whatever it lists is real, reported with its true similarity, sorted by the tie rule
    assert (idx != rows).all() and (idx >= 0).all() and (idx < len(x)).all()
    np.testing.assert_allclose(sims, full[rows, idx], atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()
    assert all(len(set(r)) == k for r in idx.tolist())
    true_recall = (idx[:, :, None] == ref_i[:, None, :]).any(axis=1).mean()
    assert 0.5 < true_recall < 1.0  # few probes: approximate, and not useless
    assert g.recall == pytest.approx(true_recall, abs=2e-3)  # every row sampled
    small = hdlfast.knn(x, k, method="ivf", nprobe=3, recall_sample=500, backend=backend)
    assert abs(small.recall - true_recall) < 0.05
    more = hdlfast.knn(x, k, method="ivf", nprobe=12, recall_sample=6000, backend=backend)
    assert more.recall > g.recall


def test_same_seed_same_graph_on_every_cpu_backend_and_thread_count():
    x = conftest.clustered(5000, 20, seed=5, n_centres=30, spread=0.6)
    runs = []
    for backend in CPU_BACKENDS:
        for threads in (1, 2):
            with _host.threads(threads):
                runs.append(hdlfast.knn(x, 9, method="ivf", nprobe=4, seed=3,
                                        backend=backend))
    for g in runs[1:]:
        np.testing.assert_array_equal(g.idx, runs[0].idx)
        np.testing.assert_array_equal(g.sims, runs[0].sims)
        assert g.recall == runs[0].recall
    other = hdlfast.knn(x, 9, method="ivf", nprobe=4, seed=4, backend=CPU_BACKENDS[0])
    assert not np.array_equal(other.idx, runs[0].idx)  # the seed is used


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_the_target_recall_chooses_the_fewest_probes_reaching_it(backend):
    x = conftest.clustered(6000, 32, seed=4, n_centres=40, spread=0.6)
    k = 15
    ref_i = reference_knn(x, x, k, True)[1]
    for target in (0.9, 0.99):
        g = hdlfast.knn(x, k, method="ivf", target_recall=target, recall_sample=6000,
                        backend=backend)
        idx = to_numpy(g.idx)
        assert g.recall >= target
        assert g.recall == pytest.approx(_true_recall(idx, ref_i), abs=2e-3)
        assert g.nprobe in (8, 16, 32, 64, ivf.n_lists(len(x)))
        if g.nprobe > 8:  # half as many probes miss the target
            fewer = hdlfast.knn(x, k, method="ivf", nprobe=g.nprobe // 2, recall_sample=6000,
                                backend=backend)
            assert fewer.recall < target
        fixed = hdlfast.knn(x, k, method="ivf", nprobe=g.nprobe, backend=backend)
        np.testing.assert_array_equal(to_numpy(fixed.idx), idx)  # the same search
    g = hdlfast.knn(x, k, method="ivf", target_recall=1.0, backend=backend)
    assert g.recall == 1.0


def _true_recall(idx, ref_i):
    return (idx[:, :, None] == ref_i[:, None, :]).any(axis=1).mean()


def test_lists_split_into_several_tiles_give_the_same_graph_for_any_thread_count():
    # a small memory budget splits every list's tile (and the exact searches') into pieces
    x = conftest.clustered(4000, 16, seed=19, n_centres=5, spread=0.5)
    runs = []
    for threads in (1, 2):
        with _host.threads(threads):
            runs.append(hdlfast.knn(x, 12, method="ivf", nprobe=4, memory_budget=1 << 18))
    np.testing.assert_array_equal(runs[0].idx, runs[1].idx)
    np.testing.assert_array_equal(runs[0].sims, runs[1].sims)
    full = hdlfast.knn(x, 12, method="ivf", nprobe=ivf.n_lists(len(x)), memory_budget=1 << 18)
    assert_knn(full.sims, full.idx, x, x, 12, exclude_self=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rows_whose_lists_hold_too_few_candidates_are_searched_exactly(backend):
    x = clustered(60, 6, seed=6)  # 8 lists of about 8 rows; k = 40 needs more than one
    g = hdlfast.knn(x, 40, method="ivf", nprobe=1, backend=backend)
    assert_knn(g.sims, g.idx, x, x, 40, exclude_self=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exact_copies_follow_the_tie_rule(backend):
    base = clustered(400, 12, seed=7)
    x = np.concatenate([base, base[::3], base[::7]])  # rows with one or two copies
    g = hdlfast.knn(x, 6, method="ivf", nprobe=ivf.n_lists(len(x)), backend=backend)
    ref_s, ref_i, _ = reference_knn(x, x, 6, True)
    np.testing.assert_array_equal(to_numpy(g.idx), ref_i)


def test_auto_searches_exactly_when_cheap_and_says_which_it_used(monkeypatch):
    x = clustered(800, 8, seed=8)
    g = hdlfast.knn(x, 5, method="auto")
    assert g.method == "exact" and g.recall == 1.0
    exact = hdlfast.knn(x, 5)
    np.testing.assert_array_equal(g.idx, exact.idx)
    knn_mod = importlib.import_module("hdlfast.knn")
    monkeypatch.setattr(knn_mod, "AUTO_EXACT_WORK", 0)
    g = hdlfast.knn(x, 5, method="auto")
    assert g.method == "ivf" and 0 < g.recall <= 1


def test_recall_sample_zero_skips_the_estimate():
    x = clustered(500, 8, seed=9)
    g = hdlfast.knn(x, 4, method="ivf", recall_sample=0)
    assert g.method == "ivf" and g.recall is None and g.nprobe == min(32, ivf.n_lists(500))


def test_array_kinds_and_unpacking():
    torch = pytest.importorskip("torch")
    x = clustered(900, 10, seed=10)
    g = hdlfast.knn(to_kind(x, "torch"), 5, method="ivf")
    sims, idx = g
    assert isinstance(sims, torch.Tensor) and sims.dtype == torch.float32
    assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int64
    ref = hdlfast.knn(x, 5, method="ivf")
    np.testing.assert_array_equal(idx.numpy(), ref.idx)


def test_graph_pickles_with_its_method_and_recall():
    import pickle

    g = hdlfast.knn(clustered(300, 8, seed=11), 3, method="ivf", recall_sample=50)
    h = pickle.loads(pickle.dumps(g))
    assert (h.method, h.recall) == (g.method, g.recall)
    np.testing.assert_array_equal(h.idx, g.idx)


def test_caller_arrays_are_not_modified():
    x = clustered(1000, 8, seed=12)
    before = x.copy()
    hdlfast.knn(x, 5, method="ivf", nprobe=2)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"method": "hnsw"}, ValueError, "method"),
    ({"method": "ivf", "nprobe": 0}, ValueError, "nprobe"),
    ({"method": "ivf", "nprobe": 2.5}, TypeError, "nprobe"),
    ({"method": "ivf", "recall_sample": -1}, ValueError, "recall_sample"),
    ({"method": "ivf", "seed": -1}, ValueError, "seed"),
    ({"method": "ivf", "target_recall": 1.2}, ValueError, "target_recall"),
    ({"method": "ivf", "target_recall": "high"}, TypeError, "target_recall"),
])
def test_bad_input_is_refused_before_any_work(kwargs, err, match):
    with pytest.raises(err, match=match):
        hdlfast.knn(clustered(50, 4, seed=13), 3, **kwargs)


@pytest.mark.cuda
def test_ivf_on_gpu_arrays_says_where_it_runs():
    import torch

    x = torch.from_numpy(clustered(200, 8, seed=14)).cuda()
    with pytest.raises(ValueError, match="CPU backends"):
        hdlfast.knn(x, 3, method="ivf")
    assert hdlfast.knn(x, 3, method="auto").method == "exact"


def test_every_graph_user_takes_the_choice():
    x, y = hypersphere_mixture(3000, 16, n_classes=5, spread=0.7, seed=15)
    labels = few_labels(y, 6, 0)
    exact = hdlfast.knn(x, 10)
    approx = hdlfast.knn(x, 10, method="ivf")
    res = hdlfast.hdl(x, labels, 10, knn_method="ivf")
    assert (res.knn_method, res.knn_recall) == ("ivf", approx.recall)
    np.testing.assert_array_equal(res.labels, hdlfast.hdl(x, labels, 10, graph=approx).labels)
    res = hdlfast.hdl(x, labels, 10)
    assert (res.knn_method, res.knn_recall) == ("exact", 1.0)
    assert hdlfast.hdl(x, labels, 10, graph=(exact.sims, exact.idx)).knn_method is None
    np.testing.assert_array_equal(hdlfast.mine_neighbors(x, 10, knn_method="ivf"), approx.idx)
    vote = hdlfast.knn_vote(x, labels, 5, knn_method="auto")[0]
    np.testing.assert_array_equal(vote, hdlfast.knn_vote(x, labels, 5)[0])
    sel = hdlfast.select_k(x, labels, (5, 10), knn_method="ivf")
    assert sel.k in (5, 10)
    picks = hdlfast.select_to_label(x, 5, k=10, knn_method="ivf")
    assert len(set(picks.tolist())) == 5
    est = hdlfast.HDLLabeler(k=10, knn_method="ivf").fit(x, labels)
    assert est.result_.knn_method == "ivf"
    np.testing.assert_array_equal(est.transduction_, res.labels)


@pytest.mark.parametrize("call", [
    lambda x, y: hdlfast.hdl(x, y, 5, knn_method="annoy"),
    lambda x, y: hdlfast.knn_vote(x, y, 5, knn_method="annoy"),
    lambda x, y: hdlfast.select_k(x, y, (5,), knn_method="annoy"),
    lambda x, y: hdlfast.select_to_label(x, 3, k=5, knn_method="annoy"),
    lambda x, y: hdlfast.mine_neighbors(x, 5, knn_method="annoy"),
    lambda x, y: hdlfast.HDLLabeler(k=5, knn_method="annoy").fit(x, y),
])
def test_a_bad_knn_method_is_named(call):
    x, y = hypersphere_mixture(200, 8, n_classes=3, seed=16)
    with pytest.raises(ValueError, match="knn_method"):
        call(x, few_labels(y, 3, 1))


def test_progress_bar_goes_to_stderr_only_when_asked(capsys):
    x = clustered(3000, 8, seed=17)
    quiet = hdlfast.knn(x, 4, method="ivf")
    assert "ivf" not in capsys.readouterr().err
    shown = hdlfast.knn(x, 4, method="ivf", progress=True)
    assert "ivf: search" in capsys.readouterr().err
    np.testing.assert_array_equal(shown.idx, quiet.idx)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("k", [5, 300])  # heaps and reservoirs
def test_exact_search_progress_bar(backend, k, capsys):
    x = clustered(5000, 8, seed=18)
    quiet = hdlfast.knn(x, k, backend=backend)
    assert "kNN search" not in capsys.readouterr().err
    shown = hdlfast.knn(x, k, progress=True, backend=backend)
    assert "kNN search (exact)" in capsys.readouterr().err
    np.testing.assert_array_equal(shown.idx, quiet.idx)
    # the bar's steps add up to the whole search: self-graph and queries vs a database
    host = importlib.import_module("hdlfast.knn.host")
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    for q, db in ((unit, None), (unit[:700], unit)):
        steps = []
        host.topk(_kernels(backend), q, db, k, db is None, 1 << 20, steps.append)
        assert len(steps) > 1 and sum(steps) == pytest.approx(1.0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_recall_counts_exact_copies_by_the_tie_rule(backend):
    rng = np.random.default_rng(3)
    x = clustered(300, 12, seed=12)[rng.integers(0, 300, 1200)]  # every row has copies
    nlist = ivf.n_lists(len(x))
    g = hdlfast.knn(x, 8, method="ivf", nprobe=nlist, recall_sample=1200, backend=backend)
    exact = hdlfast.knn(x, 8, backend=backend)
    np.testing.assert_array_equal(g.idx, exact.idx)  # every list probed: the exact graph
    assert g.recall == 1.0  # and measured so: the copies a row lists follow the tie rule
    few = hdlfast.knn(x, 8, method="ivf", nprobe=2, recall_sample=1200, backend=backend)
    true = float((few.idx[:, :, None] == exact.idx[:, None, :]).any(axis=1).mean())
    assert few.recall == pytest.approx(true, abs=1e-12)
