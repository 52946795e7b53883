"""The workloads: each capability's presets and size parameters, its synthetic inputs (made once,
shared by its contenders) and the contenders that run it (hdlfast's backends and the peers)."""
from __future__ import annotations

import numpy as np

from .machine import _gpu_lib, _import, _ram_bytes

CAPABILITIES = ("knn", "hdl", "sinkhorn", "kmeans", "label")
DEFAULT_REPEATS = 3

QUICK = {
    "knn": {"n": 20_000, "d": 128, "k": 20, "queries": 0, "seed": 0},
    "hdl": {"n": 200_000, "k": 20, "classes": 100, "label_fraction": 0.001, "seed": 0},
    "sinkhorn": {"n": 50_000, "clusters": 100, "iters": 20, "lam": 25.0, "swav": 0, "seed": 0},
    "kmeans": {"n": 50_000, "d": 64, "clusters": 50, "iters": 20, "spherical": 0, "seed": 0},
    "label": {"n": 10_000, "d": 64, "k": 20, "classes": 100, "label_fraction": 0.01,
              "seed": 0},
}
FULL = {
    "knn": {"n": 50_000, "d": 256, "k": 20, "queries": 0, "seed": 0},
    "hdl": {"n": 1_000_000, "k": 20, "classes": 100, "label_fraction": 0.001, "seed": 0},
    "sinkhorn": {"n": 200_000, "clusters": 100, "iters": 100, "lam": 25.0, "swav": 0,
                 "seed": 0},
    "kmeans": {"n": 100_000, "d": 128, "clusters": 100, "iters": 20, "spherical": 0, "seed": 0},
    "label": {"n": 100_000, "d": 128, "k": 20, "classes": 100, "label_fraction": 0.01,
              "seed": 0},
}
# The full run's sizes per capability (each over FULL's): the pairs the performance targets
# name. knn queries > 0: that many query rows against a database of n rows (0: the
# self-graph); kmeans spherical 1: spherical k-means from k-means++ (0: Euclidean from random
# rows); sinkhorn swav 1: SwAV's sinkhorn (epsilon 0.05, iters iterations; 0: SeLa's).
FULL_SIZES = {
    "knn": [{"d": 128}, {}, {"d": 128, "k": 1000},
            {"n": 400_000, "d": 128, "k": 10, "queries": 2_000},
            {"n": 400_000, "d": 128, "k": 10, "queries": 1}],
    "sinkhorn": [{}, {"n": 4_096, "clusters": 3_000, "iters": 3, "swav": 1}],
    "kmeans": [{}, {"spherical": 1}],
}
_FLAGS = ("queries", "swav", "spherical", "seed")  # params that may be 0
PARAMS = {cap: tuple(QUICK[cap]) for cap in CAPABILITIES}
_FLOAT_PARAMS = ("lam", "label_fraction")

CONTENDERS = {
    "knn": ("hdlfast-native", "hdlfast-numba", "hdlfast-cuda", "faiss-cpu", "torch-cpu",
            "torch-cuda"),
    "hdl": ("hdlfast-native", "hdlfast-numba", "hdlfast-cuda"),
    "sinkhorn": ("hdlfast-native", "hdlfast-numba", "hdlfast-cuda", "pot", "torch-cpu",
                 "torch-cuda"),
    "kmeans": ("hdlfast-native", "hdlfast-numba", "hdlfast-cuda", "faiss-cpu", "sklearn"),
    "label": ("hdlfast-native", "hdlfast-cuda"),
}
_GPU_CONTENDERS = ("hdlfast-cuda", "torch-cuda")


def _unit_rows(x):
    """Normalise the rows of ``x`` in place, in blocks (no second copy of x)."""
    for i in range(0, x.shape[0], 65536):
        b = x[i:i + 65536]
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), np.float32(1e-12))
    return x


