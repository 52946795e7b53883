"""GPU smoke checks, one kernel family per process: ``python gpu_smoke.py FAMILY --out FILE``.

Run by benchmarks/gpu_check.sh with ``CUDA_LAUNCH_BLOCKING=1`` (a fault names its launch) and
``HDLFAST_POISON=1`` (every output hdlfast allocates starts as NaN / the most negative integer,
so an element no kernel wrote fails the check instead of passing as stale memory). Each check
compares the GPU result with the CPU backend on fresh random inputs, appends one JSON line to
FILE as soon as it is done, and the process exits 1 if any check failed. Families: knn,
labeling, sinkhorn, kmeans, neighbors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import numpy as np
import torch

import hdlfast

CPU = "native"
DEV = "cuda"  # --device cpu runs the same checks on torch CPU tensors (to test this script)
RESULTS: list[dict] = []


def record(out: str, family: str, case: str, ok: bool, **detail) -> None:
    row = {"family": family, "case": case, "ok": bool(ok), **detail}
    RESULTS.append(row)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(("PASS " if ok else "FAIL ") + json.dumps(row), flush=True)


def check(out: str, family: str, case: str, fn) -> None:
    """Run one check ``fn() -> (ok, detail dict)``; an exception is a failure, recorded."""
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
        if DEV == "cuda":
            torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - every failure is a result to report
        ok, detail = False, {"error": f"{type(exc).__name__}: {exc}",
                             "trace": traceback.format_exc(limit=4)[-600:]}
    record(out, family, case, ok, seconds=round(time.perf_counter() - t0, 4), **detail)


def unit64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def knn_case(n, nd, d, k, dtype, seed, tf32=False):
    """GPU kNN (self-graph when nd is None) against float64 similarities of the values the GPU
    holds: no NaN/poison, distinct valid indices, each returned similarity right, the k-th
    similarity equal to the reference's (ties allowed)."""
    def run():
        rng = np.random.default_rng(seed)
        q = torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32)).to(dtype).to(DEV)
        db = None if nd is None else torch.from_numpy(
            rng.standard_normal((nd, d)).astype(np.float32)).to(dtype).to(DEV)
        sims, idx = hdlfast.knn(q, k, database=db, allow_tf32=tf32)
        s, i = sims.cpu().numpy(), idx.cpu().numpy()
        qh = unit64(q.float().cpu().numpy())
        dh = qh if db is None else unit64(db.float().cpu().numpy())
        rows = np.random.default_rng(seed + 1).choice(n, min(n, 256), replace=False)
        full = qh[rows] @ dh.T
        if db is None:
            full[np.arange(rows.size), rows] = -np.inf
        ref_kth = -np.partition(-full, k - 1, axis=1)[:, k - 1]
        bad_idx = int(((i < 0) | (i >= dh.shape[0])).sum())
        if bad_idx or not np.isfinite(s).all():
            return False, {"nan": int((~np.isfinite(s)).sum()), "bad_idx": bad_idx}
        true = np.take_along_axis(full, i[rows], axis=1)
        err = float(np.abs(true - s[rows]).max())
        kth_err = float(np.abs(s[rows, -1] - ref_kth).max())
        dup = sum(len(set(r)) != k for r in i[rows])
        tol = 3e-3 if (dtype != torch.float32 or tf32) else 2e-5
        return err <= tol and kth_err <= tol and dup == 0, {
            "max_sim_err": err, "kth_err": kth_err, "dup_rows": dup, "tol": tol}
    return run


def paths_agree(n, d, k, dtype, seed):
    """The fused and the tiles GPU paths on one input: the same graph up to near-ties."""
    from hdlfast.knn import cuda as knn_cuda

    def run():
        x = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d)).astype(
            np.float32)).to(dtype).to(DEV)
        out = {}
        for path in knn_cuda.PATHS:
            os.environ[knn_cuda.PATH_ENV] = path
            out[path] = [t.cpu().numpy() for t in hdlfast.knn(x, k)]
        os.environ.pop(knn_cuda.PATH_ENV)
        (fs, fi), (ts, ti) = out["fused"], out["tiles"]
        err = float(np.abs(fs - ts).max())
        same = float((fi == ti).mean())
        return err <= 3e-3 and same >= 0.99, {"max_sim_diff": err, "same_idx": same}
    return run


def family_knn(out):
    from hdlfast.knn import cuda as knn_cuda

    cases = [(70, None, 9, 5, torch.float32), (3000, None, 64, 32, torch.bfloat16),
             (2000, None, 100, 129, torch.float16), (2500, None, 256, 1024, torch.bfloat16),
             (600, None, 33, 599, torch.float32), (40, 50_000, 128, 100, torch.bfloat16),
             (1, 20_000, 512, 10, torch.float32), (30_000, None, 128, 20, torch.bfloat16)]
    for path in knn_cuda.PATHS:
        os.environ[knn_cuda.PATH_ENV] = path
        for n, nd, d, k, dt in cases:
            check(out, "knn", f"{path}-n{n}-db{nd}-d{d}-k{k}-{str(dt)[6:]}",
                  knn_case(n, nd, d, k, dt, seed=n + d + k))
    os.environ.pop(knn_cuda.PATH_ENV, None)
    for n, d, k, dt in [(5000, 128, 16, torch.bfloat16), (3000, 64, 500, torch.float16)]:
        check(out, "knn", f"paths-agree-n{n}-d{d}-k{k}-{str(dt)[6:]}",
              paths_agree(n, d, k, dt, seed=k))
    check(out, "knn", "tf32-n4000-d128-k50", knn_case(4000, None, 128, 50, torch.float32, 7,
                                                        tf32=True))
    check(out, "knn", "float64-n500-d24-k9", knn_case(500, None, 24, 9, torch.float64, 8))


