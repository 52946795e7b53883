"""Speed of hdlfast.compat against the original algorithms, as those codebases write them
(a benchmark, not a test): SeLa's optimize_L_sk loop (numpy, float64), USL's
get_selection_with_reg loop (numpy in place of torch, the same broadcast (N, B, d) distance
tensor) and NCL's per-anchor hard-negative loss (torch), transcribed in tests/
(conftest.sela_loop, test_compat_usl.usl_loop, test_compat_ncl.ref_hng) and reused here.
Same inputs for both sides, medians of 3 after a warm-up; results checked equal.
Run: python benchmarks/compat_speed.py [--out benchmarks/results/compat-speed.json]
"""
import argparse
import json
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hdlfast  # noqa: E402
from conftest import sela_loop  # noqa: E402
from hdlfast.compat import sela, usl  # noqa: E402
from test_compat_usl import usl_loop  # noqa: E402


def median_time(fn, repeats=3):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


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
    return {"case": f"SeLa optimize_L_sk, N={n}, K={k}, lam={lamb} ({iters} iterations)",
            "original_s": median_time(lambda: sela_loop(p, lamb)),
            "hdlfast_s": median_time(ours)}


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
    return {"case": f"USL get_selection_with_reg, N={n}, d={d}, B={b}, iters={iters}",
            "original_s": median_time(lambda: usl_loop(x, dist, labels, b, b, **kw)),
            "hdlfast_s": median_time(
                lambda: usl.get_selection_with_reg(x, dist, labels, b, b, **kw))}


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
    return {"case": f"NCL ncl_hng_loss + backward, B={b}, d={d}, queues {queue}, "
                    f"num_neg={num_neg}, num_hard=400",
            "original_s": median_time(original), "hdlfast_s": median_time(ours)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/compat-speed.json")
    args = p.parse_args()
    records = [sela_case(100_000, 100), usl_case(20_000, 64, 50), ncl_case(5), ncl_case(20)]
    for r in records:
        r["speedup"] = r["original_s"] / r["hdlfast_s"]
    out = {"machine": {"cpu": platform.processor() or platform.machine(),
                       "python": platform.python_version(), "numpy": np.__version__,
                       "hdlfast": hdlfast.__version__},
           "records": records}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("| case | original (s) | hdlfast (s) | speed-up |\n|---|---:|---:|---:|")
    for r in records:
        print(f"| {r['case']} | {r['original_s']:.2f} | {r['hdlfast_s']:.2f} | "
              f"{r['speedup']:.1f}x |")


if __name__ == "__main__":
    main()
