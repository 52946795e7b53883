"""The ``hdlfast`` command: ``info``, ``demo``, ``label`` and ``bench``.

Errors in what the user gave (missing, corrupt or mismatched files, bad options) print one
line and exit with code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


# --- loaders --------------------------------------------------------------------------------


def load_embeddings(path: str) -> np.ndarray:
    """(N, d) float array from .npy, .npz (key 'embeddings' or 'X', or its only array) or
    .pt/.pth (a tensor, or a dict holding one under 'embeddings')."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"embeddings file not found: {path}")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = [k for k in ("embeddings", "X") if k in z.files] or z.files
                if len(keys) != 1 and not set(keys) & {"embeddings", "X"}:
                    raise UsageError(f"{path}: several arrays {z.files}; name one 'embeddings'")
                arr = z[keys[0]]
        elif p.suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = obj.get("embeddings", obj.get("X"))
            if not isinstance(obj, torch.Tensor):
                raise UsageError(f"{path}: expected a tensor or {{'embeddings': tensor}}")
            arr = obj.detach().float().numpy()
        else:
            raise UsageError(f"{path}: unknown embeddings format (use .npy, .npz or .pt)")
    except UsageError:
        raise
    except ImportError:
        raise UsageError(f"{path}: reading .pt files needs torch (pip install torch)") from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the file's fault
        raise UsageError(f"{path}: cannot read embeddings ({type(exc).__name__}: {exc})") from None
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise UsageError(f"{path}: embeddings must be a 2-D float array, got {arr.dtype} "
                         f"{arr.shape}")
    return arr


