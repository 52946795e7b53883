"""The ``hdlfast`` command: ``info``, ``demo``, ``label`` and ``bench``.

Errors in what the user gave (missing, corrupt or mismatched files, bad options) print one
line and exit with code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__, _checks

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


# --- loaders --------------------------------------------------------------------------------

_EMB_ITEMSIZES = (2, 4, 8)  # float16, float32, float64 (either byte order)
_MAX_LABEL = 2**31 - 1  # labels are int32 in the kernels


def _one_line(text) -> str:
    """``text`` on one line (library and parser messages can hold newlines)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _reason(exc: BaseException) -> str:
    """Why a parser failed, in one short line: the exception type and its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _input_file(path: str, what: str) -> Path:
    """``path`` as a Path when it names a regular file, else a UsageError saying why not."""
    p = Path(path)
    try:
        if p.is_dir():
            raise UsageError(f"{what} file is a directory: {path}")
        if not p.exists():
            raise UsageError(f"{what} file not found: {path}")
        if not p.is_file():
            raise UsageError(f"{what} file is not a regular file: {path}")
    except OSError as exc:  # e.g. a name too long for the file system
        raise UsageError(f"{what} file cannot be opened: {path} ({_reason(exc)})") from None
    return p


_GIB = 1 << 30


def _gib(text: str) -> float:
    """argparse type of --max-gib: a finite number of GiB above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0 < value < 1 << 40):
        raise argparse.ArgumentTypeError(f"must be a number of GiB above 0, got {text!r}")
    return value


def max_bytes(max_gib) -> int:
    """The size limit of one loaded array: ``--max-gib``, else half the available memory."""
    if max_gib is not None:
        return int(max_gib * _GIB)
    avail = _checks.available_memory()
    return avail // 2 if avail else 1 << 62


class Expect:
    """What a loaded array may be: at most ``limit`` bytes and, when ``rows`` is set, exactly
    that many rows (``rows_from``: the file they come from). Checked from headers."""

    def __init__(self, limit: int, rows: int | None = None, rows_from: str = ""):
        self.limit, self.rows, self.rows_from = limit, rows, rows_from

    def check(self, where: str, shape, nbytes: int) -> None:
        if nbytes > self.limit:
            raise UsageError(f"{where}: the array {tuple(shape)} needs {nbytes / _GIB:.2f} GiB, "
                             f"above the limit of {self.limit / _GIB:.2f} GiB (raise it with "
                             "--max-gib)")
        if self.rows is not None and len(shape) == 2 and shape[0] != self.rows:
            raise UsageError(f"{self.rows_from} has {self.rows} labels but {where} has "
                             f"{shape[0]} embeddings")


def _check_header(fh, where: str, expect: Expect) -> None:
    """Check the .npy header at fh's position against ``expect`` (fh is left there), before
    anything is allocated."""
    pos = fh.tell()
    try:
        major, _ = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if major == 1 else
                np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(fh)
    except Exception:  # noqa: BLE001 - np.load reports a malformed header in its own words
        shape, dtype = None, None
    fh.seek(pos)
    if shape is not None:
        expect.check(where, shape, int(np.prod(shape, dtype=object)) * dtype.itemsize)


