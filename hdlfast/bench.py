"""A small benchmark harness: hdlfast against its peers and against the floor, in one run.

Used by ``hdlfast bench [--quick]`` and by scripts in ``benchmarks/``. Every measurement is the
median of ``repeats`` timed runs (``time.perf_counter``; GPU contenders synchronise the device
before the clock stops) after one untimed warm-up run of the same call. Inputs are made before
the clock starts (GPU contenders get their own device copy first). Data are synthetic and
deterministic (:func:`hdlfast.datasets.synthetic_embeddings`, :func:`hdlfast.datasets.ring_graph`),
nothing is downloaded.

Public API
----------
``run(quick=False, capabilities=None, sizes=None, repeats=None, progress=print, *,
contenders=None, warmup=True) -> dict``
    Runs every capability in ``capabilities`` (default: those named in ``sizes`` when given,
    else all of ``CAPABILITIES``) at the sizes of the preset (``QUICK`` or ``FULL``), each size
    overridden by ``sizes``: ``{capability: {param: value, ...}}`` or ``{capability: [{...},
    {...}]}`` for several sizes; given params replace the preset's, the others are kept (see
    ``PARAMS`` for the names). ``repeats``: timed runs per measurement (default
    ``DEFAULT_REPEATS``). ``progress``: called with one line of text per step (None: quiet).
    ``contenders``: only these names (default: all of ``CONTENDERS``). Unknown capabilities,
    params or contenders raise ValueError. Returns the result dict below.
``format_table(result) -> str``: one line per record (capability, size, contender, median
    seconds, speed against the fastest peer of that capability and size on the same kind of
    device, written "<peer> / <contender> = 1.8x" (> 1: the contender is faster), and the ratio
    to the floor), then one line per skipped contender.
``format_machine(result) -> str``: one line: CPU, cores, RAM, GPU, library versions, floors.
``machine_info() -> dict``, ``gemm_rate(n=2048, d=512, repeats=5) -> GFLOP/s``,
``copy_bandwidth(nbytes=256 MiB, repeats=5) -> GB/s``, ``gpu_gemm_rate``, ``gpu_copy_bandwidth``
(None without a GPU), ``measure_floors(gpu=False) -> dict``,
``prepare(capability, params) -> data``, ``measure(capability, params, contender, *, data=None,
floors=None, repeats=3, warmup=True) -> record``, ``availability(capability, contender, params)
-> None or the reason it cannot run``.

Capabilities, their params (``PARAMS``), contenders and floors
--------------------------------------------------------------
- "knn" (n, d, k, seed): exact cosine self-graph of unit-norm float32
  ``synthetic_embeddings(n, d)``. hdlfast-native, hdlfast-numba, hdlfast-cuda; faiss-cpu
  (IndexFlatIP: add, search k+1, the point itself kept); torch-cpu and torch-cuda (mm + topk in
  row blocks, self masked). Floor "gemm": 2 n^2 d FLOPs (the full product; hdlfast's self-graph
  multiplies only half of it, so it can go below 1) over the matmul rate.
- "hdl" (n, k, classes, label_fraction, seed): ``hdlfast.hdl(graph=(sims, idx), labels=...,
  fallback=None)`` on ``ring_graph(n, k)``. hdlfast-native, hdlfast-numba, hdlfast-cuda. Floor
  "memory": one read of idx + sims, 12 n k bytes, over the copy bandwidth.
- "sinkhorn" (n, clusters, iters, lam, seed): SeLa Sinkhorn (lam=25, ``iters`` iterations,
  tol=0) of (n, clusters) float32 scores 0.3 N(0, 1). hdlfast-native, -numba, -cuda; pot
  (``ot.sinkhorn``, numpy float64; skipped when 5 float64 copies would not fit in half the free
  RAM); torch-cpu, torch-cuda (plain Sinkhorn: per-row max shift, exp, then column and row
  normalisations). Floor "memory": iters reads of 4 n clusters bytes over the copy bandwidth.
- "kmeans" (n, d, clusters, iters, seed): Euclidean Lloyd k-means of ``synthetic_embeddings(n,
  d, n_classes=clusters)``, ``iters`` updates, random init. hdlfast-native, -numba, -cuda
  (``tol=None, init="random"``); faiss-cpu (``faiss.Kmeans``, every row trained on, plus one
  search for the labels); sklearn (``KMeans(init="random", n_init=1, tol=0,
  algorithm="lloyd")``). Floor "gemm": (iters + 1) products of 2 n clusters d FLOPs.
- "label" (n, d, k, classes, label_fraction, seed): end to end ``hdlfast.hdl(X, labels, k)``
  (graph, propagation, search, kNN-DV fallback) on ``synthetic_embeddings(n, d,
  n_classes=classes)`` with ``label_fraction`` of the points labeled. hdlfast-native,
  hdlfast-cuda. Floor "gemm": the kNN floor 2 n^2 d FLOPs.

Floors are measured in the same run: ``gemm_gflops`` (float32 numpy matmul of (n, d) by (d, n),
multi-threaded BLAS, 2 n^2 d FLOPs, best of 5) and ``copy_gbs`` (``np.copyto`` of 256 MiB,
counting the bytes read plus the bytes written, best of 5; one thread). For GPU contenders the
floors come from torch (or cupy) on the device: ``gpu_gemm_gflops`` (float32 mm, TF32 as torch
is set) and ``gpu_copy_gbs`` (``tensor.copy_``, synchronised).

Result (JSON-serialisable)
--------------------------
``{"schema": 1, "created": ISO-8601 UTC, "machine": machine_info(), "floors": {"gemm_gflops":
float, "copy_gbs": float, "gpu_gemm_gflops": float, "gpu_copy_gbs": float, "gpu_device": str}
(gpu keys only when measured; "gpu_error": str when measuring them failed), "settings":
{"preset": "quick"|"full", "repeats": int, "warmup": bool}, "records": [record, ...],
"skipped": [{"capability": str, "contender": str, "reason": str}, ...]}``. A contender that
cannot run here (peer not installed, no GPU, too big for POT) is listed once per capability in
"skipped", never an error.

record: ``{"capability": str, "contender": str, "n": int, "d": int|None, "k": int|None,
"params": dict (every size param of the capability), "seconds": float (median; None on error),
"times": [float, ...], "floor_seconds": float|None, "floor_kind": "gemm"|"memory",
"ratio_to_floor": float|None (seconds / floor_seconds), "device": "cpu" or the GPU name,
"peak_rss_mb": float|None}`` (d is None for hdl and sinkhorn, k for sinkhorn and kmeans:
their sizes are in params), plus ``"error": str`` when the contender failed (out of memory,
...; then seconds and ratio_to_floor are None and times is empty). ``peak_rss_mb`` is the
process's peak resident memory from the contender's setup (its own copies of the inputs)
through its timed runs, the shared inputs included (Linux, after resetting the high-water mark
through /proc/self/clear_refs; None where that is not possible).
"""
from __future__ import annotations