def load_labels(path: str) -> np.ndarray:
    """(N,) int64 labels from .npy or a text file (one integer per line; -1 = unlabeled)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"labels file not found: {path}")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            arr = np.loadtxt(p, dtype=np.float64, ndmin=1)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"{path}: cannot read labels ({type(exc).__name__}: {exc})") from None
    arr = np.asarray(arr).ravel() if np.asarray(arr).ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and (
            not np.isfinite(arr).all() or (arr != np.round(arr)).any())):
        raise UsageError(f"{path}: labels must be one integer per point (-1 = unlabeled)")
    return arr.astype(np.int64)


# --- commands -------------------------------------------------------------------------------


def _info(args) -> int:
    from . import info

    print(json.dumps(info(), indent=2))
    return 0


def _label(args) -> int:
    from . import _arrays, hdl, knn, knn_vote, label_clusterability, select_k
    from .clusterability import DEFAULT_CANDIDATES
    from .labeling import PROVENANCE

    x = load_embeddings(args.embeddings)
    y = load_labels(args.labels)
    if y.shape[0] != x.shape[0]:
        raise UsageError(f"{args.labels} has {y.shape[0]} labels but {args.embeddings} has "
                         f"{x.shape[0]} embeddings")
    if (y >= 0).sum() == 0:
        raise UsageError(f"{args.labels}: no labeled point (every label is -1)")
    if args.k != "auto" and (not args.k.isdigit() or int(args.k) < 1):
        raise UsageError(f"--k must be 'auto' or a positive integer, got {args.k!r}")
    if args.k != "auto" and int(args.k) > x.shape[0] - 1:
        raise UsageError(f"--k {args.k} is larger than the {x.shape[0] - 1} other points")
    if args.device == "cuda":
        x = _arrays.to_gpu(x)
        if x is None:
            raise UsageError("--device cuda needs torch or cupy with a visible CUDA GPU")
    out = Path(args.output)
    if out.suffix != ".npz":
        out = out.with_suffix(".npz")

    stages = ["kNN graph", "choose k", "label", "write"]
    bar = _progress(len(stages), args.quiet)
    timings = {}
    candidates = sorted({*DEFAULT_CANDIDATES} if args.k == "auto" else {int(args.k)})
    candidates = [k for k in candidates if k <= x.shape[0] - 1] or [x.shape[0] - 1]
    t0 = time.perf_counter()
    bar.set_description(stages[0])
    sims, idx = (_arrays.to_numpy(a) for a in knn(x, max(candidates)))
    timings["knn_s"] = time.perf_counter() - t0
    bar.update()

    bar.set_description(stages[1])
    method = args.method
    if args.k == "auto":
        sel = select_k(x, y, candidates, graph=(idx, sims),
                       method="hdl" if method == "knn-dv" else method)
        k, rule, scores, curve = sel.k, sel.rule, sel.scores, sel.clusterability
    else:
        k, rule, scores = int(args.k), "given", {}
        curve = label_clusterability(x, y, candidates)
    bar.update()

    bar.set_description(stages[2])
    t0 = time.perf_counter()
    if method == "knn-dv":
        lab, conf = (_arrays.to_numpy(a) for a in knn_vote(x, y, k))
        level = np.where(y >= 0, 0, 1).astype(np.int32)
        prov = np.where(y >= 0, 0, PROVENANCE.index("fallback")).astype(np.int8)
    else:
        res = hdl(x, y, k, graph=(idx, sims), method=method, max_visits=args.max_visits)
        lab, conf, level, prov = (_arrays.to_numpy(a) for a in
                                  (res.labels, res.confidence, res.level, res.provenance))
    timings["label_s"] = time.perf_counter() - t0
    bar.update()

    bar.set_description(stages[3])
    np.savez(out, labels=lab, confidence=conf, level=level, provenance=prov)
    lv, lc = np.unique(level, return_counts=True)
    report = {
        "n_points": int(x.shape[0]), "n_labeled": int((y >= 0).sum()), "method": method,
        "k": int(k), "k_rule": rule, "k_scores": {str(a): b for a, b in scores.items()},
        "clusterability": curve,
        "provenance_counts": {name: int((prov == i).sum()) for i, name in enumerate(PROVENANCE)}
        | {"unlabeled": int((prov < 0).sum())},
        "level_counts": {str(int(a)): int(b) for a, b in zip(lv, lc)},
        "timings": timings, "output": str(out),
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    if args.plot:
        _plot(args.plot, curve, level)
    bar.update()
    bar.close()
    if not args.quiet:
        print(f"labeled {x.shape[0]} points (k={k}, {rule}) -> {out}, {out.with_suffix('.json')}")
        print("provenance:", report["provenance_counts"])
    return 0


def _plot(path, curve, level):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(curve["k"], curve["mu"], "o-", label="mu_k (all k agree)")
    a.plot(curve["k"], curve["agreement"], "s--", label="a_k (mean agreement)")
    a.set_xlabel("k")
    a.set_ylim(0, 1.02)
    a.set_title("label clusterability")
    a.legend()
    lv, lc = np.unique(level[level >= 0], return_counts=True)
    b.bar(lv, lc)
    b.set_xlabel("level")
    b.set_ylabel("points")
    b.set_title("points per level")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _progress(total, quiet):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=quiet or None, leave=False, file=sys.stderr)


def _demo(args) -> int:
    """HDL, kNN-DV, tree search and LabelSpreading on the bundled digits, few labels."""
    from sklearn.semi_supervised import LabelSpreading

    from . import _arrays, hdl, knn, knn_vote, select_k
    from .datasets import digits

    x, y = digits()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    t0 = time.perf_counter()
    sims, idx = (_arrays.to_numpy(a) for a in knn(x, 50))
    print(f"digits: {x.shape[0]} points, {x.shape[1]} dims, {y.max() + 1} classes; exact "
          f"50-NN graph in {(time.perf_counter() - t0) * 1e3:.0f} ms; {args.draws} random "
          "draws of the labeled points per setting; accuracy on all points")
    print(f"{'labels/class':>12} {'HDL':>13} {'kNN-DV':>13} {'tree':>13} "
          f"{'LabelSpreading':>15} {'k chosen':>9}")
    for per in args.per_class:
        acc = {m: [] for m in ("hdl", "dv", "tree", "ls")}
        ks = []
        for draw in range(args.draws):
            rng = np.random.default_rng(1000 * per + draw)
            lab = np.full(y.shape[0], -1)
            for c in range(10):
                lab[rng.choice(np.nonzero(y == c)[0], per, replace=False)] = c
            k = select_k(x, lab, graph=(idx, sims)).k if args.k == "auto" else int(args.k)
            ks.append(k)
            acc["hdl"].append((hdl(x, lab, k, graph=(idx, sims)).labels == y).mean())
            acc["tree"].append((hdl(x, lab, k, graph=(idx, sims), method="tree").labels
                                == y).mean())
            acc["dv"].append((_arrays.to_numpy(knn_vote(x, lab, k)[0]) == y).mean())
            ls = LabelSpreading(kernel="knn", n_neighbors=k, max_iter=200).fit(xn, lab)
            acc["ls"].append((ls.transduction_ == y).mean())
        cells = [f"{100 * np.mean(v):5.1f} ± {100 * np.std(v):4.1f}" for v in acc.values()]
        print(f"{per:>12} {cells[0]:>13} {cells[1]:>13} {cells[2]:>13} {cells[3]:>15} "
              f"{np.median(ks):>9.0f}")
    return 0


def _bench(args) -> int:
    """hdlfast against its peers and the floor on this machine (hdlfast.bench)."""
    from . import bench

    capabilities = None
    if args.only is not None:
        capabilities = [c.strip() for c in args.only.split(",") if c.strip()]
        bad = [c for c in capabilities if c not in bench.CAPABILITIES]
        if bad or not capabilities:
            named = ", ".join(map(repr, bad)) or repr(args.only)
            raise UsageError(f"--only: unknown capability {named}; choose from "
                             f"{','.join(bench.CAPABILITIES)}")
    if args.repeats is not None and args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    sizes = None
    if args.sizes is not None:  # hidden: JSON {capability: {param: value}} (tests, scripts)
        try:
            text = args.sizes if args.sizes.lstrip().startswith("{") else \
                Path(args.sizes).read_text()
            sizes = json.loads(text)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--sizes: not a JSON object or file ({exc})") from None
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--out: directory not found: {out.parent}")
    t0 = time.perf_counter()
    result = bench.run(quick=args.quick, capabilities=capabilities, sizes=sizes,
                       repeats=args.repeats, progress=lambda line: print(line, file=sys.stderr))
    print("machine:", bench.format_machine(result))
    print(bench.format_table(result))
    print(f"{len(result['records'])} measurements in {time.perf_counter() - t0:.1f} s")
    if out is not None:
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="hdlfast", description="hdlfast: exact kNN graphs "
                                     "and kNN labeling (HDL) for embeddings")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="which backends are built and usable").set_defaults(fn=_info)

    demo = sub.add_parser("demo", help="label the bundled digits from a few labels per class")
    demo.add_argument("--per-class", type=int, nargs="+", default=[1, 2, 4])
    demo.add_argument("--draws", type=int, default=5)
    demo.add_argument("--k", default="auto", help="'auto' (select_k) or a number")
    demo.set_defaults(fn=_demo)

    lab = sub.add_parser("label", help="label every point of an embedding file")
    lab.add_argument("embeddings", help=".npy, .npz or .pt embeddings (N, d)")
    lab.add_argument("labels", help=".npy or text labels (N,), -1 = unlabeled")
    lab.add_argument("-o", "--output", required=True, help="output .npz (+ .json report)")
    lab.add_argument("--k", default="auto", help="'auto' (select_k) or a number")
    lab.add_argument("--method", choices=["hdl", "knn-dv", "tree"], default="hdl")
    lab.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    lab.add_argument("--max-visits", type=int, default=64)
    lab.add_argument("--plot", help="PNG of the mu_k curve and the level histogram")
    lab.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    lab.set_defaults(fn=_label)

    ben = sub.add_parser("bench", help="time hdlfast against its peers and the floor here")
    ben.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    ben.add_argument("--only", help="comma-separated capabilities: knn,hdl,sinkhorn,kmeans,label")
    ben.add_argument("--out", help="write the results (machine, floors, records) as JSON")
    ben.add_argument("--repeats", type=int, help="timed runs per measurement (default 3)")
    ben.add_argument("--sizes", help=argparse.SUPPRESS)
    ben.set_defaults(fn=_bench)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as exc:
        print(f"hdlfast {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError) as exc:  # hdlfast's own bad-input errors
        print(f"hdlfast {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