def _load_npy(p: Path, expect: Expect) -> np.ndarray:
    """One array from a .npy file; anything else (an .npz archive, a pickle) is an error.
    The file is opened here so that it is closed whatever np.load makes of it."""
    with open(p, "rb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check_header(fh, str(p), expect)  # no .npy header: np.load says what it is
        arr = np.load(fh, allow_pickle=False)
        if not isinstance(arr, np.ndarray):  # np.load opened a zip archive
            raise UsageError(f"{p}: a zip (.npz) archive, not a .npy array")
    return arr


def load_embeddings(path: str, expect: Expect | None = None) -> np.ndarray:
    """(N, d) float array from .npy, .npz (key 'embeddings' or 'X', or its only array) or
    .pt/.pth (a tensor, or a dict holding one under 'embeddings'). Every row must be finite
    and non-zero (cosine similarity is undefined for a zero row). The size (default limit:
    half the available memory) and row count in ``expect`` are checked from the headers,
    before anything is allocated."""
    expect = Expect(max_bytes(None)) if expect is None else expect
    p = _input_file(path, "embeddings")
    try:
        if p.suffix == ".npy":
            arr = _load_npy(p, expect)
        elif p.suffix == ".npz":
            with open(p, "rb") as fh, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                z = np.load(fh, allow_pickle=False)
                if not isinstance(z, np.lib.npyio.NpzFile):
                    raise UsageError(f"{path}: a .npy array, not a .npz archive; rename it "
                                     "to .npy")
                keys = [k for k in ("embeddings", "X") if k in z.files] or z.files
                if len(keys) != 1 and not set(keys) & {"embeddings", "X"}:
                    raise UsageError(f"{path}: {len(z.files)} arrays {z.files[:8]}; name one "
                                     "'embeddings'")
                with z.zip.open(f"{keys[0]}.npy") as member:
                    _check_header(member, path, expect)
                arr = z[keys[0]]
                if not isinstance(arr, np.ndarray):  # a member that is no .npy file
                    raise UsageError(f"{path}: {keys[0]!r} is not a .npy array")
        elif p.suffix in (".pt", ".pth"):
            import torch

            with warnings.catch_warnings():  # e.g. on the pickle protocol of the file
                warnings.simplefilter("ignore")
                try:  # memory-mapped: storages are read only when touched
                    obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # the legacy (non-zip) format cannot be mapped
                    obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = obj.get("embeddings", obj.get("X"))
            if not isinstance(obj, torch.Tensor):
                raise UsageError(f"{path}: expected a tensor or {{'embeddings': tensor}}")
            if not obj.is_floating_point() or obj.layout != torch.strided:
                raise UsageError(f"{path}: embeddings must be a dense float tensor, got "
                                 f"{obj.dtype} ({obj.layout}) {tuple(obj.shape)}")
            expect.check(path, tuple(obj.shape), obj.numel() * 4)  # float32, views expanded
            arr = np.ascontiguousarray(obj.detach().float().numpy())
        else:
            raise UsageError(f"{path}: unknown embeddings format (use .npy, .npz or .pt)")
        if arr.ndim != 2 or arr.dtype.kind != "f" or arr.dtype.itemsize not in _EMB_ITEMSIZES:
            raise UsageError(f"{path}: embeddings must be a 2-D float16/32/64 array, got "
                             f"{_one_line(arr.dtype)} {arr.shape}")
        if not arr.dtype.isnative:  # e.g. written on a big-endian machine
            arr = arr.astype(arr.dtype.newbyteorder("="))
    except UsageError:
        raise
    except ImportError:
        raise UsageError(f"{path}: reading .pt files needs torch (pip install torch)") from None
    except MemoryError:
        raise UsageError(f"{path}: not enough memory to load the embeddings") from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the file's fault
        raise UsageError(f"{path}: cannot read embeddings ({_reason(exc)})") from None
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UsageError(f"{path}: no embeddings (shape {arr.shape})")
    try:
        _checks.rows(arr, "embeddings")  # scale-safe: any finite non-zero row passes
    except ValueError as exc:  # a NaN/Inf or zero row
        raise UsageError(f"{path}: {_one_line(exc)}") from None
    except MemoryError:
        raise UsageError(f"{path}: not enough memory to check the embeddings") from None
    return arr


def load_labels(path: str, limit: int | None = None) -> np.ndarray:
    """(N,) int64 labels from .npy or a text file (one integer per line; -1 = unlabeled);
    .npy arrays above ``limit`` bytes are refused from their headers."""
    expect = Expect(max_bytes(None) if limit is None else limit)
    p = _input_file(path, "labels")
    if p.suffix in (".npz", ".pt", ".pth"):
        raise UsageError(f"{path}: labels must be a .npy array or a text file with one "
                         "integer per line")
    try:
        if p.suffix == ".npy":
            arr = _load_npy(p, expect)
        else:
            with warnings.catch_warnings():  # e.g. "input contained no data"
                warnings.simplefilter("ignore")
                arr = np.loadtxt(p, dtype=np.float64, ndmin=1)
    except UsageError:
        raise
    except MemoryError:
        raise UsageError(f"{path}: not enough memory to load the labels") from None
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"{path}: cannot read labels ({_reason(exc)})") from None
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1 or arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and (
            not np.isfinite(arr).all() or (arr != np.round(arr)).any())):
        raise UsageError(f"{path}: labels must be one integer per point (-1 = unlabeled)")
    if arr.size and (arr.min() < -1 or arr.max() >= _MAX_LABEL):
        bad = float(arr.min() if arr.min() < -1 else arr.max())
        shown = f"{bad:.0f}" if abs(bad) < 1e15 else f"{bad:.3g}"
        raise UsageError(f"{path}: labels must be -1 (unlabeled) or a class in "
                         f"[0, {_MAX_LABEL}), found {shown}")
    return arr.astype(np.int64)


