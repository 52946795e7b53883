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
import sys
import types
import warnings

import numpy as np

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


def cuda_problem() -> str:
    """Why GPU arrays cannot run on the GPU here ('' when they can): the CUDA module is not
    built, or the driver reports an error (too old for this build, ...), or no device."""
    mod = _module("cuda")
    if mod is None:
        return "the CUDA module is not built (reinstall with HDLFAST_CUDA=ON and nvcc)"
    err = mod.device_error() if hasattr(mod, "device_error") else ""
    if err:
        hint = " (or no NVIDIA driver is installed)" if "insufficient" in err else ""
        return f"CUDA reports: {err}{hint}"
    return "" if mod.device_count() > 0 else "no CUDA device is visible"


@functools.lru_cache(maxsize=None)
def _warn_fallback(message: str) -> None:
    """Say once per process that work does not run where the caller would expect."""
    warnings.warn(f"hdlfast: {message}", RuntimeWarning, stacklevel=4)


def _native_kernels(mod):
    """The native module's kernels under the names and signatures of numba_kernels (topk,
    labeling, sinkhorn, kmeans, pairs), so both CPU backends are driven alike; the binding checks
    every array (dtype, shape, C-contiguity). Only the reverse graph takes two native calls
    (its size is known after the first)."""

    def reverse_csr(idx, k, n):
        indptr = np.empty(n + 1, np.int64)
        mod.reverse_indptr(idx, k, indptr)
        src = np.empty(indptr[-1], np.int32)
        mod.reverse_fill(idx, k, indptr, src)
        return indptr, src

    topk = types.SimpleNamespace(merge_rows=mod.merge_rows, merge_cols=mod.merge_cols,
                                 finalize=mod.finalize)
    labeling = types.SimpleNamespace(reverse_csr=reverse_csr, vote_rows=mod.vote_rows,
                                     propagate_levels=mod.propagate_levels,
                                     propagate_sequential=mod.propagate_sequential,
                                     search=mod.search)
    sinkhorn = types.SimpleNamespace(prepare=mod.sk_prepare,
                                     prepare_power=mod.sk_prepare_power, colsum=mod.sk_colsum,
                                     iterate=mod.sk_iterate, finalize=mod.sk_finalize)
    kmeans = types.SimpleNamespace(cluster_sums=mod.cluster_sums)
    pairs = types.SimpleNamespace(pair_dots=mod.pair_dots, mix_rows=mod.mix_rows)
    return topk, labeling, sinkhorn, kmeans, pairs


_FORKED_AFTER_OPENMP = False


def _after_fork_in_child() -> None:
    """numba's GNU OpenMP worker threads do not survive fork(): in a child forked after they
    started, OpenMP aborts the whole process at the next parallel kernel. Remember it, so the
    numba backend can refuse with a clear error instead."""
    global _FORKED_AFTER_OPENMP
    numba = sys.modules.get("numba")
    if numba is None:
        return
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run: the child starts its own threads
        return
    omp = sys.modules.get("numba.np.ufunc.omppool")
    if layer == "omp" and getattr(omp, "openmp_vendor", "GNU") == "GNU":
        _FORKED_AFTER_OPENMP = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_numba_after_fork() -> None:
    if _FORKED_AFTER_OPENMP:
        raise RuntimeError(
            "backend 'numba' cannot run in this process: it was forked after numba started "
            "its GNU OpenMP threads, which do not survive fork() (OpenMP would abort the "
            "process). Use backend='native', start worker processes with multiprocessing's "
            "'spawn' or 'forkserver' method, or choose a fork-safe numba threading layer "
            "(NUMBA_THREADING_LAYER=tbb with tbb installed) before numba starts")


def _numba_labeling():
    from .numba_kernels import labeling

    return labeling


def _numba_sinkhorn():
    from .numba_kernels import sinkhorn

    return sinkhorn


