"""Machine facts (CPU, cores, RAM, GPUs, library versions, thread settings) and the floors
every benchmark is measured against: the matmul rate and the copy bandwidth, on the CPU and
on the GPU, measured in the same run."""
from __future__ import annotations

import importlib
import os
import platform
import sys

import numpy as np

from .timing import _clock, _error_text, _gpu_cleanup, _gpu_sync

_VERSIONS = (("hdlfast", "hdlfast"), ("numpy", "numpy"), ("numba", "numba"),
             ("faiss", "faiss"), ("torch", "torch"), ("cupy", "cupy"), ("pot", "ot"),
             ("scikit-learn", "sklearn"))
_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
        "HDLFAST_NUM_THREADS", "HDLFAST_BACKEND", "CUDA_VISIBLE_DEVICES")


def _import(name):
    """The module, or None when it cannot be imported (any failure: missing, broken build)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes(which="SC_PHYS_PAGES"):
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf(which)
    except (ValueError, OSError, AttributeError):
        return None


def gpu_names() -> list:
    """Names of the CUDA GPUs torch (else cupy) sees; [] without one."""
    torch = _import("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        pass
    cupy = _import("cupy")
    try:
        if cupy is not None:
            names = []
            for i in range(cupy.cuda.runtime.getDeviceCount()):
                name = cupy.cuda.runtime.getDeviceProperties(i)["name"]
                names.append(name.decode() if isinstance(name, bytes) else str(name))
            return names
    except Exception:  # noqa: BLE001
        pass
    return []


def machine_info() -> dict:
    """Platform, Python, CPU model, cores, RAM, GPUs, library versions and ``hdlfast.info()``
    (versions only of the libraries that import)."""
    import hdlfast

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    ram = _ram_bytes()
    versions = {}
    for key, mod_name in _VERSIONS:
        mod = _import(mod_name)
        if mod is not None:
            versions[key] = str(getattr(mod, "__version__", "unknown"))
    threads = {"hdlfast": hdlfast.info().get("cpu_threads")}
    torch = sys.modules.get("torch")
    if torch is not None:
        threads["torch"] = torch.get_num_threads()
        if torch.version.cuda:
            versions["torch_cuda"] = str(torch.version.cuda)
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "omp_get_max_threads"):
        threads["faiss"] = faiss.omp_get_max_threads()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gb": None if ram is None else round(ram / 1e9, 2),
        "gpus": gpu_names(),
        "versions": versions,
        "threads": threads,
        "env": {k: os.environ[k] for k in _ENV if k in os.environ},
        "hdlfast_info": hdlfast.info(),
    }


def gemm_rate(n=2048, d=512, repeats=5) -> float:
    """GFLOP/s of a float32 numpy matmul (n, d) @ (d, n) (multi-threaded BLAS), best of
    ``repeats`` after one warm-up."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, d), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, a.T, out=out)
    best = min(_clock(lambda: np.matmul(a, a.T, out=out)) for _ in range(repeats))
    return 2.0 * n * n * d / best / 1e9


def copy_bandwidth(nbytes=256 << 20, repeats=5) -> float:
    """GB/s of ``np.copyto`` of ``nbytes`` (bytes read + bytes written), best of ``repeats``
    after one warm-up."""
    src = np.ones(max(int(nbytes) // 4, 1), np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_clock(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2.0 * src.nbytes / best / 1e9


def _gpu_lib():
    """("torch", torch) or ("cupy", cupy) when one sees a CUDA GPU, else None."""
    torch = _import("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return "torch", torch
    except Exception:  # noqa: BLE001
        pass
    cupy = _import("cupy")
    try:
        if cupy is not None and cupy.cuda.runtime.getDeviceCount() > 0:
            return "cupy", cupy
    except Exception:  # noqa: BLE001
        pass
    return None


def gpu_gemm_rate(n=8192, d=1024, repeats=5):
    """GFLOP/s of a float32 (n, d) @ (d, n) product on the current GPU (torch, else cupy),
    best of ``repeats`` after one warm-up, synchronised; None without a GPU."""
    lib = _gpu_lib()
    if lib is None:
        return None
    kind, m = lib
    if kind == "torch":
        a = m.randn(n, d, device="cuda", dtype=m.float32)
        out = m.empty(n, n, device="cuda", dtype=m.float32)
        fn = lambda: m.mm(a, a.T, out=out)  # noqa: E731
    else:
        a = m.random.standard_normal((n, d), dtype=m.float32)
        out = m.empty((n, n), m.float32)
        fn = lambda: m.matmul(a, a.T, out=out)  # noqa: E731
    fn()
    _gpu_sync()
    best = min(_clock(fn, sync=True) for _ in range(repeats))
    return 2.0 * n * n * d / best / 1e9


def gpu_copy_bandwidth(nbytes=1 << 30, repeats=5):
    """GB/s of a device-to-device copy of ``nbytes`` (``tensor.copy_``; bytes read + bytes
    written), best of ``repeats`` after one warm-up, synchronised; None without a GPU."""
    lib = _gpu_lib()
    if lib is None:
        return None
    kind, m = lib
    count = max(int(nbytes) // 4, 1)
    if kind == "torch":
        src = m.ones(count, device="cuda", dtype=m.float32)
        dst = m.empty_like(src)
        fn = lambda: dst.copy_(src)  # noqa: E731
    else:
        src = m.ones(count, m.float32)
        dst = m.empty_like(src)
        fn = lambda: m.copyto(dst, src)  # noqa: E731
    fn()
    _gpu_sync()
    best = min(_clock(fn, sync=True) for _ in range(repeats))
    return 2.0 * count * 4 / best / 1e9


def measure_floors(gpu=False) -> dict:
    """The CPU rates, and the GPU ones when ``gpu`` and a GPU is visible."""
    floors = {"gemm_gflops": gemm_rate(), "copy_gbs": copy_bandwidth()}
    if gpu and _gpu_lib() is not None:
        try:
            floors["gpu_gemm_gflops"] = gpu_gemm_rate()
            _gpu_cleanup()
            floors["gpu_copy_gbs"] = gpu_copy_bandwidth()
            floors["gpu_device"] = (gpu_names() or ["cuda"])[0]
        except Exception as exc:  # noqa: BLE001 - a floor we cannot measure is left out
            floors["gpu_error"] = _error_text(exc)
        _gpu_cleanup()
    return floors


def floor(capability: str, params: dict, floors: dict, on_gpu=False):
    """(floor seconds or None, "gemm" | "memory") of one workload."""
    p = params
    if capability in ("knn", "label"):
        rows = p.get("queries") or p["n"]  # a query-database search: queries x n products
        kind, work = "gemm", 2.0 * rows * p["n"] * p["d"]
    elif capability == "kmeans":
        kind, work = "gemm", (p["iters"] + 1) * 2.0 * p["n"] * p["clusters"] * p["d"]
    elif capability == "hdl":
        kind, work = "memory", 12.0 * p["n"] * p["k"]
    elif capability == "sinkhorn":
        kind, work = "memory", p["iters"] * 4.0 * p["n"] * p["clusters"]
    else:
        raise ValueError(f"unknown capability {capability!r}")
    key = ("gpu_" if on_gpu else "") + ("gemm_gflops" if kind == "gemm" else "copy_gbs")
    rate = floors.get(key)
    return (work / (rate * 1e9) if rate else None), kind
