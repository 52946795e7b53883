"""Approximate kNN graphs at a million rows on the CPU: hdlfast's inverted file
(``knn(method="ivf")``) against the exact graph, faiss ``IndexIVFFlat`` and pynndescent, and
what the approximation does to HDL's labels; then ``hdlfast label --knn auto`` end to end.

Data: ``hdlfast.datasets.synthetic_embeddings`` (long-tailed classes, imbalance 10), N x 128,
k = 20. Recall of every contender is measured on the same seeded 1,000 rows against their
exact neighbours (an exact search of those rows alone). Measured this way, not inferred:
- the exact graph on a ``--subset``-row prefix (1M rows take about half an hour on 2 cores;
  its cost is O(N^2 d), so the full-size time is the subset's times (N / subset)^2, stated as
  extrapolated), and HDL's accuracy on the subset's exact graph against its inverted-file
  graph, 1% of each class labeled;
- faiss's search on ``--faiss-queries`` seeded rows (its time is linear in the queries; the
  full-size figure scales it, plus its training and adding, which are timed whole);
- pynndescent on the subset only, unless ``--pynndescent-full`` (compiled before the clock),
  at each ``--pynndescent-neighbors`` (its graph's width: the first k columns are kept, so a
  wider graph trades time for recall, the knob that brings it to 0.99); the full size runs
  the narrowest width that reached 0.99 on the subset (else the widest);
- ``hdlfast.dask.knn(method="ivf")`` on the embeddings stored as ``.npy`` (read by its tasks:
  the out-of-core path) on the threaded scheduler and a two-worker LocalCluster, next to the
  in-memory inverted file.
``--parts`` picks what runs (all but ``dask`` by default).
Every measurement is written to the JSON file as soon as it is taken.

Run: python benchmarks/approx_knn.py --out benchmarks/results/approx-knn-cpu-<machine>.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import hdlfast
from hdlfast.bench.machine import machine_info
from hdlfast.datasets import synthetic_embeddings

K = 20
SAMPLE = 1000


def exact_sample(x, rows, k):
    """Exact k neighbours (self excluded) of the rows ``rows`` of x against all of x."""
    _, idx = hdlfast.knn(x[rows], k + 1, database=x)
    return others(idx, rows, k)


def others(idx, rows, k):
    """The first k entries of each row of ``idx`` that are not the row's own index ``rows``
    (a search of the rows against the data they belong to lists the point itself)."""
    keep = np.argsort(idx == rows[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, keep, 1)


def recall(found, exact):
    return float((found[:, :, None] == exact[:, None, :]).any(axis=1).mean())


class Log:
    def __init__(self, path, meta):
        self.path, self.doc = path, {"meta": meta, "records": []}
        self.flush()

    def add(self, **rec):
        rec = {key: (round(v, 4) if isinstance(v, float) else v) for key, v in rec.items()}
        print(json.dumps(rec), flush=True)
        self.doc["records"].append(rec)
        self.flush()

    def flush(self):
        if self.path:
            Path(self.path).write_text(json.dumps(self.doc, indent=1))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def hdl_accuracy(x, y, graph, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.full(len(y), -1)
    for c in np.unique(y):
        members = np.nonzero(y == c)[0]
        labels[rng.choice(members, max(1, len(members) // 100), replace=False)] = c
    res = hdlfast.hdl(x, labels, K, graph=graph)
    hidden = labels < 0
    return float((np.asarray(res.labels)[hidden] == y[hidden]).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--subset", type=int, default=200_000)
    ap.add_argument("--spread", type=float, default=1.0)
    ap.add_argument("--nprobe", type=int, nargs="*", default=[16, 32],
                    help="fixed probe counts, measured besides the default (target recall)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--faiss-nprobe", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--faiss-queries", type=int, default=50_000)
    ap.add_argument("--pynndescent-full", action="store_true")
    ap.add_argument("--pynndescent-neighbors", type=int, nargs="+", default=[K + 1])
    ap.add_argument("--parts", nargs="+", default=["ivf", "subset", "faiss", "pynndescent",
                                                    "label"],
                    choices=["ivf", "subset", "faiss", "pynndescent", "dask", "label"])
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    meta = {"machine": machine_info(), "n": args.n, "d": args.d, "k": K, "classes": args.classes, "spread": args.spread,
            "recall_sample": SAMPLE, "subset": args.subset,
            "threads": hdlfast.info()["cpu_threads"]}
    log = Log(args.out, meta)
    x, y = synthetic_embeddings(args.n, args.d, n_classes=args.classes, spread=args.spread,
                                seed=0)
    configs = [None] + args.nprobe  # None: nprobe chosen for target_recall=0.99
    rng = np.random.default_rng(7)
    rows = np.sort(rng.choice(args.n, SAMPLE, replace=False)).astype(np.int64)
    truth, t = timed(lambda: exact_sample(x, rows, K))
    log.add(what="exact neighbours of the recall sample", n=args.n, seconds=t)

    parts = set(args.parts)
    for npr in configs if "ivf" in parts else []:
        g, t = timed(lambda: hdlfast.knn(x, K, method="ivf", nprobe=npr))
        log.add(what="hdlfast ivf", n=args.n, nprobe=g.nprobe, chosen=npr is None, seconds=t,
                recall=recall(np.asarray(g.idx)[rows], truth), recall_estimate=g.recall)
        del g
    if "dask" in parts:
        dask_ivf(x, rows, truth, log)
    if "subset" in parts:
        subset(x, y, args, configs, log)
    if "faiss" in parts:
        faiss_ivf(x, rows, truth, args, log)
    if "pynndescent" in parts:
        nndescent(x, rows, args, log)
    if "label" in parts:
        label_end_to_end(x, y, args, log)


def dask_ivf(x, rows, truth, log, schedulers=("threads", "distributed")):
    """hdlfast.dask's inverted file on the embeddings stored as .npy: the threaded scheduler
    (2 threads; out of core on one machine) and a LocalCluster of 2 worker processes."""
    import dask
    import distributed

    import hdlfast.dask as hd

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, x)

        def run():
            g = hd.knn(str(path), K, method="ivf")
            return g, dask.compute(g.sims, g.idx)

        for name in schedulers:
            if name == "threads":
                with dask.config.set(scheduler="threads", num_workers=2):
                    (g, (_, idx)), t = timed(run)
                what = "hdlfast.dask ivf (stored .npy, threaded scheduler, 2 threads)"
            else:
                with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                              processes=True, dashboard_address=None) as cl, \
                        distributed.Client(cl):
                    (g, (_, idx)), t = timed(run)
                what = "hdlfast.dask ivf (stored .npy, LocalCluster, 2 workers x 1 thread)"
            log.add(what=what, n=len(x), nprobe=g.nprobe, seconds=t,
                    recall=recall(idx[rows], truth), recall_estimate=g.recall)
            del idx


def subset(x, y, args, configs, log):
    """The exact graph and HDL on a subset (the rows of a smaller n are the first rows)."""
    xs, ys = x[:args.subset], y[:args.subset]
    ex, t_exact = timed(lambda: hdlfast.knn(xs, K))
    log.add(what="hdlfast exact", n=args.subset, seconds=t_exact,
            extrapolated_full_seconds=t_exact * (args.n / args.subset) ** 2)
    acc_exact = hdl_accuracy(xs, ys, ex)
    for npr in configs:
        g, t = timed(lambda: hdlfast.knn(xs, K, method="ivf", nprobe=npr))
        true = float((np.asarray(g.idx)[:, :, None] == np.asarray(ex.idx)[:, None, :])
                     .any(axis=1).mean())
        log.add(what="hdlfast ivf", n=args.subset, nprobe=g.nprobe, chosen=npr is None,
                seconds=t, recall=true,
                recall_estimate=g.recall, speedup_vs_exact=t_exact / t,
                hdl_accuracy=hdl_accuracy(xs, ys, g), hdl_accuracy_exact=acc_exact)
    del ex


def faiss_ivf(x, rows, truth, args, log):
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None and not args.no_peers:
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        nlist = importlib.import_module("hdlfast.knn.ivf").n_lists(args.n)  # as hdlfast's

        def build():
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(args.d), args.d, nlist,
                                       faiss.METRIC_INNER_PRODUCT)
            index.train(xn)
            index.add(xn)
            return index

        index, t_build = timed(build)
        qrows = np.sort(np.random.default_rng(8).choice(args.n, args.faiss_queries,
                                                        replace=False))
        qrows = np.union1d(qrows, rows)
        for npr in args.faiss_nprobe:
            index.nprobe = npr
            (_, idx), t = timed(lambda: index.search(xn[qrows], K + 1))
            pos = np.searchsorted(qrows, rows)
            found = idx[pos]
            log.add(what="faiss IndexIVFFlat", n=args.n, nlist=nlist, nprobe=npr,
                    build_seconds=t_build, search_seconds=t, queries=len(qrows),
                    seconds=t_build + t * args.n / len(qrows),
                    recall=recall(others(found, rows, K), truth))
        del index, xn


def nndescent(x, rows, args, log):
    try:
        import pynndescent
    except ImportError:
        pynndescent = None
    if pynndescent is not None and not args.no_peers:
        pynndescent.NNDescent(x[:3000], metric="cosine", n_neighbors=K + 1, random_state=0,
                              n_jobs=-1)  # numba compiles on first use: not timed
        widths = args.pynndescent_neighbors
        for n in ([args.subset] + ([args.n] if args.pynndescent_full else [])):
            sub = rows[rows < n]
            ref = exact_sample(x[:n], sub, K)
            got = {}
            for width in widths:
                def nnd():
                    return pynndescent.NNDescent(x[:n], metric="cosine", n_neighbors=width,
                                                 random_state=0, n_jobs=-1).neighbor_graph[0]
                idx, t = timed(nnd)
                found = idx[sub]
                got[width] = recall(others(found, sub, K), ref)
                log.add(what="pynndescent", n=n, n_neighbors=width, seconds=t,
                        recall=got[width])
            widths = [next((w for w in widths if got[w] >= 0.99), widths[-1])]


def label_end_to_end(x, y, args, log):
    with tempfile.TemporaryDirectory() as tmp:
        labels = np.full(args.n, -1)
        lab_rng = np.random.default_rng(9)
        for c in np.unique(y):
            members = np.nonzero(y == c)[0]
            labels[lab_rng.choice(members, max(1, len(members) // 100),
                                  replace=False)] = c
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "y.npy", labels)
        cmd = [sys.executable, "-m", "hdlfast", "label", str(Path(tmp) / "x.npy"),
               str(Path(tmp) / "y.npy"), "-o", str(Path(tmp) / "out.npz"), "--quiet",
               "--knn", "auto"]
        _, t = timed(lambda: subprocess.run(cmd, check=True, env=os.environ.copy()))
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report = json.loads((Path(tmp) / "out.json").read_text())
        out = np.load(Path(tmp) / "out.npz")["labels"]
        hidden = labels < 0
        log.add(what="hdlfast label --knn auto (end to end, own process)", n=args.n,
                seconds=t, peak_rss_mib=peak_mib, knn=report["knn"], k=report["k"],
                k_rule=report["k_rule"], timings=report["timings"],
                accuracy=float((out[hidden] == y[hidden]).mean()))


if __name__ == "__main__":
    main()