def _numba_kmeans():
    from .numba_kernels import kmeans

    return kmeans


def _numba_pairs():
    from .numba_kernels import pairs

    return pairs


class CPUBackend:
    """Blocked BLAS tiles + a merge kernel (native or numba); works on host copies."""

    on_gpu = False

    def __init__(self, name: str, kernels, labeling, sinkhorn, kmeans, pairs):
        self.name = name
        self.kernels = kernels
        self.labeling = labeling
        self.sinkhorn = sinkhorn
        self.kmeans = kmeans
        self.pairs = pairs

    #: Sinkhorn kernels that raise probabilities to an integer power (SeLa's P ** lam)
    sinkhorn_powers = True

    def sinkhorn_state(self, scores, beta, r, power=None):
        return _cpu.SinkhornState(self.sinkhorn, scores, beta, r, power)

    def kmeans_state(self, x, spherical, memory_budget, allow_tf32):
        del allow_tf32  # fp32 BLAS on the CPU
        return _cpu.KMeansState(self.kernels, self.kmeans, x, spherical, memory_budget)

    def knn(self, q, db, k, *, exclude_self, allow_tf32, memory_budget, q_name, db_name):
        del allow_tf32  # fp32 BLAS on the CPU
        qn = _cpu.normalize(q, q_name)
        dn = None if db is None else _cpu.normalize(db, db_name)
        sims, idx = _cpu.topk(self.kernels, qn, dn, k, exclude_self, memory_budget)
        rep = _cpu.duplicate_reps(qn if dn is None else dn)
        if rep is not None:
            _cpu.tie_duplicates(sims, idx, rep, exclude_self)
        return _arrays.from_host(sims, q), _arrays.from_host(idx, q)

    def knn_pair(self, q, db, kq, kd, *, allow_tf32, memory_budget, floors=(None, None)):
        """(top-kq of q against db, top-kd of db against q) as numpy, from one pass of tile
        products (an off-diagonal block pair of a self-graph; rows already checked). With
        ``floors`` (see ``_cpu.topk_pair``) entries may hold the index sentinel int64 max."""
        del allow_tf32
        qn = _cpu.normalize(q, "X")
        dn = _cpu.normalize(db, "X")
        return _cpu.topk_pair(self.kernels, qn, dn, kq, kd, memory_budget, floors)


class CUDABackend:
    """hdlfast._cuda: fused tensor-core kNN tiles, HDL labeling, Sinkhorn and k-means kernels
    on ``like``'s device."""

    name = "cuda"
    on_gpu = True
    sinkhorn_powers = False  # probabilities reach its Sinkhorn kernels as float32 logs

    def __init__(self, mod, like, host):
        from . import _gpu

        self.mod = mod
        self.labeling = _gpu.CudaLabeling(mod, like) if like is not None else host.labeling
        self.sinkhorn_state = functools.partial(_gpu.SinkhornState, mod)
        self.kmeans_state = functools.partial(_gpu.KMeansState, mod)

    def knn(self, q, db, k, *, exclude_self, allow_tf32, memory_budget, q_name, db_name):
        from . import _gpu

        return _gpu.topk(self.mod, q, db, k, exclude_self, allow_tf32, memory_budget, q_name,
                         db_name)

    def knn_pair(self, q, db, kq, kd, *, allow_tf32, memory_budget, floors=(None, None)):
        """As CPUBackend.knn_pair, by two fused searches (the GPU kernel keeps no columns;
        ``floors`` are not needed there)."""
        del floors
        out = []
        for a, b, k in ((q, db, kq), (db, q, kd)):
            s, i = self.knn(a, b, k, exclude_self=False, allow_tf32=allow_tf32,
                            memory_budget=memory_budget, q_name="X", db_name="X")
            out.append((_arrays.to_numpy(s), _arrays.to_numpy(i)))
        return out