# --- commands -------------------------------------------------------------------------------


def _info(args) -> int:
    from . import info

    print(json.dumps(info(), indent=2))
    return 0


def _label(args) -> int:
    from . import _arrays

    npz, report = output_names(args.output)
    outputs = {"-o": npz, "-o (report)": report}
    if args.plot:
        outputs["--plot"] = Path(args.plot)
    _check_outputs(outputs, [Path(args.embeddings), Path(args.labels)], args.force)
    limit = max_bytes(args.max_gib)
    y = load_labels(args.labels, limit)  # first: the embeddings' header must match its length
    x = load_embeddings(args.embeddings, Expect(limit, y.shape[0], args.labels))
    if y.shape[0] != x.shape[0]:
        raise UsageError(f"{args.labels} has {y.shape[0]} labels but {args.embeddings} has "
                         f"{x.shape[0]} embeddings")
    if (y >= 0).sum() == 0:
        raise UsageError(f"{args.labels}: no labeled point (every label is -1)")
    if x.shape[0] < 2:
        raise UsageError(f"{args.embeddings}: a kNN graph needs at least 2 embeddings, got "
                         f"{x.shape[0]}")
    if args.k != "auto" and (not args.k.isdecimal() or int(args.k) < 1):
        raise UsageError(f"--k must be 'auto' or a positive integer, got {args.k!r}")
    if args.k != "auto" and int(args.k) > x.shape[0] - 1:
        raise UsageError(f"--k {args.k} is larger than the {x.shape[0] - 1} other points")
    if args.max_visits < 1:
        raise UsageError(f"--max-visits must be at least 1, got {args.max_visits}")
    if args.nprobe is not None and args.nprobe < 1:
        raise UsageError(f"--nprobe must be at least 1, got {args.nprobe}")
    if not 0 <= args.target_recall <= 1:
        raise UsageError(f"--target-recall must be in [0, 1], got {args.target_recall}")
    if args.device == "cuda" and args.knn == "ivf":
        raise UsageError("--knn ivf runs on the CPU: use --device cpu, or --knn exact (or "
                         "auto) with --device cuda")
    if args.device == "cuda":
        x = _arrays.to_gpu(x)
        if x is None:
            raise UsageError("--device cuda needs torch or cupy with a visible CUDA GPU")

    stages = ["kNN graph", "choose k", "label", "write"]
    bar = _progress(len(stages), args.quiet)
    try:
        return _label_run(args, x, y, npz, report, bar, stages)
    finally:
        bar.close()  # an error line then starts on a clean line