import datetime
import gc
import importlib
import os
import platform
import statistics
import sys
import time

import numpy as np

SCHEMA = 1
CAPABILITIES = ("knn", "hdl", "sinkhorn", "kmeans", "label")
DEFAULT_REPEATS = 3

QUICK = {
    "knn": {"n": 20_000, "d": 128, "k": 20, "seed": 0},
    "hdl": {"n": 200_000, "k": 20, "classes": 100, "label_fraction": 0.001, "seed": 0},
    "sinkhorn": {"n": 50_000, "clusters": 100, "iters": 20, "lam": 25.0, "seed": 0},
    "kmeans": {"n": 50_000, "d": 64, "clusters": 50, "iters": 20, "seed": 0},
    "label": {"n": 10_000, "d": 64, "k": 20, "classes": 100, "label_fraction": 0.01,
              "seed": 0},
}
FULL = {
    "knn": {"n": 50_000, "d": 256, "k": 20, "seed": 0},
    "hdl": {"n": 1_000_000, "k": 20, "classes": 100, "label_fraction": 0.001, "seed": 0},
    "sinkhorn": {"n": 200_000, "clusters": 100, "iters": 100, "lam": 25.0, "seed": 0},
    "kmeans": {"n": 100_000, "d": 128, "clusters": 100, "iters": 20, "seed": 0},
    "label": {"n": 100_000, "d": 128, "k": 20, "classes": 100, "label_fraction": 0.01,
              "seed": 0},
}
PARAMS = {cap: tuple(QUICK[cap]) for cap in CAPABILITIES}
_FLOAT_PARAMS = ("lam", "label_fraction")

