"""GPU k-means benchmark (run in a session that has a GPU; see benchmarks/gpu_check.sh).

N=1,000,000 x d=256 rows (a mixture of 1,000 Gaussian blobs around unit-sphere centres,
generated on the device, seed 0) into 1,000 clusters, exactly 20 Lloyd iterations (tol=None:
20 centroid updates, 21 assignments), random initial rows, Euclidean k-means:

- hdlfast.kmeans (backend="cuda") on torch CUDA float32 input, float32 with allow_tf32=True,
  and float16 input; spherical k-means on float32 too;
- a plain torch Lloyd's algorithm on the same tensors (assignment: chunked matmul
  x @ c.T - |c|^2 / 2 then argmax; update: index_add_ of the rows into float32 sums and a
  bincount), float32 and float16 (the products in the input dtype, the sums in float32);
- faiss GPU k-means (faiss.Kmeans(gpu=True), trained on every row: max_points_per_centroid=N)
  when a faiss with GPU support imports (faiss.get_num_gpus() > 0); faiss.Kmeans takes host
  numpy float32 input, so it reads the rows from the host;
- the floor: the 20 assignment products alone (chunked x @ c.T in the input dtype).

Timed with CUDA events around each call (the device synchronised before; median of the repeats
after one warm-up). The inertia of every run (sum of squared distances of the rows to their
assigned final centroid, float64 on the device) is recorded as a quality check, with the
labels of 256 sampled rows checked against their nearest returned centroid. Each run is
appended to ``--out`` as one JSON line the moment it is measured (the first line: GPU and
sizes).

Run: python benchmarks/bench_kmeans_gpu.py --out kmeans-gpu.json
Check on a machine without a GPU: python benchmarks/bench_kmeans_gpu.py --device cpu --quick
    --out /tmp/kmeans-cpu-check.json  (tiny sizes, torch CPU tensors, faiss-cpu as the peer)
"""
import argparse
import platform

import torch

import hdlfast
from hdlfast import bench
from hdlfast.kmeans import kmeans

CHUNK = 1 << 17  # rows per assignment product of the torch peer and the floor


def timed(fn, repeats, device):
    """Median seconds of ``repeats`` runs after one warm-up (CUDA events on a GPU) and the
    result of the last run (``hdlfast.bench.timed``)."""
    sec, _, out = bench.timed(fn, repeats, device=device)
    return sec, out


def mixture(n, d, n_centres, spread, device, seed):
    """hdlfast.datasets.hypersphere_mixture's recipe (balanced), drawn on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    centres = torch.randn(n_centres, d, device=device, generator=gen)
    centres /= centres.norm(dim=1, keepdim=True)
    labels = torch.randint(n_centres, (n,), device=device, generator=gen)
    x = torch.randn(n, d, device=device, generator=gen).mul_(spread / d ** 0.5)
    x += centres[labels]
    return x


def random_rows(n, k, seed, device):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randperm(n, generator=gen)[:k].sort().values.to(device)


def assign(x, c, chunk=CHUNK):
    """Nearest centroid of every row: argmax of x . c - |c|^2 / 2 (products in x's dtype)."""
    half_sq = 0.5 * (c.float() * c.float()).sum(1)
    ct = c.to(x.dtype).t()
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], chunk):
        s = (x[i:i + chunk] @ ct).float()
        s -= half_sq
        labels[i:i + chunk] = s.argmax(1)
    return labels


def torch_lloyd(x, init_rows, iters, chunk=CHUNK):
    """Plain torch Lloyd's algorithm: ``iters`` updates, ``iters + 1`` assignments; empty
    clusters keep their centroid. Returns (centroids float32, labels)."""
    k, d = init_rows.shape[0], x.shape[1]
    c = x[init_rows].float()
    for it in range(iters + 1):
        labels = assign(x, c, chunk)
        if it == iters:
            return c, labels
        sums = torch.zeros(k, d, dtype=torch.float32, device=x.device)
        for i in range(0, x.shape[0], chunk):
            sums.index_add_(0, labels[i:i + chunk], x[i:i + chunk].float())
        counts = torch.bincount(labels, minlength=k)
        full = counts > 0
        c[full] = sums[full] / counts[full].unsqueeze(1).float()


