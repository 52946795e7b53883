"""Sinkhorn-Knopp on the CPU: N=200,000 samples, K=100 clusters, 100 iterations (SeLa kind,
lam=25), hdlfast native and numba against POT ``ot.sinkhorn`` (numpy backend) in the same run,
plus the bandwidth floor: one read of the float32 (N, K) matrix per iteration.
Run: pytest benchmarks/bench_sinkhorn_cpu.py --benchmark-json=benchmarks/results/<name>.json
"""
import numpy as np
import pytest

ot = pytest.importorskip("ot")

import hdlfast  # noqa: E402
from hdlfast import _backend  # noqa: E402

N, K, ITERS, LAM = 200_000, 100, 100, 25.0


@pytest.fixture(scope="module")
def scores():
    return (0.3 * np.random.default_rng(0).standard_normal((N, K))).astype(np.float32)


def test_pot_sinkhorn(benchmark, scores):
    a, b = np.full(N, 1 / N), np.full(K, 1 / K)
    cost = -scores.astype(np.float64)  # POT's numpy backend works in float64
    benchmark.pedantic(lambda: ot.sinkhorn(a, b, cost, 1 / LAM, numItermax=ITERS, stopThr=0,
                                           warn=False), rounds=3, iterations=1)


@pytest.mark.parametrize("backend", [b for b in ("native", "numba") if _backend.usable(b)])
def test_hdlfast(benchmark, scores, backend):
    hdlfast.sinkhorn(scores[:5000], kind="sela", backend=backend)  # compile / warm up
    benchmark.pedantic(lambda: hdlfast.sinkhorn(scores, kind="sela", lam=LAM, n_iters=ITERS,
                                                tol=0, backend=backend), rounds=3, iterations=1)


def test_read_floor(benchmark, scores):
    """One read of the (N, K) float32 matrix per iteration."""
    def run():
        for _ in range(ITERS):
            scores.sum(dtype=np.float32)

    benchmark.pedantic(run, rounds=3, iterations=1)
