"""Rows of any finite, non-zero scale work in every public function, on every backend.

Cosine results do not depend on a row's length, so every cosine function must give on rows
scaled by 2**-133 (about 1e-40, below float32's normal range), 2**-997 (about 1e-300),
2**997 (about 1e300), or a mixture of these with unscaled rows, exactly what it gives on the
unscaled rows: the scale factors are powers of two, so the float64 inputs are scaled
exactly and the scale-safe normalisation (divide by the row's largest magnitude, then by
its norm) sees the same rows. Before it, such rows overflowed ``1 / norm`` and let the kernels'
index sentinel (int64 max) out as a neighbour, or crashed them. Euclidean k-means is not
scale-invariant: it is checked to return the same labels at every tiny scale, and to refuse
values beyond float32. Inputs are float64 numpy (the scale lives there); a float32 case with
subnormal rows checks validity against a float64 reference. CUDA twins are marked ``cuda``.
"""
import numpy as np
import pytest

import hdlfast
from conftest import CPU_BACKENDS, GPU_KINDS, assert_knn, clustered, to_kind, to_numpy

SCALES = {"1e-40": -133, "1e-300": -997, "1e300": 997}
N, D, K = 240, 8, 10


def base_data():
    x = clustered(N, D, seed=7).astype(np.float64)
    rng = np.random.default_rng(7)
    y = np.full(N, -1, np.int64)
    truth = np.argmax(x[:, :3], axis=1)
    for c in range(3):
        y[rng.choice(np.nonzero(truth == c)[0], 4, replace=False)] = c
    return x, y


def scaled(x, how):
    """x with every row (or, for "mixed", each row at random) multiplied by 2**e."""
    if how == "mixed":
        e = np.random.default_rng(3).choice([0, *SCALES.values()], x.shape[0])
        return np.ldexp(x, e[:, None])
    return np.ldexp(x, SCALES[how])


def outputs(result):
    """Every array of a result as numpy, for byte-wise comparison."""
    if isinstance(result, hdlfast.HDLResult):
        return [to_numpy(getattr(result, f)) for f in
                ("labels", "confidence", "level", "provenance", "cycles")]
    if isinstance(result, hdlfast.KSelection):
        return [np.asarray(result.k), np.asarray(sorted(result.scores.items()))]
    if isinstance(result, dict):
        return [np.asarray(v) for _, v in sorted(result.items())]
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in outputs(r)]
    if isinstance(result, hdlfast.HDLLabeler):
        return [result.transduction_, result.label_confidence_, result.level_]
    return [to_numpy(result)]


def cosine_cases(backend):
    """name -> f(X, y): the public functions whose results depend only on the row
    directions."""
    b = backend
    return {
        "knn": lambda X, y: hdlfast.knn(X, K, backend=b),
        "knn_database": lambda X, y: hdlfast.knn(X[:50], K, database=X, backend=b),
        "knn_small_budget": lambda X, y: hdlfast.knn(X, K, backend=b, memory_budget=1 << 14),
        "knn_vote": lambda X, y: hdlfast.knn_vote(X, y, K, backend=b),
        "vote_against": lambda X, y: hdlfast.vote_against(X[:60], X[60:], np.arange(N - 60) % 3,
                                                          K, backend=b),
        "hdl": lambda X, y: hdlfast.hdl(X, y, K, backend=b),
        "hdl_tree": lambda X, y: hdlfast.hdl(X, y, 4, method="tree", max_visits=4, backend=b),
        "label_clusterability": lambda X, y: hdlfast.label_clusterability(X, y, (1, 3),
                                                                          backend=b),
        "select_k": lambda X, y: hdlfast.select_k(X, y, (3, 5), backend=b),
        "HDLLabeler": lambda X, y: hdlfast.HDLLabeler(k=K, backend=b).fit(X, y),
        "kmeans_spherical": lambda X, y: hdlfast.kmeans(X, 5, backend=b).labels,
        "select_to_label": lambda X, y: hdlfast.select_to_label(X, 6, k=K, backend=b),
        "mine_neighbors": lambda X, y: hdlfast.mine_neighbors(X, K, include_self=True,
                                                              backend=b),
        "neighborhood_positives": lambda X, y: hdlfast.neighborhood_positives(
            X[:20], X[20:], K, backend=b),
        "hard_negatives": lambda X, y: hdlfast.hard_negatives(
            X[:20], X[20:120], X[120:], 8, n_neg=10, n_mix=2, backend=b),
    }


