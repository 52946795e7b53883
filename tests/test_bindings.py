"""The native module's boundary: every kernel takes numpy arrays and checks each one before
any work. For every array argument of every binding, a wrong dtype, a strided view, a wrong
shape, a read-only output and a non-numpy object each raise a Python exception (never a
crash, never a silent write to a copy), and the valid call still works. An exception thrown
in a worker thread reaches Python too."""
import numpy as np
import pytest

from conftest import strided_view
from hdlfast import _backend

mod = _backend._module("native")
pytestmark = pytest.mark.skipif(mod is None, reason="the native module is not built")

N, K, D, C, P = 12, 3, 4, 5, 20


def graph():
    rng = np.random.default_rng(0)
    idx = np.stack([rng.permutation(np.delete(np.arange(N), i))[:K] for i in range(N)])
    sims = np.sort(rng.random((N, K)).astype(np.float32), axis=1)[:, ::-1].copy()
    indptr = np.empty(N + 1, np.int64)
    mod.reverse_indptr(idx, K, indptr)
    src = np.empty(indptr[-1], np.int32)
    mod.reverse_fill(idx, K, indptr, src)
    return idx, sims, indptr, src


def calls():
    """name -> (function, positional args (fresh arrays each time), indices of the outputs)."""
    idx, sims, indptr, src = graph()
    labels = np.full(N, -1, np.int64)
    labels[:3] = [0, 1, 2]
    f32, f64, i64 = np.float32, np.float64, np.int64

    def heaps():
        return np.full((N, K), -np.inf, f32), np.full((N, K), -1, i64)

    hs, hi = heaps()
    q = np.random.default_rng(1).random((N, C)).astype(f32)
    return {
        "merge_rows": (mod.merge_rows, [np.ones((4, 6), f32), 0, 0, hs, hi, False], [3, 4]),
        "merge_cols": (mod.merge_cols, [np.ones((4, 6), f32), 0, 0, *heaps()], [3, 4]),
        "finalize": (mod.finalize, [*heaps()], [0, 1]),
        "rows_are_unit": (mod.rows_are_unit, [np.ones((N, D), f32)], []),
        "unit_rows": (mod.unit_rows, [np.ones((N, D), f32), np.empty((N, D), f32),
                                      np.empty(2, i64)], [1, 2]),
        "row_hashes": (mod.row_hashes, [np.ones((N, D), np.uint32), np.ones(D, np.uint64),
                                        np.empty(N, np.uint64)], [2]),
        "reservoir_merge": (mod.reservoir_merge, [np.ones((4, 6), f32), 0, 0,
                                                  np.empty((4, 2 * K), np.uint64),
                                                  np.zeros(4, i64), np.zeros(4, np.uint64), K,
                                                  False], [3, 4, 5]),
        "reservoir_finish": (mod.reservoir_finish, [np.zeros((4, 2 * K), np.uint64),
                                                    np.full(4, K + 1, i64),
                                                    np.empty((4, K), f32), np.empty((4, K), i64)],
                             [0, 2, 3]),
        "reverse_indptr": (mod.reverse_indptr, [idx, K, np.empty(N + 1, i64)], [2]),
        "reverse_fill": (mod.reverse_fill, [idx, K, indptr, np.empty(len(src), np.int32)],
                         [3]),
        "vote_rows": (mod.vote_rows, [idx, sims, labels, True, np.empty(N, i64),
                                      np.empty(N, f64)], [4, 5]),
        "propagate_levels": (mod.propagate_levels,
                             [idx, sims, K, indptr, src, labels.copy(), np.zeros(N, f64),
                              np.zeros(N, np.int32), np.zeros(N, np.int8), True],
                             [5, 6, 7, 8]),
        "propagate_sequential": (mod.propagate_sequential,
                                 [idx, sims, K, indptr, src, labels.copy(), np.zeros(N, f64),
                                  np.zeros(N, np.int32), np.zeros(N, np.int8), True],
                                 [5, 6, 7, 8]),
        "search": (mod.search, [idx, sims, K, indptr, src, labels, np.arange(3, N, dtype=i64),
                                8, True, np.empty(N - 3, i64), np.empty(N - 3, f64),
                                np.empty(N - 3, i64), np.empty(N - 3, i64)], [9, 10, 11, 12]),
        "sk_prepare": (mod.sk_prepare, [q, np.empty_like(q), 2.0, np.empty(N, f64)], [1, 3]),
        "sk_prepare_power": (mod.sk_prepare_power, [q.astype(f64), np.empty_like(q), 3,
                                                    np.empty(N, f64)], [1, 3]),
        "sk_colsum": (mod.sk_colsum, [q, np.ones(N, f64), np.empty(C, f64)], [2]),
        "sk_iterate": (mod.sk_iterate, [q, np.ones(C, f64), np.full(N, 1 / N), np.empty(N, f64),
                                        np.empty(C, f64)], [3, 4]),
        "sk_finalize": (mod.sk_finalize, [q.copy(), np.ones(C, f64), np.full(N, 1 / N),
                                          np.empty(N, i64), np.empty(C, f64)], [0, 3, 4]),
        "pair_dots": (mod.pair_dots, [np.ones((N, D), f64), np.ones((6, D), f64),
                                      np.arange(P, dtype=i64) % N, np.arange(P, dtype=i64) % 6,
                                      np.empty(P, f64)], [4]),
        "mix_rows": (mod.mix_rows, [np.ones((N, D), f32), np.ones((6, D), f32),
                                    np.arange(P, dtype=i64) % N, np.arange(P, dtype=i64) % 6,
                                    np.full(P, 0.5, f32), np.empty((P, D), f32)], [5]),
        "top2_update": (mod.top2_update, [q, np.ones(C, f32), 0, np.full(N, -np.inf, f32),
                                          np.zeros(N, i64), np.full(N, -np.inf, f32)],
                        [3, 4, 5]),
        "set_bounds": (mod.set_bounds, [np.array([0, 3, N - 1], i64), np.ones(3, f32),
                                        np.zeros(3, i64), np.zeros(3, f32), np.ones(N, f64),
                                        np.full(N, 1e-6), 0.0, np.zeros(N, i64),
                                        np.empty(N, f64), np.empty(N, f64)], [7, 8, 9]),
        "chunk_sums": (mod.chunk_sums, [np.ones((N, D), f32), np.full(N, 0.5, f32),
                                        np.arange(N, dtype=i64) % 3, np.full(3, -1, np.int32),
                                        np.empty(3, i64), np.empty((3, D), f64),
                                        np.empty(3, i64)], [3, 4, 5, 6]),
        "chunk_sums_update": (mod.chunk_sums_update,
                              [np.ones((N, D), f32), np.full(N, 0.5, f32),
                               np.arange(N, dtype=i64) % 3, np.arange(N, dtype=i64) % 2,
                               np.zeros(3, np.int8), np.full(3, -1, np.int32),
                               np.empty(3, i64), np.empty((3, D), f64), np.empty(3, i64), 0],
                              [4, 5, 6, 7, 8]),
        "fold_sums": (mod.fold_sums, [np.array([2, 0, 1], i64), 3, np.ones((3, D), f64),
                                      np.ones(3, i64), np.zeros((3, D), f64),
                                      np.zeros(3, i64)], [4, 5]),
        "row_sq_dists": (mod.row_sq_dists, [np.ones((N, D), f32), np.ones((3, D), f64),
                                            np.arange(N, dtype=i64) % 3, np.empty(N, f64)],
                         [3]),
        "pp_trials": (mod.pp_trials, [np.ones((N, D), f32), np.ones(N, f64),
                                      np.array([0, N - 1, 3], i64), np.full(N, np.inf),
                                      np.empty((N, 3), f64), np.empty(3, f64)], [4, 5]),
    }


