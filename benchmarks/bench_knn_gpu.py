"""GPU exact kNN benchmark (run in a session that has a GPU; see benchmarks/gpu_check.sh).

N=1,000,000 x d=512 bf16, k=32 (and k=1024, k=4096): hdlfast.knn against torch (mm + topk in
query blocks, bf16) and against the bf16 matrix products alone (the floor), all timed with CUDA
events in the same process, for both GPU paths (fused kernels and cuBLAS tiles + hdlfast's
selection; ``faster_path`` names the faster). Each measurement is appended to ``--out`` as one JSON line the
moment it is made (a time limit loses only the measurement in flight), with hdlfast's result
checked on 32 sampled rows against float64 similarities (``check``); the first line holds the
GPU and the sizes. ``--quick``: N=200,000, one repeat (what the device check runs).
"""
import argparse
import json
import os
import platform

import torch

import hdlfast
from hdlfast import bench
from hdlfast.knn import cuda as knn_cuda


def timed(fn, repeats):
    """Median seconds of ``repeats`` runs after one warm-up, timed with CUDA events
    (``hdlfast.bench.timed``)."""
    return bench.timed(fn, repeats, device=torch.device("cuda"))[0]


def torch_blocks(x, k, block, topk=True):
    """torch peer: bf16 mm per query block, then topk (or the products alone)."""
    for i in range(0, x.shape[0], block):
        s = x[i:i + block] @ x.T
        if topk:
            s[torch.arange(s.shape[0], device=x.device), torch.arange(i, i + s.shape[0],
                                                                       device=x.device)] = -2
            torch.topk(s, k, dim=1)


def check(x, k, sims, idx, rows=32, tol=3e-3):
    """hdlfast's graph on ``rows`` sampled rows against float64 similarities of the bf16
    values: every returned similarity right and the k-th equal to the true k-th (ties kept)."""
    pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(k))[:rows]
    pick = pick.to(x.device)
    full = x[pick].double() @ x.double().T
    full[torch.arange(rows, device=x.device), pick] = -float("inf")
    kth = torch.topk(full, k, dim=1).values[:, -1]
    got = torch.gather(full, 1, idx[pick])
    err = float((got - sims[pick].double()).abs().max())
    kth_err = float((sims[pick, -1].double() - kth).abs().max())
    return {"check_rows": rows, "max_sim_err": err, "kth_err": kth_err,
            "check_ok": bool(err <= tol and kth_err <= tol)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--ks", default="32,1024,4096")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--block", type=int, default=4096)
    p.add_argument("--quick", action="store_true", help="N=200,000 and one repeat")
    p.add_argument("--out", required=True, help="JSON-lines file, appended to")
    a = p.parse_args()
    if a.quick:
        a.n, a.repeats = 200_000, 1
    gen = torch.Generator(device="cuda").manual_seed(0)
    centres = torch.randn(1000, a.d, device="cuda", generator=gen)
    lab = torch.randint(0, 1000, (a.n,), device="cuda", generator=gen)
    x = centres[lab] + torch.randn(a.n, a.d, device="cuda", generator=gen)
    x = torch.nn.functional.normalize(x, dim=1).to(torch.bfloat16)
    del centres, lab
    flops = 2.0 * a.n * a.n * a.d
    res = {"gpu": torch.cuda.get_device_name(), "n": a.n, "d": a.d, "dtype": "bfloat16",
           "torch": torch.__version__, "hdlfast": hdlfast.__version__,
           "machine": platform.node(), "quick": a.quick}
    bench.append_line(a.out, res)
    floor = timed(lambda: torch_blocks(x, 1, a.block, topk=False), a.repeats)
    bench.append_line(a.out, {"matmul_floor_s": floor, "matmul_tflops": flops / floor / 1e12})
    print(f"bf16 products alone: {floor:.3f} s ({flops / floor / 1e12:.0f} TFLOP/s)", flush=True)
    runs = []
    for k in (int(v) for v in a.ks.split(",")):
        n = a.n
        free = torch.cuda.mem_get_info()[0]
        xs = x
        while n * k * 12 > 0.5 * free:  # outputs (sims + idx) must fit comfortably
            n //= 2
            xs = x[:n]
        run = {"k": k, "n": n}
        for path in knn_cuda.PATHS:  # both GPU paths, each checked on sampled rows
            os.environ[knn_cuda.PATH_ENV] = path
            t = timed(lambda: hdlfast.knn(xs, k), a.repeats)
            run.update({f"hdlfast_{path}_s": t, **{f"{path}_{key}": v for key, v in
                                                   check(xs, k, *hdlfast.knn(xs, k)).items()}})
            bench.append_line(a.out, run)
        os.environ.pop(knn_cuda.PATH_ENV)
        t_h = min(run[f"hdlfast_{p}_s"] for p in knn_cuda.PATHS)
        run.update(hdlfast_s=t_h, faster_path=min(knn_cuda.PATHS,
                                                  key=lambda p: run[f"hdlfast_{p}_s"]))
        t_t = timed(lambda: torch_blocks(xs, k + 1, a.block), a.repeats)
        scale = (n / a.n) ** 2
        run.update({"torch_mm_topk_s": t_t, "ratio_to_matmul_floor": t_h / (floor * scale),
                    "speedup_vs_torch": t_t / t_h})
        bench.append_line(a.out, run)
        runs.append(run)
        print(json.dumps(run), flush=True)
    for nq in (1, 16, 256):  # few queries: the fused path splits the database among CTAs
        q = x[:nq]
        row = {"few_queries": nq, "k": 32, "n": a.n}
        for path in knn_cuda.PATHS:
            os.environ[knn_cuda.PATH_ENV] = path
            row[f"hdlfast_{path}_s"] = timed(lambda: hdlfast.knn(q, 32, database=x), a.repeats)
        os.environ.pop(knn_cuda.PATH_ENV)
        row["torch_mm_topk_s"] = timed(lambda: torch.topk(q @ x.T, 32, dim=1), a.repeats)
        s_h = hdlfast.knn(q, 32, database=x)[0]
        t_s = torch.topk(q.double() @ x.double().T, 32, dim=1).values
        row["check_ok"] = bool((s_h.double() - t_s).abs().max() <= 3e-3)
        bench.append_line(a.out, row)
        print(json.dumps(row), flush=True)
    print(f"{'k':>6} {'n':>9} {'fused s':>9} {'tiles s':>9} {'torch s':>9} {'x floor':>8} "
          f"{'x torch':>8}")
    for r in runs:
        print(f"{r['k']:>6} {r['n']:>9} {r['hdlfast_fused_s']:>9.3f} {r['hdlfast_tiles_s']:>9.3f} "
              f"{r['torch_mm_topk_s']:>9.3f} {r['ratio_to_matmul_floor']:>8.2f} "
              f"{r['speedup_vs_torch']:>8.2f}")


if __name__ == "__main__":
    main()
