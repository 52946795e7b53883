"""The CUDA module's boundary, checked without a GPU: every binding takes CUDA arrays (anything
with ``__cuda_array_interface__``), derives the shapes from them and checks each one before
any launch. Arrays here are stand-ins that describe host (numpy) memory through the CUDA
array interface: a wrong dtype, a strided view, a wrong shape, a read-only output or a
non-CUDA object each raise TypeError or ValueError naming the argument, and a well-formed
call stops at the device check (host memory, or no driver at all), never reaching a launch."""
import numpy as np
import pytest

from conftest import strided_view
from hdlfast import _backend

mod = _backend._module("cuda")
pytestmark = pytest.mark.skipif(mod is None, reason="the CUDA module is not built")

N, K, D, C = 12, 3, 4, 5


class HostAsCuda:
    """A numpy array described through the CUDA array interface (version 3)."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr
        strides = None if arr.flags.c_contiguous else arr.strides
        self.__cuda_array_interface__ = {
            "shape": arr.shape, "typestr": arr.dtype.str, "strides": strides, "version": 3,
            "data": (arr.__array_interface__["data"][0], not arr.flags.writeable)}


def calls():
    """name -> (function, positional args as numpy arrays or scalars, indices of outputs)."""
    f32, f64, i64, i32 = np.float32, np.float64, np.int64, np.int32
    x = np.ones((N, D), f32)
    ws = np.zeros(64, np.uint8)
    q = np.ones((N, C), f32)
    idx = np.zeros((N, K), i64)
    sims = np.ones((N, K), f32)
    indptr = np.zeros(N + 1, i64)
    src = np.zeros(N * K, i32)
    return {
        "row_inv_norms": (mod.row_inv_norms, [x, np.empty(N, f32), np.empty(2, i32), 0], [1, 2]),
        "knn": (mod.knn, [x, x.copy(), np.ones(N, f32), np.ones(N, f32), 0, False, False,
                          np.empty((N, K), f32), np.empty((N, K), i64), ws, 0], [7, 8, 9]),
        "knn_select_products": (mod.knn_select_products,
                                [np.ones((N, N), f32), np.ones(N, f32), np.ones(N, f32), 0, False,
                                 np.empty((N, K), f32), np.empty((N, K), i64), ws, 0],
                                [0, 5, 6, 7]),
        "reverse_csr": (mod.reverse_csr, [idx, np.empty(N + 1, i64), np.empty(N * K, i32), ws,
                                          0], [1, 2, 3]),
        "propagate_levels": (mod.propagate_levels,
                             [idx, sims, indptr, src, np.zeros(N, i64), np.zeros(N, f64),
                              np.zeros(N, i32), np.zeros(N, np.int8), True, ws, 0],
                             [4, 5, 6, 7, 9]),
        "search": (mod.search, [idx, sims, indptr, src, 0, np.zeros(N, i64),
                                np.arange(3, dtype=i64), 8, True, np.empty(3, i64),
                                np.empty(3, f64), np.empty(3, i64), np.empty(3, i64), 3, ws, 0],
                   [9, 10, 11, 12, 14]),
        "vote_rows": (mod.vote_rows, [idx, sims, np.zeros(N, i64), True, np.empty(N, i64),
                                      np.empty(N, f64), 0], [4, 5]),
        "sk_prepare": (mod.sk_prepare, [q, 2.0, np.empty_like(q), np.empty(N, f64),
                                        np.empty(1, i32), 0], [2, 3, 4]),
        "sk_colsum": (mod.sk_colsum, [q, np.ones(N, f64), ws, np.empty(C, f64), 0], [2, 3]),
        "sk_iterate": (mod.sk_iterate, [q, np.ones(C, f64), np.ones(N, f64), np.empty(N, f64),
                                        ws, np.empty(C, f64), np.empty(1, i32), 0],
                       [3, 4, 5, 6]),
        "sk_finalize": (mod.sk_finalize, [q.copy(), np.ones(C, f64), np.empty(N, i64), 0],
                        [0, 2]),
        "cluster_sums": (mod.cluster_sums, [x, None, np.zeros(N, i64), np.empty((2, D), f64),
                                            np.empty(2, i64), ws, 0], [3, 4, 5]),
    }


NAMES = sorted(calls())
ARRAY_ARGS = [(name, i) for name in NAMES for i, v in enumerate(calls()[name][1])
              if isinstance(v, np.ndarray) and v.size > 1]


def run(fn, args):
    return fn(*[HostAsCuda(a) if isinstance(a, np.ndarray) else a for a in args])


@pytest.mark.parametrize("name", NAMES)
def test_well_formed_call_stops_at_the_device_check(name):
    fn, args, _ = calls()[name]
    with pytest.raises(ValueError, match="host memory|not CUDA device memory"):
        run(fn, args)


@pytest.mark.parametrize("name,i", ARRAY_ARGS)
def test_wrong_dtype(name, i):
    fn, args, _ = calls()[name]
    wrong = np.float64 if args[i].dtype != np.float64 else np.float32
    if args[i].dtype == np.float32 and name in ("knn", "row_inv_norms", "sk_prepare",
                                                 "cluster_sums") and i <= 1:
        wrong = np.float64  # the float inputs: float32, float16, bfloat16 bits
    args[i] = args[i].astype(wrong)
    with pytest.raises(TypeError, match="must be a"):
        run(fn, args)


@pytest.mark.parametrize("name,i", ARRAY_ARGS)
def test_strided_view(name, i):
    fn, args, _ = calls()[name]
    args[i] = strided_view(args[i])
    with pytest.raises(ValueError, match="C-contiguous"):
        run(fn, args)


@pytest.mark.parametrize("name,i", ARRAY_ARGS)
def test_wrong_number_of_dimensions(name, i):
    fn, args, _ = calls()[name]
    a = args[i]
    args[i] = a.reshape(-1) if a.ndim == 2 else a[None]
    with pytest.raises(ValueError, match="dimension"):
        run(fn, args)


@pytest.mark.parametrize("name,i", [(n, i) for n, i in ARRAY_ARGS if i > 0])
def test_size_that_disagrees_with_the_first_array(name, i):
    fn, args, _ = calls()[name]
    args[i] = args[i][:-1]
    free = {("knn", 1), ("knn", 3), ("knn", 9),
            ("knn_select_products", 7), ("reverse_csr", 1), ("reverse_csr", 3),
            ("propagate_levels", 3), ("propagate_levels", 9), ("search", 3),
            ("search", 6), ("search", 14), ("vote_rows", 2), ("sk_colsum", 2),
            ("sk_iterate", 4), ("cluster_sums", 3), ("cluster_sums", 5)}  # free or set the others
    if (name, i) in free:
        return
    with pytest.raises(ValueError, match="has size|dimension"):
        run(fn, args)


@pytest.mark.parametrize("name,i", ARRAY_ARGS)
def test_not_a_cuda_array(name, i):
    fn, args, _ = calls()[name]
    wrapped = [HostAsCuda(a) if isinstance(a, np.ndarray) else a for a in args]
    wrapped[i] = args[i]  # a plain numpy array has no CUDA interface
    with pytest.raises(TypeError, match="must be a CUDA array"):
        fn(*wrapped)


@pytest.mark.parametrize("name,i", [(n, i) for n in NAMES for i in calls()[n][2]])
def test_read_only_output(name, i):
    fn, args, _ = calls()[name]
    args[i].flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        run(fn, args)


def test_search_nnz_is_within_src():
    fn, args, _ = calls()["search"]
    args[4] = N * K + 1
    with pytest.raises(ValueError, match="nnz"):
        run(fn, args)


def test_bfloat16_bits_cross_as_int16():
    """torch's interface has no bfloat16 type string: the float inputs take "<i2" as its bits;
    any other integer type is refused."""
    fn, args, _ = calls()["row_inv_norms"]
    args[0] = np.zeros((N, D), np.int16)
    with pytest.raises(ValueError, match="host memory|not CUDA device memory"):
        run(fn, args)
    args[0] = np.zeros((N, D), np.int32)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        run(fn, args)