def check_name(backend: str | None) -> None:
    """Reject an unknown backend name, or a CPU backend that is not installed, before any
    work starts (for work that other processes run: whether "cuda" works is theirs to say)."""
    if backend is None:
        return
    _checks.choice(backend, "backend", NAMES)
    if backend != "cuda" and not usable(backend):
        raise RuntimeError(f"backend {backend!r} cannot be used here: it is not installed "
                           "(see hdlfast.info())")


def host_data_on_gpu(backend: str | None) -> bool:
    """Whether work on host arrays should move to this process's GPU: ``backend`` (or
    HDLFAST_BACKEND) is "cuda", or names nothing and a CUDA device is usable. Used by the dask
    block tasks, which run wherever the scheduler puts them; the single-machine functions
    keep host data on the CPU (the caller chose where the data lives)."""
    name = backend if backend is not None else os.environ.get("HDLFAST_BACKEND") or None
    return name in (None, "cuda") and usable("cuda")


def _default_cpu(on_gpu: bool) -> str:
    """The CPU backend used when none is named, saying so when it is not what the caller would
    expect (GPU arrays on the CPU, numba instead of the compiled module)."""
    name = "native" if built("native") else "numba"
    if on_gpu:
        _warn_fallback(f"GPU arrays run on the CPU ({name} backend, copied to the host and "
                       f"back): {cuda_problem()}")
    if name == "numba":
        _warn_fallback("the compiled CPU module is not built (no C++ compiler at install?): "
                       "using the numba kernels, slower and compiled on first use")
    return name


def select(backend: str | None, on_gpu: bool, like=None):
    """The backend object for data on the GPU (``on_gpu``) or the host; ``like`` is the
    caller's GPU array whose device the CUDA labeling kernels use."""
    name = backend if backend is not None else os.environ.get("HDLFAST_BACKEND") or None
    if name is not None:
        _checks.choice(name, "backend", NAMES)
    elif on_gpu and usable("cuda"):
        name = "cuda"
    else:
        name = _default_cpu(on_gpu)
    if not usable(name):
        reason = "no CUDA device is visible" if built(name) else "it is not installed"
        raise RuntimeError(f"backend {name!r} cannot be used here: {reason} (see hdlfast.info())")
    if name == "cuda":
        if not on_gpu:
            raise ValueError("backend='cuda' needs arrays on a CUDA device (cupy or torch)")
        host = select("native" if built("native") else "numba", False)
        return CUDABackend(_module("cuda"), like, host)
    if name == "native":
        mod = _module("native")
        return CPUBackend("native", *_native_kernels(mod))
    _check_numba_after_fork()
    return CPUBackend("numba", _module("numba"), _numba_labeling(), _numba_sinkhorn(),
                      _numba_kmeans(), _numba_pairs())


def host(backend: str | None):
    """The CPU backend for work that runs on the host whatever the data's device (hard
    negatives' selection): the CPU backend named by ``backend`` (or HDLFAST_BACKEND), else
    the default one; "cuda" names where the rest of the work runs, not this part."""
    name = backend if backend is not None else os.environ.get("HDLFAST_BACKEND") or None
    if name is not None:
        _checks.choice(name, "backend", NAMES)
    return select(_default_cpu(False) if name in (None, "cuda") else name, False)


def info() -> dict:
    """Which backends are built and usable, and the default for CPU data."""
    out = {name: {"built": built(name), "usable": usable(name)} for name in NAMES}
    out["cpu_threads"] = _cpu.num_workers()
    out["cpu"] = _cpu.description()
    if out["native"]["built"]:
        out["cpu"]["native_simd"] = _module("native").simd_level()
    if out["cuda"]["usable"]:
        out["cuda"]["devices"] = _module("cuda").device_count()
    else:
        out["cuda"]["why_not"] = cuda_problem()
    out["default_cpu"] = "native" if out["native"]["built"] else "numba"
    out["env_override"] = os.environ.get("HDLFAST_BACKEND")
    return out
