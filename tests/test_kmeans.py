"""k-means (docs §6) against a float64 NumPy Lloyd reference, across the CPU backends, plus the
cluster-sum kernels and bad input. CUDA variants are skipped without a GPU."""
import numpy as np
import pytest

from hdlfast import _backend
from hdlfast.datasets import hypersphere_mixture
from hdlfast.kmeans import kmeans
from hdlfast.kmeans.host import SUM_CHUNK, cluster_sums
from conftest import CPU_BACKENDS, GPU_KINDS, to_kind, to_numpy

CPU = "native" if _backend.usable("native") else "numba"


def reference_lloyd(x, c0, n_updates, spherical):
    """float64 Lloyd: ``n_updates`` (assign, update) rounds from c0, then a final assignment.
    Ties go to the smaller centroid index; an empty cluster keeps its centroid (the tests
    below avoid empty clusters, which hdlfast re-seeds)."""
    x = np.asarray(x, np.float64)
    c = np.asarray(c0, np.float64).copy()
    if spherical:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)

    def assign(c):
        if spherical:
            return np.argmax(x @ c.T, axis=1)
        return np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)

    for _ in range(n_updates):
        labels = assign(c)
        for j in range(len(c)):
            members = x[labels == j]
            if len(members):
                m = members.sum(axis=0)
                c[j] = m / np.linalg.norm(m) if spherical else m / len(members)
    return c, assign(c)


def blobs(n=600, d=16, n_classes=6, seed=0, spread=0.3):
    return hypersphere_mixture(n, d, n_classes, spread=spread, seed=seed)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("spherical", [True, False])