CONTENDERS = {
    "knn": ("hdlfast-native", "hdlfast-numba", "hdlfast-cuda", "faiss-cpu", "torch-cpu",
            "torch-cuda"),
    "hdl": ("hdlfast-native", "hdlfast-numba", "hdlfast-cuda"),
    "sinkhorn": ("hdlfast-native", "hdlfast-numba", "hdlfast-cuda", "pot", "torch-cpu",
                 "torch-cuda"),
    "kmeans": ("hdlfast-native", "hdlfast-numba", "hdlfast-cuda", "faiss-cpu", "sklearn"),
    "label": ("hdlfast-native", "hdlfast-cuda"),
}
_GPU_CONTENDERS = ("hdlfast-cuda", "torch-cuda")
_VERSIONS = (("hdlfast", "hdlfast"), ("numpy", "numpy"), ("numba", "numba"),
             ("faiss", "faiss"), ("torch", "torch"), ("cupy", "cupy"), ("pot", "ot"),
             ("scikit-learn", "sklearn"))
_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
        "HDLFAST_NUM_THREADS", "HDLFAST_BACKEND", "CUDA_VISIBLE_DEVICES")


# --- machine --------------------------------------------------------------------------------


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


# --- floors ---------------------------------------------------------------------------------


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
        kind, work = "gemm", 2.0 * p["n"] * p["n"] * p["d"]
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


# --- timing ---------------------------------------------------------------------------------


def _clock(fn, sync=False) -> float:
    t0 = time.perf_counter()
    fn()
    if sync:
        _gpu_sync()
    return time.perf_counter() - t0


def _gpu_sync():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        try:
            cupy.cuda.runtime.deviceSynchronize()
        except Exception:  # noqa: BLE001 - cupy without a device
            pass


def _gpu_cleanup():
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        try:
            cupy.get_default_memory_pool().free_all_blocks()
        except Exception:  # noqa: BLE001
            pass


