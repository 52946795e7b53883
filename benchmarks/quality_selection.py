"""Selection quality (not speed): which points to label, USL's select_to_label against random.

For a labeling budget B, the points chosen by hdlfast.selection.select_to_label (k=20, 10
selection rounds counted as USL's iters, spherical k-means into B clusters seeded with the draw's seed)
and B points drawn uniformly at random (same seed, without replacement) are labeled with their
true class, then HDL (k=20, on the exact kNN graph of all points) labels every point.
Reported per budget over several seeds: mean ± std of the HDL accuracy on the points that were
not picked (the unlabeled points; accuracy on all points is in the JSON too), the number of
classes the picks cover, and on how many seeds the selection beat random.

Data: scikit-learn's digits (1,797 x 64, 10 classes; budgets 10, 20, 50) and a long-tailed
hypersphere mixture (20,000 x 64, 20 classes, imbalance 10 (2,570 down to 228 points per
class), spread 2.0: 79% of the 20 nearest neighbours share the point's class; budgets 20, 40,
100).
Run: python benchmarks/quality_selection.py [--seeds 10] [--out benchmarks/results/...json]
"""
import argparse
import json
import time

import numpy as np

import hdlfast
from hdlfast.datasets import digits, hypersphere_mixture
from hdlfast.selection import select_to_label

K = 20
MIXTURE = {"n": 20_000, "d": 64, "n_classes": 20, "spread": 2.0, "imbalance": 10, "seed": 1}


def spread_labels(x, y, graph, picks):
    """HDL accuracy (on the points not picked, on all points) from the true labels of picks."""
    lab = np.full(y.shape[0], -1)
    lab[picks] = y[picks]
    pred = hdlfast.hdl(x, lab, K, graph=graph).labels
    rest = np.ones(y.shape[0], bool)
    rest[picks] = False
    return float((pred[rest] == y[rest]).mean()), float((pred == y).mean())


def evaluate(x, y, budget, seeds):
    sims, idx = hdlfast.knn(x, K)
    graph = (idx, sims)
    out = {m: {"acc_unlabeled": [], "acc_all": [], "classes_covered": []}
           for m in ("select_to_label", "random")}
    select_s = []
    for seed in seeds:
        t0 = time.perf_counter()
        chosen = np.asarray(select_to_label(x, budget, k=K, seed=seed))
        select_s.append(time.perf_counter() - t0)
        assert np.unique(chosen).size == budget
        drawn = np.random.default_rng(seed).choice(y.shape[0], budget, replace=False)
        for method, picks in (("select_to_label", chosen), ("random", drawn)):
            acc_rest, acc_all = spread_labels(x, y, graph, picks)
            out[method]["acc_unlabeled"].append(acc_rest)
            out[method]["acc_all"].append(acc_all)
            out[method]["classes_covered"].append(int(np.unique(y[picks]).size))
    res = {"budget": budget, "seeds": list(seeds), "n_classes": int(np.unique(y).size),
           "select_to_label_seconds_median": float(np.median(select_s))}
    for method, vals in out.items():
        res[method] = {**vals, **{f"{key}_mean": float(np.mean(v)) for key, v in vals.items()},
                       **{f"{key}_std": float(np.std(v)) for key, v in vals.items()}}
    s, r = out["select_to_label"]["acc_unlabeled"], out["random"]["acc_unlabeled"]
    res["select_beats_random"] = int(sum(a > b for a, b in zip(s, r)))
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/quality-selection.json")
    a = p.parse_args()
    seeds = range(a.seeds)
    x_d, y_d = digits()
    m = MIXTURE
    x_s, y_s = hypersphere_mixture(m["n"], m["d"], n_classes=m["n_classes"], spread=m["spread"],
                                   imbalance=m["imbalance"], seed=m["seed"])
    results = {"k": K, "accuracy": "HDL accuracy on the points not picked (acc_unlabeled); "
                                   "acc_all counts the picked points too",
               "digits": [evaluate(x_d, y_d, b, seeds) for b in (10, 20, 50)],
               "long_tailed_mixture": [evaluate(x_s, y_s, b, seeds) for b in (20, 40, 100)],
               "mixture": {**m, "class_sizes": np.bincount(y_s).tolist()}}
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"HDL (k={K}) accuracy on the unlabeled points, mean ± std over {a.seeds} seeds")
    print("| data | budget | select_to_label | random | classes covered (select / random) "
          "| select wins |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in (("digits", results["digits"]),
                       ("long-tailed mixture", results["long_tailed_mixture"])):
        for r in rows:
            s, q = r["select_to_label"], r["random"]
            print(f"| {name} | {r['budget']} "
                  f"| {100 * s['acc_unlabeled_mean']:.1f} ± {100 * s['acc_unlabeled_std']:.1f} "
                  f"| {100 * q['acc_unlabeled_mean']:.1f} ± {100 * q['acc_unlabeled_std']:.1f} "
                  f"| {s['classes_covered_mean']:.1f} / {q['classes_covered_mean']:.1f} "
                  f"of {r['n_classes']} | {r['select_beats_random']}/{len(r['seeds'])} |")


if __name__ == "__main__":
    main()
