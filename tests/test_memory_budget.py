"""memory_budget bounds the scratch memory of knn, hdl, kmeans and sinkhorn: the peak resident
memory of a fresh process grows by at most the budget plus what the call must hold anyway
(inputs' working copies and outputs). Linux only (reads /proc/self/status)."""
import json
import subprocess
import sys
import tempfile
import textwrap

import pytest

from conftest import CPU_BACKENDS

MB = 1 << 20

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="peak RSS from /proc/self/status (Linux)")

HARNESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import hdlfast

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    backend, budget = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    {setup}
    run(8 << 20, tiny=True)   # compile and warm up on a tiny input
    reset_peak()
    base = status("VmRSS")
    run(budget, tiny=False)
    print(json.dumps({{"extra": status("VmHWM") - base}}))
""")

WORKLOADS = {
    # (setup code defining run(budget, tiny), bytes the call must hold besides scratch)
    "knn": ("""
    x = rng.standard_normal((30_000, 64), dtype=np.float32)
    def run(budget, tiny):
        hdlfast.knn(x[:500] if tiny else x, 10, backend=backend, memory_budget=budget)
    """, 30_000 * 64 * 4 + 30_000 * 10 * 12 * 2),  # unit-row copy, heaps and outputs
    "hdl": ("""
    x = rng.standard_normal((40_000, 32), dtype=np.float32)
    y = np.full(40_000, -1); y[::100] = rng.integers(0, 5, 400)
    def run(budget, tiny):
        n = 500 if tiny else 40_000
        hdlfast.hdl(x[:n], y[:n], k=10, backend=backend, memory_budget=budget)
    """, 40_000 * 32 * 4 * 2 + 40_000 * 10 * 40),  # row copies, graph, reverse graph, state
    "kmeans": ("""
    x = rng.standard_normal((100_000, 64), dtype=np.float32)
    def run(budget, tiny):
        hdlfast.kmeans(x[:500] if tiny else x, 50, spherical=False, n_iters=3, tol=None,
                       init="random", backend=backend, memory_budget=budget)
    """, 100_000 * 66 * 4 * 2 + 100_000 * 8 * 3),  # augmented rows, labels, sims
    "sinkhorn": ("""
    s = (50 * rng.standard_normal((10_000, 500))).astype(np.float32)
    s[:, :5] -= 400  # five clusters far below every row's best: their kernel underflows
    def run(budget, tiny):  # lam=100: the log-domain fallback
        hdlfast.sinkhorn(s[:200] if tiny else s, kind="sela", lam=100.0, n_iters=5,
                         backend=backend, memory_budget=budget)
    """, 10_000 * 500 * 4),  # Q, the output
    # N = 300,000 with an 8 MiB budget: nothing may grow with the number of tiles (a
    # schedule built up front) or allocate full-size temporaries beside the working copies.
    "knn_vote_300k": ("""
    x = rng.standard_normal((300_000, 16), dtype=np.float32)
    y = np.full(300_000, -1); y[::150] = rng.integers(0, 5, 2000)
    def run(budget, tiny):
        n = 3000 if tiny else 300_000
        hdlfast.knn_vote(x[:n], y[:n], 10, backend=backend, memory_budget=budget)
    """, 300_000 * 16 * 4 * 2 + 300_000 * 10 * 12 * 2 + 300_000 * 40),  # unit rows, lists,
    "kmeans_300k": ("""                                                  # labels and votes
    x = rng.standard_normal((300_000, 16), dtype=np.float32)
    def run(budget, tiny):
        hdlfast.kmeans(x[:3000] if tiny else x, 20, n_iters=3, tol=None, backend=backend,
                       memory_budget=budget)
    """, 300_000 * 16 * 4 + 300_000 * 8 * 3),  # unit rows, labels, sims
}
SLACK = 40 * MB  # allocator pools, thread stacks, small vectors


def extra_bytes(workload, backend, budget):
    code = HARNESS.replace("{setup}", textwrap.dedent(WORKLOADS[workload][0]).strip())
    code = code.replace("{{", "{").replace("}}", "}")
    # outside the repository, so that the installed package (with its compiled kernels) is
    # imported, not the source tree
    out = subprocess.run([sys.executable, "-c", code, backend, str(budget)],
                         capture_output=True, text=True, timeout=300,
                         cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["extra"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_peak_memory_within_budget(workload, backend):
    budget = 8 * MB
    extra = extra_bytes(workload, backend, budget)
    allowed = budget + WORKLOADS[workload][1] + SLACK
    assert extra <= allowed, (f"{workload}: peak grew {extra / MB:.0f} MiB, allowed "
                              f"{allowed / MB:.0f} MiB")


def test_sinkhorn_budget_changes_the_peak():
    """With a budget that does not bind, the log-domain fallback works on blocks of every row
    (hundreds of MiB of scratch here); with 8 MiB it stays near Q alone, so the bound above is
    not vacuous."""
    free = extra_bytes("sinkhorn", CPU_BACKENDS[0], 1 << 40)
    bounded = extra_bytes("sinkhorn", CPU_BACKENDS[0], 8 * MB)
    assert free > bounded + 100 * MB


def test_self_graph_schedule_is_generated_lazily():
    """The self-graph's tile schedule for N = 300,000 points at an 8 MiB budget (181-row
    blocks: 1.4 million block pairs) holds one round at a time: its memory does not grow with
    the number of pairs (it held every pair as a tuple: about 150 MiB here, 1 GiB at
    N = 1,000,000)."""
    import tracemalloc

    from hdlfast.knn import host as knn_host

    n = 300_000
    b, _ = knn_host.block_sizes(n, n, 8 * MB, True)
    nb = -(-n // b)
    tracemalloc.start()
    try:
        pairs = sum(len(r) for r in knn_host.symmetric_rounds(nb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pairs == nb * (nb + 1) // 2
    assert peak < 2 * MB, peak
