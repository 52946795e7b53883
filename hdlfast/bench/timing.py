"""The one timer of the benchmarks: median of timed runs after a warm-up, the device synchronised
before the clock stops (CUDA events for torch GPU work), paired timing for noisy machines, and
the process's peak resident memory."""
from __future__ import annotations

import gc
import statistics
import sys
import time


def _clock(fn, sync=False) -> float:
    t0 = time.perf_counter()
    fn()
    if sync:
        _gpu_sync()
    return time.perf_counter() - t0


def _on_gpu_libraries(torch_call: str, cupy_call) -> None:
    """Call ``torch.cuda.<torch_call>()`` when torch has started CUDA, and ``cupy_call(cupy)``
    when cupy is loaded (errors of cupy without a device ignored)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        getattr(torch.cuda, torch_call)()
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        try:
            cupy_call(cupy)
        except Exception:  # noqa: BLE001 - cupy without a device
            pass


def _gpu_sync():
    """Wait for the GPU work of torch and cupy."""
    _on_gpu_libraries("synchronize", lambda cp: cp.cuda.runtime.deviceSynchronize())


def _gpu_cleanup():
    """Release what the frameworks' memory pools hold between contenders."""
    gc.collect()
    _on_gpu_libraries("empty_cache", lambda cp: cp.get_default_memory_pool().free_all_blocks())


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


def timed(fn, repeats: int = 3, *, warmup: bool = True, device=None):
    """(median seconds, the times, the last result) of ``repeats`` calls of ``fn`` after one
    untimed warm-up call. ``device``: a torch CUDA device times each call with CUDA events
    (the device synchronised first, the clock stopped when the work is done); any other
    value, or None, times with ``time.perf_counter`` (GPU work of torch or cupy is
    synchronised before the clock stops when ``device`` is "cuda")."""
    torch = sys.modules.get("torch")
    events = torch is not None and getattr(device, "type", None) == "cuda"
    out = fn() if warmup else None
    if device == "cuda":
        _gpu_sync()
    times = []
    for _ in range(int(repeats)):
        if events:
            torch.cuda.synchronize(device)
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            t0 = time.perf_counter()
            out = fn()
            if device == "cuda":
                _gpu_sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def paired_times(first, second, repeats: int = 11):
    """Median seconds of ``first`` and of ``second`` after one warm-up of each, the two timed
    in alternation so that a slow spell of a shared machine falls on both."""
    first(), second()
    times = ([], [])
    for _ in range(int(repeats)):
        for fn, out in zip((first, second), times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])