def output_names(output: str) -> tuple[Path, Path]:
    """The two files ``-o OUTPUT`` writes: OUTPUT itself when it ends in .npz, else
    OUTPUT.npz (``-o run.v2`` writes run.v2.npz), and the report beside it, .json for .npz."""
    out = Path(output)
    npz = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
    return npz, npz.with_suffix(".json")


def _same_file(a: Path, b: Path) -> bool:
    """Whether a and b name one file: the same resolved path (symlinks followed), or two
    links to one inode."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_outputs(outputs: dict, inputs: list, force: bool) -> None:
    """Before any work: every output can be written (its folder exists, it is no folder), is
    none of the inputs nor another output (symlinks resolved), and does not exist yet unless
    ``force``."""
    seen = []
    for option, path in outputs.items():
        try:
            if not path.parent.is_dir():
                raise UsageError(f"{option}: directory not found: {path.parent}")
            if path.is_dir():
                raise UsageError(f"{option}: {path} is a directory")
            for inp in inputs:
                if _same_file(path, inp):
                    raise UsageError(f"{option}: {path} is the input {inp}; refusing to write "
                                     "over an input")
            for other_option, other in seen:
                if _same_file(path, other):
                    raise UsageError(f"{option}: {path} is also the {other_option} output")
            if os.path.lexists(path) and not force:
                raise UsageError(f"{option}: {path} exists; pass --force to replace it")
        except OSError as exc:
            raise UsageError(f"{option}: cannot write {path} ({_reason(exc)})") from None
        seen.append((option, path))


@contextlib.contextmanager
def _atomic(path: Path, option: str):
    """A binary file object whose content replaces ``path`` only once fully written: a
    temporary file beside it, renamed over it at the end (a failure leaves ``path`` as it
    was; a symlink at ``path`` is replaced, its target untouched)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"{option}: cannot write {path} ({_reason(exc)})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            umask = os.umask(0)
            os.umask(umask)
            with contextlib.suppress(OSError):  # mkstemp makes it private: a normal file's mode
                os.fchmod(fh.fileno(), 0o666 & ~umask)
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UsageError(f"{option}: cannot write {path} ({_reason(exc)})") from None
        raise


