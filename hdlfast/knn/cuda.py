"""kNN on the GPU through ``hdlfast._cuda``: safe row scales, inverse norms, workspace, query
blocks and the out-of-memory retry.

The kernels read the caller's (contiguous) arrays in place and write outputs allocated in the
caller's kind, all on the caller's current stream. Only the ``cuda`` modules of the operations
and ``_arrays`` touch GPU memory from Python.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from .. import _arrays, _checks

_INT32_MAX = np.iinfo(np.int32).max

# The two GPU kNN paths. "fused": hdlfast's tensor-core kernels compute each tile's products
# and select in one pass. "tiles": the framework's matrix product (cuBLAS, on the caller's
# stream) writes a query block's float32 products against the whole database, then hdlfast's
# exact selection and sort kernels take the top k (the faiss / cuVS structure). Both give the
# same graph up to float32 rounding of the products. HDLFAST_GPU_KNN chooses; the default is
# the one the device check (benchmarks/gpu_check.sh) measures faster; until a GPU has run it,
# "fused".
PATH_ENV = "HDLFAST_GPU_KNN"
PATHS = ("fused", "tiles")
DEFAULT_PATH = "fused"
_MAX_SELECT_ROWS = 65535  # rows per knn_select_products call (a grid dimension)


def gpu_path() -> str:
    """The GPU kNN path of this process: HDLFAST_GPU_KNN if set, else DEFAULT_PATH."""
    path = os.environ.get(PATH_ENV, "") or DEFAULT_PATH
    if path not in PATHS:
        raise ValueError(f"{PATH_ENV}={path!r}: must be one of {', '.join(PATHS)}")
    return path


def operand(x, name: str):
    """``x`` as the kernels read it: C-contiguous on its device, float64 cast to float32 (a
    copy: the kernels compute in float32 at best, as the public docstrings say)."""
    x = _arrays.gpu_contiguous(x)
    if _arrays.info(x, name).dtype == "float64":
        x = _arrays.astype(x, "float32")
    return x


def dtype_code(x, name: str) -> int:
    """The kernels' dtype code of a GPU array from :func:`operand`."""
    return _arrays.DTYPE_CODES[_arrays.info(x, name).dtype]


def inverse_norms(cuda, x, name: str):
    """float32 inverse row norms of ``x`` on its device; NaN/Inf or zero rows raise."""
    n, d = x.shape
    inv = _arrays.empty(x, (n,), "float32")
    bad = _arrays.full(x, (2,), _INT32_MAX, "int32")
    cuda.row_inv_norms(_arrays.cuda_view(x), inv, bad, _arrays.cuda_stream(x))
    nonfinite, zero = (int(v) for v in _arrays.to_numpy(bad))
    _checks.bad_rows(name, None if nonfinite == _INT32_MAX else nonfinite,
                     None if zero == _INT32_MAX else zero)
    return inv


_SAFE_PEAKS = (2.0 ** -40, 2.0 ** 40)


def safe_rows(x, name: str):
    """``x`` itself when every row's largest magnitude lies within 2**+-40, where the kernels'
    float32 squares and dot products can neither overflow nor underflow; else a copy with each
    row scaled by the power of two that brings its largest magnitude near 1 (exact: cosines
    unchanged to the last bit), so tiny (1e-40) and huge
    (1e38) rows work as on the CPU. NaN/Inf and zero rows raise here, naming ``name``."""
    peaks = _arrays.row_peaks(x)
    _checks.bad_peaks(peaks, name)
    if _SAFE_PEAKS[0] <= peaks.min() and peaks.max() <= _SAFE_PEAKS[1]:
        return x
    return _arrays.scale_rows_to_unit_peak(x, peaks)


