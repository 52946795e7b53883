"""CUDA glue for ``hdlfast._cuda``: inverse norms, workspace, query blocks, out-of-memory retry.

The kernels read the caller's (contiguous) arrays in place and write outputs allocated in the
caller's kind, all on the caller's current stream. Only this module and ``_arrays`` touch GPU
memory from Python.
"""
from __future__ import annotations

import numpy as np

from . import _arrays, _checks

_INT32_MAX = np.iinfo(np.int32).max
# Share of the free device memory one call may use for its workspace.
FREE_FRACTION = 0.5


def inverse_norms(cuda, x, name: str):
    """float32 inverse row norms of ``x`` on its device; NaN/Inf or zero rows raise."""
    n, d = x.shape
    inv = _arrays.empty(x, (n,), "float32")
    bad = _arrays.full(x, (2,), _INT32_MAX, "int32")
    dtype = _arrays.DTYPE_CODES[_arrays.info(x, name).dtype]
    cuda.row_inv_norms(_arrays.data_ptr(x), n, d, dtype, _arrays.data_ptr(inv),
                       _arrays.data_ptr(bad), _arrays.cuda_stream(x))
    nonfinite, zero = (int(v) for v in _arrays.to_numpy(bad))
    _checks.bad_rows(name, None if nonfinite == _INT32_MAX else nonfinite,
                     None if zero == _INT32_MAX else zero)
    return inv


def topk(cuda, q, db, k: int, exclude_self: bool, allow_tf32: bool,
         memory_budget: int | None):
    """(sims, idx) on the device of ``q``; ``db`` None means the self-graph."""
    name_db = "queries" if db is None else "database"
    with _arrays.device_ctx(q):
        q = _arrays.gpu_contiguous(q)
        db = q if db is None else _arrays.gpu_contiguous(db)
        dtype_name = _arrays.info(q, "queries").dtype
        if dtype_name == "float64":
            raise TypeError("queries: float64 is not supported on the GPU; use float32, "
                            "float16 or bfloat16")
        if _arrays.info(db, name_db).dtype != dtype_name:
            raise TypeError(f"queries and database must have the same dtype on the GPU, got "
                            f"{dtype_name} and {_arrays.info(db, name_db).dtype}")
        q_inv = inverse_norms(cuda, q, "queries")
        db_inv = q_inv if db is q else inverse_norms(cuda, db, name_db)
        nq, d = q.shape
        nd = db.shape[0]
        dtype = _arrays.DTYPE_CODES[dtype_name]
        sims = _arrays.empty(q, (nq, k), "float32")
        idx = _arrays.empty(q, (nq, k), "int64")
        budget = memory_budget
        if budget is None:
            budget = int(_arrays.gpu_free_bytes(q) * FREE_FRACTION)
        block = _first_block(cuda, nq, nd, d, k, dtype, budget)
        elem = _arrays.itemsize(q)
        stream = _arrays.cuda_stream(q)
        start = 0
        while start < nq:
            stop = min(start + block, nq)
            try:
                ws_bytes = cuda.knn_workspace_bytes(stop - start, nd, d, k, dtype)
                ws = _arrays.empty(q, (max(ws_bytes, 1),), "uint8")
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not _arrays.is_out_of_memory(exc) or block == 1:
                    raise
                block = max(block // 2, 1)
                continue
            cuda.knn(_arrays.data_ptr(q) + start * d * elem, stop - start, _arrays.data_ptr(db),
                     nd, d, dtype, _arrays.data_ptr(q_inv) + 4 * start, _arrays.data_ptr(db_inv),
                     k, start, exclude_self, allow_tf32, _arrays.data_ptr(sims) + 4 * start * k,
                     _arrays.data_ptr(idx) + 8 * start * k, _arrays.data_ptr(ws), ws_bytes,
                     stream)
            del ws
            start = stop
        return sims, idx


def _first_block(cuda, nq, nd, d, k, dtype, budget) -> int:
    """Largest block nq // 2**i whose workspace fits the budget (1 if none does)."""
    block = nq
    while block > 1 and cuda.knn_workspace_bytes(block, nd, d, k, dtype) > budget:
        block //= 2
    return max(block, 1)
