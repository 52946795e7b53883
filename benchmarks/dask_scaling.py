"""How ``hdlfast.dask`` scales with workers, against single-machine hdlfast on the same data.

For N x d synthetic embeddings (``hdlfast.datasets.synthetic_embeddings``, written to a .npy
file that the tasks read themselves), times, medians of ``--repeats`` runs:

- the peer: ``hdlfast.knn`` / ``hdlfast.hdl`` in this process on 1 thread and on all cores;
- ``hdlfast.dask.knn`` / ``hdlfast.dask.hdl`` on a ``distributed.LocalCluster`` of 1, 2, ...
  worker processes with one thread each (started and warmed before the clock runs);
- ``hdlfast.dask.knn`` on the threaded scheduler (one process, out of core).

Every dask graph is checked against the single-machine one before it is recorded: the same
similarities to 1e-6 and the same neighbours, except where BLAS rounded a product of the
block tasks' differently shaped tiles the other way and swapped two neighbours whose float64
similarities agree to 1e-6 (the record counts those rows); every dask labeling equals
``hdlfast.hdl`` on the dask graph.
Output: one JSON with the machine, the floors and a record per (capability, mode, workers):
seconds, speed-up over one worker, and the ratio to single-machine hdlfast on all cores.

Run: python benchmarks/dask_scaling.py --out benchmarks/results/dask-scaling-<machine>.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import hdlfast
import hdlfast.dask as hdask
from hdlfast import bench
from hdlfast.datasets import synthetic_embeddings


def _median_time(fn, repeats):
    """Median seconds of ``repeats`` runs (no warm-up: the first run is one of the measured
    ones here) and the last result."""
    sec, _, out = bench.timed(fn, repeats, warmup=False)
    return sec, out


def _labels(n, n_labeled, seed=0):
    rng = np.random.default_rng(seed)
    y = np.full(n, -1, np.int64)
    pick = rng.choice(n, n_labeled, replace=False)
    y[pick] = rng.integers(0, 10, n_labeled)
    return y


def run(n, d, k, block_rows, workers, repeats, backend=None, progress=print):
    import dask
    import distributed

    records = []
    tmp = tempfile.mkdtemp(prefix="hdlfast-dask-")
    path = Path(tmp) / "emb.npy"
    synthetic_embeddings(n, d, seed=0, path=str(path))
    x = np.load(path)
    y = _labels(n, max(20, n // 1000))
    base = dict(n=n, d=d, k=k, block_rows=block_rows, backend=backend)
    opts = dict(block_rows=block_rows, backend=backend)

    def record(capability, mode, n_workers, seconds, ref=None):
        rec = dict(base, capability=capability, mode=mode, workers=n_workers,
                   seconds=round(seconds, 4))
        records.append(rec)
        progress(f"{capability:4s} {mode:22s} workers={n_workers:<3d} {seconds:8.3f} s")
        return rec

    # the peer: single-machine hdlfast, 1 thread and all cores
    cores = bench.machine_info()["usable_cores"] or os.cpu_count()
    local = {}
    for threads in sorted({1, cores}):
        os.environ["HDLFAST_NUM_THREADS"] = str(threads)
        t, (s_ref, i_ref) = _median_time(lambda: hdlfast.knn(x, k), repeats)
        record("knn", "hdlfast", threads, t)
        th, h_ref = _median_time(lambda: hdlfast.hdl(x, y, k), repeats)
        record("hdl", "hdlfast", threads, th)
        local[threads] = (t, th)
    os.environ.pop("HDLFAST_NUM_THREADS", None)

    unit = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)

    def check_knn(out):
        """hdlfast's graph up to BLAS rounding: the block tasks' tiles have other shapes, so a
        product may round differently and swap two neighbours whose similarities agree to
        1e-6 (checked in float64); returns how many rows differ."""
        s, i = out
        np.testing.assert_allclose(s, s_ref, atol=1e-6, rtol=0)
        rows = np.nonzero((i != i_ref).any(axis=1))[0]
        for r in rows:
            np.testing.assert_allclose(unit[i[r]] @ unit[r], unit[i_ref[r]] @ unit[r],
                                       atol=1e-6, rtol=0)
        return int(rows.size)

    def check_hdl(out):  # the labeling is exact on a given graph: hdlfast's on the dask one
        np.testing.assert_array_equal(out.labels, h_dask.labels)

    # threaded scheduler, one process: the out-of-core path
    t, out = _median_time(lambda: dask.compute(*hdask.knn(str(path), k, **opts),
                                               scheduler="threads", num_workers=cores), repeats)
    swapped = check_knn(out)
    record("knn", "dask-threads (stored)", cores, t)["rows_with_swapped_near_ties"] = swapped
    h_dask = hdlfast.hdl(x, y, k, graph=out)
    base["hdl_labels_differing_from_in_memory"] = int((h_dask.labels != h_ref.labels).sum())

    for w in workers:
        with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.wait_for_workers(w)
            dask.compute(*hdask.knn(x[:2000], 5, block_rows=500))  # warm the workers
            t, out = _median_time(lambda: dask.compute(
                *hdask.knn(str(path), k, **opts)), repeats)
            swapped = check_knn(out)
            record("knn", "dask-distributed", w, t)["rows_with_swapped_near_ties"] = swapped
            th, out = _median_time(lambda: hdask.hdl(str(path), y, k, **opts),
                                   repeats)
            check_hdl(out)
            record("hdl", "dask-distributed", w, th)

    for rec in records:
        one = [r for r in records if r["capability"] == rec["capability"]
               and r["mode"] == rec["mode"] and r["workers"] == 1]
        if one:
            rec["speedup_vs_1_worker"] = round(one[0]["seconds"] / rec["seconds"], 3)
        peer = local[cores][0 if rec["capability"] == "knn" else 1]
        rec["ratio_vs_hdlfast_all_cores"] = round(rec["seconds"] / peer, 3)
    path.unlink()
    return records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--block-rows", type=int, default=5_000)
    ap.add_argument("--workers", type=int, nargs="+", help="cluster sizes (default 1..cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backend", help="backend of the dask tasks (default: the worker's GPU "
                    "if it has one, else its CPU)")
    ap.add_argument("--out", help="JSON file for the results")
    args = ap.parse_args(argv)
    machine = bench.machine_info()
    cores = machine["usable_cores"] or os.cpu_count()
    workers = args.workers or sorted({1, 2, 4, 8, 16, cores} & set(range(1, cores + 1)))
    floors = {"gemm_gflops": round(bench.gemm_rate(), 1),
              "copy_gbs": round(bench.copy_bandwidth(), 1)}
    print(bench.format_machine({"machine": machine, "floors": floors}))
    t0 = time.time()
    records = run(args.n, args.d, args.k, args.block_rows, workers, args.repeats, args.backend)
    result = {"schema": 1, "kind": "dask-scaling", "machine": machine, "floors": floors,
              "wall_seconds": round(time.time() - t0, 1), "records": records}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
