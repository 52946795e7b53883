"""Speed of hdlfast.compat against the original algorithms, as those codebases write them
(a benchmark, not a test): SwAV's distributed_sinkhorn (torch, float32, written here),
SeLa's optimize_L_sk loop (numpy, float64), SCAN's faiss mining, USL's
get_selection_with_reg loop (numpy in place of torch, the same broadcast (N, B, d) distance
tensor) and NCL's per-anchor hard-negative loss (torch), transcribed in tests/
(conftest.sela_loop, test_compat_usl.usl_loop, test_compat_ncl.ref_hng) and reused here.
Same inputs for both sides, results checked equal; medians of 11 (USL, SCAN: 3) after a warm-up,
the two sides timed in alternation.
Run: python benchmarks/compat_speed.py [--out benchmarks/results/compat-speed.json]
"""
import argparse
import json
import platform
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hdlfast  # noqa: E402
from conftest import sela_loop  # noqa: E402
from hdlfast import bench  # noqa: E402
from hdlfast.compat import sela, usl  # noqa: E402
from test_compat_usl import usl_loop  # noqa: E402


def paired_times(original, ours, repeats=11):
    """Median seconds of each, timed in alternation (``hdlfast.bench.paired_times``)."""
    return bench.paired_times(original, ours, repeats)


def record(case, original, ours, repeats=11):
    original_s, hdlfast_s = paired_times(original, ours, repeats)
    return {"case": case, "original_s": original_s, "hdlfast_s": hdlfast_s}


def swav_torch(out, epsilon=0.05, sinkhorn_iterations=3):
    """SwAV's distributed_sinkhorn (main_swav.py) as it runs on one process: torch, float32,
    in place, the all-reduces left out."""
    import torch

    with torch.no_grad():
        q = torch.exp(out / epsilon).t()
        b, k = q.shape[1], q.shape[0]
        q /= torch.sum(q)
        for _ in range(sinkhorn_iterations):
            q /= torch.sum(q, dim=1, keepdim=True)
            q /= k
            q /= torch.sum(q, dim=0, keepdim=True)
            q /= b
        q *= b
        return q.t()


def swav_case(b, k=3000):
    """SwAV's codes at its own sizes: B = 3,904 (a 4,096 batch minus the queue share) or
    32,768 rows (with the queue), 3,000 prototypes, 3 iterations, torch float32 in and out."""
    import torch

    from hdlfast.compat import swav

    out = 0.3 * torch.randn(b, k, generator=torch.Generator().manual_seed(0))
    ref, got = swav_torch(out), swav.distributed_sinkhorn(out)
    assert got.dtype == torch.float32 and float((got - ref).abs().max()) < 1e-5
    return record(f"SwAV distributed_sinkhorn, B={b}, K={k}, 3 iterations (torch)",
                  lambda: swav_torch(out), lambda: swav.distributed_sinkhorn(out))