def _reset_peak_rss() -> bool:
    """Reset the process's resident-memory high-water mark (Linux); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _error_text(exc) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text[:300]


# --- data -----------------------------------------------------------------------------------


def _unit_rows(x):
    """Normalise the rows of ``x`` in place, in blocks (no second copy of x)."""
    for i in range(0, x.shape[0], 65536):
        b = x[i:i + 65536]
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), np.float32(1e-12))
    return x


def prepare(capability: str, params: dict) -> dict:
    """The inputs of one workload (host arrays), shared by its contenders."""
    from .datasets import ring_graph, synthetic_embeddings

    p = params
    if capability == "knn":
        x, _ = synthetic_embeddings(p["n"], p["d"], seed=p["seed"])
        return {"x": _unit_rows(x)}
    if capability == "hdl":
        idx, sims, labels, truth = ring_graph(p["n"], p["k"], p["classes"],
                                              label_fraction=p["label_fraction"],
                                              seed=p["seed"])
        return {"idx": idx, "sims": sims, "labels": labels, "truth": truth}
    if capability == "sinkhorn":
        rng = np.random.default_rng(p["seed"])
        scores = rng.standard_normal((p["n"], p["clusters"]), dtype=np.float32)
        scores *= np.float32(0.3)
        return {"scores": scores}
    if capability == "kmeans":
        x, _ = synthetic_embeddings(p["n"], p["d"], n_classes=p["clusters"], seed=p["seed"])
        return {"x": x}
    if capability == "label":
        x, truth = synthetic_embeddings(p["n"], p["d"], n_classes=p["classes"],
                                        seed=p["seed"])
        rng = np.random.default_rng([p["seed"], 2])
        n_lab = min(p["n"], max(1, round(p["n"] * p["label_fraction"])))
        labels = np.full(p["n"], -1, np.int64)
        chosen = rng.choice(p["n"], n_lab, replace=False)
        labels[chosen] = truth[chosen]
        return {"x": x, "labels": labels, "truth": truth}
    raise ValueError(f"unknown capability {capability!r}")


# --- contenders -----------------------------------------------------------------------------


def availability(capability: str, contender: str, params: dict):
    """None when ``contender`` can run this workload here, else the reason it cannot."""
    from . import _backend

    if contender.startswith("hdlfast-"):
        backend = contender.split("-", 1)[1]
        if not _backend.built(backend):
            return f"hdlfast {backend} backend is not installed"
        if not _backend.usable(backend):
            return "no CUDA device is visible"
        if backend == "cuda" and _gpu_lib() is None:
            return "needs torch or cupy with a visible CUDA GPU"
        return None
    if contender in ("torch-cpu", "torch-cuda"):
        torch = _import("torch")
        if torch is None:
            return "torch is not installed"
        if contender == "torch-cuda" and not torch.cuda.is_available():
            return "torch sees no CUDA GPU"
        return None
    if contender == "faiss-cpu":
        return None if _import("faiss") is not None else "faiss is not installed"
    if contender == "sklearn":
        return None if _import("sklearn.cluster") is not None else \
            "scikit-learn is not installed"
    if contender == "pot":
        if _import("ot") is None:
            return "POT (ot) is not installed"
        need = 5 * 8 * params["n"] * params["clusters"]
        free = _ram_bytes("SC_AVPHYS_PAGES")
        if free is not None and need > free / 2:
            return (f"{params['n']} x {params['clusters']} in float64 needs about "
                    f"{need / 1e9:.1f} GB, more than half the free RAM")
        return None
    raise ValueError(f"unknown contender {contender!r}")


def _torch_knn(torch, x, k, block):
    n = x.shape[0]
    out_s = torch.empty(n, k, dtype=x.dtype, device=x.device)
    out_i = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for i in range(0, n, block):
        s = x[i:i + block] @ x.T
        r = torch.arange(s.shape[0], device=x.device)
        s[r, r + i] = -float("inf")
        torch.topk(s, k, dim=1, out=(out_s[i:i + block], out_i[i:i + block]))
    return out_s, out_i


def _torch_sinkhorn(torch, s, lam, iters):
    n, c = s.shape
    q = s - s.max(dim=1, keepdim=True).values
    q.mul_(lam).exp_()
    for _ in range(iters):
        q.div_(q.sum(dim=0, keepdim=True) * c)
        q.div_(q.sum(dim=1, keepdim=True) * n)
    return q, q.argmax(dim=1)


def _setup(capability: str, contender: str, params: dict, data: dict):
    """A no-argument callable running one repetition (inputs made here, outside the clock)."""
    import hdlfast

    from . import _arrays

    p = params
    if contender.startswith("hdlfast-"):
        backend = contender.split("-", 1)[1]
        gpu = backend == "cuda"

        def dev(a):
            return _arrays.to_gpu(a) if gpu else a

        if capability == "knn":
            x = dev(data["x"])
            return lambda: hdlfast.knn(x, p["k"], backend=backend)
        if capability == "hdl":
            g, labels = (dev(data["idx"]), dev(data["sims"])), dev(data["labels"])
            return lambda: hdlfast.hdl(labels=labels, graph=g, k=p["k"], fallback=None,
                                       backend=backend)
        if capability == "sinkhorn":
            s = dev(data["scores"])
            return lambda: hdlfast.sinkhorn(s, kind="sela", lam=p["lam"], n_iters=p["iters"],
                                            tol=0, backend=backend)
        if capability == "kmeans":
            x = dev(data["x"])
            return lambda: hdlfast.kmeans(x, p["clusters"], spherical=False,
                                          n_iters=p["iters"], tol=None, init="random",
                                          seed=p["seed"], backend=backend)
        if capability == "label":
            x, labels = dev(data["x"]), data["labels"]
            return lambda: hdlfast.hdl(x, labels, p["k"], backend=backend)
    if contender in ("torch-cpu", "torch-cuda"):
        import torch

        device = "cuda" if contender == "torch-cuda" else "cpu"
        if capability == "knn":
            x = torch.from_numpy(data["x"]).to(device)
            n = x.shape[0]
            budget = 256 << 20
            if device == "cuda":
                budget = max(budget, torch.cuda.mem_get_info()[0] // 4)
            block = int(max(1, min(4096, budget // (4 * n))))
            return lambda: _torch_knn(torch, x, p["k"], block)
        if capability == "sinkhorn":
            s = torch.from_numpy(data["scores"]).to(device)
            return lambda: _torch_sinkhorn(torch, s, p["lam"], p["iters"])
    if contender == "faiss-cpu":
        import faiss

        x = np.ascontiguousarray(data["x"], dtype=np.float32)
        d = x.shape[1]
        if capability == "knn":
            def faiss_knn():
                index = faiss.IndexFlatIP(d)
                index.add(x)
                return index.search(x, p["k"] + 1)

            return faiss_knn
        if capability == "kmeans":
            def faiss_kmeans():
                km = faiss.Kmeans(d, p["clusters"], niter=p["iters"], seed=1234 + p["seed"],
                                  max_points_per_centroid=x.shape[0],
                                  min_points_per_centroid=1, verbose=False)
                km.train(x)
                return km.centroids, km.index.search(x, 1)[1]

            return faiss_kmeans
    if contender == "sklearn" and capability == "kmeans":
        from sklearn.cluster import KMeans

        x = data["x"]
        return lambda: KMeans(n_clusters=p["clusters"], init="random", n_init=1,
                              max_iter=p["iters"], tol=0, algorithm="lloyd",
                              random_state=p["seed"]).fit(x)
    if contender == "pot" and capability == "sinkhorn":
        import ot

        cost = -data["scores"].astype(np.float64)
        a = np.full(cost.shape[0], 1.0 / cost.shape[0])
        b = np.full(cost.shape[1], 1.0 / cost.shape[1])
        return lambda: ot.sinkhorn(a, b, cost, 1.0 / p["lam"], numItermax=p["iters"],
                                   stopThr=0, warn=False)
    raise ValueError(f"contender {contender!r} does not run {capability!r}")


def _device_name(contender: str, floors: dict) -> str:
    if contender not in _GPU_CONTENDERS:
        return "cpu"
    return floors.get("gpu_device") or (gpu_names() or ["cuda"])[0]


def _record(capability: str, params: dict, contender: str, floors: dict) -> dict:
    """A record without a measurement yet."""
    on_gpu = contender in _GPU_CONTENDERS
    floor_s, floor_kind = floor(capability, params, floors, on_gpu)
    return {"capability": capability, "contender": contender, "n": params["n"],
            "d": params.get("d"), "k": params.get("k"), "params": dict(params),
            "seconds": None, "times": [], "floor_seconds": floor_s, "floor_kind": floor_kind,
            "ratio_to_floor": None, "device": _device_name(contender, floors),
            "peak_rss_mb": None}


def measure(capability: str, params: dict, contender: str, *, data=None, floors=None,
            repeats=DEFAULT_REPEATS, warmup=True) -> dict:
    """One record: ``contender`` on the workload ``capability`` at ``params`` (completed from
    the QUICK preset), median of ``repeats`` runs after one warm-up. A failure (including a
    contender that cannot run here) is recorded in ``"error"``, never raised."""
    params = _complete(capability, params, QUICK)
    if contender not in CONTENDERS[capability]:
        raise ValueError(f"{capability}: unknown contender {contender!r}; choose from "
                         f"{list(CONTENDERS[capability])}")
    on_gpu = contender in _GPU_CONTENDERS
    if floors is None:
        floors = measure_floors(gpu=on_gpu)
    rec = _record(capability, params, contender, floors)
    floor_s = rec["floor_seconds"]
    reason = availability(capability, contender, params)
    if reason is not None:
        rec["error"] = f"unavailable: {reason}"
        return rec
    fn = None
    try:
        if data is None:
            data = prepare(capability, params)
        tracked = _reset_peak_rss()
        fn = _setup(capability, contender, params, data)
        if warmup:
            fn()
            if on_gpu:
                _gpu_sync()
        times = [_clock(fn, sync=on_gpu) for _ in range(int(repeats))]
        rec["times"] = times
        rec["seconds"] = statistics.median(times)
        if floor_s:
            rec["ratio_to_floor"] = rec["seconds"] / floor_s
        rec["peak_rss_mb"] = _peak_rss_mb() if tracked else None
    except Exception as exc:  # noqa: BLE001 - one failing contender never stops the run
        rec["error"] = _error_text(exc)
    finally:
        del fn
        if on_gpu:
            _gpu_cleanup()
    return rec


# --- the run --------------------------------------------------------------------------------


def _complete(capability: str, params: dict, preset: dict) -> dict:
    """``params`` over the preset's for ``capability``, checked; plain ints and floats."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; choose from {list(CAPABILITIES)}")
    if not isinstance(params, dict):
        raise ValueError(f"sizes for {capability!r} must be a dict of params or a list of "
                         f"dicts, got {type(params).__name__}")
    unknown = set(params) - set(PARAMS[capability])
    if unknown:
        raise ValueError(f"{capability}: unknown size params {sorted(unknown)}; known: "
                         f"{list(PARAMS[capability])}")
    out = {}
    for key in PARAMS[capability]:
        value = params.get(key, preset[capability][key])
        if key in _FLOAT_PARAMS:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not 0 < float(value) < float("inf"):
                raise ValueError(f"{capability}: {key} must be a positive number, got {value!r}")
            out[key] = float(value)
        else:
            lowest = 0 if key == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < lowest:
                what = "a non-negative" if key == "seed" else "a positive"
                raise ValueError(f"{capability}: {key} must be {what} integer, got {value!r}")
            out[key] = int(value)
    if "k" in out and out["k"] > out["n"] - 1:
        raise ValueError(f"{capability}: k={out['k']} needs n > k, got n={out['n']}")
    if "clusters" in out and capability == "kmeans" and out["clusters"] > out["n"]:
        raise ValueError(f"kmeans: clusters={out['clusters']} is larger than n={out['n']}")
    if capability == "hdl" and out["n"] < max(2 * (out["k"] + 1), 2 * out["classes"]):
        raise ValueError(f"hdl: the ring graph needs n >= 2 (k + 1) and n >= 2 classes, got "
                         f"n={out['n']}")
    if "label_fraction" in out and out["label_fraction"] > 1:
        raise ValueError(f"{capability}: label_fraction must be at most 1")
    return out