def prepare(capability: str, params: dict) -> dict:
    """The inputs of one workload (host arrays), shared by its contenders."""
    from ..datasets import ring_graph, synthetic_embeddings

    p = params
    if capability == "knn":
        x, _ = synthetic_embeddings(p["n"], p["d"], seed=p["seed"])
        if not p["queries"]:
            return {"x": _unit_rows(x)}
        q, _ = synthetic_embeddings(p["queries"], p["d"], seed=p["seed"] + 1)
        return {"x": _unit_rows(x), "q": _unit_rows(q)}
    if capability == "hdl":
        idx, sims, labels, truth = ring_graph(p["n"], p["k"], p["classes"],
                                              label_fraction=p["label_fraction"],
                                              seed=p["seed"])
        return {"idx": idx, "sims": sims, "labels": labels, "truth": truth}
    if capability == "sinkhorn":
        rng = np.random.default_rng(p["seed"])
        scores = rng.standard_normal((p["n"], p["clusters"]), dtype=np.float32)
        scores *= np.float32(0.1 if p["swav"] else 0.3)  # SwAV: cosine scores of unit rows
        return {"scores": scores}
    if capability == "kmeans":
        x, _ = synthetic_embeddings(p["n"], p["d"], n_classes=p["clusters"], seed=p["seed"])
        return {"x": _unit_rows(x) if p["spherical"] else x}
    if capability == "label":
        x, truth = synthetic_embeddings(p["n"], p["d"], n_classes=p["classes"],
                                        seed=p["seed"])
        rng = np.random.default_rng([p["seed"], 2])
        n_lab = min(p["n"], max(1, round(p["n"] * p["label_fraction"])))
        labels = np.full(p["n"], -1, np.int64)
        chosen = rng.choice(p["n"], n_lab, replace=False)
        labels[chosen] = truth[chosen]
        return {"x": x, "labels": labels, "truth": truth}
    raise ValueError(f"unknown capability {capability!r}")


def availability(capability: str, contender: str, params: dict):
    """None when ``contender`` can run this workload here, else the reason it cannot."""
    from .. import _backend

    if contender.startswith("hdlfast-"):
        backend = contender.split("-", 1)[1]
        if not _backend.built(backend):
            return f"hdlfast {backend} backend is not installed"
        if not _backend.usable(backend):
            return "no CUDA device is visible"
        if backend == "cuda" and _gpu_lib() is None:
            return "needs torch or cupy with a visible CUDA GPU"
        return None
    if contender in ("torch-cpu", "torch-cuda"):
        torch = _import("torch")
        if torch is None:
            return "torch is not installed"
        if contender == "torch-cuda" and not torch.cuda.is_available():
            return "torch sees no CUDA GPU"
        return None
    if contender == "faiss-cpu":
        return None if _import("faiss") is not None else "faiss is not installed"
    if contender == "sklearn":
        return None if _import("sklearn.cluster") is not None else \
            "scikit-learn is not installed"
    if contender == "pot":
        if _import("ot") is None:
            return "POT (ot) is not installed"
        need = 5 * 8 * params["n"] * params["clusters"]
        free = _ram_bytes("SC_AVPHYS_PAGES")
        if free is not None and need > free / 2:
            return (f"{params['n']} x {params['clusters']} in float64 needs about "
                    f"{need / 1e9:.1f} GB, more than half the free RAM")
        return None
    raise ValueError(f"unknown contender {contender!r}")


def _torch_knn(torch, x, k, block, q=None):
    """mm + topk in row blocks: the self-graph (self masked), or the queries q against x."""
    rows = x if q is None else q
    n = rows.shape[0]
    out_s = torch.empty(n, k, dtype=x.dtype, device=x.device)
    out_i = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for i in range(0, n, block):
        s = rows[i:i + block] @ x.T
        if q is None:
            r = torch.arange(s.shape[0], device=x.device)
            s[r, r + i] = -float("inf")
        torch.topk(s, k, dim=1, out=(out_s[i:i + block], out_i[i:i + block]))
    return out_s, out_i


def _torch_swav(torch, scores, iters, epsilon=0.05):
    """SwAV's distributed_sinkhorn on one process, as its repository writes it."""
    q = torch.exp(scores / epsilon).t()
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def _torch_sinkhorn(torch, s, lam, iters):
    n, c = s.shape
    q = s - s.max(dim=1, keepdim=True).values
    q.mul_(lam).exp_()
    for _ in range(iters):
        q.div_(q.sum(dim=0, keepdim=True) * c)
        q.div_(q.sum(dim=1, keepdim=True) * n)
    return q, q.argmax(dim=1)


