"""GPU exact kNN benchmark (run in a session that has a GPU; see benchmarks/gpu_session.sh).

N=1,000,000 x d=512 bf16, k=32 (and k=1024, k=4096): hdlfast.knn against torch (mm + topk in
query blocks, bf16) and against the bf16 matrix products alone (the floor), all timed with CUDA
events in the same process. Writes JSON with the GPU name.
"""
import argparse
import json
import platform

import torch

import hdlfast
from hdlfast import bench


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--ks", default="32,1024,4096")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--block", type=int, default=4096)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    centres = torch.randn(1000, a.d, device="cuda", generator=gen)
    lab = torch.randint(0, 1000, (a.n,), device="cuda", generator=gen)
    x = centres[lab] + torch.randn(a.n, a.d, device="cuda", generator=gen)
    x = torch.nn.functional.normalize(x, dim=1).to(torch.bfloat16)
    del centres, lab
    flops = 2.0 * a.n * a.n * a.d
    res = {"gpu": torch.cuda.get_device_name(), "n": a.n, "d": a.d, "dtype": "bfloat16",
           "torch": torch.__version__, "hdlfast": hdlfast.__version__,
           "machine": platform.node(), "runs": []}
    floor = timed(lambda: torch_blocks(x, 1, a.block, topk=False), a.repeats)
    res["matmul_floor_s"] = floor
    res["matmul_tflops"] = flops / floor / 1e12
    print(f"bf16 products alone: {floor:.3f} s ({flops / floor / 1e12:.0f} TFLOP/s)", flush=True)
    for k in (int(v) for v in a.ks.split(",")):
        n = a.n
        free = torch.cuda.mem_get_info()[0]
        xs = x
        while n * k * 12 > 0.5 * free:  # outputs (sims + idx) must fit comfortably
            n //= 2
            xs = x[:n]
        t_h = timed(lambda: hdlfast.knn(xs, k), a.repeats)
        t_t = timed(lambda: torch_blocks(xs, k + 1, a.block), a.repeats)
        scale = (n / a.n) ** 2
        run = {"k": k, "n": n, "hdlfast_s": t_h, "torch_mm_topk_s": t_t,
               "ratio_to_matmul_floor": t_h / (floor * scale), "speedup_vs_torch": t_t / t_h}
        res["runs"].append(run)
        print(json.dumps(run), flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"{'k':>6} {'n':>9} {'hdlfast s':>10} {'torch s':>9} {'x floor':>8} {'x torch':>8}")
    for r in res["runs"]:
        print(f"{r['k']:>6} {r['n']:>9} {r['hdlfast_s']:>10.3f} {r['torch_mm_topk_s']:>9.3f} "
              f"{r['ratio_to_matmul_floor']:>8.2f} {r['speedup_vs_torch']:>8.2f}")


if __name__ == "__main__":
    main()