def topk(cuda, q, db, k: int, exclude_self: bool, allow_tf32: bool,
         memory_budget: int | None, q_name: str = "queries", db_name: str = "database"):
    """(sims, idx) on the device of ``q``; ``db`` None means the self-graph. The names are
    the caller's argument names, used in error messages."""
    name_db = q_name if db is None else db_name
    with _arrays.device_ctx(q):
        q = safe_rows(operand(q, q_name), q_name)
        dtype = dtype_code(q, q_name)
        db = q if db is None else safe_rows(operand(db, db_name), db_name)
        dtype_name = _arrays.info(q, q_name).dtype
        if _arrays.info(db, name_db).dtype != dtype_name:
            raise TypeError(f"{q_name} and {name_db} must have the same dtype on the GPU, got "
                            f"{dtype_name} and {_arrays.info(db, name_db).dtype}")
        q_inv = inverse_norms(cuda, q, q_name)
        db_inv = q_inv if db is q else inverse_norms(cuda, db, name_db)
        nq, d = q.shape
        nd = db.shape[0]
        sims = _arrays.empty(q, (nq, k), "float32")
        idx = _arrays.empty(q, (nq, k), "int64")
        budget = memory_budget
        if budget is None:
            budget = _arrays.gpu_budget(q)
        if gpu_path() == "tiles":
            _tiles(cuda, q, db, q_inv, db_inv, k, exclude_self, allow_tf32, budget, sims, idx)
            return sims, idx
        block, ws = _allocate(_first_block(cuda, nq, nd, d, k, dtype, budget), "workspace",
                              lambda b: _arrays.empty(q, (max(cuda.knn_workspace_bytes(
                                  b, nd, d, k, dtype), 1),), "uint8"))
        stream = _arrays.cuda_stream(q)
        q_view, db_view = _arrays.cuda_view(q), _arrays.cuda_view(db)
        for start in range(0, nq, block):  # a smaller last block needs less workspace
            stop = min(start + block, nq)
            cuda.knn(q_view[start:stop], db_view, q_inv[start:stop], db_inv, start,
                     exclude_self, allow_tf32, sims[start:stop], idx[start:stop], ws, stream)
        return sims, idx


def _allocate(block: int, what: str, allocate):
    """(block, allocate(block)) for the largest block <= ``block`` whose buffers the GPU can
    give: on out of memory the block of queries halves, with a RuntimeWarning."""
    while True:
        try:
            return block, allocate(block)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            if not _arrays.is_out_of_memory(exc) or block == 1:
                raise
            block = max(block // 2, 1)
            warnings.warn(f"hdlfast.knn: out of GPU memory for the {what}; retrying with "
                          f"blocks of {block} queries", RuntimeWarning, stacklevel=6)


def _tiles(cuda, q, db, q_inv, db_inv, k, exclude_self, allow_tf32, budget, sims, idx):
    """The "tiles" path: per query block, float32 products by the framework's matmul into one
    preallocated (block, nd) buffer, then knn_select_products. Blocks halve on out of memory."""
    nq, nd = q.shape[0], db.shape[0]

    def need(rows):
        return 4 * rows * nd + cuda.knn_select_workspace_bytes(rows, nd, k)

    block = min(nq, _MAX_SELECT_ROWS)
    while block > 1 and need(block) > budget:
        block //= 2
    b_op = _arrays.product_operand(db)
    stream = _arrays.cuda_stream(q)
    block, (products, ws) = _allocate(block, "product block", lambda b: (
        _arrays.empty(q, (b, nd), "float32"),
        _arrays.empty(q, (max(cuda.knn_select_workspace_bytes(b, nd, k), 1),), "uint8")))
    for start in range(0, nq, block):
        stop = min(start + block, nq)
        p = products[:stop - start]
        _arrays.products_f32(_arrays.product_operand(q[start:stop]), b_op, p, allow_tf32)
        cuda.knn_select_products(p, q_inv[start:stop], db_inv, start, exclude_self,
                                 sims[start:stop], idx[start:stop], ws, stream)


def _first_block(cuda, nq, nd, d, k, dtype, budget) -> int:
    """Largest block nq // 2**i whose workspace fits the budget (1 if none does). Halving stops
    where it no longer shrinks the workspace (small k: a fixed buffer for the database splits
    of few-query calls, a few MB)."""
    block = nq
    need = cuda.knn_workspace_bytes(block, nd, d, k, dtype)
    while block > 1 and need > budget:
        smaller = cuda.knn_workspace_bytes(block // 2, nd, d, k, dtype)
        if smaller >= need:
            break
        block, need = block // 2, smaller
    return max(block, 1)


class CudaKNN:
    """The kNN search of the CUDA backend: fused tensor-core tiles on the device of the
    queries, results in the caller's array kind."""

    def __init__(self, cuda_module):
        self.mod = cuda_module

    def __call__(self, q, db, k, *, exclude_self, allow_tf32, memory_budget, q_name, db_name,
                 progress=False):
        del progress  # one GPU call: nothing to show
        return topk(self.mod, q, db, k, exclude_self, allow_tf32, memory_budget, q_name,
                    db_name)

    def pair(self, q, db, kq, kd, *, allow_tf32, memory_budget, floors=(None, None)):
        """As ``HostKNN.pair``, by two fused searches (the GPU kernel keeps no columns;
        ``floors`` are not needed there)."""
        del floors
        out = []
        for a, b, k in ((q, db, kq), (db, q, kd)):
            s, i = self(a, b, k, exclude_self=False, allow_tf32=allow_tf32,
                        memory_budget=memory_budget, q_name="X", db_name="X")
            out.append((_arrays.to_numpy(s), _arrays.to_numpy(i)))
        return out