def _setup(capability: str, contender: str, params: dict, data: dict):
    """A no-argument callable running one repetition (inputs made here, outside the clock)."""
    import hdlfast

    from .. import _arrays

    p = params
    if contender.startswith("hdlfast-"):
        backend = contender.split("-", 1)[1]
        gpu = backend == "cuda"

        def dev(a):
            return _arrays.to_gpu(a) if gpu else a

        if capability == "knn":
            x = dev(data["x"])
            if p["queries"]:
                q = dev(data["q"])
                return lambda: hdlfast.knn(q, p["k"], database=x, backend=backend)
            return lambda: hdlfast.knn(x, p["k"], backend=backend)
        if capability == "hdl":
            g, labels = (dev(data["idx"]), dev(data["sims"])), dev(data["labels"])
            return lambda: hdlfast.hdl(labels=labels, graph=g, k=p["k"], fallback=None,
                                       backend=backend)
        if capability == "sinkhorn":
            s = dev(data["scores"])
            if p["swav"]:
                return lambda: hdlfast.sinkhorn(s, kind="swav", n_iters=p["iters"],
                                                backend=backend)
            return lambda: hdlfast.sinkhorn(s, kind="sela", lam=p["lam"], n_iters=p["iters"],
                                            tol=0, backend=backend)
        if capability == "kmeans":
            x = dev(data["x"])
            spherical = bool(p["spherical"])
            return lambda: hdlfast.kmeans(x, p["clusters"], spherical=spherical,
                                          n_iters=p["iters"], tol=None,
                                          init="k-means++" if spherical else "random",
                                          seed=p["seed"], backend=backend)
        if capability == "label":
            x, labels = dev(data["x"]), data["labels"]
            return lambda: hdlfast.hdl(x, labels, p["k"], backend=backend)
    if contender in ("torch-cpu", "torch-cuda"):
        import torch

        device = "cuda" if contender == "torch-cuda" else "cpu"
        if capability == "knn":
            x = torch.from_numpy(data["x"]).to(device)
            q = torch.from_numpy(data["q"]).to(device) if p["queries"] else None
            n = x.shape[0]
            budget = 256 << 20
            if device == "cuda":
                budget = max(budget, torch.cuda.mem_get_info()[0] // 4)
            block = int(max(1, min(4096, budget // (4 * n))))
            return lambda: _torch_knn(torch, x, p["k"], block, q)
        if capability == "sinkhorn":
            s = torch.from_numpy(data["scores"]).to(device)
            if p["swav"]:
                return lambda: _torch_swav(torch, s, p["iters"])
            return lambda: _torch_sinkhorn(torch, s, p["lam"], p["iters"])
    if contender == "faiss-cpu":
        import faiss

        x = np.ascontiguousarray(data["x"], dtype=np.float32)
        d = x.shape[1]
        if capability == "knn":
            q = data.get("q")

            def faiss_knn():  # the index is built inside the clock, as hdlfast reads x
                index = faiss.IndexFlatIP(d)
                index.add(x)
                return index.search(x, p["k"] + 1) if q is None else index.search(q, p["k"])

            return faiss_knn
        if capability == "kmeans":
            def faiss_kmeans():
                km = faiss.Kmeans(d, p["clusters"], niter=p["iters"], seed=1234 + p["seed"],
                                  max_points_per_centroid=x.shape[0],
                                  min_points_per_centroid=1, verbose=False,
                                  spherical=bool(p["spherical"]))
                km.train(x)
                return km.centroids, km.index.search(x, 1)[1]

            return faiss_kmeans
    if contender == "sklearn" and capability == "kmeans":
        from sklearn.cluster import KMeans

        x = data["x"]
        return lambda: KMeans(n_clusters=p["clusters"], n_init=1,
                              init="k-means++" if p["spherical"] else "random",
                              max_iter=p["iters"], tol=0, algorithm="lloyd",
                              random_state=p["seed"]).fit(x)
    if contender == "pot" and capability == "sinkhorn":
        import ot

        cost = -data["scores"].astype(np.float64)
        a = np.full(cost.shape[0], 1.0 / cost.shape[0])
        b = np.full(cost.shape[1], 1.0 / cost.shape[1])
        reg = 0.05 if p["swav"] else 1.0 / p["lam"]  # SwAV's epsilon, or SeLa's 1 / lambda
        return lambda: ot.sinkhorn(a, b, cost, reg, numItermax=p["iters"], stopThr=0,
                                   warn=False)
    raise ValueError(f"contender {contender!r} does not run {capability!r}")