def test_matches_float64_lloyd(backend, spherical):
    x, _ = blobs(spread=1.5, seed=1)  # overlapping classes: many points move between clusters
    c0 = x[[0, 50, 100, 150, 200, 250, 300, 350]].astype(np.float64)
    for n_updates in (1, 3, 8):
        res = kmeans(x, 8, spherical=spherical, init=c0, n_iters=n_updates, tol=None,
                     backend=backend)
        ref_c, ref_labels = reference_lloyd(x, c0, n_updates, spherical)
        assert res.n_iter == n_updates
        np.testing.assert_array_equal(res.labels, ref_labels)
        np.testing.assert_allclose(res.centroids, ref_c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spherical", [True, False])
def test_result_is_a_fixed_point(spherical):
    """At convergence every row sits at its nearest centroid, each centroid is the mean (unit
    mean) of its members, and inertia is the sum of squared distances."""
    x, _ = blobs(n=900, d=8, n_classes=5, spread=2.0, seed=2)
    res = kmeans(x, 7, spherical=spherical, seed=4)
    assert res.n_iter < 100
    xd = x.astype(np.float64)
    if spherical:
        xd /= np.linalg.norm(xd, axis=1, keepdims=True)
    c = res.centroids.astype(np.float64)
    dist = ((xd[:, None, :] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(res.labels, np.argmin(dist, axis=1))
    for j in range(7):
        m = xd[res.labels == j].mean(axis=0)
        if spherical:
            m /= np.linalg.norm(m)
        np.testing.assert_allclose(c[j], m, atol=2e-6)
    np.testing.assert_allclose(res.inertia, dist[np.arange(len(x)), res.labels].sum(),
                               rtol=1e-5)


@pytest.mark.parametrize("spherical", [True, False])
def test_backends_agree_bit_for_bit(spherical):
    x, _ = blobs(n=2000, d=24, n_classes=10, spread=1.0, seed=3)
    runs = [kmeans(x, 12, spherical=spherical, seed=7, backend=b) for b in CPU_BACKENDS]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.labels, runs[0].labels)
        np.testing.assert_array_equal(r.centroids, runs[0].centroids)
        assert r.n_iter == runs[0].n_iter
    again = kmeans(x, 12, spherical=spherical, seed=7, backend=CPU_BACKENDS[0])
    np.testing.assert_array_equal(again.labels, runs[0].labels)


def test_kmeans_pp_finds_separated_clusters():
    x, y = blobs(n=500, d=32, n_classes=5, spread=0.05, seed=5)
    for seed in range(3):
        res = kmeans(x, 5, seed=seed, n_iters=1, tol=None)
        # one centroid per class: the clustering equals the classes up to renaming
        pairs = set(zip(res.labels.tolist(), y.tolist()))
        assert len(pairs) == 5


def test_random_init_uses_distinct_rows_and_seed():
    x, _ = blobs(n=300, seed=6)
    a = kmeans(x, 6, init="random", seed=1, n_iters=1, tol=None)
    b = kmeans(x, 6, init="random", seed=1, n_iters=1, tol=None)
    c = kmeans(x, 6, init="random", seed=2, n_iters=1, tol=None)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert not np.array_equal(a.centroids, c.centroids)


@pytest.mark.parametrize("spherical", [True, False])
def test_empty_cluster_is_reseeded_from_worst_fitted(spherical):
    x, _ = blobs(n=400, d=8, n_classes=4, spread=0.5, seed=8)
    c0 = np.concatenate([x[:3], -50 * np.ones((1, 8), np.float32)])  # far from every row
    if spherical:  # a direction no row points to
        c0[3] = -x.astype(np.float64).sum(axis=0)
    res = kmeans(x, 4, spherical=spherical, init=c0, n_iters=20)
    counts = np.bincount(res.labels, minlength=4)
    assert (counts > 0).all()
    # the first update re-seeds cluster 3 with the row farthest from its centroid
    first = kmeans(x, 4, spherical=spherical, init=c0, n_iters=1, tol=None)
    ref_labels = reference_lloyd(x, c0, 1, spherical)[1]
    xd = x.astype(np.float64)
    if spherical:
        xd /= np.linalg.norm(xd, axis=1, keepdims=True)
    c_init, labels0 = reference_lloyd(x, c0, 0, spherical)
    d0 = ((xd - c_init[labels0]) ** 2).sum(axis=1)
    worst = int(np.argmax(d0))
    np.testing.assert_allclose(first.centroids[3], xd[worst], rtol=1e-6, atol=1e-6)
    assert np.bincount(ref_labels, minlength=4)[3] == 0  # the reference leaves it empty


def test_euclidean_accepts_zero_rows_spherical_does_not():
    x, _ = blobs(n=200, d=8, seed=9)
    x[5] = 0
    res = kmeans(x, 3, spherical=False, seed=0)
    assert res.labels.shape == (200,)
    with pytest.raises(ValueError, match="X has a zero-norm row"):
        kmeans(x, 3, spherical=True)


def test_float16_and_torch_inputs():
    torch = pytest.importorskip("torch")
    x, _ = blobs(n=500, d=16, seed=10)
    ref = kmeans(x, 6, seed=3)
    t = kmeans(torch.from_numpy(x), 6, seed=3)
    assert isinstance(t.labels, torch.Tensor) and isinstance(t.centroids, torch.Tensor)
    np.testing.assert_array_equal(t.labels.numpy(), ref.labels)
    h = kmeans(x.astype(np.float16), 6, seed=3)
    assert (h.labels == ref.labels).mean() > 0.99


def chunked_sums_reference(x, w, labels, n_clusters, chunk=SUM_CHUNK):
    """The sums' definition in plain float64 NumPy: per chunk of rows, each cluster's members
    added one by one in row order from 0, the chunks' partials added in chunk order."""
    d = x.shape[1]
    sums = np.zeros((n_clusters, d))
    for r0 in range(0, x.shape[0], chunk):
        part = {}
        for i in range(r0, min(r0 + chunk, x.shape[0])):
            c = int(labels[i])
            part[c] = part.get(c, np.zeros(d)) + x[i].astype(np.float64) * np.float64(w[i])
        for c, v in part.items():
            sums[c] = sums[c] + v
    return sums


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cluster_sums_follow_the_chunked_order(backend):
    """Sums equal the definition bit for bit (rows of magnitudes 1e-8..1e8, so the order of
    the additions shows: a plain row-order sum differs), and a float64 reference closely."""
    impl = _backend.select(backend, False)
    rng = np.random.default_rng(11)
    n, d, c = 9001, 7, 13
    x = (rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-8, 8, (n, 1))).astype(np.float32)
    labels = rng.integers(0, c, n).astype(np.int64)
    labels[labels == 5] = 6  # cluster 5 empty
    for inv in (np.empty(0, np.float32), rng.random(n).astype(np.float32) + 0.5):
        w = inv if inv.size else np.ones(n, np.float32)
        sums, counts = cluster_sums(impl.kmeans, x, inv, labels, c)
        np.testing.assert_array_equal(sums, chunked_sums_reference(x, w, labels, c))
        np.testing.assert_array_equal(counts, np.bincount(labels, minlength=c))
        assert (sums[5] == 0).all()
        ref = np.zeros((c, d))
        np.add.at(ref, labels, x.astype(np.float64) * w[:, None].astype(np.float64))
        np.testing.assert_allclose(sums, ref, rtol=1e-9, atol=1e-300)
        plain = chunked_sums_reference(x, w, labels, c, chunk=n)  # one chunk: row order
        assert not np.array_equal(sums, plain)


def _partials(km, x, inv, labels, n_clusters):
    """(slot_of, clusters, psums, pcounts, used) of chunk_sums on one chunk."""
    cap = min(n_clusters, len(x))
    slot_of = np.full(n_clusters, -1, np.int32)
    clusters, pcounts = np.empty(cap, np.int64), np.empty(cap, np.int64)
    psums = np.empty((cap, x.shape[1]))
    used = km.chunk_sums(x, inv, labels, slot_of, clusters, psums, pcounts)
    return slot_of, clusters, psums, pcounts, used


def _as_dict(clusters, psums, pcounts, used):
    """cluster -> (count, sum) of the slots with members (a slot of count 0 adds nothing)."""
    return {int(clusters[s]): (int(pcounts[s]), psums[s].tobytes())
            for s in range(used) if pcounts[s]}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_chunk_sums_update_equals_summing_afresh(backend):
    """Partials brought up to date for new labels (a few rows moved, clusters emptied and
    new to the chunk, nothing moved, every label moved, all slots taken: summed afresh)
    equal chunk_sums of the new labels bit for bit (rows of magnitudes 1e-8..1e8: the order
    shows), and mark is left zero."""
    km = _backend.select(backend, False).kmeans
    rng = np.random.default_rng(14)
    rows, d, c = 700, 5, 30
    x = (rng.standard_normal((rows, d)) * 10.0 ** rng.uniform(-8, 8, (rows, 1))).astype(
        np.float32)
    old = rng.integers(0, 20, rows).astype(np.int64)  # clusters 20..29 not in the chunk
    moves = [np.zeros(rows, bool), rng.random(rows) < 0.02, rng.random(rows) < 0.5,
             np.ones(rows, bool), old == 3]
    # more clusters than rows: 700 slots, taken by 700 distinct labels, then new ones needed
    many = 2 * rows + 1
    spread = rng.permutation(rows).astype(np.int64)
    cases = [(old, m, c, c) for m in moves] + [(spread, moves[2], many, 2 * rows)]
    for inv in (np.empty(0, np.float32), rng.random(rows).astype(np.float32) + 0.5):
        for old, move, c, high in cases:
            new = old.copy()
            new[move] = rng.integers(0, high, int(move.sum()))
            new[old == 7] = 8  # cluster 7 emptied
            slot_of, clusters, psums, pcounts, used = _partials(km, x, inv, old, c)
            mark = np.zeros(c, np.int8)
            used = km.chunk_sums_update(x, inv, old, new, mark, slot_of, clusters, psums,
                                        pcounts, used)
            assert not mark.any()
            fresh = _partials(km, x, inv, new, c)
            assert _as_dict(clusters, psums, pcounts, used) == _as_dict(*fresh[1:])
            sums, counts = np.zeros((c, d)), np.zeros(c, np.int64)
            km.fold_sums(clusters, used, psums, pcounts, sums, counts)
            ref_sums, ref_counts = np.zeros((c, d)), np.zeros(c, np.int64)
            km.fold_sums(fresh[1], fresh[4], fresh[2], fresh[3], ref_sums, ref_counts)
            np.testing.assert_array_equal(sums, ref_sums)
            np.testing.assert_array_equal(counts, ref_counts)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("spherical", [True, False])
def test_kept_partials_give_the_same_run(spherical, backend, monkeypatch):
    """Re-adding only the clusters that changed (the chunks' partials kept between passes)
    gives the labels, centroids and inertia of summing every chunk afresh in every pass."""
    from hdlfast.kmeans import host

    x, _ = blobs(n=3 * SUM_CHUNK + 77, d=9, n_classes=30, spread=0.9, seed=23)
    kept = []
    real = host.KMeansState._keeps_partials

    def spy(self, n_clusters):
        kept.append(real(self, n_clusters))
        return kept[-1]

    monkeypatch.setattr(host.KMeansState, "_keeps_partials", spy)
    a = kmeans(x, 30, spherical=spherical, seed=4, n_iters=12, tol=None, backend=backend)
    assert kept and all(kept)
    monkeypatch.setattr(host.KMeansState, "_keeps_partials", lambda self, n_clusters: False)
    b = kmeans(x, 30, spherical=spherical, seed=4, n_iters=12, tol=None, backend=backend)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia


@pytest.mark.parametrize("spherical", [True, False])
def test_fused_pass_is_independent_of_threads_and_tiles(spherical, monkeypatch):
    """The assignment pass gives the same labels, sums and result for any worker count, tile
    size (memory_budget) and column blocking (more centroids than one tile's columns)."""
    from hdlfast import _host
    from hdlfast.kmeans import host

    x, _ = blobs(n=3 * SUM_CHUNK + 123, d=8, n_classes=40, spread=1.0, seed=21)
    runs = []
    for threads, budget, cols in ((1, None, None), (3, None, None), (2, 4096, None),
                                  (2, None, 16)):
        if cols:
            monkeypatch.setattr(host, "_MAX_TILE_COLS", cols)
        with _host.threads(threads):
            runs.append(kmeans(x, 37, spherical=spherical, seed=2, n_iters=4, tol=None,
                               memory_budget=budget))
        monkeypatch.undo()
    for r in runs[1:]:
        np.testing.assert_array_equal(r.labels, runs[0].labels)
        np.testing.assert_array_equal(r.centroids, runs[0].centroids)
        assert r.inertia == runs[0].inertia


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_top2_update_takes_the_smallest_index_among_ties(backend):
    """Best column of tile + bias with exact ties (the smallest column wins, also across
    column blocks and in the tail past the last block of 8) and the second-best score (equal
    to the best when it is tied), against NumPy."""
    km = _backend.select(backend, False).kmeans
    rng = np.random.default_rng(12)
    for cols in (1, 5, 8, 13, 64, 100):
        tile = rng.integers(-3, 4, (200, cols)).astype(np.float32) / 4  # many exact ties
        bias = rng.integers(-2, 3, cols).astype(np.float32) / 4
        for b in (np.empty(0, np.float32), bias):
            score = tile + (b if b.size else 0)
            top = np.sort(score, axis=1)
            second_ref = top[:, -2] if cols > 1 else np.full(200, -np.inf, np.float32)
            best_s = np.full(200, -np.inf, np.float32)
            second = np.full(200, -np.inf, np.float32)
            best_i = np.full(200, -1, np.int64)
            km.top2_update(tile, b, 7, best_s, best_i, second)
            np.testing.assert_array_equal(best_i, 7 + np.argmax(score, axis=1))
            np.testing.assert_array_equal(best_s, top[:, -1])
            np.testing.assert_array_equal(second, second_ref)
            # a second block with the same scores takes no row (ties: the earlier wins) and
            # makes every second best the best
            km.top2_update(tile, b, 7 + cols, best_s, best_i, second)
            np.testing.assert_array_equal(best_i, 7 + np.argmax(score, axis=1))
            np.testing.assert_array_equal(second, top[:, -1])
            # in blocks: column blocks of 3 give the whole row's answer
            bs, bi, sc = (np.full(200, -np.inf, np.float32), np.zeros(200, np.int64),
                          np.full(200, -np.inf, np.float32))
            for c0 in range(0, cols, 3):
                km.top2_update(np.ascontiguousarray(tile[:, c0:c0 + 3]),
                               b[c0:c0 + 3] if b.size else b, c0, bs, bi, sc)
            np.testing.assert_array_equal(bi, np.argmax(score, axis=1))
            np.testing.assert_array_equal(sc, second_ref)


@pytest.mark.parametrize("spherical", [True, False])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bounds_skip_only_rows_whose_label_stays(spherical, backend, monkeypatch):
    """Rows whose Hamerly bounds prove their label stays are not scored again: the same
    labels, centroids and inertia as scoring every row in every pass, on data where most rows
    are skipped late in the run (and with exact copies of rows, an empty cluster re-seeded and
    column blocks)."""
    from hdlfast.kmeans import host

    x, _ = blobs(n=2 * SUM_CHUNK + 500, d=12, n_classes=25, spread=0.8, seed=22)
    x[100:140] = x[7]  # exact copies: tied scores
    c0 = np.concatenate([x[:24].astype(np.float64), np.full((1, 12), 40.0)])  # one far off
    scored = []
    real_assign = host.KMeansState.assign

    def counting_assign(self, centroids):
        changed = real_assign(self, centroids)
        scored.append(self.scored)
        return changed

    monkeypatch.setattr(host.KMeansState, "assign", counting_assign)
    runs = {}
    for prune in (False, True):
        monkeypatch.setattr(host, "PRUNE", prune)
        for cols in (None, 7):
            if cols:
                monkeypatch.setattr(host, "_MAX_TILE_COLS", cols)
            scored.clear()
            runs[prune, cols] = kmeans(x, 25, spherical=spherical, init=c0, n_iters=15,
                                       tol=None, backend=backend), list(scored)
            monkeypatch.setattr(host, "_MAX_TILE_COLS", 4096)
    ref = runs[False, None][0]
    for (prune, cols), (res, counts) in runs.items():
        np.testing.assert_array_equal(res.labels, ref.labels)
        np.testing.assert_array_equal(res.centroids, ref.centroids)
        assert res.inertia == ref.inertia
    counts = runs[True, None][1]
    assert counts[0] == len(x) and min(counts) < len(x) // 4  # the bounds did skip rows


def test_kmeans_kernels_agree_bit_for_bit():
    """top2_update, row_sq_dists and pp_trials give the same bits on the native and numba
    kernels, and pp_trials / row_sq_dists match float64 references."""
    if len(CPU_BACKENDS) < 2:
        pytest.skip("needs both CPU backends")
    kerns = [_backend.select(b, False).kmeans for b in CPU_BACKENDS]
    rng = np.random.default_rng(13)
    for d in (1, 7, 8, 61, 128):
        p = rng.standard_normal((5000, d)).astype(np.float32)
        pp = np.einsum("ij,ij->i", p.astype(np.float64), p.astype(np.float64))
        for n_cand in (1, 3, 6, 9):
            cand = rng.integers(0, 5000, n_cand).astype(np.int64)
            d2 = rng.random(5000) * 2 * d
            outs = []
            for km in kerns:
                out, colsum = np.empty((5000, n_cand)), np.empty(n_cand)
                km.pp_trials(p, pp, cand, d2, out, colsum)
                outs.append((out, colsum))
            for out, colsum in outs[1:]:
                np.testing.assert_array_equal(out, outs[0][0])
                np.testing.assert_array_equal(colsum, outs[0][1])
            p64 = p.astype(np.float64)
            ref = ((p64[:, None, :] - p64[cand][None]) ** 2).sum(-1)
            np.testing.assert_allclose(outs[0][0], np.minimum(ref, d2[:, None]),
                                       rtol=1e-5, atol=1e-5 * d)
            np.testing.assert_allclose(outs[0][1], outs[0][0].sum(axis=0), rtol=1e-12)
        cent = rng.standard_normal((9, d))
        labels = rng.integers(0, 9, 5000).astype(np.int64)
        dists = []
        for km in kerns:
            out = np.empty(5000)
            km.row_sq_dists(p, cent, labels, out)
            dists.append(out)
        np.testing.assert_array_equal(dists[1], dists[0])
        np.testing.assert_allclose(dists[0], ((p - cent[labels]) ** 2).sum(axis=1),
                                   rtol=1e-12)
        tile = rng.standard_normal((300, d)).astype(np.float32)
        bias = rng.standard_normal(d).astype(np.float32)
        res = []
        for km in kerns:
            s, i = np.full(300, -np.inf, np.float32), np.zeros(300, np.int64)
            s2 = np.full(300, -np.inf, np.float32)
            km.top2_update(tile, bias, 0, s, i, s2)
            res.append((s, i, s2))
        for a, b in zip(res[1], res[0]):
            np.testing.assert_array_equal(a, b)
        rows = np.sort(rng.choice(5000, 300, replace=False)).astype(np.int64)
        sq = pp.copy()
        eps = rng.random(5000) * 1e-5
        second = res[0][2].copy()
        second[:3] = -np.inf  # no second centroid: an infinite lower bound
        bounds = []
        for km in kerns:
            lab, up, lo = np.zeros(5000, np.int64), np.zeros(5000), np.zeros(5000)
            km.set_bounds(rows, res[0][0], res[0][1], second, sq, eps, 0.0, lab, up, lo)
            bounds.append((lab, up, lo))
        for a, b in zip(bounds[1], bounds[0]):
            np.testing.assert_array_equal(a, b)
        lab, up, lo = bounds[0]
        np.testing.assert_array_equal(lab[rows], res[0][1])
        assert np.isinf(lo[rows[:3]]).all()
        base, b64, s64 = sq[rows], res[0][0].astype(np.float64), second.astype(np.float64)
        assert (up[rows] ** 2 >= base - 2.0 * b64 + 2 * eps[rows]).all()
        assert (lo[rows[3:]] ** 2 <= np.maximum(base[3:] - 2.0 * s64[3:] - 2 * eps[rows[3:]],
                                                0.0)).all()


def test_in_order_folds_by_key_whatever_the_finishing_order():
    import threading

    from hdlfast._host import InOrder

    seen = []
    fold = InOrder(seen.append)
    keys = list(range(200))
    np.random.default_rng(14).shuffle(keys)
    threads = [threading.Thread(target=lambda ks: [fold.put(k, k) for k in ks],
                                args=(keys[t::4],)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == list(range(200)) and fold.done == 200


@pytest.mark.parametrize("tol", [0.0, None])
def test_progress_bar_goes_to_stderr_only_when_asked(tol, capsys):
    x, _ = hypersphere_mixture(3000, 8, n_classes=5, seed=2)
    quiet = kmeans(x, 5, n_iters=15, tol=tol)
    assert "k-means" not in capsys.readouterr().err
    shown = kmeans(x, 5, n_iters=15, tol=tol, progress=True)
    err = capsys.readouterr().err
    assert "k-means" in err and "changed=" in err
    np.testing.assert_array_equal(shown.labels, quiet.labels)
    assert shown.n_iter == quiet.n_iter and (tol is not None or quiet.n_iter == 15)


def test_callers_array_untouched():
    x, _ = blobs(n=300, seed=12)
    keep = x.copy()
    c0 = x[:4].astype(np.float64)
    keep_c = c0.copy()
    kmeans(x, 4, init=c0, spherical=False)
    kmeans(x, 4)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(c0, keep_c)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(n_clusters=0), ValueError, "n_clusters must be >= 1"),
    (dict(n_clusters=301), ValueError, "n_clusters=301 is larger than the 300 rows"),
    (dict(n_clusters=2.5), TypeError, "n_clusters must be an integer"),
    (dict(n_iters=0), ValueError, "n_iters must be >= 1"),
    (dict(tol=-1.0), ValueError, "tol must be >= 0"),
    (dict(init="kmeans||"), ValueError, "init must be one of"),
    (dict(init=np.zeros((3, 8))), ValueError, r"init must have shape \(4, 8\)"),
    (dict(init=np.full((4, 8), np.nan)), ValueError, "init holds NaN"),
    (dict(seed=1.5), TypeError, "seed must be an integer"),
    (dict(backend="tpu"), ValueError, "backend must be one of"),
])
def test_bad_arguments(kwargs, err, match):
    x, _ = blobs(n=300, d=8, seed=13)
    keep = x.copy()
    args = dict(n_clusters=4)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        kmeans(x, **args)
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("x, err, match", [
    (np.ones((10, 4), np.int64), TypeError, "X must hold floating-point"),
    (np.ones(10, np.float32), ValueError, "X must be 2-D"),
    (np.ones((0, 4), np.float32), ValueError, "X is empty"),
    (np.array([[1.0, np.nan]] * 5, np.float32), ValueError, "X holds NaN or Inf"),
])
def test_bad_embeddings(x, err, match):
    with pytest.raises(err, match=match):
        kmeans(x, 2)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