def _labels(n, y, every):
    lab = np.full(n, -1, np.int64)
    lab[::every] = y[::every]
    return lab


def family_labeling(out):
    from hdlfast.datasets import hypersphere_mixture

    for n, d, c, k in [(600, 16, 6, 10), (20_000, 64, 20, 20)]:
        x, y = hypersphere_mixture(n, d, c, seed=n)
        lab = _labels(n, y, 25)
        xg, lg = torch.from_numpy(x).to(DEV), torch.from_numpy(lab).to(DEV)

        def hdl_run(method):
            def run():
                g = hdlfast.hdl(xg, lg, k, method=method)
                r = hdlfast.hdl(x, lab, k, method=method, backend=CPU)
                got = g.labels.cpu().numpy()
                agree = float((got == r.labels).mean())
                return agree >= 0.99 and (got >= -1).all(), {
                    "agree_with_cpu": agree, "unlabeled": int((got < 0).sum())}
            return run

        def vote_run():
            lab_g, conf_g = hdlfast.knn_vote(xg, lg, k)
            lab_c, conf_c = hdlfast.knn_vote(x, lab, k, backend=CPU)
            agree = float((lab_g.cpu().numpy() == lab_c).mean())
            err = float(np.abs(conf_g.cpu().numpy() - conf_c).max())
            return agree >= 0.99 and np.isfinite(conf_g.cpu().numpy()).all(), {
                "agree_with_cpu": agree, "max_conf_err": err}

        for method in ("hdl", "tree"):
            check(out, "labeling", f"{method}-n{n}-k{k}", hdl_run(method))
        check(out, "labeling", f"knn_vote-n{n}-k{k}", vote_run)


def family_sinkhorn(out):
    rng = np.random.default_rng(3)
    for n, k, kind, iters in [(1000, 37, "sela", 50), (4096, 3000, "swav", 3),
                              (100_000, 100, "sela", 100)]:
        s = (0.5 * rng.standard_normal((n, k))).astype(np.float32)

        def run(s=s, kind=kind, iters=iters):
            q, lab = hdlfast.sinkhorn(torch.from_numpy(s).to(DEV), kind=kind, n_iters=iters)
            q_ref, lab_ref = hdlfast.sinkhorn(s, kind=kind, n_iters=iters, backend=CPU)
            q = q.cpu().numpy()
            err = float(np.abs(q - q_ref).max() / np.abs(q_ref).max())
            agree = float((lab.cpu().numpy() == lab_ref).mean())
            return np.isfinite(q).all() and err < 1e-4 and agree > 0.999, {
                "rel_err": err, "label_agree": agree}

        check(out, "sinkhorn", f"{kind}-n{n}-k{k}-it{iters}", run)


def family_kmeans(out):
    from hdlfast.datasets import hypersphere_mixture

    for n, d, c, spherical in [(600, 16, 6, True), (600, 16, 6, False),
                               (50_000, 128, 100, True), (50_000, 128, 100, False)]:
        x, _ = hypersphere_mixture(n, d, c, seed=c + n)

        def run(x=x, c=c, spherical=spherical):
            g = hdlfast.kmeans(torch.from_numpy(x).to(DEV), c, spherical=spherical, seed=0,
                               n_iters=10, tol=None)
            r = hdlfast.kmeans(x, c, spherical=spherical, seed=0, n_iters=10, tol=None,
                               backend=CPU)
            agree = float((g.labels.cpu().numpy() == r.labels).mean())
            inertia = abs(g.inertia - r.inertia) / max(abs(r.inertia), 1e-12)
            return agree > 0.99 and inertia < 1e-3, {"agree_with_cpu": agree,
                                                     "inertia_rel_diff": inertia}

        check(out, "kmeans", f"{'spherical' if spherical else 'euclidean'}-n{n}-c{c}", run)


def family_neighbors(out):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5000, 64)).astype(np.float32)

    def run():
        g = hdlfast.mine_neighbors(torch.from_numpy(x).to(DEV), 20).cpu().numpy()
        r = hdlfast.mine_neighbors(x, 20, backend=CPU)
        same = float((g == np.asarray(r)).all(axis=1).mean())
        return same > 0.99, {"rows_identical": same}

    check(out, "neighbors", "mine_neighbors-n5000-k20", run)


FAMILIES = {"knn": family_knn, "labeling": family_labeling, "sinkhorn": family_sinkhorn,
            "kmeans": family_kmeans, "neighbors": family_neighbors}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("family", choices=sorted(FAMILIES))
    p.add_argument("--out", required=True, help="JSON-lines file to append results to")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="where the tensors live (cpu: a dry run of this script)")
    a = p.parse_args()
    global DEV
    DEV = a.device
    FAMILIES[a.family](a.out)
    failed = [r["case"] for r in RESULTS if not r["ok"]]
    print(f"{a.family}: {len(RESULTS) - len(failed)}/{len(RESULTS)} passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