def _plan(quick, capabilities, sizes, contenders):
    preset = QUICK if quick else FULL
    if sizes is not None and not isinstance(sizes, dict):
        raise ValueError(f"sizes must be a dict capability -> params, got {type(sizes).__name__}")
    sizes = dict(sizes or {})
    if capabilities is None:
        capabilities = [c for c in CAPABILITIES if c in sizes] if sizes else list(CAPABILITIES)
    elif isinstance(capabilities, str):
        capabilities = [capabilities]
    capabilities = list(capabilities)
    for cap in [*capabilities, *sizes]:
        if cap not in CAPABILITIES:
            raise ValueError(f"unknown capability {cap!r}; choose from {list(CAPABILITIES)}")
    if contenders is not None:
        contenders = [contenders] if isinstance(contenders, str) else list(contenders)
        known = {c for names in CONTENDERS.values() for c in names}
        bad = [c for c in contenders if c not in known]
        if bad:
            raise ValueError(f"unknown contenders {bad}; choose from {sorted(known)}")
    plan = []
    for cap in CAPABILITIES:  # a fixed order, whatever order was asked
        if cap not in capabilities:
            continue
        given = sizes.get(cap, {})
        for params in (given if isinstance(given, (list, tuple)) else [given]):
            names = [c for c in CONTENDERS[cap] if contenders is None or c in contenders]
            plan.append((cap, _complete(cap, params, preset), names))
    return plan


