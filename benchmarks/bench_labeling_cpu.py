"""Labeling speed on the CPU.

- HDL phases A+B on a precomputed graph, N=1,000,000, k=20 (hdlfast.datasets.ring_graph: a
  synthetic graph with shuffled ids, 0.1% labeled, 1% of the points in closed cliques that only
  the phase-B search can label), per backend; the reverse graph alone is timed too, so the
  phases' own time is the difference.
- End to end: `hdlfast label` on 100,000 x 256 embeddings (graph with k=50 for k="auto",
  select_k, HDL, report), next to the exact kNN graph alone.
Run: pytest benchmarks/bench_labeling_cpu.py --benchmark-json=benchmarks/results/<name>.json
"""
import numpy as np
import pytest

import hdlfast
from hdlfast import _backend, cli
from hdlfast.datasets import hypersphere_mixture, ring_graph

BACKENDS = [b for b in ("native", "numba") if _backend.usable(b)]


@pytest.fixture(scope="module")
def graph_1m():
    return ring_graph(1_000_000, 20)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hdl_graph_1m(benchmark, graph_1m, backend):
    idx, sims, labels, truth = graph_1m
    run = lambda: hdlfast.hdl(labels=labels, graph=(idx, sims), k=20, fallback=None,  # noqa
                              backend=backend)
    run()  # compile / warm up
    res = benchmark.pedantic(run, rounds=5, iterations=1)
    assert (res.labels == truth).mean() > 0.9
    benchmark.extra_info.update(res.counts(), levels=res.n_levels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reverse_graph_1m(benchmark, graph_1m, backend):
    idx = graph_1m[0]
    kern = _backend.select(backend, False).labeling
    kern.reverse_csr(idx, 20, idx.shape[0])
    benchmark.pedantic(lambda: kern.reverse_csr(idx, 20, idx.shape[0]), rounds=5, iterations=1)


@pytest.fixture(scope="module")
def files_100k(tmp_path_factory):
    d = tmp_path_factory.mktemp("label100k")
    x, y = hypersphere_mixture(100_000, 256, n_classes=100, spread=1.5, imbalance=10, seed=0)
    rng = np.random.default_rng(0)
    labels = np.full(y.shape[0], -1)
    for c in range(100):
        labels[rng.choice(np.nonzero(y == c)[0], 5, replace=False)] = c
    np.save(d / "emb.npy", x)
    np.save(d / "lab.npy", labels)
    return d, x


def test_label_command_100k(benchmark, files_100k):
    d, _ = files_100k
    argv = ["label", str(d / "emb.npy"), str(d / "lab.npy"), "-o", str(d / "out.npz"),
            "--quiet"]
    assert benchmark.pedantic(lambda: cli.main(argv), rounds=2, iterations=1) == 0


def test_knn_graph_100k_k50(benchmark, files_100k):
    _, x = files_100k
    benchmark.pedantic(lambda: hdlfast.knn(x, 50), rounds=2, iterations=1)