@pytest.mark.parametrize("spherical", [True, False])
def test_cuda_matches_cpu(kind, spherical):
    x, _ = blobs(n=5000, d=64, n_classes=10, spread=0.8, seed=14)
    ref = kmeans(x, 10, spherical=spherical, seed=2, backend=CPU)
    res = kmeans(to_kind(x, kind), 10, spherical=spherical, seed=2, backend="cuda")
    assert type(res.labels) is type(to_kind(x, kind))
    assert (to_numpy(res.labels) == ref.labels).mean() > 0.999
    np.testing.assert_allclose(to_numpy(res.centroids), ref.centroids, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("used,weighted", [(None, False), ((3, 4, 20, 30), True)])
def test_cuda_cluster_sums_bit_identical(kind, dtype, used, weighted):
    """The CUDA update adds members in the CPU's chunked row order without FMA: the same
    float64 sums as the CPU kernels on the same (rounded) rows of magnitudes 1e-2..1e2 (so the
    order shows), with row weights, and with empty clusters first, between used ones and last
    (the sort's segment offsets)."""
    from hdlfast import _arrays

    if kind == "cupy" and dtype == "bfloat16":
        pytest.skip("cupy has no bfloat16")
    cuda = _backend._module("cuda")
    rng = np.random.default_rng(15)
    n, d, c = 70001, 300, 37
    x = (rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-2, 2, (n, 1))).astype(np.float32)
    labels = (rng.integers(0, c, n) if used is None else rng.choice(used, n)).astype(np.int64)
    inv = rng.uniform(0.5, 2.0, n).astype(np.float32) if weighted else None
    dx = to_kind(x, kind, dtype)
    host_x = to_numpy(dx).astype(np.float32)
    dl = _arrays.to_device(labels, dx)
    sums = _arrays.empty(dx, (c, d), "float64")
    counts = _arrays.empty(dx, (c,), "int64")
    ws = _arrays.empty(dx, (cuda.cluster_sums_workspace_bytes(n, c),), "uint8")
    cuda.cluster_sums(_arrays.cuda_view(dx), None if inv is None else _arrays.to_device(inv, dx),
                      dl, sums, counts, ws, _arrays.cuda_stream(dx))
    ref_s, ref_c = cluster_sums(_backend.select(CPU, False).kmeans, host_x,
                                np.empty(0, np.float32) if inv is None else inv, labels, c)
    np.testing.assert_array_equal(to_numpy(sums), ref_s)
    np.testing.assert_array_equal(to_numpy(counts), ref_c)


