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
