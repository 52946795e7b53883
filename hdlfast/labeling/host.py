"""The labeling kernels of the compiled module under the names and arguments of
``numba_kernels`` (the labeling drivers in ``hdlfast.labeling`` run on the host for every
backend; ``cuda.CudaLabeling`` is the GPU twin)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def native_kernels(mod):
    """Kernels of ``mod`` (csrc/cpu/hdl.cpp); only the reverse graph takes two native calls
    (its size is known after the first)."""

    def reverse_csr(idx, k, n):
        indptr = np.empty(n + 1, np.int64)
        mod.reverse_indptr(idx, k, indptr)
        src = np.empty(indptr[-1], np.int32)
        mod.reverse_fill(idx, k, indptr, src)
        return indptr, src

    return SimpleNamespace(reverse_csr=reverse_csr, vote_rows=mod.vote_rows,
                           propagate_levels=mod.propagate_levels,
                           propagate_sequential=mod.propagate_sequential, search=mod.search)
