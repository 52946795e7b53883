"""k-means (docs §6) against a float64 NumPy Lloyd reference, across the CPU backends, plus the
cluster-sum kernels and bad input. CUDA variants are skipped without a GPU."""
import numpy as np
import pytest

from hdlfast import _backend
from hdlfast.datasets import hypersphere_mixture
from hdlfast.kmeans import kmeans
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


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cluster_sums_kernel_against_float64(backend):
    impl = _backend.select(backend, False)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3001, 37)).astype(np.float32)
    labels = rng.integers(0, 13, 3001).astype(np.int64)
    labels[labels == 5] = 6  # cluster 5 empty
    for inv in (np.empty(0, np.float32), rng.random(3001).astype(np.float32) + 0.5):
        sums = np.empty((13, 37))
        counts = np.empty(13, np.int64)
        impl.kmeans.cluster_sums(x, inv, labels, sums, counts)
        w = inv.astype(np.float64) if inv.size else np.ones(3001)
        ref = np.zeros((13, 37))
        np.add.at(ref, labels, x.astype(np.float64) * w[:, None])
        np.testing.assert_allclose(sums, ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(counts, np.bincount(labels, minlength=13))
        assert (sums[5] == 0).all()
        # the members are added in increasing row order: exactly a sequential float64 sum
        seq = np.zeros(37)
        for i in np.flatnonzero(labels == 6):
            seq = seq + x[i].astype(np.float64) * w[i]
        np.testing.assert_array_equal(sums[6], seq)


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
    """The CUDA update adds members in row order without FMA: the same float64 sums as the
    CPU kernel on the same (rounded) rows, with row weights, and with empty clusters first,
    between used ones and last (the sort's segment offsets)."""
    from hdlfast import _arrays

    if kind == "cupy" and dtype == "bfloat16":
        pytest.skip("cupy has no bfloat16")
    cuda = _backend._module("cuda")
    rng = np.random.default_rng(15)
    n, d, c = 70001, 300, 37
    x = rng.standard_normal((n, d)).astype(np.float32)
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
    ref_s = np.empty((c, d))
    ref_c = np.empty(c, np.int64)
    _backend.select(CPU, False).kmeans.cluster_sums(
        host_x, np.empty(0, np.float32) if inv is None else inv, labels, ref_s, ref_c)
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
    ref_s, ref_c = np.empty((c, d)), np.empty(c, np.int64)
    _backend.select(CPU, False).kmeans.cluster_sums(x[good], np.empty(0, np.float32),
                                                    labels[good], ref_s, ref_c)
    np.testing.assert_array_equal(to_numpy(sums), ref_s)
    np.testing.assert_array_equal(to_numpy(counts), ref_c)
