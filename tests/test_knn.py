"""hdlfast.knn and reverse_graph against a float64 NumPy reference, on every backend."""
import functools
import os

import numpy as np
import pytest

import conftest
import hdlfast
from conftest import CPU_BACKENDS, GPU_KINDS, assert_knn, reference_knn, to_kind, to_numpy

clustered = functools.partial(conftest.clustered, n_centres=8)


SHAPES = [(2, 1, 1), (3, 5, 2), (17, 3, 16), (100, 8, 7), (257, 64, 20), (700, 33, 699),
          (1500, 128, 64), (3000, 16, 10), (600, 1024, 50)]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n,d,k", SHAPES)
def test_self_graph_matches_reference(backend, n, d, k):
    x = clustered(n, d, seed=n * 31 + d)
    sims, idx = hdlfast.knn(x, k, backend=backend)
    assert_knn(sims, idx, x, x, k, exclude_self=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("nq,nd,d,k", [(1, 1, 4, 1), (1, 50, 7, 50), (40, 3, 9, 3),
                                        (513, 1100, 32, 33), (2000, 300, 96, 5)])
def test_queries_against_database(backend, nq, nd, d, k):
    q = clustered(nq, d, seed=1)
    db = clustered(nd, d, seed=2)
    sims, idx = hdlfast.knn(q, k, database=db, backend=backend)
    assert_knn(sims, idx, q, db, k, exclude_self=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_self_graph_without_exclusion_returns_self_first(backend):
    x = clustered(300, 16, seed=3)
    sims, idx = hdlfast.knn(x, 5, exclude_self=False, backend=backend)
    assert_knn(sims, idx, x, x, 5, exclude_self=False)
    np.testing.assert_array_equal(idx[:, 0], np.arange(300))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exclude_self_with_database_drops_matching_row(backend):
    x = clustered(200, 8, seed=4)
    sims, idx = hdlfast.knn(x, 6, database=x.copy(), exclude_self=True, backend=backend)
    assert_knn(sims, idx, x, x, 6, exclude_self=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exact_ties_follow_the_index_rule(backend):
    # d = 1: every similarity is exactly +1 or -1, so the tie rule decides everything.
    rng = np.random.default_rng(5)
    x = rng.choice([-3.0, -1.0, 0.5, 2.0], size=(60, 1)).astype(np.float32)
    for k in (1, 10, 59):
        sims, idx = hdlfast.knn(x, k, backend=backend)
        ref_s, ref_i, _ = reference_knn(x, x, k, True)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(sims, ref_s.astype(np.float32))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_duplicates_stay_neighbours(backend):
    base = clustered(50, 12, seed=6)
    x = np.concatenate([base, base[:10], base[:10]])  # rows 50..69 duplicate rows 0..9
    sims, idx = hdlfast.knn(x, 3, backend=backend)
    assert_knn(sims, idx, x, x, 3, exclude_self=True)
    for i in range(10):
        # the two copies of point i are its top-2, at similarity 1, smaller index first
        assert sorted(idx[i, :2].tolist()) == [50 + i, 60 + i]
        assert idx[i, 0] == 50 + i
        np.testing.assert_allclose(sims[i, :2], 1.0, atol=1e-6)
        assert idx[50 + i, :2].tolist() == [i, 60 + i]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("budget", [64, 4096, 1 << 16])
def test_memory_budget_only_changes_tiling(backend, budget):
    x = clustered(500, 24, seed=7)
    ref = hdlfast.knn(x, 9, backend=backend)
    small = hdlfast.knn(x, 9, backend=backend, memory_budget=budget)
    np.testing.assert_array_equal(ref[1], small[1])
    np.testing.assert_allclose(ref[0], small[0], atol=1e-6)
    q = clustered(70, 24, seed=8)
    ref = hdlfast.knn(q, 9, database=x, backend=backend)
    small = hdlfast.knn(q, 9, database=x, backend=backend, memory_budget=budget)
    np.testing.assert_array_equal(ref[1], small[1])


@pytest.mark.skipif(len(CPU_BACKENDS) < 2, reason="needs both native and numba")
@pytest.mark.parametrize("n,d,k", [(1000, 32, 15), (2500, 8, 100), (300, 3, 299)])
def test_native_and_numba_identical(n, d, k):
    x = clustered(n, d, seed=9)
    a = hdlfast.knn(x, k, backend="native", memory_budget=1 << 18)
    b = hdlfast.knn(x, k, backend="numba", memory_budget=1 << 18)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_numpy_low_and_high_precision_inputs(dtype):
    x = clustered(400, 32, seed=10)
    xd = to_kind(x, "numpy", dtype)
    sims, idx = hdlfast.knn(xd, 8)
    # the reference is computed on the values the caller actually holds
    assert_knn(sims, idx, np.asarray(xd, np.float64), np.asarray(xd, np.float64), 8, True)


def test_array_like_inputs_are_accepted():
    x = clustered(30, 4, seed=11)
    sims, idx = hdlfast.knn(x.tolist(), 3)
    assert_knn(sims, idx, x, x, 3, True)


def test_caller_arrays_unchanged_and_not_aliased():
    x = clustered(200, 16, seed=12)
    q = clustered(20, 16, seed=13)
    x0, q0 = x.copy(), q.copy()
    hdlfast.knn(x, 5)
    hdlfast.knn(q, 5, database=x)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(q, q0)


def test_default_backend_is_native_when_built():
    expected = "native" if "native" in CPU_BACKENDS else "numba"
    assert hdlfast.info()["default_cpu"] == expected


def test_expected_modules_were_built():
    # CI sets HDLFAST_EXPECT_BUILT=native,cuda so that a broken C++ or CUDA build fails loudly
    # instead of silently falling back to numba.
    expected = [b for b in os.environ.get("HDLFAST_EXPECT_BUILT", "").split(",") if b]
    for name in expected:
        assert hdlfast.info()[name]["built"], f"hdlfast.{name} module was not built"


def test_environment_variable_overrides_backend(monkeypatch):
    x = clustered(50, 4, seed=14)
    monkeypatch.setenv("HDLFAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="backend"):
        hdlfast.knn(x, 3)
    monkeypatch.setenv("HDLFAST_BACKEND", CPU_BACKENDS[-1])
    assert_knn(*hdlfast.knn(x, 3), x, x, 3, True)


def test_cuda_backend_with_cpu_data_is_refused():
    x = clustered(20, 4, seed=15)
    if hdlfast.info()["cuda"]["usable"]:
        with pytest.raises(ValueError, match="CUDA device"):
            hdlfast.knn(x, 3, backend="cuda")
    else:
        with pytest.raises(RuntimeError, match="cuda"):
            hdlfast.knn(x, 3, backend="cuda")


# --- torch on the CPU --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_cpu_in_torch_out(dtype):
    torch = pytest.importorskip("torch")
    x = clustered(300, 40, seed=16)
    xt = to_kind(x, "torch", dtype).requires_grad_(dtype == "float32")
    before = xt.detach().clone()
    sims, idx = hdlfast.knn(xt, 7)
    assert isinstance(sims, torch.Tensor) and isinstance(idx, torch.Tensor)
    assert sims.dtype == torch.float32 and idx.dtype == torch.int64
    assert sims.device.type == idx.device.type == "cpu"
    held = to_numpy(xt).astype(np.float64)
    assert_knn(sims, idx, held, held, 7, True)
    assert torch.equal(xt.detach(), before)


def test_torch_non_contiguous_input():
    pytest.importorskip("torch")
    x = clustered(120, 10, seed=17)
    xt = to_kind(np.ascontiguousarray(x.T), "torch").T  # a transposed view
    assert not xt.is_contiguous()
    sims, idx = hdlfast.knn(xt, 4)
    assert_knn(sims, idx, x, x, 4, True)


# --- reverse graph ------------------------------------------------------------------------


def test_reverse_graph_lists_who_lists_whom():
    x = clustered(150, 6, seed=18)
    _, idx = hdlfast.knn(x, 5)
    indptr, indices = hdlfast.reverse_graph(idx, 150)
    assert indptr.shape == (151,) and indptr[-1] == idx.size
    for j in range(150):
        sources = indices[indptr[j]:indptr[j + 1]]
        expected = np.nonzero((idx == j).any(axis=1))[0]
        np.testing.assert_array_equal(sources, expected)


def test_reverse_graph_of_query_database_graph_and_bad_index():
    idx = np.array([[3, 1], [1, 0]])
    indptr, indices = hdlfast.reverse_graph(idx, n=5)
    np.testing.assert_array_equal(indptr, [0, 1, 3, 3, 4, 4])
    np.testing.assert_array_equal(indices, [1, 0, 1, 0])
    with pytest.raises(ValueError, match="idx"):
        hdlfast.reverse_graph(idx, n=3)
    with pytest.raises(TypeError, match="idx"):
        hdlfast.reverse_graph(idx.astype(np.float32))


# --- CUDA ---------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n,d,k", [(2, 1, 1), (100, 8, 7), (1000, 64, 32), (777, 100, 129),
                                   (2000, 256, 1024), (600, 33, 599)])
def test_cuda_matches_reference(kind, dtype, n, d, k):
    if kind == "cupy" and dtype == "bfloat16":
        pytest.skip("cupy has no bfloat16")
    x = clustered(n, d, seed=n + d)
    xg = to_kind(x, kind, dtype)
    sims, idx = hdlfast.knn(xg, k)
    assert type(sims) is type(xg) and type(idx) is type(xg)
    held = to_numpy(xg).astype(np.float64)
    atol = 1e-5 if dtype == "float32" else 2e-3  # fp16/bf16 products, fp32 accumulation
    assert_knn(sims, idx, held, held, k, True, atol=atol)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
def test_cuda_queries_database_and_cpu_agree(kind):
    q = clustered(300, 48, seed=19)
    db = clustered(5000, 48, seed=20)
    for k in (1, 20, 200, 3000):
        sims, idx = hdlfast.knn(to_kind(q, kind), k, database=to_kind(db, kind))
        assert_knn(sims, idx, q, db, k, False)
        c_sims, c_idx = hdlfast.knn(q, k, database=db, backend="native")
        np.testing.assert_allclose(to_numpy(sims), c_sims, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
def test_cuda_ties_duplicates_and_input_untouched(kind):
    rng = np.random.default_rng(21)
    x = rng.choice([-3.0, -1.0, 0.5, 2.0], size=(300, 1)).astype(np.float32)
    xg = to_kind(x, kind)
    for k in (1, 17, 299):
        sims, idx = hdlfast.knn(xg, k)
        ref_s, ref_i, _ = reference_knn(x, x, k, True)
        np.testing.assert_array_equal(to_numpy(idx), ref_i)
    np.testing.assert_array_equal(to_numpy(xg), x)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
def test_cuda_small_workspace_budget_gives_same_graph(kind):
    x = clustered(3000, 32, seed=22)
    a = hdlfast.knn(to_kind(x, kind), 300)
    b = hdlfast.knn(to_kind(x, kind), 300, memory_budget=1 << 20)
    np.testing.assert_array_equal(to_numpy(a[1]), to_numpy(b[1]))


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
def test_cuda_float64_is_computed_in_float32(kind):
    x = clustered(500, 24, seed=30)
    xg = to_kind(x.astype(np.float64), kind, "float64")
    sims, idx = hdlfast.knn(xg, 9)
    assert_knn(sims, idx, x.astype(np.float64), x.astype(np.float64), 9, True)
    assert to_numpy(xg).dtype == np.float64  # the caller's array is untouched


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
@pytest.mark.parametrize("k", [10, 300])
def test_cuda_tf32_is_opt_in_and_close(kind, k):
    """allow_tf32=False is float32 exact to 1e-5; allow_tf32=True stays within TF32's ~1e-3
    and still returns the reference's neighbours up to near-ties at that tolerance."""
    x = clustered(3000, 128, seed=31)
    xg = to_kind(x, kind)
    assert_knn(*hdlfast.knn(xg, k), x, x, k, True, atol=1e-5)
    assert_knn(*hdlfast.knn(xg, k, allow_tf32=True), x, x, k, True, atol=3e-3)


@pytest.mark.cuda
def test_cuda_out_of_memory_retry_gives_the_same_graph(monkeypatch):
    """A workspace allocation that runs out of memory is retried with half the query block,
    with a RuntimeWarning, and the graph is unchanged."""
    torch = pytest.importorskip("torch")
    from hdlfast import _arrays

    x = torch.from_numpy(clustered(4000, 32, seed=32)).cuda()
    ref = hdlfast.knn(x, 50)
    real_empty, calls = _arrays.empty, []

    def flaky(like, shape, dtype):
        if dtype == "uint8" and not calls:
            calls.append(shape)
            raise torch.cuda.OutOfMemoryError("planted by the test")
        return real_empty(like, shape, dtype)

    monkeypatch.setattr(_arrays, "empty", flaky)
    with pytest.warns(RuntimeWarning, match="out of GPU memory"):
        got = hdlfast.knn(x, 50)
    assert calls, "the planted failure was not reached"
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    assert torch.equal(got[1], ref[1])


@pytest.mark.cuda
def test_cuda_runs_on_the_callers_stream():
    """Inputs written on a side stream that is still busy are read only after that work: the
    kernels are queued on the caller's current stream, not the default one."""
    torch = pytest.importorskip("torch")
    x = clustered(2000, 64, seed=33)
    base = torch.from_numpy(x).cuda()
    ref = hdlfast.knn(base, 16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # about 0.1 s of GPU time before x2 is written
        x2 = base * 1.0
        sims, idx = hdlfast.knn(x2, 16)
        done = torch.cuda.Event()
        done.record(side)
    done.synchronize()
    assert torch.equal(idx, ref[1])
    torch.testing.assert_close(sims, ref[0], rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,k", [("bfloat16", 32), ("float16", 1024), ("float32", 5)])
def test_cuda_large_n_matches_float64_on_sampled_rows(dtype, k):
    """N >= 20,000 (several database tiles and query blocks): sampled rows against the float64
    reference on the values the GPU holds."""
    n, d = 40_000, 96
    x = clustered(n, d, seed=34, n_centres=50)
    xg = to_kind(x, "torch-cuda", dtype)
    sims, idx = hdlfast.knn(xg, k)
    held = to_numpy(xg).astype(np.float64)
    rows = np.random.default_rng(35).choice(n, 64, replace=False)
    sims, idx = to_numpy(sims)[rows], to_numpy(idx)[rows]
    unit = held / np.linalg.norm(held, axis=1, keepdims=True)
    full = unit[rows] @ unit.T
    full[np.arange(rows.size), rows] = -np.inf
    kth = -np.sort(-full, axis=1)[:, k - 1]
    atol = 1e-5 if dtype == "float32" else 2e-3
    true = np.take_along_axis(full, idx, axis=1)  # the similarity of each returned index
    np.testing.assert_allclose(sims, true, atol=atol)
    assert (true >= kth[:, None] - atol).all(), "a returned neighbour is not in the top k"
    assert all(len(set(r)) == k for r in idx), "duplicate neighbours"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("k", [1, 10, 256])
def test_cuda_few_queries_split_the_database_bit_for_bit(dtype, k):
    """A few queries against a large database run with the database split among CTAs and the
    lists merged: the reference graph, and the same bits as the same queries inside a batch
    large enough to need no split."""
    torch = pytest.importorskip("torch")
    db = to_kind(clustered(30_000, 64, seed=38), "torch-cuda", dtype)
    q = to_kind(clustered(4000, 64, seed=39), "torch-cuda", dtype)
    batch_s, batch_i = hdlfast.knn(q, k, database=db)
    held_q, held_db = to_numpy(q).astype(np.float64), to_numpy(db).astype(np.float64)
    atol = 1e-5 if dtype == "float32" else 2e-3
    for rows in (slice(0, 1), slice(5, 10), slice(100, 140), slice(1000, 1300)):
        s, i = hdlfast.knn(q[rows], k, database=db)
        assert torch.equal(i, batch_i[rows]) and torch.equal(s, batch_s[rows])
        assert_knn(s, i, held_q[rows], held_db, k, False, atol=atol)


@pytest.mark.cuda
def test_cuda_split_database_excludes_self_in_small_query_blocks(monkeypatch):
    """Self-graph in blocks of 3 queries (each call splits the database): the one-block graph."""
    torch = pytest.importorskip("torch")
    from hdlfast.knn import cuda as knn_cuda

    x = torch.from_numpy(clustered(9000, 32, seed=42)).cuda()
    x[4500] = x[7]  # a duplicate: its twin must still be found, itself not
    ref = hdlfast.knn(x, 12)
    monkeypatch.setattr(knn_cuda, "_first_block", lambda *args: 3)
    got = hdlfast.knn(x, 12)
    assert torch.equal(got[1], ref[1]) and torch.equal(got[0], ref[0])
    assert_knn(*got, to_numpy(x), to_numpy(x), 12, True)


def test_gpu_path_choice_is_checked(monkeypatch):
    from hdlfast.knn import cuda as knn_cuda

    monkeypatch.delenv(knn_cuda.PATH_ENV, raising=False)
    assert knn_cuda.gpu_path() == knn_cuda.DEFAULT_PATH
    monkeypatch.setenv(knn_cuda.PATH_ENV, "tiles")
    assert knn_cuda.gpu_path() == "tiles"
    monkeypatch.setenv(knn_cuda.PATH_ENV, "cublas")
    with pytest.raises(ValueError, match="HDLFAST_GPU_KNN"):
        knn_cuda.gpu_path()


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n,d,k", [(2, 1, 1), (100, 8, 7), (1000, 64, 32), (2000, 256, 1024),
                                   (600, 33, 599)])
def test_cuda_tiles_path_matches_reference_and_fused(kind, dtype, n, d, k, monkeypatch):
    """The "tiles" path (framework matmul + hdlfast's selection) gives the reference graph, and
    the fused path's indices wherever the similarities are not near-ties."""
    from hdlfast.knn import cuda as knn_cuda

    if kind == "cupy" and dtype == "bfloat16":
        pytest.skip("cupy has no bfloat16")
    x = clustered(n, d, seed=n + d + 1)
    xg = to_kind(x, kind, dtype)
    monkeypatch.setenv(knn_cuda.PATH_ENV, "tiles")
    sims, idx = hdlfast.knn(xg, k)
    monkeypatch.setenv(knn_cuda.PATH_ENV, "fused")
    f_sims, f_idx = hdlfast.knn(xg, k)
    held = to_numpy(xg).astype(np.float64)
    atol = 1e-5 if dtype == "float32" else 2e-3
    assert_knn(sims, idx, held, held, k, True, atol=atol)
    np.testing.assert_allclose(to_numpy(sims), to_numpy(f_sims), atol=atol)


@pytest.mark.cuda
def test_cuda_tiles_path_blocks_and_database(monkeypatch):
    """Query blocks (a small budget) and a separate database give the one-block graph."""
    torch = pytest.importorskip("torch")
    from hdlfast.knn import cuda as knn_cuda

    monkeypatch.setenv(knn_cuda.PATH_ENV, "tiles")
    q = torch.from_numpy(clustered(3000, 40, seed=36)).cuda()
    db = torch.from_numpy(clustered(7000, 40, seed=37)).cuda()
    a = hdlfast.knn(q, 50, database=db)
    b = hdlfast.knn(q, 50, database=db, memory_budget=1 << 22)
    assert torch.equal(a[1], b[1])
    assert_knn(*a, to_numpy(q), to_numpy(db), 50, False)


@pytest.mark.parametrize("k", [64, 250, 999])
def test_large_k_reservoirs_match_the_heaps_and_the_reference(k, monkeypatch):
    """The reservoir path (large k) and the heap path give the same graph, exact under the tie
    rule: duplicates, a zero-similarity column and a self-graph included; native and numba
    bit for bit."""
    from hdlfast.knn import host

    x = clustered(1000, 16, seed=40)
    x[500] = x[3]  # a duplicate row
    q = clustered(300, 16, seed=41)
    q[7] = 0.0
    q[7, 0] = 1.0
    x[:, 0] = np.where(np.arange(1000) % 50 == 0, 0.0, x[:, 0])
    runs = {}
    for reservoir in (False, True):
        monkeypatch.setattr(host, "RESERVOIR_K", 1 if reservoir else 10**9)
        monkeypatch.setattr(host, "SYMMETRIC_RESERVOIR_SLACK", 0 if reservoir else 10**9)
        for b in CPU_BACKENDS:
            runs[reservoir, b] = (hdlfast.knn(x, k, backend=b),
                                  hdlfast.knn(q, k, database=x, backend=b))
    for key, (self_graph, query_graph) in runs.items():
        assert_knn(*self_graph, x, x, k, True)
        assert_knn(*query_graph, q, x, k, False)
    first = runs[True, CPU_BACKENDS[0]]
    for b in CPU_BACKENDS:
        for got, want in zip(runs[True, b], first):
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        # query-database tiles are the same products on both paths: the same bits
        np.testing.assert_array_equal(runs[False, b][1][1], runs[True, b][1][1])


@pytest.mark.skipif(len(CPU_BACKENDS) < 2, reason="needs both native and numba")
@pytest.mark.parametrize("dtype,out", [(np.float32, np.float32), (np.float64, np.float32),
                                       (np.float32, np.float64), (np.float64, np.float64)])
def test_unit_rows_and_row_hashes_native_equal_numba(dtype, out):
    """The unit-row copy every CPU search starts from and the duplicate-row hashes: the same
    bits from the native kernel and its numba twin, rows of any scale, and within float64
    rounding of x / |x|."""
    from hdlfast import _backend, _numba

    native = _backend._module("native")
    rng = np.random.default_rng(42)
    for n, d in [(300, 1), (257, 13), (64, 1000)]:
        x = (rng.standard_normal((n, d)) * 10.0 ** rng.integers(-30, 30, (n, 1))).astype(dtype)
        x[1] = -x[0]
        a, b = np.empty((n, d), out), np.empty((n, d), out)
        bad_a, bad_b = np.empty(2, np.int64), np.empty(2, np.int64)
        native.unit_rows(x, a, bad_a)
        _numba.unit_rows(x, b, bad_b)
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
        assert list(bad_a) == list(bad_b) == [-1, -1]
        ref = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
        np.testing.assert_allclose(a, ref, rtol=0, atol=4 * np.finfo(out).eps)
        words = np.ascontiguousarray(a.astype(np.float32)).view(np.uint32)
        mult = rng.integers(1, 2**62, d, dtype=np.uint64) * 2 + 1
        ha, hb = np.empty(n, np.uint64), np.empty(n, np.uint64)
        native.row_hashes(words, mult, ha)
        _numba.row_hashes(words, mult, hb)
        np.testing.assert_array_equal(ha, hb)
        np.testing.assert_array_equal(ha, words.astype(np.uint64) @ mult)
    x = rng.standard_normal((9, 4)).astype(dtype)
    x[5] = 0.0
    x[7, 2] = np.nan
    for kernel in (native.unit_rows, _numba.unit_rows):
        bad = np.empty(2, np.int64)
        kernel(x, np.empty((9, 4), out), bad)
        assert list(bad) == [7, 5]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rows_are_unit_to_float32_precision(backend):
    """rows_are_unit accepts rows normalised in float32 (numpy, torch) or by unit_rows, any
    shape, and refuses a row whose squared norm is off by more than 2 (d + 8) 2^-24, a -0, a
    zero, an Inf or a NaN row (first, last, middle row), against a float64 reference."""
    from hdlfast import _backend, _numba

    kernels = {"native": _backend._module("native"), "numba": _numba}
    are_unit = kernels[backend].rows_are_unit
    unit_rows = kernels[backend].unit_rows
    rng = np.random.default_rng(43)
    for n, d in [(1, 1), (300, 1), (257, 13), (64, 1000), (5000, 64)]:
        x = (rng.standard_normal((n, d)) * 10.0 ** rng.integers(-30, 30, (n, 1))).astype(
            np.float32)
        x[x == 0] = 1.0
        assert are_unit(x) == (n == 1 and abs(float(x[0] @ x[0]) - 1) < 1e-5)
        u = np.empty((n, d), np.float32)
        unit_rows(x, u, np.empty(2, np.int64))
        g = rng.standard_normal((n, d)).astype(np.float32) + np.float32(1e-3)
        f32 = g / np.linalg.norm(g, axis=1, keepdims=True)  # float32 arithmetic
        assert are_unit(u) and are_unit(np.ascontiguousarray(f32))
        tol = 2 * (d + 8) * 2.0 ** -24
        for row in sorted({0, n // 2, n - 1}):
            for change in ("over", "under", "inside", "-0", "zero", "inf", "nan"):
                v = u.copy()
                if change in ("over", "under", "inside"):
                    f = {"over": 1 + 1.5 * tol, "under": 1 - 1.5 * tol, "inside": 1 + tol / 4}
                    v[row] = (v[row].astype(np.float64) * np.sqrt(f[change])).astype(np.float32)
                    sq = float((v[row].astype(np.float64) ** 2).sum())
                    want = abs(sq - 1) <= tol
                    assert want == (change == "inside") or d == 1
                elif change == "-0":
                    v[row, 0] = -0.0
                    want = False
                else:
                    v[row] = {"zero": 0.0, "inf": np.inf, "nan": np.nan}[change]
                    want = False
                assert are_unit(v) == want, (n, d, row, change)


def test_normalize_reads_unit_rows_in_place_and_copies_the_rest():
    """Float32 rows of unit norm come back as a read-only view of the caller's array (no
    copy; a search gives the result of the normalised copy to float32 rounding); others are
    copied, the caller's array untouched; float64 output and float64 input always copy."""
    from hdlfast._host import normalize

    rng = np.random.default_rng(44)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    u = normalize(x, "X")
    assert u.base is None and u.flags.writeable  # a copy
    same = normalize(u, "X")
    assert np.shares_memory(same, u) and not same.flags.writeable
    with pytest.raises(ValueError):
        same[0, 0] = 1.0
    assert u.flags.writeable  # the caller's array keeps its flags
    assert not np.shares_memory(normalize(u.astype(np.float64), "X"), u)
    assert not np.shares_memory(normalize(u, "X", np.float64), u)
    v = u.copy()
    v[3, 0] *= 1.5
    w = normalize(v, "X")
    assert not np.shares_memory(w, v) and np.array_equal(v[:3], u[:3])
    t = x / np.linalg.norm(x, axis=1, keepdims=True)  # float32 normalisation: in place
    assert np.shares_memory(normalize(t, "X"), t)
    sims, idx = hdlfast.knn(t, 5)
    assert_knn(sims, idx, x, x, 5, exclude_self=True)
    try:
        import torch
    except ImportError:
        return
    tt = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    assert np.shares_memory(normalize(tt, "X"), tt.numpy())


def test_reservoir_rule():
    from hdlfast.knn import host

    assert not host.uses_reservoir(host.RESERVOIR_K - 1, 128, False)
    assert host.uses_reservoir(host.RESERVOIR_K, 128, False)
    assert not host.uses_reservoir(128, 128, True)
    assert host.uses_reservoir(128 + host.SYMMETRIC_RESERVOIR_SLACK, 128, True)


# --- tiling schedule and thread counts ----------------------------------------------------


@pytest.mark.parametrize("nb", [1, 2, 3, 4, 7, 10])
def test_symmetric_rounds_cover_each_pair_once_with_disjoint_blocks(nb):
    from hdlfast.knn.host import symmetric_rounds

    seen = []
    for pairs in symmetric_rounds(nb):
        blocks = [b for p in pairs for b in set(p)]
        assert len(blocks) == len(set(blocks)), "a block appears twice in one round"
        seen += pairs
    expected = [(i, j) for i in range(nb) for j in range(i, nb)]
    assert sorted(seen) == expected


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_results_do_not_depend_on_thread_count(backend, monkeypatch):
    x = clustered(1200, 16, seed=23)
    q = clustered(900, 16, seed=24)
    runs = []
    for threads in (1, 2, 3):
        monkeypatch.setenv("HDLFAST_NUM_THREADS", str(threads))
        runs.append((hdlfast.knn(x, 12, backend=backend, memory_budget=1 << 20),
                     hdlfast.knn(q, 12, database=x, backend=backend, memory_budget=1 << 20)))
    for (a, b), (c, d) in zip(runs, runs[1:]):
        for r1, r2 in ((a, c), (b, d)):
            np.testing.assert_array_equal(r1[0], r2[0])
            np.testing.assert_array_equal(r1[1], r2[1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("nq,k", [(1, 10), (6, 10), (6, 80), (700, 10), (6, 20_500)])
def test_few_queries_split_the_database_among_workers(backend, nq, k, monkeypatch):
    """Few queries (one block of rows) against a large database: each worker searches a part
    of it and the parts' lists are merged; the same bits for 1, 2 and 3 workers and as one
    pass without parts, heaps and reservoirs (k = 80; k = 20,500: more than a part holds, so
    no parts), exact copies across a part boundary,
    and (the internal search) query i excluded as database row i, against the float64
    reference."""
    from hdlfast import _backend
    from hdlfast._host import normalize
    from hdlfast.knn import host

    x = clustered(40_000, 16, seed=25)
    x[20_000:20_010] = x[19_990:20_000]  # copies on both sides of the middle
    q = np.concatenate([x[19_990:19_993], clustered(nq, 16, seed=26)])[:nq]
    xn = normalize(x, "X")
    kernels = _backend.select(backend, False).knn.kernels
    runs = []
    for threads, parts in ((1, True), (2, True), (3, True), (2, False)):
        monkeypatch.setenv("HDLFAST_NUM_THREADS", str(threads))
        monkeypatch.setattr(host, "_MIN_PART_ROWS", 16384 if parts else 10**9)
        runs.append([hdlfast.knn(q, k, database=x, backend=backend),
                     host.topk(kernels, xn[:nq], xn, k, True, None)])
    for other in runs[1:]:
        for (s1, i1), (s2, i2) in zip(runs[0], other):
            np.testing.assert_array_equal(s1, s2)
            np.testing.assert_array_equal(i1, i2)
    sims, idx = runs[1][0]
    assert_knn(sims, idx, q, x, k, exclude_self=False)
    sims, idx = runs[1][1]
    assert not (idx == np.arange(nq)[:, None]).any()
    full = reference_knn(x[:nq], x, x.shape[0], False)[1]
    want = np.array([r[r != i][:k] for i, r in enumerate(full)])
    assert (idx == want).mean() > 0.99  # near-ties in float32 aside
    if nq >= 3:
        sims, idx = runs[1][0]
        assert idx[0, :2].tolist() == [19_990, 20_000] and sims[0, 0] == sims[0, 1]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("budget", [None, 4 * 64 * 10])  # one tile, or 10-column tiles
def test_top1_ties_go_to_the_smaller_index_across_tiles(backend, budget):
    """k = 1 (the k-means assignment) has its own merge path: equal maxima in one tile or in
    different tiles resolve to the smaller index."""
    rng = np.random.default_rng(21)
    db = rng.standard_normal((50, 6)).astype(np.float32)
    db[35] = db[5]
    db[36] = db[5]
    db[12] = db[11]
    q = np.concatenate([db[[5, 11, 36, 12]] * 2.0, rng.standard_normal((30, 6))]).astype(
        np.float32)
    sims, idx = hdlfast.knn(q, 1, database=db, backend=backend, memory_budget=budget)
    assert idx[:4, 0].tolist() == [5, 11, 5, 11]
    assert_knn(sims, idx, q, db, 1, exclude_self=False)
    # self excluded in a self-graph: the duplicate, not the point itself, is the nearest
    sims, idx = hdlfast.knn(db, 1, backend=backend, memory_budget=budget)
    assert idx[[5, 35, 36, 11, 12], 0].tolist() == [35, 5, 5, 12, 11]


def _signs_neighbours(signs, rows, k):
    """Self-graph of 1-d rows of +-1 (every similarity exactly +-1): for each row the same-sign
    rows by index, itself excluded, then the others by index."""
    out = []
    for r in rows:
        same = np.flatnonzero(signs == signs[r])
        other = np.flatnonzero(signs != signs[r])
        out.append(np.concatenate([same[same != r], other])[:k])
    return np.array(out)


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["fused", "tiles"])
@pytest.mark.parametrize("n,k,data", [
    (3000, 300, "clustered"),  # nd <= 4,096 keys: the row goes to shared memory in one read
    (20000, 500, "clustered"),  # digit passes over the row, the last digits in shared memory
    (6000, 700, "signs"),  # ~3,000 exact ties at the k-th: the tied bucket fits shared memory
    (12000, 300, "signs"),  # ~6,000 exact ties: more than the stash, compacted from the row
])
def test_cuda_large_k_select_branches(path, n, k, data, monkeypatch):
    """Every branch of the large-k per-row select gives the exact top k with the index tie
    rule, on the fused path's similarity block and on the tiles path's products."""
    torch = pytest.importorskip("torch")
    from hdlfast.knn import cuda as knn_cuda

    monkeypatch.setenv(knn_cuda.PATH_ENV, path)
    rows = np.random.default_rng(n).choice(n, 48, replace=False)
    if data == "signs":
        signs = np.random.default_rng(n + 1).choice([-1.0, 1.0], n).astype(np.float32)
        sims, idx = hdlfast.knn(torch.from_numpy(signs[:, None]).cuda(), k)
        sims, idx = to_numpy(sims), to_numpy(idx)
        np.testing.assert_array_equal(idx[rows], _signs_neighbours(signs, rows, k))
        np.testing.assert_array_equal(sims, signs[:, None] * signs[idx])
        return
    x = clustered(n, 64, seed=n + 2, n_centres=40)
    sims, idx = hdlfast.knn(torch.from_numpy(x).cuda(), k)
    held = x.astype(np.float64)
    s, i = to_numpy(sims)[rows], to_numpy(idx)[rows]
    unit = held / np.linalg.norm(held, axis=1, keepdims=True)
    full = unit[rows] @ unit.T
    full[np.arange(rows.size), rows] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(n), full.shape), -full), axis=1)[:, :k]
    np.testing.assert_allclose(s, np.take_along_axis(full, i, 1), atol=1e-5)
    np.testing.assert_allclose(s, np.take_along_axis(full, order, 1), atol=1e-5)
    assert all(len(set(r)) == k for r in i), "duplicate neighbours"
    srt = -np.sort(-full, axis=1)[:, : k + 1]
    clear = np.abs(np.diff(srt, axis=1)).min(axis=1) > 4e-5
    np.testing.assert_array_equal(i[clear], order[clear])
