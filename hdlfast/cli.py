"""The ``hdlfast`` command: ``hdlfast info`` and ``hdlfast demo``."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _info(args) -> int:
    from . import info

    print(json.dumps(info(), indent=2))
    return 0


def _demo(args) -> int:
    """Exact kNN graph of the bundled digits on every usable CPU backend."""
    from . import _backend, knn
    from .datasets import digits

    x, y = digits()
    print(f"digits: {x.shape[0]} points, {x.shape[1]} dims, {y.max() + 1} classes; k={args.k}")
    results = {}
    for name in ("native", "numba"):
        if not _backend.usable(name):
            continue
        knn(x[:64], args.k, backend=name)  # warm-up (numba compiles on first use)
        t0 = time.perf_counter()
        sims, idx = knn(x, args.k, backend=name)
        dt = time.perf_counter() - t0
        acc = float((y[idx] == y[:, None]).mean())
        results[name] = idx
        print(f"  {name:7s} {dt * 1e3:8.1f} ms   neighbour accuracy {acc:.4f}   "
              f"mean similarity {float(sims.mean()):.4f}")
    if len(results) == 2:
        same = np.array_equal(results["native"], results["numba"])
        print(f"  native and numba graphs identical: {same}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="hdlfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="which backends are built and usable").set_defaults(fn=_info)
    demo = sub.add_parser("demo", help="kNN graph of the bundled digits data")
    demo.add_argument("--k", type=int, default=10)
    demo.set_defaults(fn=_demo)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
