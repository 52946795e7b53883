"""Host (CPU) infrastructure shared by the operations: worker threads and their count,
single-threaded BLAS while hdlfast's own workers run, a cancellable pool loop, per-thread
scratch buffers for tile loops, the unit-row copy every cosine operation starts from, and the
CPU's description for benchmark records."""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from . import _arrays, _checks

DEFAULT_BUDGET = 256 << 20  # bytes of similarity tiles (all workers together) when not given


@functools.lru_cache(maxsize=None)
def _blas_controller() -> ThreadpoolController:
    """Built once: inspecting the loaded BLAS libraries costs about half a millisecond."""
    return ThreadpoolController()


_local = threading.local()
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = None


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread while any caller is inside; the original limits come back when the
    last one leaves. (BLAS thread counts are process-wide: nested or concurrent callers, such
    as dask tasks on threads, must not restore each other's limits half-way.)"""
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _take_blas_control()
            _blas_saved = _blas_controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _take_blas_control()
                _blas_saved.restore_original_limits()
                _blas_saved = None
                _take_blas_control()


def _take_blas_control():
    """threadpoolctl (3.6 and later) lets only one thread change a pthreads OpenBLAS's
    process-wide thread count, the first to set it, and silently ignores the others: after
    a limit set and restored in the main thread, a dask task's or any other thread's limit
    did nothing, and BLAS's own threads then competed with hdlfast's workers (the
    inverted-file search ran 1.7x slower in a thread). The callers hold ``_blas_lock`` and
    own the limit while inside, so control is released to the thread that sets or restores
    it."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # an older threadpoolctl: every thread may set the limit
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextlib.contextmanager
def threads(n: int):
    """Run this thread's hdlfast CPU work on ``n`` worker threads (dask block tasks: the
    scheduler already runs one task per core)."""
    old = getattr(_local, "threads", None)
    _local.threads = n
    try:
        yield
    finally:
        _local.threads = old


def scratch(name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
    """A C-contiguous ``shape`` view of this thread's reusable buffer ``name``, grown as
    needed; the next call from the same thread overwrites it, so use it before asking again.
    For the temporaries of tile loops: fresh memory per tile costs a page fault per 4 KiB
    where malloc hands freed blocks back to the system at once (dask's worker processes set
    MALLOC_TRIM_THRESHOLD_=65536, under which the inverted-file search ran 1.5x slower). A
    buffer lives as long as its thread (the pools' threads: one call)."""
    n = int(np.prod(shape))
    bufs = _local.__dict__.setdefault("scratch", {})
    buf = bufs.get(name)
    if buf is None or buf.size < n or buf.dtype != dtype:  # exactly n: the memory budget holds
        buf = bufs[name] = np.empty(n, dtype)
    return buf[:n].reshape(shape)


def num_workers() -> int:
    """This thread's :func:`threads` setting, else HDLFAST_NUM_THREADS, else the cores this
    process may run on."""
    if getattr(_local, "threads", None):
        return _local.threads
    env = os.environ.get("HDLFAST_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def description() -> dict:
    """The host CPU as benchmark records need it: model name, and on Linux x86 the family and
    model numbers (a VM often hides the name: "AMD EPYC" is Zen 3 at family 25 model 1, Zen 4
    at model 17) and whether AVX-512 is there."""
    out = {"model": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n", 1)[0]
    except OSError:
        return out
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" in fields:
        out["model"] = fields["model name"]
    for key, name in (("cpu family", "family"), ("model", "model_number")):
        if fields.get(key, "").isdigit():
            out[name] = int(fields[key])
    if "flags" in fields:
        out["avx512"] = "avx512f" in fields["flags"].split()
    return out


_COPY_BLOCK_ELEMENTS = 1 << 20  # float32 host copies of GPU / half-precision rows: 4 MiB


def normalize(x, name: str, dtype=np.float32) -> np.ndarray:
    """Rows of the 2-D array ``x`` (any kind; GPU, float16 and bfloat16 arrays are copied to
    the host as float32 first) scaled to unit L2 norm, as a C-contiguous copy of ``dtype``
    (or ``x`` itself, read-only, see below).
    NaN/Inf and zero rows are bad input, named after ``name``.

    Scale-safe: in float64, each row is first multiplied by the power of two that brings its
    largest magnitude into [0.5, 1) (exact), then by its inverse norm, so every finite
    non-zero row works however tiny (1e-40, 1e-300) or large (1e300) its entries are: the
    norm can neither underflow to 0 nor overflow to Inf. One pass over
    the rows on all cores (csrc/cpu/rows.cpp, numba twin ``_numba.unit_rows``); -0 is
    written as +0, so rows of equal values are equal bytes (``duplicate_reps``).

    Float32 rows that already have unit norm to float32 precision (``|x|^2`` within
    2 (d + 8) 2^-24 of 1, as ``F.normalize`` or ``x / norm`` in float32 leave them; no NaN,
    Inf or -0) are returned as they are, a read-only view: embeddings normalised once are
    searched as given, as faiss and torch would, with no copy (on a large database the copy's
    page faults alone cost more than the check's one read)."""
    n, d = x.shape
    from . import _backend  # imported here: _backend imports this module

    host = _arrays.host_view(x, (np.float32, np.float64))
    if (host is not None and host.dtype == dtype == np.float32
            and _backend.host_kernel("rows_are_unit")(host)):
        view = host.view()  # unit rows already: read in place
        view.flags.writeable = False
        return view
    out = np.empty((n, d), dtype)
    bad = np.empty(2, np.int64)
    kernel = _backend.host_kernel("unit_rows")
    if host is not None:  # numpy or torch CPU float32/float64: read in place
        kernel(host, out, bad)
        _checks.bad_rows(name, *(int(v) if v >= 0 else None for v in bad))
        return out
    step = max(1, _COPY_BLOCK_ELEMENTS // max(d, 1))  # other kinds: float32 copies by block
    for b in range(0, n, step):
        blk = np.ascontiguousarray(_arrays.to_host(x[b:b + step]), dtype=np.float32)
        kernel(blk, out[b:b + step], bad)
        _checks.bad_rows(name, *(b + int(v) if v >= 0 else None for v in bad))
    return out


class InOrder:
    """Calls ``fold(item)`` for the items put under keys 0, 1, 2, ... in key order, whichever
    threads put them: the put that completes the next key folds it and every later key
    already waiting, one fold at a time. For reductions whose order must not depend on which
    worker finished first (k-means' per-chunk partial sums); ``done`` counts the folds."""

    def __init__(self, fold):
        self._fold, self._ready, self._lock = fold, {}, threading.Lock()
        self._busy = False
        self.done = 0

    def put(self, key: int, item) -> None:
        with self._lock:
            self._ready[key] = item
            if self._busy:  # the folding thread will find it
                return
            self._busy = True
        try:
            while True:
                with self._lock:
                    if self.done not in self._ready:
                        self._busy = False
                        return
                    item = self._ready.pop(self.done)
                self._fold(item)
                with self._lock:
                    self.done += 1
        except BaseException:
            with self._lock:
                self._busy = False
            raise


def run_all(pool: ThreadPoolExecutor, fn, items, cancel: threading.Event | None = None):
    """fn(item) for every item on the pool, waiting for all; when the wait is interrupted
    (Ctrl-C) or a task fails, the tasks not yet started are cancelled and ``cancel`` is set
    (long tasks check it between tiles), so the call returns soon instead of after all."""
    futures = [pool.submit(fn, item) for item in items]
    try:
        for f in futures:
            f.result()
    except BaseException:
        if cancel is not None:
            cancel.set()
        for f in futures:
            f.cancel()
        raise
