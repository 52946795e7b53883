"""The one place that picks a backend: cuda, native (C++/OpenMP) or numba.

Choice: the ``backend=`` argument, else the ``HDLFAST_BACKEND`` environment variable, else by
where the data lives (GPU data -> cuda; CPU data -> native, or numba when the C++ module was
not built). CPU backends accept GPU arrays too (copied to the host, results copied back), which
is how results are cross-checked between backends.
"""
from __future__ import annotations

import functools
import importlib
import os

from . import _arrays, _checks, _cpu

NAMES = ("cuda", "native", "numba")


@functools.lru_cache(maxsize=None)
def _module(name: str):
    """The compiled module or package behind a backend, or None when it cannot be imported."""
    target = {"cuda": "hdlfast._cuda", "native": "hdlfast._native",
              "numba": "hdlfast.numba_kernels"}[name]
    try:
        return importlib.import_module(target)
    except ImportError:
        return None


def built(name: str) -> bool:
    return _module(name) is not None


def usable(name: str) -> bool:
    mod = _module(name)
    if mod is None:
        return False
    return mod.device_count() > 0 if name == "cuda" else True


class _NativeKernels:
    """Adapts the pointer-taking native kernels to the array signature of numba_kernels."""

    def __init__(self, mod):
        self._m = mod

    def merge_rows(self, tile, row0, col0, heap_s, heap_i, exclude_self):
        rows, cols = tile.shape
        self._m.merge_rows(tile.ctypes.data, rows, cols, cols, row0, col0, heap_s.ctypes.data,
                           heap_i.ctypes.data, heap_s.shape[1], exclude_self)

    def merge_cols(self, tile, row0, col0, heap_s, heap_i):
        rows, cols = tile.shape
        self._m.merge_cols(tile.ctypes.data, rows, cols, cols, row0, col0, heap_s.ctypes.data,
                           heap_i.ctypes.data, heap_s.shape[1])

    def finalize(self, heap_s, heap_i):
        self._m.finalize(heap_s.ctypes.data, heap_i.ctypes.data, *heap_s.shape)


class CPUBackend:
    """Blocked BLAS tiles + a merge kernel (native or numba); works on host copies."""

    on_gpu = False

    def __init__(self, name: str, kernels):
        self.name = name
        self.kernels = kernels

    def knn(self, q, db, k, *, exclude_self, allow_tf32, memory_budget, q_name, db_name):
        del allow_tf32  # fp32 BLAS on the CPU
        qn = _cpu.normalize(_arrays.host_float32(q), q_name)
        dn = None if db is None else _cpu.normalize(_arrays.host_float32(db), db_name)
        sims, idx = _cpu.topk(self.kernels, qn, dn, k, exclude_self, memory_budget)
        return _arrays.from_host(sims, q), _arrays.from_host(idx, q)


class CUDABackend:
    """Fused tensor-core tiles with on-chip k-selection (hdlfast._cuda)."""

    name = "cuda"
    on_gpu = True

    def __init__(self, mod):
        self.mod = mod

    def knn(self, q, db, k, *, exclude_self, allow_tf32, memory_budget, q_name, db_name):
        from . import _gpu

        del q_name, db_name
        return _gpu.topk(self.mod, q, db, k, exclude_self, allow_tf32, memory_budget)


def select(backend: str | None, on_gpu: bool):
    """The backend object for data on the GPU (``on_gpu``) or the host."""
    name = backend if backend is not None else os.environ.get("HDLFAST_BACKEND") or None
    if name is not None:
        _checks.choice(name, "backend", NAMES)
    elif on_gpu and usable("cuda"):
        name = "cuda"
    else:
        name = "native" if built("native") else "numba"
    if not usable(name):
        reason = "no CUDA device is visible" if built(name) else "it is not installed"
        raise RuntimeError(f"backend {name!r} cannot be used here: {reason} (see hdlfast.info())")
    if name == "cuda":
        if not on_gpu:
            raise ValueError("backend='cuda' needs arrays on a CUDA device (cupy or torch)")
        return CUDABackend(_module("cuda"))
    if name == "native":
        return CPUBackend("native", _NativeKernels(_module("native")))
    return CPUBackend("numba", _module("numba"))


def info() -> dict:
    """Which backends are built and usable, and the default for CPU data."""
    out = {name: {"built": built(name), "usable": usable(name)} for name in NAMES}
    out["cpu_threads"] = _cpu.num_workers()
    if out["cuda"]["usable"]:
        out["cuda"]["devices"] = _module("cuda").device_count()
    out["default_cpu"] = "native" if out["native"]["built"] else "numba"
    out["env_override"] = os.environ.get("HDLFAST_BACKEND")
    return out