def sela_case(n, k, lamb=25):
    import torch

    logits = 0.5 * np.random.default_rng(0).standard_normal((n, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)

    def ours():
        self = types.SimpleNamespace(PS=p.copy(), lamb=lamb, outs=[k], dtype=np.float64,
                                     L=torch.zeros(1, n, dtype=torch.long), dev="cpu")
        sela.optimize_L_sk(self, 0)
        return self.L[0].numpy(), self.sk_iters

    labels, iters = ours()
    ref_labels, _, ref_iters = sela_loop(p, lamb)
    assert iters == ref_iters and (labels == ref_labels).mean() > 0.999
    return record(f"SeLa optimize_L_sk, N={n}, K={k}, lam={lamb} ({iters} iterations)",
                  lambda: sela_loop(p, lamb), ours)


def usl_case(n, d, b, iters=10):
    x, _ = hdlfast.datasets.hypersphere_mixture(n, d, 10, spread=1.0, seed=1)
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims, _ = hdlfast.knn(x, 19)
    dist = np.maximum(2 - 2 * np.asarray(sims, np.float64), 0).sum(1) / 20
    labels = np.asarray(hdlfast.kmeans(x, b, seed=0).labels)
    kw = dict(iters=iters, w=0.5, momentum=0.9, horizon_dist=4, alpha=0.5)
    ref = usl_loop(x, dist, labels, b, b, **kw)
    got = usl.get_selection_with_reg(x, dist, labels, b, b, **kw)
    assert (got == ref).all()
    return record(f"USL get_selection_with_reg, N={n}, d={d}, B={b}, iters={iters}",
                  lambda: usl_loop(x, dist, labels, b, b, **kw),
                  lambda: usl.get_selection_with_reg(x, dist, labels, b, b, **kw), repeats=3)


def ncl_case(num_class, b=64, d=512, queue=2000, T=0.05):
    """One batch's hard-negative loss, forward and backward, at NCL's CIFAR settings: b
    unlabeled anchors of a 128 batch, 512-d features, queues of 2,000, hard_iter 5, num_hard
    400; num_neg is 50 for 5 classes (CIFAR-10), else 400 (CIFAR-100)."""
    import torch
    from test_compat_ncl import ref_hng, ref_smooth_hot, unit_batch

    from hdlfast.compat import ncl

    gen = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(10, d, generator=gen)
    memory, la_memory = (unit_batch(gen, queue, d, centres) for _ in range(2))
    feat = unit_batch(gen, b, d, centres).requires_grad_()
    inputs = torch.cat(((feat * feat).sum(1, keepdim=True), feat @ memory.t()), 1) / T
    targets = ref_smooth_hot(inputs.detach(), queue // num_class // 2, 0.2)
    module = ncl.NCLMemory(d, queue, T, num_class, -1, 0.2, 5, 400, 0)
    module.la_memory = la_memory

    def ours():
        torch.manual_seed(1)
        loss = module.ncl_hng_loss(feat, inputs, targets, memory)
        loss.backward(retain_graph=True)
        return loss.detach()

    def original():
        torch.manual_seed(1)
        loss = ref_hng(feat, inputs, targets, memory, la_memory, num_class, 5, 400, T)[0]
        loss.backward(retain_graph=True)
        return loss.detach()

    assert abs(float(ours()) - float(original())) < 1e-5
    num_neg = 50 if num_class == 5 else 400
    return record(f"NCL ncl_hng_loss + backward, B={b}, d={d}, queues {queue}, "
                  f"num_neg={num_neg}, num_hard=400", original, ours)


def scan_case(n=50_000, d=128, topk=20):
    """SCAN's neighbour mining at its CIFAR-10 setting (50,000 features of 128, topk 20)
    against what SCAN runs: faiss IndexFlatIP, add, search topk + 1, the accuracy."""
    import faiss
    import torch

    from hdlfast.compat import scan

    x, y = hdlfast.datasets.hypersphere_mixture(n, d, 10, spread=1.0, seed=2)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    bank = scan.MemoryBank(n, d, 10, 0.1)
    bank.update(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))

    def original():
        index = faiss.IndexFlatIP(d)
        index.add(x)
        _, indices = index.search(x, topk + 1)
        accuracy = np.mean(np.take(y, indices[:, 1:], axis=0) == y[:, None])
        return indices, accuracy

    ref_idx, ref_acc = original()
    idx, acc = bank.mine_nearest_neighbors(topk)
    assert abs(acc - ref_acc) < 1e-3 and (idx[:, 1:] == ref_idx[:, 1:]).mean() > 0.99
    return record(f"SCAN mine_nearest_neighbors, N={n}, d={d}, topk={topk} (faiss-cpu "
                  f"{faiss.__version__} IndexFlatIP)", original,
                  lambda: bank.mine_nearest_neighbors(topk), repeats=3)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/compat-speed.json")
    args = p.parse_args()
    records = [swav_case(3904), swav_case(32768), sela_case(100_000, 100),
               usl_case(20_000, 64, 50), ncl_case(5), ncl_case(20), scan_case()]
    for r in records:
        r["speedup"] = r["original_s"] / r["hdlfast_s"]
    info = hdlfast.info()
    out = {"machine": {"cpu": info["cpu"], "threads": info["cpu_threads"],
                       "python": platform.python_version(), "numpy": np.__version__,
                       "hdlfast": hdlfast.__version__},
           "records": records}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("| case | original (ms) | hdlfast (ms) | speed-up |\n|---|---:|---:|---:|")
    for r in records:
        print(f"| {r['case']} | {1e3 * r['original_s']:.0f} | {1e3 * r['hdlfast_s']:.0f} | "
              f"{r['speedup']:.1f}x |")


if __name__ == "__main__":
    main()
