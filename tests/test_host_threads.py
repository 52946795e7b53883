"""hdlfast's CPU workers run BLAS single-threaded whichever thread calls hdlfast (a dask
task, a user's thread), and the caller's BLAS thread count comes back afterwards. Each check
runs in a fresh process: which thread threadpoolctl lets set OpenBLAS's limit depends on the
process's history."""
import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, threading
    import numpy as np
    from threadpoolctl import threadpool_info
    from hdlfast._host import single_threaded_blas

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    seen = {"default": blas()}
    with single_threaded_blas():          # the main thread first, as a plain call would
        seen["main"] = blas()
    seen["main after"] = blas()

    def in_thread(key):
        with single_threaded_blas():
            seen[key] = blas()

    t = threading.Thread(target=in_thread, args=("thread",)); t.start(); t.join()
    seen["thread after"] = blas()

    # overlapping callers on two threads, the last to leave not the first to enter
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    def first():
        with single_threaded_blas():
            a_in.set(); b_in.wait(); seen["overlap a"] = blas()
        a_out.set()
    def second():
        a_in.wait()
        with single_threaded_blas():
            b_in.set(); a_out.wait(); seen["overlap b"] = blas()
    ts = [threading.Thread(target=f) for f in (first, second)]
    [t.start() for t in ts]; [t.join() for t in ts]
    seen["overlap after"] = blas()
    print(json.dumps(seen))
""")


def test_blas_is_single_threaded_in_any_thread_and_restored():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    default = seen["default"]
    if not default or max(default) <= 1:
        pytest.skip("BLAS runs one thread here by default: nothing to limit")
    for key in ("main", "thread", "overlap a", "overlap b"):
        assert all(n == 1 for n in seen[key]), (key, seen)
    for key in ("main after", "thread after", "overlap after"):
        assert seen[key] == default, (key, seen)


def test_scratch_is_reused_per_thread_and_grows():
    """A tile loop's temporaries come from one buffer per thread and name: the same memory
    call after call (no fresh pages per tile), grown when a larger shape is asked, never
    shared between threads."""
    import threading

    import numpy as np

    from hdlfast._host import scratch

    a = scratch("test", (30, 40))
    assert a.shape == (30, 40) and a.dtype == np.float32 and a.flags.c_contiguous
    assert np.shares_memory(a, scratch("test", (10, 7)))  # smaller: the same buffer
    big = scratch("test", (100, 100))  # larger: a new buffer
    assert big.shape == (100, 100) and np.shares_memory(big, scratch("test", (40, 40)))
    assert not np.shares_memory(big, scratch("other", (10, 10)))
    assert scratch("test", (5,), np.int64).dtype == np.int64
    seen = []
    t = threading.Thread(target=lambda: seen.append(scratch("test", (100, 100))))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], scratch("test", (100, 100)))