@pytest.fixture(scope="module")
def data():
    return base_data()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("how", [*SCALES, "mixed"])
@pytest.mark.parametrize("case", sorted(cosine_cases("native")))
def test_cosine_functions_ignore_row_scale(data, backend, how, case):
    x, y = data
    fn = cosine_cases(backend)[case]
    ref = outputs(fn(x, y))
    got = outputs(fn(scaled(x, how), y))
    assert len(ref) == len(got)
    for i, (a, b) in enumerate(zip(ref, got)):
        assert a.dtype == b.dtype and a.shape == b.shape, (case, i)
        assert a.tobytes() == b.tobytes(), f"{case} output {i} differs at scale {how}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_graphs_from_tiny_rows_hold_real_neighbours(data, backend):
    """No sentinel index, no -inf: every entry is a real row with a similarity in [-1, 1]."""
    x, _ = data
    for how in [*SCALES, "mixed"]:
        sims, idx = hdlfast.knn(scaled(x, how), N - 1, backend=backend)
        assert idx.min() >= 0 and idx.max() < N, how
        assert np.isfinite(sims).all() and np.abs(sims).max() <= 1 + 1e-6, how


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_float32_subnormal_rows(data, backend):
    """float32 rows around 1e-40 are subnormal (few significant bits): results are those of
    the float64 values the caller holds."""
    x, y = data
    tiny = (x * 1e-40).astype(np.float32)
    tiny[::3] = x[::3]  # mixed with normal rows
    assert (np.abs(tiny[1]) < np.finfo(np.float32).tiny).all()
    sims, idx = hdlfast.knn(tiny, K, backend=backend)
    held = tiny.astype(np.float64)
    assert_knn(sims, idx, held, held, K, True, atol=1e-5)
    res = hdlfast.hdl(tiny, y, K, backend=backend)
    assert set(np.unique(res.labels)) <= {0, 1, 2}
    km = hdlfast.kmeans(tiny, 4, backend=backend)
    assert km.labels.min() >= 0 and km.labels.max() < 4 and np.isfinite(km.inertia)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_euclidean_kmeans_at_tiny_and_huge_scales(data, backend):
    x, _ = data
    runs = {how: hdlfast.kmeans(scaled(x, how), 5, spherical=False, init="random",
                                backend=backend) for how in ("1e-40", "1e-300")}
    a, b = runs["1e-40"], runs["1e-300"]
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.n_iter == b.n_iter
    # the centroids come back at the caller's scale (float32: 1e-300 underflows to 0)
    c = hdlfast.kmeans(x, 5, spherical=False, init=np.ldexp(np.asarray(a.centroids,
                       np.float64), 133), backend=backend)
    assert np.isfinite(a.inertia) and a.inertia > 0
    np.testing.assert_allclose(np.ldexp(np.asarray(a.centroids, np.float64), 133),
                               np.asarray(c.centroids), rtol=1e-3, atol=1e-6)
    assert len(np.unique(a.labels)) == 5
    with pytest.raises(ValueError, match="X.*float32"):
        hdlfast.kmeans(scaled(x, "1e300"), 5, spherical=False, backend=backend)


def test_huge_float64_rows_are_not_called_infinite(data):
    """Finite rows whose squares overflow float64 (1e200, 1e300) are valid input."""
    x, y = data
    big = x * 1e200
    sims, idx = hdlfast.knn(big, K)
    ref_s, ref_i = hdlfast.knn(x, K)
    np.testing.assert_allclose(sims, ref_s, atol=1e-6)
    assert (idx == ref_i).mean() > 0.99


# --- CUDA twins ------------------------------------------------------------------------------