def size_label(capability: str, params: dict) -> str:
    """A short text for one workload size, e.g. ``20,000x128 k=20``."""
    p = params
    if capability == "knn" or capability == "label":
        return f"{p['n']:,}x{p['d']} k={p['k']}"
    if capability == "hdl":
        return f"{p['n']:,} k={p['k']}"
    if capability == "sinkhorn":
        return f"{p['n']:,}x{p['clusters']} it={p['iters']}"
    if capability == "kmeans":
        return f"{p['n']:,}x{p['d']} C={p['clusters']} it={p['iters']}"
    return str(p)


def run(quick=False, capabilities=None, sizes=None, repeats=None, progress=print, *,
        contenders=None, warmup=True) -> dict:
    """Benchmark hdlfast against its peers; returns the result dict (see the module doc)."""
    repeats = DEFAULT_REPEATS if repeats is None else repeats
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    plan = _plan(quick, capabilities, sizes, contenders)
    say = progress if progress is not None else (lambda _line: None)
    records, skipped = [], []

    def skip(cap, name, reason):
        entry = {"capability": cap, "contender": name, "reason": reason}
        if entry not in skipped:
            skipped.append(entry)

    gpu = any(name in _GPU_CONTENDERS and availability(cap, name, params) is None
              for cap, params, names in plan for name in names)
    say("measuring the floors (matmul rate, copy bandwidth)" + (" on the CPU and the GPU"
                                                                 if gpu else ""))
    floors = measure_floors(gpu=gpu)
    machine = machine_info()
    for cap, params, names in plan:
        size = size_label(cap, params)
        say(f"{cap} {size}")
        runnable = []
        for name in names:
            reason = availability(cap, name, params)
            if reason is None:
                runnable.append(name)
            else:
                skip(cap, name, reason)
                say(f"  {name}: skipped ({reason})")
        if not runnable:
            continue
        try:
            data = prepare(cap, params)
        except Exception as exc:  # noqa: BLE001 - e.g. no memory for the inputs
            for name in runnable:
                rec = _record(cap, params, name, floors)
                rec["error"] = f"preparing data: {_error_text(exc)}"
                records.append(rec)
                say(f"  {name}: error: {rec['error']}")
            continue
        for name in runnable:
            rec = measure(cap, params, name, data=data, floors=floors, repeats=repeats,
                          warmup=warmup)
            records.append(rec)
            if "error" in rec:
                say(f"  {name}: error: {rec['error']}")
            else:
                ratio = rec["ratio_to_floor"]
                say(f"  {name}: {rec['seconds']:.4g} s" + (f" ({ratio:.2f}x floor)"
                                                           if ratio else ""))
        del data
        gc.collect()
    return {"schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "machine": machine, "floors": floors,
            "settings": {"preset": "quick" if quick else "full", "repeats": int(repeats),
                         "warmup": bool(warmup)},
            "records": records, "skipped": skipped}