@pytest.mark.cuda
def test_cuda_cluster_sums_leave_out_labels_out_of_range():
    """Rows labeled outside [0, n_clusters) belong to no cluster (the sort gives them a bucket
    of their own past the last cluster): the sums of the other rows, unchanged."""
    from hdlfast import _arrays

    torch = pytest.importorskip("torch")
    cuda = _backend._module("cuda")
    rng = np.random.default_rng(16)
    n, d, c = 5000, 40, 6
    x = rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.integers(0, c, n).astype(np.int64)
    bad = rng.choice(n, 300, replace=False)
    labels[bad] = rng.choice([-5, -1, c, c + 1, 2**40, -(2**62)], bad.size)
    dx = torch.from_numpy(x).cuda()
    sums = _arrays.empty(dx, (c, d), "float64")
    counts = _arrays.empty(dx, (c,), "int64")
    ws = _arrays.empty(dx, (cuda.cluster_sums_workspace_bytes(n, c),), "uint8")
    cuda.cluster_sums(_arrays.cuda_view(dx), None, _arrays.to_device(labels, dx), sums, counts,
                      ws, _arrays.cuda_stream(dx))
    good = (labels >= 0) & (labels < c)
    ref_s = np.zeros((c, d))  # the chunks are those of the original rows
    for r0 in range(0, n, SUM_CHUNK):
        keep = good[r0:r0 + SUM_CHUNK]
        ref_s = ref_s + chunked_sums_reference(
            x[r0:r0 + SUM_CHUNK][keep], np.ones(int(keep.sum()), np.float32),
            labels[r0:r0 + SUM_CHUNK][keep], c, chunk=n)
    ref_c = np.bincount(labels[good], minlength=c)
    np.testing.assert_array_equal(to_numpy(sums), ref_s)
    np.testing.assert_array_equal(to_numpy(counts), ref_c)
