"""Ctrl-C stops any long call within about a second, and hdlfast works in forked children.

Each case runs in a fresh process that sends itself SIGINT shortly after a call starts that
would take several seconds; the call must raise KeyboardInterrupt soon after the signal
(the native kernels release the GIL: phase A polls Python's signal handlers between
sub-levels, the search and the kNN tiles run in chunks that Python can interrupt between).
The numba backend cannot run in a child forked after it started GNU OpenMP threads (OpenMP
would abort the child): hdlfast detects that and raises a clear RuntimeError instead.
"""
import json
import subprocess
import sys
import tempfile
import textwrap

import pytest

from conftest import CPU_BACKENDS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork")

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    import numpy as np
    import hdlfast

    backend, what, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if what == "knn":
        x = np.random.default_rng(0).standard_normal((80_000, 64), dtype=np.float32)
        call = lambda: hdlfast.knn(x, 10, backend=backend)
        hdlfast.knn(x[:2000], 10, backend=backend)  # warm up (numba compiles)
    else:
        if what == "search":  # closed cliques of 40 points that no label reaches
            n, k = 400_000, 20
            g = np.arange(n) // 40 * 40
            idx = g[:, None] + (np.arange(n)[:, None] - g[:, None] + np.arange(1, k + 1)) % 40
            kw = dict(method="tree", max_visits=40, fallback=None)
        elif what == "levels":  # a path: one propagation level per point
            n, k = 1_000_000, 2
            i = np.arange(n)
            idx = np.stack([np.maximum(i - 1, 0), np.minimum(i + 1, n - 1)], 1)
            idx[0, 0], idx[-1, 1] = 2, n - 3
            kw = {}
        else:  # the sequential schedule on a random graph: O(N k^2 log N)
            n, k = 300_000, 20
            rng = np.random.default_rng(0)
            idx = rng.integers(0, n - 1, (n, k))
            idx += idx >= np.arange(n)[:, None]
            kw = dict(schedule="sequential")
        idx = idx.astype(np.int64)
        sims = np.ones(idx.shape, np.float32)
        y = np.full(n, -1)
        y[0] = 0
        call = lambda: hdlfast.hdl(None, y, k, graph=(idx, sims), backend=backend, **kw)
        small = idx[:4000] % 4000
        hdlfast.hdl(None, y[:4000], k, graph=(small, sims[:4000]), backend=backend, **kw)
    timer = threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    t0 = time.perf_counter()
    try:
        call()
        print(json.dumps({"interrupted": False, "seconds": time.perf_counter() - t0}))
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": True, "seconds": time.perf_counter() - t0}))
""")


def run(backend, what, delay):
    out = subprocess.run([sys.executable, "-c", SCRIPT, backend, what, str(delay)],
                         capture_output=True, text=True, timeout=600,
                         cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# The long loops of each backend (the native propagation by levels needs no case: it is
# O(N k) with no per-level overhead, under a second for a million points; numba's sequential
# schedule, a comparison mode, runs as one compiled call and is not interruptible).
CASES = [(b, w) for b in CPU_BACKENDS for w in ("knn", "search", "levels", "sequential")
         if (b, w) not in {("numba", "knn"), ("native", "levels"), ("numba", "sequential")}]


@pytest.mark.parametrize("backend,what", CASES)
def test_ctrl_c_stops_long_calls_within_a_second(backend, what):
    full = run(backend, what, 1e4)  # no signal during the call: how long it takes
    assert not full["interrupted"] and full["seconds"] > 2.0, full  # the case is long enough
    got = run(backend, what, 0.3)
    assert got["interrupted"], got
    assert got["seconds"] < 0.3 + 1.0, (got, full)


FORK = textwrap.dedent("""
    import os, sys
    import numpy as np
    import hdlfast

    x = np.random.default_rng(0).standard_normal((500, 8), dtype=np.float32)
    y = np.full(500, -1); y[:10] = np.arange(10) % 3
    hdlfast.hdl(x, y, 5, backend="numba")  # numba's threads start in the parent
    pid = os.fork()
    if pid == 0:
        try:
            hdlfast.hdl(x, y, 5, backend="numba")
            print("numba ran in the child")
        except RuntimeError as exc:
            print("numba refused:", exc)
        if "native" in sys.argv[1:]:
            hdlfast.hdl(x, y, 5, backend="native")
            print("native ran in the child")
        sys.stdout.flush()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child status", status)
""")


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba backend")
def test_forked_child_gets_a_clear_error_not_an_abort():
    out = subprocess.run([sys.executable, "-c", FORK, *CPU_BACKENDS], capture_output=True,
                         text=True, timeout=300, cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "child status 0" in lines, (lines, out.stderr[-1000:])
    ran = "numba ran in the child" in lines
    refused = [line for line in lines if line.startswith("numba refused:")]
    assert ran or (refused and "fork" in refused[0] and "spawn" in refused[0]), lines
    if "native" in CPU_BACKENDS:
        assert "native ran in the child" in lines, lines