NAMES = sorted(calls())
ARRAY_ARGS = [(name, i) for name in NAMES for i, v in enumerate(calls()[name][1])
              if isinstance(v, np.ndarray) and v.size > 1]


@pytest.mark.parametrize("name", NAMES)
def test_valid_call_works(name):
    fn, args, _ = calls()[name]
    fn(*args)


TWO_FLOAT_TYPES = {("sk_prepare_power", 0),  # float32 or float64 probabilities
                   ("unit_rows", 0), ("unit_rows", 1)}  # float32 or float64 rows


@pytest.mark.parametrize("name,i", ARRAY_ARGS)
def test_wrong_dtype(name, i):
    fn, args, _ = calls()[name]
    wrong = np.float64 if args[i].dtype != np.float64 else np.float32
    if (name, i) in TWO_FLOAT_TYPES:
        fn(*[a.astype(np.float32) if j == i else a for j, a in enumerate(args)])  # both work
        wrong = np.int64
    args[i] = args[i].astype(wrong)
    with pytest.raises(TypeError, match="must be a"):
        fn(*args)


@pytest.mark.parametrize("name,i", ARRAY_ARGS)
def test_strided_view(name, i):
    fn, args, _ = calls()[name]
    args[i] = strided_view(args[i])
    with pytest.raises(ValueError, match="C-contiguous"):
        fn(*args)


