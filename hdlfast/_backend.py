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
import warnings

from . import _checks, _host
from ._kernels import Backend

NAMES = ("cuda", "native", "numba")


@functools.lru_cache(maxsize=None)
def _module(name: str):
    """The compiled module (or numba itself) behind a backend; None when it cannot be
    imported."""
    target = {"cuda": "hdlfast._cuda", "native": "hdlfast._native", "numba": "numba"}[name]
    try:
        return importlib.import_module(target)
    except ImportError:
        return None


def host_kernel(name: str):
    """A host kernel every CPU backend shares (``unit_rows``, ``row_hashes``): the compiled
    one when the native module is built, else its numba twin in ``hdlfast._numba``; both
    write the same bits, so results do not depend on which backend asked."""
    mod = _module("native")
    if mod is None:
        from . import _numba as mod
    return getattr(mod, name)


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


#: The operations with kernels of their own: each is a subpackage holding its public functions,
#: ``host.native_kernels`` (the compiled module's kernels under the numba twins' names),
#: ``numba_kernels`` (the twins) and, where the GPU has its own, ``cuda``.
OPERATIONS = ("knn", "labeling", "sinkhorn", "kmeans", "neighbors")


def _cpu_kernels(name: str) -> dict:
    """Each operation's kernel family for the CPU backend ``name``."""
    out = {}
    for op in OPERATIONS:
        if name == "native":
            host = importlib.import_module(f"hdlfast.{op}.host")
            out[op] = host.native_kernels(_module("native"))
        else:
            out[op] = importlib.import_module(f"hdlfast.{op}.numba_kernels")
    return out


def _cpu_backend(name: str) -> Backend:
    from .kmeans.host import KMeansState
    from .knn.host import HostKNN
    from .sinkhorn.host import SinkhornState

    kern = _cpu_kernels(name)
    return Backend(
        name=name, on_gpu=False, knn=HostKNN(kern["knn"], name), labeling=kern["labeling"],
        sinkhorn_state=functools.partial(SinkhornState, kern["sinkhorn"]),
        sinkhorn_powers=True,
        kmeans_state=lambda x, spherical, memory_budget, allow_tf32: KMeansState(
            kern["kmeans"], x, spherical, memory_budget),  # fp32 BLAS: no TF32
        kmeans=kern["kmeans"], pairs=kern["neighbors"])


def _cuda_backend(like, host: Backend) -> Backend:
    """fused tensor-core kNN tiles, HDL labeling, Sinkhorn and k-means kernels on ``like``'s
    device (``like`` None: the labeling kernels of ``host``)."""
    from .kmeans.cuda import KMeansState
    from .knn.cuda import CudaKNN
    from .labeling.cuda import CudaLabeling
    from .sinkhorn.cuda import SinkhornState

    mod = _module("cuda")
    return Backend(
        name="cuda", on_gpu=True, knn=CudaKNN(mod),
        labeling=CudaLabeling(mod, like) if like is not None else host.labeling,
        sinkhorn_state=functools.partial(SinkhornState, mod),
        sinkhorn_powers=False,  # probabilities reach its kernels as float32 logs
        kmeans_state=functools.partial(KMeansState, mod),
        kmeans=host.kmeans, pairs=host.pairs)


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


def select(backend: str | None, on_gpu: bool, like=None) -> Backend:
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
        return _cuda_backend(like, select("native" if built("native") else "numba", False))
    if name == "numba":
        _check_numba_after_fork()
    return _cpu_backend(name)


def host(backend: str | None) -> Backend:
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
    out["cpu_threads"] = _host.num_workers()
    out["cpu"] = _host.description()
    if out["native"]["built"]:
        out["cpu"]["native_simd"] = _module("native").simd_level()
    if out["cuda"]["usable"]:
        out["cuda"]["devices"] = _module("cuda").device_count()
    else:
        out["cuda"]["why_not"] = cuda_problem()
    out["default_cpu"] = "native" if out["native"]["built"] else "numba"
    out["env_override"] = os.environ.get("HDLFAST_BACKEND")
    return out
