"""Exact self kNN graph, N=50,000, d=256, k=20, on the CPU: hdlfast native and numba against
faiss-cpu IndexFlatIP, plus the BLAS floor (the tile products alone, no selection).

Inputs are unit-norm float32 so every contender does the same work; faiss searches k+1 and
keeps the point itself, as SCAN does.
"""
import numpy as np
import pytest

faiss = pytest.importorskip("faiss")  # imported before hdlfast: peers keep their own defaults

import hdlfast  # noqa: E402
from hdlfast import _backend  # noqa: E402

K = 20
ROUNDS = 3


def _run(benchmark, fn):
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)


def test_faiss_flat_ip(benchmark, embeddings_50k):
    x = embeddings_50k

    def run():
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        return index.search(x, K + 1)

    _run(benchmark, run)


@pytest.mark.parametrize("backend", [b for b in ("native", "numba") if _backend.usable(b)])
def test_hdlfast(benchmark, embeddings_50k, backend):
    x = embeddings_50k
    hdlfast.knn(x[:2000], K, backend=backend)  # compile / warm up outside the timing
    _run(benchmark, lambda: hdlfast.knn(x, K, backend=backend))


def test_tile_products_floor(benchmark, embeddings_50k):
    """Every 4096 x 1024 tile product of the full graph (what faiss multiplies)."""
    x = embeddings_50k
    out = np.empty(4096 * 1024, np.float32)

    def run():
        for i in range(0, len(x), 4096):
            for j in range(0, len(x), 1024):
                a, b = x[i:i + 4096], x[j:j + 1024]
                np.matmul(a, b.T, out=out[: len(a) * len(b)].reshape(len(a), len(b)))

    _run(benchmark, run)


def test_symmetric_tile_products_floor(benchmark, embeddings_50k):
    """The tiles hdlfast multiplies for a self-graph: on and above the block diagonal."""
    x = embeddings_50k
    b = 1024
    out = np.empty(b * b, np.float32)

    def run():
        for i in range(0, len(x), b):
            for j in range(i, len(x), b):
                p, q = x[i:i + b], x[j:j + b]
                np.matmul(p, q.T, out=out[: len(p) * len(q)].reshape(len(p), len(q)))

    _run(benchmark, run)


@pytest.mark.parametrize("backend", [b for b in ("native", "numba") if _backend.usable(b)])
def test_hdlfast_query_database(benchmark, embeddings_50k, backend):
    """The same graph asked as queries against a database: no symmetric halving, every tile
    multiplied (compare with tile_products_floor and faiss_flat_ip, which keeps self)."""
    x = embeddings_50k
    db = x.copy()
    hdlfast.knn(x[:2000], K, database=db[:3000], backend=backend)
    _run(benchmark, lambda: hdlfast.knn(x, K + 1, database=db, backend=backend))