def _label_run(args, x, y, out, report_path, bar, stages) -> int:
    from . import _arrays, hdl, knn, knn_vote, label_clusterability, select_k
    from .clusterability import DEFAULT_CANDIDATES
    from .labeling import PROVENANCE

    timings = {}
    candidates = sorted({*DEFAULT_CANDIDATES} if args.k == "auto" else {int(args.k)})
    candidates = [k for k in candidates if k <= x.shape[0] - 1] or [x.shape[0] - 1]
    t0 = time.perf_counter()
    bar.set_description(stages[0])
    method = args.method
    graph = None  # kNN-DV with a given k votes against the labeled points: no graph of all
    if method != "knn-dv" or args.k == "auto":
        graph = knn(x, max(candidates), method=args.knn, nprobe=args.nprobe,
                    target_recall=args.target_recall, progress=not args.quiet)
        sims, idx = (_arrays.to_numpy(a) for a in graph)
    timings["knn_s"] = time.perf_counter() - t0
    bar.update()

    bar.set_description(stages[1])
    if args.k == "auto":
        sel = select_k(x, y, candidates, graph=(sims, idx),
                       method="hdl" if method == "knn-dv" else method)
        k, rule, scores, curve = sel.k, sel.rule, sel.scores, sel.clusterability
    else:
        k, rule, scores = int(args.k), "given", {}
        curve = label_clusterability(x, y, candidates)
    bar.update()

    bar.set_description(stages[2])
    t0 = time.perf_counter()
    if method == "knn-dv":
        lab, conf = (_arrays.to_numpy(a) for a in knn_vote(x, y, k, knn_method=args.knn))
        level = np.where(y >= 0, 0, 1).astype(np.int32)
        prov = np.where(y >= 0, 0, PROVENANCE.index("fallback")).astype(np.int8)
    else:
        res = hdl(x, y, k, graph=(sims, idx), method=method, max_visits=args.max_visits)
        lab, conf, level, prov = (_arrays.to_numpy(a) for a in
                                  (res.labels, res.confidence, res.level, res.provenance))
    timings["label_s"] = time.perf_counter() - t0
    bar.update()

    bar.set_description(stages[3])
    with _atomic(out, "-o") as fh:
        np.savez(fh, labels=lab, confidence=conf, level=level, provenance=prov)
    lv, lc = np.unique(level, return_counts=True)
    report = {
        "n_points": int(x.shape[0]), "n_labeled": int((y >= 0).sum()), "method": method,
        "k": int(k), "k_rule": rule, "k_scores": {str(a): b for a, b in scores.items()},
        "knn": {"built": graph is not None, "target_recall": args.target_recall} | (
            {"method": graph.method, "recall": graph.recall, "k": int(max(candidates)),
             "nprobe": graph.nprobe} if graph is not None else
            {"method": None, "recall": None, "k": None, "nprobe": None}),
        "clusterability": curve,
        "provenance_counts": {name: int((prov == i).sum()) for i, name in enumerate(PROVENANCE)}
        | {"unlabeled": int((prov < 0).sum())},
        "level_counts": {str(int(a)): int(b) for a, b in zip(lv, lc)},
        "timings": timings, "output": str(out),
    }
    with _atomic(report_path, "-o") as fh:
        fh.write(json.dumps(report, indent=2).encode())
    if args.plot:
        _plot(args.plot, curve, level)
    bar.update()
    bar.close()
    if not args.quiet:
        print(f"labeled {x.shape[0]} points (k={k}, {rule}) -> {out}, {report_path}")
        if graph is not None and graph.method == "ivf":
            print(f"kNN graph: inverted-file search ({graph.nprobe} lists probed), "
                  f"recall@{max(candidates)} {graph.recall:.4f} on 1,000 sampled points")
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
    fmt = Path(path).suffix[1:].lower() or "png"
    try:
        with _atomic(Path(path), "--plot") as fh:
            fig.savefig(fh, dpi=100, format=fmt)
    except ValueError as exc:  # an image format matplotlib lacks
        raise UsageError(f"--plot: cannot write {path} ({_reason(exc)})") from None
    finally:
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
            k = select_k(x, lab, graph=(sims, idx)).k if args.k == "auto" else int(args.k)
            ks.append(k)
            acc["hdl"].append((hdl(x, lab, k, graph=(sims, idx)).labels == y).mean())
            acc["tree"].append((hdl(x, lab, k, graph=(sims, idx), method="tree").labels
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
        inline = args.sizes.lstrip().startswith("{")
        try:
            text = args.sizes if inline else _input_file(args.sizes, "--sizes").read_text()
            sizes = json.loads(text)
        except (ValueError, OSError, RecursionError) as exc:  # RecursionError: deep nesting
            raise UsageError(f"--sizes: not a JSON object or file ({_reason(exc)})") from None
        if not isinstance(sizes, dict):
            raise UsageError(f"--sizes: expected a JSON object {{capability: {{param: value}}}}"
                             f", got {type(sizes).__name__}")
    out = Path(args.out) if args.out else None
    if out is not None:
        sizes_file = [Path(args.sizes)] if args.sizes and not args.sizes.lstrip().startswith("{") \
            else []
        _check_outputs({"--out": out}, sizes_file, args.force)
    t0 = time.perf_counter()
    result = bench.run(quick=args.quick, capabilities=capabilities, sizes=sizes,
                       repeats=args.repeats, progress=lambda line: print(line, file=sys.stderr))
    print("machine:", bench.format_machine(result))
    print(bench.format_table(result))
    print(f"{len(result['records'])} measurements in {time.perf_counter() - t0:.1f} s")
    if out is not None:
        with _atomic(out, "--out") as fh:
            fh.write(json.dumps(result, indent=2).encode())
        print(f"wrote {out}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``hdlfast label: error: ...``) and exit 2."""

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``hdlfast`` command line (every option with its help text)."""
    parser = _Parser(prog="hdlfast", description="hdlfast: exact kNN graphs, kNN labeling "
                     "(HDL) and benchmarks for embeddings")
    parser.add_argument("--version", action="version", version=f"hdlfast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                help="what to run (hdlfast COMMAND --help for its options)")
    sub.add_parser("info", help="which backends are built and usable").set_defaults(fn=_info)

    demo = sub.add_parser("demo", help="label the bundled digits from a few labels per class")
    demo.add_argument("--per-class", type=int, nargs="+", default=[1, 2, 4],
                      help="labels per class to start from, one run each (default 1 2 4)")
    demo.add_argument("--draws", type=int, default=5,
                      help="random draws of the labeled points per setting (default 5)")
    demo.add_argument("--k", default="auto", help="'auto' (select_k) or a number")
    demo.set_defaults(fn=_demo)

    lab = sub.add_parser("label", help="label every point of an embedding file")
    lab.add_argument("embeddings", help=".npy, .npz or .pt embeddings (N, d)")
    lab.add_argument("labels", help=".npy or text labels (N,), -1 = unlabeled")
    lab.add_argument("-o", "--output", required=True,
                     help="output OUTPUT.npz (.npz added unless given) and its .json report")
    lab.add_argument("--force", action="store_true", help="replace outputs that exist")
    lab.add_argument("--max-gib", type=_gib,
                     help="largest input array to load, in GiB (default: half the available "
                          "memory); checked from the file header before loading")
    lab.add_argument("--k", default="auto", help="'auto' (select_k) or a number")
    lab.add_argument("--method", choices=["hdl", "knn-dv", "tree"], default="hdl",
                     help="hdl (propagation, search, fallback), knn-dv (direct kNN vote) or "
                          "tree (search only); default hdl")
    lab.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                     help="where the kNN graph is built (cuda: the embeddings go to the GPU "
                          "through torch or cupy); default cpu")
    lab.add_argument("--knn", choices=["exact", "ivf", "auto"], default="auto",
                     help="the kNN graph: exact, ivf (approximate inverted-file search with "
                          "a measured recall, for large data on the CPU) or auto (exact "
                          "while it is cheap, ivf beyond; the report says which ran)")
    lab.add_argument("--target-recall", type=float, default=0.99,
                     help="recall the inverted-file search aims at (default 0.99): it probes "
                          "the fewest lists that reach it on 1,000 sampled points")
    lab.add_argument("--nprobe", type=int,
                     help="a fixed number of lists each point probes instead")
    lab.add_argument("--max-visits", type=int, default=64,
                     help="points one label search may visit before it gives up (default 64)")
    lab.add_argument("--plot", help="PNG of the mu_k curve and the level histogram")
    lab.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    lab.set_defaults(fn=_label)

    ben = sub.add_parser("bench", help="time hdlfast against its peers and the floor here")
    ben.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    ben.add_argument("--only", help="comma-separated capabilities: knn,hdl,sinkhorn,kmeans,label")
    ben.add_argument("--out", help="write the results (machine, floors, records) as JSON")
    ben.add_argument("--force", action="store_true", help="replace --out if it exists")
    ben.add_argument("--repeats", type=int, help="timed runs per measurement (default 3)")
    ben.add_argument("--sizes", help=argparse.SUPPRESS)
    ben.set_defaults(fn=_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.fn(args)
    except (UsageError, ValueError, TypeError) as exc:  # also hdlfast's own bad-input errors
        print(f"hdlfast {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"hdlfast {args.command}: error: out of memory; use a smaller input (or more "
              "memory)", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