GPU_SCALES = (-60, 60)  # inside float32, outside the kernels' safe window 2**+-40


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS)
@pytest.mark.parametrize("e", [*GPU_SCALES, "mixed"])
def test_cuda_cosine_functions_ignore_row_scale(data, kind, e):
    x, y = data
    if e == "mixed":
        ex = np.random.default_rng(3).choice([0, *GPU_SCALES], N)[:, None]
    else:
        ex = e
    xs = np.ldexp(x, ex)
    ref_x, big_x = to_kind(x, kind), to_kind(xs, kind)
    s0, i0 = (to_numpy(a) for a in hdlfast.knn(ref_x, K, backend="cuda"))
    s1, i1 = (to_numpy(a) for a in hdlfast.knn(big_x, K, backend="cuda"))
    assert i1.min() >= 0 and i1.max() < N and np.isfinite(s1).all()
    np.testing.assert_allclose(s1, s0, atol=1e-5)
    r0 = hdlfast.hdl(ref_x, to_kind(y, kind, "int64"), K)
    r1 = hdlfast.hdl(big_x, to_kind(y, kind, "int64"), K)
    assert set(np.unique(to_numpy(r1.labels))) <= {0, 1, 2}
    assert (to_numpy(r0.labels) == to_numpy(r1.labels)).mean() > 0.95
    km = hdlfast.kmeans(big_x, 5)
    lab = to_numpy(km.labels)
    assert lab.min() >= 0 and lab.max() < 5


# --- review cases: half precision, sub-normal float64, exact rescaling, signed zeros ----------

@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_euclidean_kmeans_float16_and_below_float64_normal(backend):
    x, _ = base_data()
    tiny16 = np.ldexp(x, -23).astype(np.float16)  # largest values near float16's subnormals
    km = hdlfast.kmeans(tiny16, 4, spherical=False, init="random", backend=backend)
    assert np.isfinite(km.inertia) and km.labels.max() < 4
    sub = np.ldexp(x, -1040)  # float64 subnormals, with an init array at the same scale
    km = hdlfast.kmeans(sub, 3, spherical=False, init=sub[:3].copy(), backend=backend)
    ref = hdlfast.kmeans(x, 3, spherical=False, init=x[:3].copy(), backend=backend)
    assert (np.asarray(km.labels) == np.asarray(ref.labels)).mean() > 0.95


def test_gpu_row_rescaling_is_exact():
    """The GPU path rescales rows outside its safe range by powers of two: every row keeps
    its direction to the last bit, in float32 and bfloat16 (checked here on CPU arrays)."""
    from hdlfast import _arrays

    torch = pytest.importorskip("torch")
    x, _ = base_data()
    rows = np.ldexp(x[:20], np.random.default_rng(0).integers(-120, 120, (20, 1)))
    for arr in (rows.astype(np.float32), torch.from_numpy(rows.astype(np.float32)),
                torch.from_numpy(rows.astype(np.float32)).bfloat16()):
        out = _arrays.scale_rows_to_unit_peak(arr, _arrays.row_peaks(arr))
        a, b = to_numpy(arr).astype(np.float64), to_numpy(out).astype(np.float64)
        ratio = b / a
        assert (ratio == ratio[:, :1]).all()  # one factor per row, applied exactly
        m, _ = np.frexp(ratio[:, 0])
        assert (m == 0.5).all()  # a power of two
        assert ((np.abs(b).max(axis=1) >= 0.5) & (np.abs(b).max(axis=1) < 1)).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_signed_zeros_do_not_split_copies(backend):
    x = np.array([[-0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [3.0, 1.0, 0.0], [0.0, 1.0, 2.0],
                  [1.0, 1.0, 1.0]])
    sims, idx = hdlfast.knn(x[[2, 4]], 3, database=x, backend=backend)
    for row in idx:  # the three copies (rows 0, 1, 3) listed in index order
        copies = [j for j in row if j in (0, 1, 3)]
        assert copies == sorted(copies) and copies == [0, 1, 3][:len(copies)]