def inertia(x, c, labels, chunk=CHUNK, spherical=False):
    """Sum of squared distances of the rows (unit rows when spherical) to their assigned
    centroid, in float64."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    c = c.to(x.device, torch.float64)
    labels = labels.to(x.device).reshape(-1).long()
    for i in range(0, x.shape[0], chunk):
        xi = x[i:i + chunk].double()
        if spherical:
            xi = xi / xi.norm(dim=1, keepdim=True)
        total += ((xi - c[labels[i:i + chunk]]) ** 2).sum()
    return float(total)


def check(x, c, labels, spherical, rows=256):
    """The labels of ``rows`` sampled rows against their nearest returned centroid (float64;
    a disagreement within 1e-6 of a tie counts as agreement)."""
    pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:rows]
    xs = x[pick.to(x.device)].double()
    c = torch.as_tensor(c).to(x.device).double()
    if spherical:
        xs = torch.nn.functional.normalize(xs, dim=1)
        score = xs @ torch.nn.functional.normalize(c, dim=1).T
    else:
        score = xs @ c.T - 0.5 * (c * c).sum(1)
    lab = torch.as_tensor(labels).to(x.device)[pick.to(x.device)]
    best = score.max(1).values
    mine = score.gather(1, lab.view(-1, 1)).squeeze(1)
    bad = int((mine < best - 1e-6 * best.abs().clamp(min=1)).sum())
    return {"check_rows": rows, "check_wrong_labels": bad, "check_ok": bad == 0}


def faiss_peer(device):
    """faiss with GPU support (on a GPU run), faiss-cpu for the --device cpu check; None if
    neither is usable."""
    try:
        import faiss
    except ImportError:
        return None, "faiss does not import"
    if device.type == "cuda":
        ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if ngpu == 0:
            return None, f"faiss {faiss.__version__} has no GPU support"
    return faiss, None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--clusters", type=int, default=1_000)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--spread", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (N=20,000, d=32, 50 clusters, 5 iterations, 1 repeat) to "
                        "check the code path end to end")
    p.add_argument("--out", required=True, help="JSON-lines file, appended to")
    a = p.parse_args()
    if a.quick:
        a.n, a.d, a.clusters, a.iters, a.repeats = 20_000, 32, 50, 5, 1
    device = torch.device(a.device)
    on_gpu = device.type == "cuda"
    backend = "cuda" if on_gpu else None
    name = torch.cuda.get_device_name(device) if on_gpu else (platform.processor() or "cpu")

    x32 = mixture(a.n, a.d, a.clusters, a.spread, device, 0)
    x16 = x32.half()
    rows = random_rows(a.n, a.clusters, 0, device)  # the torch peer's initial rows
    res = {"gpu": name, "device": str(device), "n": a.n, "d": a.d, "clusters": a.clusters,
           "iters": a.iters, "assignments": a.iters + 1, "init": "random rows",
           "data": f"blob mixture around {a.clusters} unit-sphere centres, spread {a.spread}",
           "torch": torch.__version__, "hdlfast": hdlfast.__version__,
           "machine": platform.machine(), "quick": a.quick}
    bench.append_line(a.out, res)
    runs = {}

    def record(key, fn, x, spherical=False, **extra):
        sec, (c, labels) = timed(fn, a.repeats, device)
        runs[key] = {"seconds": sec, "ms_per_iter": 1e3 * sec / a.iters,
                     "inertia": inertia(x, c, labels, spherical=spherical),
                     **check(x, c, labels, spherical), **extra}
        bench.append_line(a.out, {"run": key, **runs[key]})
        print(f"{key:>28} {sec:>9.3f} s  inertia {runs[key]['inertia']:.6g}", flush=True)
        if on_gpu:
            torch.cuda.empty_cache()

    def hd(x, spherical=False, tf32=False):
        def run():
            r = kmeans(x, a.clusters, spherical=spherical, n_iters=a.iters, tol=None,
                       init="random", seed=0, backend=backend, allow_tf32=tf32)
            return r.centroids, r.labels
        return run

    record("hdlfast_float32", hd(x32), x32, dtype="float32")
    record("hdlfast_float32_tf32", hd(x32, tf32=True), x32, dtype="float32",
           allow_tf32=True)
    record("hdlfast_float16", hd(x16), x32, dtype="float16")  # inertia on the float32 rows
    record("hdlfast_float32_spherical", hd(x32, spherical=True), x32, spherical=True,
           dtype="float32")
    record("torch_float32", lambda: torch_lloyd(x32, rows, a.iters), x32, dtype="float32")
    record("torch_float16", lambda: torch_lloyd(x16, rows, a.iters), x32, dtype="float16")

    faiss, why = faiss_peer(device)
    if faiss is None:
        res["faiss"] = why
        print(f"faiss peer skipped: {why}")
    else:
        host = x32.cpu().numpy()

        def run_faiss():
            km = faiss.Kmeans(a.d, a.clusters, niter=a.iters, seed=1234, gpu=on_gpu,
                              max_points_per_centroid=a.n, verbose=False)
            km.train(host)
            _, lab = km.index.search(host, 1)
            return torch.from_numpy(km.centroids), torch.from_numpy(lab[:, 0])

        record("faiss_float32", run_faiss, x32, dtype="float32",
               input="host numpy float32 (faiss.Kmeans takes host arrays)")
        res["faiss"] = faiss.__version__
        del host

    c0 = x32[rows]

    def floor(x):
        def run():
            c = c0.to(x.dtype).t()
            for _ in range(a.iters):
                for i in range(0, x.shape[0], CHUNK):
                    x[i:i + CHUNK] @ c
            return None
        return run

    for dtype, x in (("float32", x32), ("float16", x16)):
        sec, _ = timed(floor(x), a.repeats, device)
        runs[f"floor_{dtype}"] = {"seconds": sec, "ms_per_iter": 1e3 * sec / a.iters,
                                  "what": f"{a.iters} chunked products x @ c.T in {dtype}"}
        bench.append_line(a.out, {"run": f"floor_{dtype}", **runs[f"floor_{dtype}"]})
        print(f"{'floor_' + dtype:>28} {sec:>9.3f} s", flush=True)

    flops = 2.0 * a.n * a.d * a.clusters * (a.iters + 1)
    for key, r in runs.items():
        if key.startswith("floor"):
            continue
        dtype = r["dtype"]
        r["tflops_assign"] = flops / r["seconds"] / 1e12
        r["ratio_to_floor"] = r["seconds"] / runs[f"floor_{dtype}"]["seconds"]
        r["speedup_vs_torch"] = runs[f"torch_{dtype}"]["seconds"] / r["seconds"]
        if "faiss_float32" in runs:
            r["speedup_vs_faiss"] = runs["faiss_float32"]["seconds"] / r["seconds"]
        if key.endswith("spherical"):  # a different objective: no inertia comparison
            continue
        r["inertia_over_torch_minus_1"] = r["inertia"] / runs[f"torch_{dtype}"]["inertia"] - 1
        if "faiss_float32" in runs:
            r["inertia_over_faiss_minus_1"] = r["inertia"] / runs["faiss_float32"]["inertia"] - 1
    for key, r in runs.items():
        bench.append_line(a.out, {"run": key, "summary": True, **r})
    print(f"k-means N={a.n} d={a.d} C={a.clusters} {a.iters} iterations on {name}")
    print(f"{'':>28} {'seconds':>9} {'ms/iter':>8} {'x floor':>8} {'vs torch':>9} "
          f"{'vs faiss':>9} {'inertia':>12}")
    for key, r in runs.items():
        if key.startswith("floor"):
            continue
        vs_faiss = f"{r['speedup_vs_faiss']:>9.2f}" if "speedup_vs_faiss" in r else f"{'-':>9}"
        print(f"{key:>28} {r['seconds']:>9.3f} {r['ms_per_iter']:>8.2f} "
              f"{r['ratio_to_floor']:>8.2f} {r['speedup_vs_torch']:>9.2f} {vs_faiss} "
              f"{r['inertia']:>12.6g}")


if __name__ == "__main__":
    main()
