"""Small calls covering every CUDA path (kNN, HDL labeling, Sinkhorn, k-means), for
compute-sanitizer (memcheck, racecheck, synccheck) in benchmarks/gpu_check.sh.
Exits non-zero on a wrong answer."""
import numpy as np
import torch

import hdlfast
from hdlfast.datasets import hypersphere_mixture

rng = np.random.default_rng(0)
for n, d, k, dtype in [(70, 9, 5, torch.float32), (300, 64, 33, torch.bfloat16),
                       (257, 17, 200, torch.float16), (129, 31, 128, torch.float32)]:
    x = rng.standard_normal((n, d)).astype(np.float32)
    xg = torch.from_numpy(x).to(dtype).cuda()
    sims, idx = hdlfast.knn(xg, k)
    ref_s, ref_i = hdlfast.knn(xg.float().cpu(), k, backend="native")
    err = float(np.abs(sims.cpu().numpy() - ref_s.numpy()).max())
    print("knn", n, d, k, dtype, "max |sim - cpu|", err)
    assert err < (1e-5 if dtype == torch.float32 else 3e-3), err

x, y = hypersphere_mixture(600, 16, 6, seed=1)
labels = np.full(600, -1)
labels[::50] = y[::50]
xg = torch.from_numpy(x).cuda()
res = hdlfast.hdl(xg, torch.from_numpy(labels).cuda(), k=10)
ref = hdlfast.hdl(x, labels, k=10, backend="native")
agree = float((res.labels.cpu().numpy() == ref.labels).mean())
print("hdl agreement with cpu", agree)
assert agree > 0.99, agree

s = rng.standard_normal((1000, 37)).astype(np.float32)
q, lab = hdlfast.sinkhorn(torch.from_numpy(s).cuda(), kind="sela", n_iters=50)
q_ref, _ = hdlfast.sinkhorn(s, kind="sela", n_iters=50, backend="native")
err = float(np.abs(q.cpu().numpy() - q_ref).max())
print("sinkhorn max |Q - cpu|", err)
assert err < 1e-5, err

for spherical in (True, False):
    km = hdlfast.kmeans(xg, 6, spherical=spherical, seed=0, n_iters=10)
    km_ref = hdlfast.kmeans(x, 6, spherical=spherical, seed=0, n_iters=10, backend="native")
    agree = float((km.labels.cpu().numpy() == km_ref.labels).mean())
    print("kmeans spherical" if spherical else "kmeans euclidean", "agreement", agree)
    assert agree > 0.99, agree