@pytest.mark.parametrize("name,i", ARRAY_ARGS)
def test_wrong_number_of_dimensions(name, i):
    fn, args, _ = calls()[name]
    a = args[i]
    args[i] = a.reshape(-1) if a.ndim == 2 else a[None]
    with pytest.raises(ValueError, match="dimension"):
        fn(*args)


@pytest.mark.parametrize("name,i", [(n, i) for n, i in ARRAY_ARGS if i > 0])
def test_size_that_disagrees_with_the_first_array(name, i):
    """Sizes come from the arrays: a later array one row short of what the first implies is
    refused (the arrays whose length is free, such as a label table, are let through)."""
    fn, args, _ = calls()[name]
    args[i] = args[i][:-1]
    free = {("search", 6)}  # the targets: any number
    if (name, i) in free:
        return
    with pytest.raises(ValueError, match="has size|dimension|outside"):
        fn(*args)


@pytest.mark.parametrize("name,i,bad", [
    ("reverse_indptr", 0, N), ("reverse_fill", 0, -1), ("vote_rows", 0, N),
    ("search", 6, N), ("set_bounds", 0, N), ("chunk_sums", 2, 3), ("chunk_sums_update", 2, 3),
    ("chunk_sums_update", 3, -1), ("fold_sums", 0, 3), ("row_sq_dists", 2, -1),
    ("pp_trials", 2, N), ("pair_dots", 2, N), ("pair_dots", 3, -1),
    ("mix_rows", 2, -1), ("mix_rows", 3, 6),
])
def test_indices_the_kernel_dereferences_are_in_range(name, i, bad):
    fn, args, _ = calls()[name]
    args[i] = args[i].copy()
    args[i].reshape(-1)[-1] = bad
    with pytest.raises(ValueError, match="outside"):
        fn(*args)


@pytest.mark.parametrize("name,i", ARRAY_ARGS)
def test_not_a_numpy_array(name, i):
    fn, args, _ = calls()[name]
    args[i] = args[i].tolist()  # a list (a torch or cupy array is refused the same way)
    with pytest.raises(TypeError):
        fn(*args)


@pytest.mark.parametrize("name,i", [(n, i) for n in NAMES for i in calls()[n][2]])
def test_read_only_output(name, i):
    fn, args, _ = calls()[name]
    args[i].flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        fn(*args)


def test_torch_tensor_is_refused():
    torch = pytest.importorskip("torch")
    fn, args, _ = calls()["sk_colsum"]
    args[0] = torch.from_numpy(args[0])
    with pytest.raises(TypeError):
        fn(*args)


def test_power_below_one_is_refused():
    fn, args, _ = calls()["sk_prepare_power"]
    args[2] = 0
    with pytest.raises(ValueError, match="power must be >= 1"):
        fn(*args)


@pytest.mark.parametrize("bad_alloc,exc", [(True, MemoryError), (False, RuntimeError)])
def test_exception_in_a_worker_thread_reaches_python(bad_alloc, exc, monkeypatch):
    monkeypatch.setenv("HDLFAST_NUM_THREADS", "4")
    with pytest.raises(exc):
        mod._raise_in_worker(bad_alloc)
    fn, args, _ = calls()["sk_colsum"]  # the process lives on and the kernels still run
    fn(*args)
