"""Million-scale and scaling runs on top of ``hdlfast.bench``: time and peak memory as N grows
(10,000 to 1,000,000) and as k grows, for every capability, against the peers that are
installed, with the floors measured in the same run. One JSON result (schema of
``hdlfast/bench/__init__.py``) for ``benchmarks/plot.py``.

Profiles:
- ``cpu`` (a laptop-class machine, minutes): N from 10,000 up to 1,000,000 where the work
  allows it on a few cores (the exact kNN graph is O(N^2 d): 100,000 points at most here;
  k-means up to 1,000,000 x 512); k from 10 to 1,000 for the graph.
- ``gpu`` (a GPU session): the same capabilities up to 1,000,000 x 512 (kNN included) with the
  CUDA contenders and torch; the CPU peers only at the smaller sizes.
Slow peers are measured only up to the sizes where they finish in reasonable time (listed in
``PEER_MAX_N``); every run is one warm-up-free timing (``--repeats`` to change).

Run: python benchmarks/million.py --profile cpu --out benchmarks/results/million-cpu-<machine>.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from hdlfast import bench

N_SWEEP = (10_000, 100_000, 1_000_000)
PROFILES = {
    "cpu": {
        "knn": [{"n": n, "d": 128, "k": 20} for n in (10_000, 20_000, 50_000, 100_000)]
        + [{"n": 50_000, "d": 128, "k": k} for k in (10, 100, 1_000)],
        "hdl": [{"n": n, "k": 20} for n in N_SWEEP] + [{"n": 1_000_000, "k": k}
                                                       for k in (10, 50)],
        "sinkhorn": [{"n": n, "clusters": 100, "iters": 20} for n in N_SWEEP],
        "kmeans": [{"n": n, "d": 128, "clusters": 100, "iters": 20} for n in N_SWEEP]
        + [{"n": 1_000_000, "d": 512, "clusters": 100, "iters": 20}],
        "label": [{"n": n, "d": 128, "k": 20} for n in (10_000, 30_000, 100_000)],
    },
    "gpu": {
        "knn": [{"n": n, "d": 512, "k": 20} for n in N_SWEEP]
        + [{"n": 1_000_000, "d": 512, "k": k} for k in (100, 1_000)],
        "hdl": [{"n": n, "k": 20} for n in N_SWEEP],
        "sinkhorn": [{"n": n, "clusters": 3_000, "iters": 100} for n in N_SWEEP],
        "kmeans": [{"n": n, "d": 512, "clusters": 1_000, "iters": 20} for n in N_SWEEP],
        "label": [{"n": n, "d": 512, "k": 20} for n in N_SWEEP],
    },
}
# Largest N at which a peer (or hdlfast's slower backend) is still timed, per capability.
PEER_MAX_N = {
    "cpu": {"torch-cpu": {"knn": 20_000, "sinkhorn": 1_000_000},
            "faiss-cpu": {"knn": 100_000, "kmeans": 1_000_000},
            "hdlfast-numba": {"knn": 50_000, "label": 0, "kmeans": 100_000},
            "pot": {"sinkhorn": 100_000}, "sklearn": {"kmeans": 1_000_000}},
    "gpu": {"torch-cpu": {"knn": 0, "sinkhorn": 100_000}, "faiss-cpu": {"knn": 100_000,
                                                                     "kmeans": 100_000},
            "hdlfast-native": {"knn": 100_000, "label": 100_000, "kmeans": 1_000_000},
            "hdlfast-numba": {"knn": 0, "label": 0, "kmeans": 0, "hdl": 100_000,
                              "sinkhorn": 100_000},
            "pot": {"sinkhorn": 10_000}, "sklearn": {"kmeans": 100_000}},
}


def contenders_for(profile: str, cap: str, n: int):
    limits = PEER_MAX_N[profile]
    return [c for c in bench.CONTENDERS[cap] if n <= limits.get(c, {}).get(cap, n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument("--only", help="comma-separated capabilities (default: all)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", required=True, help="result JSON")
    a = ap.parse_args(argv)
    caps = a.only.split(",") if a.only else list(PROFILES[a.profile])
    merged = None
    start = time.perf_counter()
    for cap in caps:
        for size in PROFILES[a.profile][cap]:
            res = bench.run(sizes={cap: size}, repeats=a.repeats, warmup=False,
                            contenders=contenders_for(a.profile, cap, size["n"]),
                            progress=lambda line: print(line, file=sys.stderr, flush=True))
            if merged is None:
                merged = res
            else:
                merged["records"] += res["records"]
                merged["skipped"] += [s for s in res["skipped"] if s not in merged["skipped"]]
    merged["settings"] = {"preset": f"million.py --profile {a.profile}",
                          "repeats": a.repeats, "warmup": False,
                          "wall_seconds": time.perf_counter() - start}
    with open(a.out, "w") as f:
        json.dump(merged, f, indent=1)
    print(bench.format_machine(merged))
    print(bench.format_table(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