# --- reports --------------------------------------------------------------------------------


def _is_peer(contender: str) -> bool:
    return not contender.startswith("hdlfast")


def format_machine(result: dict) -> str:
    """One line: CPU, cores, RAM, GPUs, versions and the measured floors."""
    m, f = result.get("machine", {}), result.get("floors", {})
    cores = f"{m.get('usable_cores')} of {m.get('logical_cores')} cores"
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    vers = " ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    floors = f"floors: matmul {f.get('gemm_gflops', float('nan')):.0f} GFLOP/s, copy " \
             f"{f.get('copy_gbs', float('nan')):.1f} GB/s"
    if "gpu_gemm_gflops" in f:
        floors += f"; GPU matmul {f['gpu_gemm_gflops']:.0f} GFLOP/s, copy " \
                  f"{f.get('gpu_copy_gbs', float('nan')):.0f} GB/s"
    if "gpu_error" in f:
        floors += f"; GPU floors failed: {f['gpu_error']}"
    return f"{m.get('cpu', '?')} ({cores}, {m.get('ram_gb', '?')} GB RAM), {gpus}; " \
           f"{m.get('python', '')}; {vers}; {floors}"


def format_table(result: dict) -> str:
    """One line per record, then one per skipped contender."""
    rows = [("capability", "size", "contender", "seconds", "vs fastest peer", "vs floor")]
    records = result.get("records", [])
    fastest = {}  # (capability, size, gpu?) -> (seconds, peer)
    for r in records:
        if r.get("seconds") is not None and _is_peer(r["contender"]):
            key = (r["capability"], size_label(r["capability"], r["params"]),
                   r["device"] != "cpu")
            if key not in fastest or r["seconds"] < fastest[key][0]:
                fastest[key] = (r["seconds"], r["contender"])
    for r in records:
        size = size_label(r["capability"], r["params"])
        if r.get("seconds") is None:
            rows.append((r["capability"], size, r["contender"], "-",
                         f"error: {r.get('error', '?')}"[:60], ""))
            continue
        best = fastest.get((r["capability"], size, r["device"] != "cpu"))
        if best is None:
            rel = "-"
        elif best[1] == r["contender"]:
            rel = "(fastest peer)"
        else:
            rel = f"{best[1]} / {r['contender']} = {best[0] / r['seconds']:.2f}x"
        ratio = r.get("ratio_to_floor")
        flo = f"{ratio:.2f}x {r['floor_kind']}" if ratio else "-"
        rows.append((r["capability"], size, r["contender"], f"{r['seconds']:.4g}", rel, flo))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i == 3 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    grouped = {}  # (contender, reason) -> capabilities, in order
    for s in result.get("skipped", []):
        caps = grouped.setdefault((s["contender"], s["reason"]), [])
        if s["capability"] not in caps:
            caps.append(s["capability"])
    for (name, reason), caps in grouped.items():
        lines.append(f"skipped: {name} ({', '.join(caps)}): {reason}")
    return "\n".join(lines)
