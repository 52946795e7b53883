"""kNN graphs (exact, or the inverted file) and HDL labels on dask: beyond one machine, or
beyond its memory.

``knn(X, k)`` splits the work by row blocks: one task per (query block, database block) runs
the local :func:`hdlfast.knn` on the two blocks (on the worker's GPU when it has one; for a
self-graph one task per pair i < j serves both blocks from one pass of products), and the
partial top-k lists of each query block are merged by a tree reduction (:func:`merge`, which
keeps the tie rule of the docs, so the result depends neither on the chunking nor on the tree).
``hdl`` builds that graph on the cluster, gathers it to one worker for the labeling (linear
in N k, far cheaper than the graph; see its docstring) and runs the fallback's kNN search on
the cluster again. Both equal the single-machine results on the same data. ``knn(X, k,
method="ivf")`` runs hdlfast's inverted file as tasks (:func:`_ivf_knn`).

``X`` is a dask array (its row chunks are the blocks; dask holds them in the workers' memory
while tasks need them), or stored embeddings that each task reads itself: a ``.npy`` path or
memmap, a zarr array or path, any array-like object. Stored embeddings keep the memory to a
few blocks per task whatever N is: out of core on one machine.

Needs the optional ``dask`` extra: ``pip install hdlfast[dask]``.
"""
from __future__ import annotations

import math
import mmap
import os
from pathlib import Path

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        "hdlfast.dask needs dask: pip install hdlfast[dask]  (or: pip install 'dask[array]')"
    ) from exc

from . import _arrays, _backend, _checks, _host
from ._host import DEFAULT_BUDGET, normalize
from .knn import AUTO_EXACT_WORK, KNNGraph
from .knn import METHODS as KNN_METHODS
from .knn import ivf
from .knn import knn as _local_knn
from .knn import host as knn_host
from .knn.host import topk
from . import labeling
from .labeling import FALLBACK, HDLResult
from .labeling import hdl as _local_hdl

__all__ = ["knn", "hdl", "merge", "save_graph", "load_graph", "NpyRows"]

PAD_SIM = np.float32(-np.inf)
PAD_IDX = np.iinfo(np.int64).max


# ---------------------------------------------------------------- merging partial top-k lists

def merge(a, b):
    """Merge two partial top-k results ``(sims, idx)`` of the same query rows, each row sorted
    by the tie rule of the docs (similarity descending, index ascending) as the block tasks return
    them: the ``max`` of the two widths best entries per row, in that order (a two-pointer
    merge, O(k) per row). Padding entries (sim -inf, idx int64 max) sort last. Pure,
    associative and commutative for lists of distinct indices."""
    from .knn.numba_kernels import merge_sorted

    (sa, ia), (sb, ib) = a, b
    k = max(sa.shape[1], sb.shape[1])
    out_s = np.empty((sa.shape[0], k), np.float32)
    out_i = np.empty((sa.shape[0], k), np.int64)
    merge_sorted(*(np.ascontiguousarray(x, dt) for x, dt in
                   ((sa, np.float32), (ia, np.int64), (sb, np.float32), (ib, np.int64))),
                 out_s, out_i)
    return out_s, out_i


def _merge_all(*parts):
    out = parts[0]
    for p in parts[1:]:
        out = merge(out, p)
    return out


# ---------------------------------------------------------------- where the rows come from

class NpyRows:
    """Rows of a C-ordered 2-D array stored raw in a file from a byte offset (a ``.npy`` file
    or a memmap of one). Reading rows [a, b) is one seek and one read into a fresh array, so
    a task holds only its rows (no mapped pages) and pickles as a path."""

    ndim = 2

    def __init__(self, path, dtype, shape, offset):
        self.path, self.dtype = os.fspath(path), np.dtype(dtype)
        self.shape, self.offset = tuple(int(s) for s in shape), int(offset)

    @classmethod
    def open(cls, path):
        """The array of a ``.npy`` file (header read, data left on disk)."""
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"{path}: unsupported .npy version {version}")
            shape, fortran, dtype = read(fh)
            if fortran and len(shape) > 1:
                raise ValueError(f"{path}: Fortran-ordered array; save it C-ordered")
            return cls(path, dtype, shape, fh.tell())

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        a, b, step = rows.indices(self.shape[0]) if isinstance(rows, slice) else (0, 0, 0)
        if step != 1:
            raise IndexError("NpyRows reads contiguous row ranges only")
        d = self.shape[1]
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + a * d * self.dtype.itemsize)
            out = np.fromfile(fh, dtype=self.dtype, count=max(b - a, 0) * d)
        if out.size != max(b - a, 0) * d:
            raise ValueError(f"{self.path} is shorter than its header says (rows {a}:{b})")
        return out.reshape(-1, d)

    def take(self, rows):
        """The rows ``rows`` (sorted) as a fresh array, through a read-only memory map."""
        m = np.memmap(self.path, self.dtype, "r", self.offset, self.shape)
        return np.array(m[rows])

    def __dask_tokenize__(self):
        st = os.stat(self.path)
        return (self.path, st.st_mtime_ns, st.st_size, self.offset, self.shape, self.dtype.str)


class _Subset:
    """The rows ``rows`` (sorted, unique) of a stored array, read run by run."""

    ndim = 2

    def __init__(self, base, rows):
        self.base, self.rows = base, np.asarray(rows, np.int64)
        self.shape, self.dtype = (self.rows.size, base.shape[1]), base.dtype

    def __getitem__(self, key):
        r = self.rows[key[0] if isinstance(key, tuple) else key]
        if _arrays.kind(self.base) != "other":  # numpy, torch or cupy in memory
            return _arrays.take_rows(self.base, r)
        if isinstance(self.base, NpyRows):
            return self.base.take(r)
        if hasattr(self.base, "oindex"):  # zarr
            return np.asarray(self.base.oindex[r, :])
        if r.size == 0:
            return np.empty((0, self.shape[1]), self.dtype)
        cut = np.flatnonzero(np.diff(r) != 1) + 1  # runs of consecutive rows
        parts = [np.asarray(self.base[int(run[0]):int(run[-1]) + 1])
                 for run in np.split(r, cut)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _dtype_name(x, name):
    if isinstance(x, _Subset):
        return _dtype_name(x.base, name)
    if _arrays.kind(x) != "other":
        return _arrays.info(x, name).dtype
    try:
        return _arrays._np_dtype_name(x.dtype)
    except TypeError:
        raise TypeError(f"{name} has a dtype numpy does not know: {x.dtype!r}") from None


def _stored(x, name):
    """A reader for stored embeddings given as a path, a memmap or an array-like object."""
    if isinstance(x, (str, os.PathLike)):
        p = Path(x)
        if not p.exists():
            raise ValueError(f"{name}: no such file or directory: {p}")
        if p.is_dir():  # a zarr array
            try:
                import zarr
            except ImportError:
                raise ImportError(f"{name} is a directory (zarr?) but zarr is not installed: "
                                  "pip install zarr") from None
            return zarr.open_array(str(p), mode="r")
        if p.suffix != ".npy":
            raise ValueError(f"{name}: a path must name a .npy file or a zarr directory, "
                             f"got {p.name}")
        return NpyRows.open(p)
    if isinstance(x, np.memmap) and isinstance(x.base, mmap.mmap) and x.flags.c_contiguous:
        return NpyRows(x.filename, x.dtype, x.shape, x.offset)  # the whole mapping
    if isinstance(x, (bytes, dict, set, list, tuple)) or not all(
            hasattr(x, a) for a in ("shape", "dtype", "__getitem__")):
        raise TypeError(f"{name} must be a dask array, a .npy/zarr path or an array, "
                        f"got {type(x).__name__}")
    return x


class _Source:
    """Row blocks of embeddings for the block tasks: the chunks of a dask array, or row ranges
    of a stored array that the task reads itself (``stored``)."""

    def __init__(self, x, name, block_rows=None):
        self.name = name
        self.stored = not isinstance(x, da.Array)
        if self.stored:
            x = _stored(x, name)
        if len(x.shape) != 2:
            raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(x.shape)}")
        dt = _dtype_name(x, name)
        if dt not in _arrays.FLOAT_DTYPES:
            kind = "floating-point embeddings (float32, float16 or bfloat16)"
            raise TypeError(f"{name} must hold {kind}, got dtype {dt}")
        if not self.stored and any(math.isnan(c) for c in x.chunks[0] + x.chunks[1]):
            raise ValueError(f"{name} has unknown chunk sizes: call {name}.compute_chunk_sizes()")
        self.shape = tuple(int(s) for s in x.shape)
        if 0 in self.shape:
            raise ValueError(f"{name} is empty: shape {self.shape}")
        if block_rows is not None:
            block_rows = _checks.positive_int(block_rows, "block_rows")
        if self.stored:
            if block_rows is None:  # dask's chunk size, counted in float32 rows
                size = dask.utils.parse_bytes(dask.config.get("array.chunk-size"))
                block_rows = max(1, size // (4 * self.shape[1]))
            self.x = x
            self._reader = dask.delayed(x, pure=True, traverse=False)
            self._bounds(range(0, self.shape[0], block_rows), block_rows)
        else:
            if block_rows is not None:
                x = x.rechunk({0: block_rows})
            if len(x.chunks[1]) > 1:  # a block task needs whole rows
                x = x.rechunk({1: -1})
            self.x = x
            self._blocks = x.to_delayed().ravel()
            off = np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(int)
            self.bounds = list(zip(off[:-1].tolist(), off[1:].tolist()))

    def _bounds(self, starts, rows):
        self.bounds = [(a, min(a + rows, self.shape[0])) for a in starts]

    def like_rows_of(self, other):
        """Use ``other``'s row blocks (query i is database row i with exclude_self)."""
        if self.stored:
            self.bounds = list(other.bounds)
        else:
            self.x = self.x.rechunk({0: tuple(b - a for a, b in other.bounds)})
            self._blocks = self.x.to_delayed().ravel()
            self.bounds = list(other.bounds)

    def block(self, j):
        """(what the task gets, start row, stop row, whether the task reads the rows)."""
        a, b = self.bounds[j]
        return (self._reader if self.stored else self._blocks[j]), a, b, self.stored

    def subset(self, rows):
        """A source of the rows ``rows`` (sorted, unique) only."""
        if self.stored:
            return _Source(_Subset(self.x, rows), self.name, self._block_rows())
        return _Source(self.x[rows], self.name)

    def _block_rows(self):
        return max(b - a for a, b in self.bounds)


def _as_source(x, name, block_rows=None):
    return x if isinstance(x, _Source) else _Source(x, name, block_rows)


# ---------------------------------------------------------------- block tasks

def _read(src, a, b, stored):
    """The rows [a, b) of a block task's input (already the rows unless ``stored``)."""
    if not stored:
        return src
    return _arrays.as_array(src[a:b], "X")  # numpy, torch and cupy blocks stay as they are


def _check_block(src, a, b, stored, name):
    """Raise for the first bad row (NaN/Inf or zero norm) of a block, named by its global
    row. One task per block: the pair tasks depend on it, so they never see a bad row."""
    _checks.rows(_read(src, a, b, stored), name, offset=a)


def _where(q, d, backend):
    """The two blocks where this worker computes them: on its GPU when ``backend`` asks for
    one or leaves the choice to the worker (see ``_backend.host_data_on_gpu``)."""
    if _arrays.kind(q) != "numpy" or not _backend.host_data_on_gpu(backend):
        return q, d
    g = _arrays.to_gpu(q)
    return (q, d) if g is None else (g, _arrays.to_device(d, g))


def _padded(sims, idx, k, offset):
    """(n, k) float32/int64 arrays of a partial top-k with global indices; the missing
    columns, and entries holding the index sentinel (nothing found above a floor), hold
    padding that sorts last."""
    n, kk = sims.shape
    out_s = np.full((n, k), PAD_SIM, np.float32)
    out_i = np.full((n, k), PAD_IDX, np.int64)
    idx = _arrays.to_numpy(idx)
    found = idx != PAD_IDX
    out_s[:, :kk] = np.where(found, _arrays.to_numpy(sims), PAD_SIM)
    out_i[:, :kk] = np.where(found, idx + np.where(found, offset, 0), PAD_IDX)
    return out_s, out_i


def _block_knn(q, qa, qb, q_stored, d, da_, db, d_stored, k, exclude, opts, *checked):
    """Top-k of one query block against one database block, global indices, padded to k.
    ``checked``: the row checks of both blocks (run first, results unused)."""
    q, d = _read(q, qa, qb, q_stored), _read(d, da_, db, d_stored)
    kk = min(k, d.shape[0] - (1 if exclude else 0))
    if kk <= 0:
        return _padded(np.empty((q.shape[0], 0), np.float32), np.empty((q.shape[0], 0)), k, 0)
    q, d = _where(q, d, opts["backend"])
    with _host.threads(opts["threads"]):
        s, i = _local_knn(q, kk, database=d, exclude_self=exclude, backend=opts["backend"],
                          memory_budget=opts["memory_budget"], allow_tf32=opts["allow_tf32"])
    return _padded(s, i, k, da_)


def _pair_knn(q, qa, qb, q_stored, d, da_, db, d_stored, k, opts, diag_q, diag_d, *checked):
    """An off-diagonal block pair (i < j) of a self-graph: the partial top-k of block i
    against block j and of block j against block i, from one pass of products. ``diag_q``,
    ``diag_d``: the blocks' own top-k; a row's k-th similarity there is a floor for its final
    k-th, so candidates below it are skipped (most of them: it saves most heap pushes)."""
    q, d = _read(q, qa, qb, q_stored), _read(d, da_, db, d_stored)
    q, d = _where(q, d, opts["backend"])
    impl = _backend.select(opts["backend"], _arrays.info(q, "X").on_gpu, like=q)
    floors = (diag_q[0][:, k - 1], diag_d[0][:, k - 1])  # -inf (padding) when < k found
    with _host.threads(opts["threads"]):
        (sq, iq), (sd, id_) = impl.knn.pair(q, d, min(k, d.shape[0]), min(k, q.shape[0]),
                                            allow_tf32=opts["allow_tf32"],
                                            memory_budget=opts["memory_budget"],
                                            floors=floors)
    return _padded(sq, iq, k, da_), _padded(sd, id_, k, qa)


# ---------------------------------------------------------------- kNN graph

def knn(X, k, *, database=None, exclude_self=None, method="exact", nprobe=None,
        target_recall=0.99, seed=0, recall_sample=1000, backend=None, memory_budget=None,
        allow_tf32=False, block_rows=None, threads_per_task=1, split_every=4) -> KNNGraph:
    """Cosine top-k of the rows of ``X`` by dask tasks, as lazy dask arrays: exact, or by an
    inverted file (``method="ivf"``) for data where even the cluster's exact graph is slow.

    Parameters
    ----------
    X : (N, d) float embeddings: a dask array chunked by rows (column chunks are merged), or
        stored embeddings read by the tasks themselves — a ``.npy`` path or memmap, a zarr
        array or directory, or any array-like (numpy included) — in blocks of ``block_rows``.
    k, exclude_self, memory_budget, allow_tf32 : as in :func:`hdlfast.knn`, per block task.
    database : (Nd, d) embeddings as X, or None for the graph of X against itself. With
        ``exclude_self=True`` it is split like X (query i is database row i).
    method, nprobe, target_recall, seed, recall_sample : as in :func:`hdlfast.knn`; "ivf" and
        "auto" (ivf above ``hdlfast.knn.AUTO_EXACT_WORK`` multiply-adds unless ``backend``
        is "cuda") run the inverted file's tasks on the workers' CPUs. The coarse k-means,
        every database row's list and the recall sample are computed when this is called
        (see :func:`_ivf_knn`); the search stays lazy.
    backend : None lets each worker use its GPU when it has one (and torch or cupy), else
        its CPU; "native"/"numba" keep every task on the CPU, "cuda" requires a GPU.
    block_rows : rows per block; default: X's row chunks for a dask array, else dask's
        ``array.chunk-size`` (128 MiB) of float32 rows. There are (N / block_rows)^2 tasks.
    threads_per_task : CPU threads of one block task (default 1: dask runs one task per
        core; raise it for workers that run fewer tasks than they have cores).
    split_every : fan-in of the tree reduction over the database blocks (>= 2).

    Returns
    -------
    KNNGraph(sims, idx) of (N, k) dask arrays (float32, int64) chunked by X's row blocks,
        unpacking as ``sims, idx`` and saying ``.method``, ``.recall`` and ``.nprobe`` as
        :func:`hdlfast.knn`'s graph does. Equal to ``hdlfast.knn`` on the whole arrays up
        to BLAS rounding (the tasks' tiles have other shapes, so two neighbours whose
        similarities agree to ~1e-6 can come out swapped): rows by decreasing similarity,
        equal similarities by increasing database index (for "ivf", with the same seed, the
        same lists and probe count). Compute both together
        (``dask.compute(sims, idx)`` or :func:`save_graph`) so that the block tasks run
        once. A bad row (NaN/Inf or zero norm) raises ValueError naming the argument and the
        global row at compute time ("ivf": a database row, when this is called).
    """
    src = _as_source(X, "X", block_rows)
    k = _checks.positive_int(k, "k")
    split_every = _checks.positive_int(split_every, "split_every")
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    if memory_budget is not None:
        memory_budget = _checks.positive_int(memory_budget, "memory_budget")
    _backend.check_name(backend)  # the workers, not this process, decide if it is usable
    threads_per_task = _checks.positive_int(threads_per_task, "threads_per_task")
    _checks.choice(method, "method", KNN_METHODS)
    nprobe = None if nprobe is None else _checks.positive_int(nprobe, "nprobe")
    target_recall = _checks.fraction(target_recall, "target_recall")
    seed = _checks.seed(seed)
    recall_sample = _checks.positive_int(recall_sample, "recall_sample", zero=True)
    n = src.shape[0]
    if database is None:
        exclude_self = True if exclude_self is None else bool(exclude_self)
        dsrc = src
    else:
        dsrc = _as_source(database, "database", block_rows)
        if dsrc.shape[1] != src.shape[1]:
            raise ValueError(f"X has {src.shape[1]} columns but database has {dsrc.shape[1]}")
        exclude_self = False if exclude_self is None else bool(exclude_self)
        if exclude_self:
            if dsrc.shape[0] != n:
                raise ValueError(
                    f"exclude_self=True with a database needs as many rows in X as in the "
                    f"database (row i is database row i), got {n} and {dsrc.shape[0]}")
            dsrc.like_rows_of(src)
    nd = dsrc.shape[0]
    if exclude_self:
        _checks.k_at_most(k, nd - 1, "database rows other than the point itself")
    else:
        _checks.k_at_most(k, nd, "database rows")

    if method == "auto":
        work = n * nd * src.shape[1]
        method = "ivf" if backend != "cuda" and work > AUTO_EXACT_WORK else "exact"
    if method == "ivf" and backend == "cuda":
        raise ValueError("method='ivf' runs on the workers' CPUs: pass method='exact' for "
                         "their GPUs, or backend=None / 'native' / 'numba'")
    opts = dict(backend=backend, memory_budget=memory_budget, allow_tf32=allow_tf32,
                threads=threads_per_task)
    if method == "ivf":
        return _ivf_knn(src, dsrc, k, exclude_self, nprobe, target_recall, seed,
                        recall_sample, opts, split_every)
    return KNNGraph(*_exact_knn(src, dsrc, k, exclude_self, opts, split_every))


def _exact_knn(src, dsrc, k, exclude_self, opts, split_every):
    """The exact graph's tasks (arguments checked by :func:`knn`): lazy (sims, idx)."""
    task = dask.delayed(_block_knn, pure=True)
    q_checks, d_checks = _row_checks(src, dsrc)
    d_blocks = [j for j, (a, b) in enumerate(dsrc.bounds) if b > a]
    if dsrc is src:  # a self-graph: one task per pair i < j serves both blocks
        pair = dask.delayed(_pair_knn, pure=True, nout=2)
        halves = {(i, i): task(*src.block(i), *src.block(i), k, exclude_self, opts,
                               q_checks[i]) for i in d_blocks}
        for a, i in enumerate(d_blocks):
            for j in d_blocks[a + 1:]:
                halves[i, j], halves[j, i] = pair(*src.block(i), *src.block(j), k, opts,
                                                  halves[i, i], halves[j, j], q_checks[i],
                                                  q_checks[j])
    results = []
    for i, (qa, qb) in enumerate(src.bounds):
        if qb == qa:  # an empty chunk (a row subset of a dask array)
            results.append(None)
        elif dsrc is src:
            results.append(_tree_merge([halves[i, j] for j in d_blocks], split_every))
        else:
            results.append(_tree_merge(
                [task(*src.block(i), *dsrc.block(j), k,
                      exclude_self and src.bounds[i] == dsrc.bounds[j], opts,
                      q_checks[i], d_checks[j]) for j in d_blocks], split_every))
    return _graph_arrays(results, src.bounds, k)


def _row_checks(src, dsrc):
    """One row-check task per block of the queries and of the database (the same tasks for a
    self-graph)."""
    check = dask.delayed(_check_block, pure=True)
    q_checks = [check(*src.block(i), "X") for i in range(len(src.bounds))]
    d_checks = q_checks if dsrc is src else [check(*dsrc.block(j), "database")
                                             for j in range(len(dsrc.bounds))]
    return q_checks, d_checks


def _tree_merge(level, split_every):
    """One delayed (sims, idx) merging the partial top-k lists ``level`` of the same rows."""
    merge_all = dask.delayed(_merge_all, pure=True)
    while len(level) > 1:
        level = [merge_all(*level[g:g + split_every])
                 for g in range(0, len(level), split_every)]
    return level[0]


def _graph_arrays(results, bounds, k):
    """(N, k) dask arrays (sims, idx) from one delayed (sims, idx) per row block (None for
    an empty block)."""
    sims, idx = [], []
    for res, (a, b) in zip(results, bounds):
        if res is None:
            sims.append(da.zeros((0, k), np.float32))
            idx.append(da.zeros((0, k), np.int64))
        else:
            sims.append(da.from_delayed(res[0], (b - a, k), dtype=np.float32))
            idx.append(da.from_delayed(res[1], (b - a, k), dtype=np.int64))
    return da.concatenate(sims, axis=0), da.concatenate(idx, axis=0)


# ---------------------------------------------------------------- approximate graph (inverted file)

def _ivf_knn(src, dsrc, k, exclude_self, nprobe, target_recall, seed, recall_sample, opts,
             split_every):
    """:func:`hdlfast.knn`'s inverted file (docs §1b) as dask tasks, stage by stage:

    1. the coarse spherical k-means, one task on the seeded training rows (gathered);
    2. every database row's list and the hash of its unit row, one task per database block
       (the assignment, Nd ints, comes back here; rows sharing a hash are read and compared
       to find exact copies); the lists are renumbered by region and consecutive ones
       grouped into about ``block_rows`` rows each, a group's rows gathered in list order
       (a dask array's once, into the cluster's memory; stored embeddings are read by each
       task that needs them);
    3. the recall sample: one task per group searches the sample's rows with every probe
       count tried (8, 16, ... and all lists, which is the exact search), merged per count;
       the smallest count reaching ``target_recall`` is used;
    4. lazily, per query block: its probes (one task), one search task per group (the
       queries probing that group's lists, exact tiles per list as on one machine), the
       partial lists merged as in the exact graph, exact copies tied as the tie rule says.
       Rows whose probed lists hold fewer than k candidates get the exact search (computed
       here: found from the list sizes).

    Stages 1-3 and the short rows are computed when called (each a pass over the data);
    the result equals hdlfast.knn(method="ivf") with the same seed up to BLAS rounding at
    near-ties (the tiles differ)."""
    cpu = _backend.host(opts["backend"]).name
    q_checks, d_checks = _row_checks(src, dsrc)
    nq, nd = src.shape[0], dsrc.shape[0]
    nlist = ivf.n_lists(nd)
    budget = _budget(opts)

    # 1-2: centroids, then every database row's list
    train = ivf.train_rows(nd, nlist, seed)
    train = np.arange(nd, dtype=np.int64) if train is None else train
    cent = dask.delayed(_coarse, pure=True)(_rows_of(dsrc, train), nlist, seed, cpu,
                                            *d_checks)
    assign = dask.delayed(_assign_db, pure=True)
    cent, *parts = dask.compute(cent, *[assign(*dsrc.block(j), cent, cpu, budget,
                                               opts["threads"], d_checks[j])
                                        for j in range(len(dsrc.bounds))])
    # lists renumbered so that consecutive ones are near each other: a group of lists is
    # then a region, and a query's probes fall in few groups (fewer, larger tiles)
    new_id = _spatial_order(cent, -(-nd // dsrc._block_rows()), seed, cpu)
    cent = np.ascontiguousarray(cent[np.argsort(new_id)])
    cent_d = dask.delayed(cent, pure=True)
    assignment = new_id[np.concatenate([p[0] for p in parts])]
    rep = _copies(dsrc, np.concatenate([p[1] for p in parts]))
    # the queries' rows are checked once: now for a self-graph, else by the first task
    # graph that reads them all
    q_checks = [] if dsrc is src else q_checks
    ids = np.argsort(assignment, kind="stable").astype(np.int64)
    start = ivf.list_starts(assignment, nlist)
    groups = [_Group.of(dsrc, ids, start, l0, l1)
              for l0, l1 in _list_groups(start, dsrc._block_rows())]

    # 3: the recall sample chooses the probe count
    got = None
    if recall_sample > 0:
        rows = ivf.sample_rows(nq, recall_sample, seed)
        counts = ivf.probe_counts(nlist, nprobe)
        tried = counts + ([nlist] if counts[-1] < nlist else [])  # all lists: the exact search
        sample = _rows_of(src, rows)
        search = dask.delayed(_sample_search, pure=True, nout=len(tried))
        per_group = [search(sample, rows, cent_d, tried, g.rows, g.ids, g.start, g.first, k,
                            exclude_self, cpu, budget, opts["threads"], *q_checks)
                     for g in groups]
        q_checks = []
        merged = dask.compute(*[_tree_merge([p[c] for p in per_group], split_every)
                                for c in range(len(tried))])
        exact = merged[-1]
        exact_idx = ivf.tied(tuple(np.array(e) for e in exact), rep, exclude_self, rows)[1]
        for p, (sims, idx) in zip(counts, merged):  # increasing: the first reaching the target
            short = idx[:, -1] == PAD_IDX  # too few candidates: the exact search's row
            found = tuple(np.where(short[:, None], e, a) for e, a in zip(exact, (sims, idx)))
            got = ivf.recall(ivf.tied(found, rep, exclude_self, rows)[1], exact_idx)
            if got >= target_recall:
                break
        nprobe = p
    elif nprobe is None:
        nprobe = ivf.DEFAULT_NPROBE
    nprobe = min(nprobe, nlist)

    # 4: the search, lazy, and the exact search of the short rows
    sizes = np.diff(start)
    fixes = {}
    if np.sort(sizes)[:nprobe].sum() - int(exclude_self) < k:  # some row may be short
        short = dask.delayed(_short_rows, pure=True)
        found = np.concatenate(dask.compute(*[
            short(*src.block(i), cent_d, nprobe, cpu, budget, opts["threads"], sizes,
                  assignment if exclude_self else None, k, *q_checks[i:i + 1])
            for i in range(len(src.bounds))]))
        q_checks = []
        if found.size:
            fixes = _exact_rows(src, dsrc, found, k, exclude_self, opts, split_every)
    probes = dask.delayed(_assign, pure=True)
    search = dask.delayed(_group_search, pure=True)
    patch = dask.delayed(_patch, pure=True)
    tie = dask.delayed(_tie, pure=True)
    rep_d = None if rep is None else dask.delayed(rep, pure=True)
    results = []
    for i, (qa, qb) in enumerate(src.bounds):
        if qb == qa:
            results.append(None)
            continue
        pr = probes(*src.block(i), cent_d, nprobe, cpu, budget, opts["threads"],
                    *q_checks[i:i + 1])
        res = _tree_merge([search(*src.block(i), pr, g.rows, g.ids, g.start, g.first, k,
                                  exclude_self, cpu, budget, opts["threads"])
                           for g in groups], split_every)
        if i in fixes:
            res = patch(res, *fixes[i])
        if rep_d is not None:
            res = tie(res, rep_d, exclude_self, qa, qb)
        results.append(res)
    return KNNGraph(*_graph_arrays(results, src.bounds, k), "ivf", got, nprobe)


def _budget(opts):
    return DEFAULT_BUDGET if opts["memory_budget"] is None else int(opts["memory_budget"])


def _rows_of(source, rows):
    """A delayed array: the rows ``rows`` (sorted, unique) of ``source`` as stored."""
    if source.stored:
        return dask.delayed(_all_rows, pure=True)(
            dask.delayed(_Subset(source.x, rows), pure=True, traverse=False))
    return source.x[rows].rechunk({0: -1, 1: -1}).to_delayed().ravel()[0]


def _all_rows(subset):
    return _arrays.to_numpy(_arrays.as_array(subset[:], "X"))


class _Group:
    """Consecutive inverted lists [first, first + len(start) - 1) of the database: their rows'
    ``ids`` in list order, the lists' offsets ``start`` among them, and ``rows``: a delayed
    array of the unit rows in list order (a dask array's, gathered once), or a
    :class:`_GroupRows` that each task reads (stored embeddings)."""

    def __init__(self, rows, ids, start, first):
        self.rows, self.ids, self.start, self.first = rows, ids, start, first

    @classmethod
    def of(cls, dsrc, ids, start, l0, l1):
        gids = ids[start[l0]:start[l1]]
        by_id = np.sort(gids)
        where = np.searchsorted(by_id, gids)  # list order within the rows sorted by id
        if dsrc.stored:
            rows = dask.delayed(_GroupRows(_Subset(dsrc.x, by_id), where), pure=True,
                                traverse=False)
        else:
            rows = dask.delayed(_unit_in_order, pure=True)(_rows_of(dsrc, by_id), where)
        return cls(rows, dask.delayed(gids, pure=True), start[l0:l1 + 1] - start[l0], l0)


def _unit_in_order(raw, where):
    return normalize(raw, "database")[where]


class _GroupRows:
    """Stored rows of a group of lists, read by the task that needs them."""

    def __init__(self, subset, where):
        self.subset, self.where = subset, where

    def read(self):
        return _unit_in_order(_all_rows(self.subset), self.where)


def _spatial_order(cent, n_groups, seed, backend):
    """A new number for every list (a permutation) that makes the lists of one region of
    the sphere consecutive: the regions are a spherical k-means of the centroids into
    ``n_groups`` (identity for one group)."""
    nlist = cent.shape[0]
    if n_groups <= 1 or nlist <= n_groups:
        return np.arange(nlist, dtype=np.int64)
    from .kmeans import kmeans

    region = np.asarray(kmeans(cent, n_groups, spherical=True, n_iters=20, seed=seed,
                               backend=backend).labels)
    new_id = np.empty(nlist, np.int64)
    new_id[np.lexsort((np.arange(nlist), region))] = np.arange(nlist)
    return new_id


def _list_groups(start, rows):
    """(first, stop) of consecutive lists holding about ``rows`` database rows each (a larger
    list alone); empty lists join a neighbour."""
    out, l0 = [], 0
    nlist = start.size - 1
    for l1 in range(1, nlist + 1):
        if start[l1] - start[l0] >= rows or l1 == nlist:
            out.append((l0, l1))
            l0 = l1
    return out


def _coarse(train, nlist, seed, backend, *checked):
    """Stage 1: the coarse centroids of the (raw) training rows."""
    return ivf.coarse_centroids(normalize(train, "database"), nlist, seed, backend)


def _assign(d, a, b, stored, cent, n, backend, budget, threads, *checked):
    """The ``n`` most similar lists of the rows [a, b) (n = 1: the database rows' lists)."""
    kern = _backend.host(backend).knn.kernels
    with _host.threads(threads):
        return topk(kern, normalize(_read(d, a, b, stored), "X"), cent, n, False, budget)[1]


def _assign_db(d, a, b, stored, cent, backend, budget, threads, *checked):
    """The list of every database row [a, b), and the hashes of its unit rows (for
    :func:`_copies`)."""
    kern = _backend.host(backend).knn.kernels
    u = normalize(_read(d, a, b, stored), "database")
    with _host.threads(threads):
        return topk(kern, u, cent, 1, False, budget)[1][:, 0], knn_host.row_hashes(u)


def _copies(dsrc, hashes):
    """``duplicate_reps`` of the database from its rows' hashes (the rows sharing a hash
    read and compared exactly), or None when no row has an exact copy."""
    cand = knn_host.hash_candidates(hashes)
    if cand is None:
        return None
    rows = normalize(_rows_of(dsrc, cand).compute(), "database")
    return knn_host.reps_of(cand, rows, dsrc.shape[0])


def _tie(res, rep, exclude_self, a, b):
    """Exact copies tied as the tie rule says in the result of the query rows [a, b) (as on
    one machine)."""
    return ivf.tied(tuple(np.array(x) for x in res), rep, exclude_self,
                    np.arange(a, b, dtype=np.int64))


def _short_rows(q, a, b, stored, cent, nprobe, backend, budget, threads, sizes, lists, k,
                *checked):
    """The global query rows [a, b) whose probed lists hold fewer than k candidates (the point
    itself not counted with exclude_self: ``lists``, every database row's list)."""
    probes = _assign(q, a, b, stored, cent, nprobe, backend, budget, threads)
    count = sizes[probes].sum(axis=1)
    if lists is not None:
        count -= (probes == lists[a:b, None]).any(axis=1)
    return a + np.flatnonzero(count < k)


def _search(kern, qn, self_ids, probes, rows, ids, start, first, k, exclude, budget, threads):
    """Padded partial top-k (global indices) of the unit rows ``qn`` against the lists of one
    group that their ``probes`` name (the others are not here)."""
    nl = start.size - 1
    local = probes - first
    inside = (local >= 0) & (local < nl)
    heap_s, heap_i = ivf.empty_heaps(qn.shape[0], k)
    who = np.flatnonzero(inside.any(axis=1))
    if who.size:
        local = np.where(inside, local, nl)  # list nl: empty
        # queries in the order of their best list here: a chunk then probes few lists
        best = local[who, inside[who].argmax(axis=1)]
        order = who[np.argsort(best, kind="stable")]
        rows = rows.read() if isinstance(rows, _GroupRows) else rows
        lists = ivf.InvertedLists(rows, ids, np.append(start, start[-1]))
        ivf.search_lists(kern, lists, qn[order], order, self_ids[order], local[order], heap_s,
                         heap_i, exclude, budget, threads)
    kern.finalize(heap_s, heap_i)  # slots never filled: (-inf, int64 max), the padding
    return heap_s, heap_i


def _group_search(q, a, b, stored, probes, rows, ids, start, first, k, exclude, backend,
                  budget, threads):
    """Stage 4: the query rows [a, b) against one group of lists."""
    qn = normalize(_read(q, a, b, stored), "X")
    return _search(_backend.host(backend).knn.kernels, qn, np.arange(a, b, dtype=np.int64),
                   probes, rows, ids, start, first, k, exclude, budget, threads)


def _sample_search(raw, sample_ids, cent, counts, rows, ids, start, first, k, exclude,
                   backend, budget, threads, *checked):
    """Stage 3: the recall sample against one group of lists, for each probe count."""
    kern = _backend.host(backend).knn.kernels
    qn = normalize(raw, "X")
    with _host.threads(threads):
        ranked = topk(kern, qn, cent, counts[-1], False, budget)[1]
    rows = rows.read() if isinstance(rows, _GroupRows) else rows
    return tuple(_search(kern, qn, sample_ids, np.ascontiguousarray(ranked[:, :p]), rows, ids,
                         start, first, k, exclude, budget, threads) for p in counts)


def _exact_rows(src, dsrc, rows, k, exclude_self, opts, split_every):
    """The exact top-k of the query rows ``rows`` (sorted) against the whole database, as
    {query block: (positions in the block, sims, idx)}. With exclude_self the top-(k + 1)
    without it, less the point itself."""
    sub = src.subset(rows)
    kk = k + int(exclude_self)
    s, i = dask.compute(*_exact_knn(sub, dsrc, kk, False, opts, split_every))
    if exclude_self:
        s, i = _without_self(s, i, rows, k)
    out = {}
    for b, (qa, qb) in enumerate(src.bounds):
        m = (rows >= qa) & (rows < qb)
        if m.any():
            out[b] = (rows[m] - qa, s[m], i[m])
    return out


def _without_self(s, i, own, k):
    """The first k entries of each row that are not the row's own index ``own``."""
    keep = np.argsort(i == own[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)


def _patch(res, pos, sims, idx):
    s, i = (np.array(a) for a in res)
    s[pos], i[pos] = sims, idx
    return s, i


# ---------------------------------------------------------------- HDL

def _blocks(a):
    """The row blocks of an (N, k) graph array: its dask chunks (as delayed objects that keep
    their keys, so tasks shared with other outputs run once), or the array itself."""
    if isinstance(a, da.Array):
        return list(a.rechunk({1: -1}).to_delayed(optimize_graph=False).ravel())
    return [a]


def _label_gathered(idx, sims, y, k, method, schedule, max_visits, weighting, backend):
    """Phases A and B of :func:`hdlfast.hdl` on the whole graph, in the task's process;
    ``idx`` and ``sims`` arrive as lists of row blocks."""
    idx, sims = (np.asarray(b[0]) if len(b) == 1 else np.concatenate([np.asarray(x) for x in b])
                 for b in (idx, sims))
    return _local_hdl(None, y, k, graph=(idx, sims), method=method,
                      schedule=schedule, max_visits=max_visits, fallback=None,
                      weighting=weighting, backend=backend)


def _graph_part(a, name):
    if isinstance(a, da.Array):
        return a
    if isinstance(a, (str, os.PathLike)):
        return np.load(a, mmap_mode="r") if Path(a).suffix == ".npy" else _stored(a, name)
    return a


def hdl(X=None, labels=None, k=20, *, graph=None, method="hdl", schedule="levels",
        max_visits=64, fallback="auto", weighting="similarity", n_classes=None,
        knn_method="exact", backend=None, memory_budget=None, allow_tf32=False,
        block_rows=None, threads_per_task=1, split_every=4) -> HDLResult:
    """:func:`hdlfast.hdl` with the kNN searches on dask; computes and returns numpy results.

    The kNN graph is built by :func:`knn` (or given as ``graph=(sims, idx)``: dask arrays,
    ``.npy`` paths, memmaps or zarr arrays, e.g. from :func:`load_graph`), then gathered to
    one worker, which runs phases A and B (propagation level by level, then the search) on
    its CPU. Those are O(N k) passes over the graph, cheap next to building it, and every
    phase-A sub-level needs the labels of all neighbours of the frontier: spread over
    workers that would be an all-to-all exchange per sub-level (hundreds of rounds), costing
    more than the labeling itself. The worker needs about (16 k + 40) bytes per point for the
    graph, its reverse and the labels (3.6 GB for 10 million points at k = 20), plus as much
    again for the graph while dask assembles it. Phase C (kNN voting in embedding space for
    the points the search could not reach) runs :func:`knn` on the cluster again.

    Arguments as in :func:`hdlfast.hdl`; ``X`` as in :func:`knn`, ``labels`` an (N,) integer
    array (numpy or dask); ``knn_method`` is both searches' ``method`` of :func:`knn`
    ("exact", "ivf" or "auto"; the result's ``knn_method`` and ``knn_recall`` say what the
    graph got). The result equals ``hdlfast.hdl`` on the same data. Uses the current dask
    scheduler (a ``distributed.Client`` when one is the default).
    """
    _checks.choice(method, "method", labeling.METHODS)
    _checks.choice(schedule, "schedule", labeling.SCHEDULES)
    _checks.choice(fallback, "fallback", labeling.FALLBACKS)
    _checks.choice(weighting, "weighting", labeling.WEIGHTINGS)
    _checks.choice(knn_method, "knn_method", KNN_METHODS)
    k = _checks.positive_int(k, "k")
    max_visits = _checks.positive_int(max_visits, "max_visits")
    if memory_budget is not None:
        memory_budget = _checks.positive_int(memory_budget, "memory_budget")
    _backend.check_name(backend)
    if backend == "cuda" and graph is not None and X is None:
        raise ValueError("backend='cuda' applies to the kNN searches; the labeling of a given "
                         "graph runs on the CPU (backend None, 'native' or 'numba')")
    src = None if X is None else _as_source(X, "X", block_rows)
    if graph is None and src is None:
        raise ValueError("hdl needs embeddings X or a precomputed graph=(sims, idx)")
    if graph is not None:
        parts = [_graph_part(a, "graph") for a in _checks.pair_of(graph, "hdlfast.dask.knn")]
        g_sims, g_idx = _checks.sims_first(*parts, [np.dtype(p.dtype).kind in "iu"
                                                    for p in parts], "hdlfast.dask.knn")
        n = int(g_idx.shape[0])
        g_method, g_recall = getattr(graph, "method", None), getattr(graph, "recall", None)
        if src is not None and src.shape[0] != n:
            raise ValueError(f"graph has {n} rows but X has {src.shape[0]}")
    else:
        n = src.shape[0]
        _checks.k_at_most(k, n - 1, "other points")
    if isinstance(labels, da.Array):
        labels = labels.compute()
    y = _checks.labels(labels, n, n_classes)
    if fallback == "auto":
        fallback = "knn-dv" if src is not None else None
    if fallback == "knn-dv" and src is None:
        raise ValueError("fallback='knn-dv' needs the embeddings X; pass X or fallback=None")
    if schedule == "sequential" and backend == "cuda":
        raise ValueError("schedule='sequential' runs on the CPU only; pass backend='native'")
    search = dict(backend=backend, memory_budget=memory_budget, allow_tf32=allow_tf32,
                  threads_per_task=threads_per_task, split_every=split_every)
    if graph is None:
        g = knn(src, k, method=knn_method, **search)
        g_method, g_recall = g.method, g.recall
        g_idx, g_sims = g.idx[:, :k], g.sims[:, :k]
    cpu = None if backend == "cuda" else backend  # the gathered labeling runs on a CPU
    res = dask.delayed(_label_gathered, pure=True)(
        _blocks(g_idx), _blocks(g_sims), y, k, method, schedule, max_visits, weighting,
        cpu).compute()

    lab = np.array(res.labels)
    todo = np.flatnonzero(lab < 0)
    if todo.size and fallback == "knn-dv":
        known = np.flatnonzero(lab >= 0)
        kk = min(k, known.size)
        sims, nbr = dask.compute(*knn(src.subset(todo), kk, database=src.subset(known),
                                      method=knn_method, **search))
        out_lab = np.empty(todo.size, np.int64)
        out_conf = np.empty(todo.size, np.float64)
        kern = _backend.select(cpu, False).labeling
        kern.vote_rows(np.ascontiguousarray(nbr), np.ascontiguousarray(sims),
                       np.ascontiguousarray(lab[known]), weighting == "uniform", out_lab,
                       out_conf)
        conf, level, prov = (np.array(a) for a in (res.confidence, res.level, res.provenance))
        lab[todo], conf[todo] = out_lab, out_conf
        level[todo], prov[todo] = res.n_levels + 1, FALLBACK
        res = HDLResult(lab, conf, level, prov, res.cycles, n_levels=res.n_levels, k=k)
    res.knn_method, res.knn_recall = g_method, g_recall
    return res


# ---------------------------------------------------------------- graphs on disk

def save_graph(sims, idx, path):
    """Compute the graph ``(sims, idx)`` of :func:`knn` and write it to ``path`` block by
    block, never whole in memory, in one pass over the block tasks: a zarr group with arrays
    ``sims`` and ``idx`` when ``path`` ends with ``.zarr``, else a directory holding
    ``sims.npy`` and ``idx.npy`` (the workers must see ``path``). Read it with
    :func:`load_graph`."""
    if not (isinstance(sims, da.Array) and isinstance(idx, da.Array)):
        raise TypeError("save_graph needs the dask arrays (sims, idx) of hdlfast.dask.knn")
    if sims.shape != idx.shape or sims.ndim != 2:
        raise ValueError(f"sims and idx must both be (N, k), got {sims.shape} and {idx.shape}")
    p = Path(path)
    if p.suffix == ".zarr":
        rows = max(sims.chunks[0])  # zarr wants regular chunks
        parts = [da.to_zarr(a.rechunk({0: rows, 1: -1}), str(p), component=name,
                            overwrite=True, compute=False)
                 for name, a in (("sims", sims), ("idx", idx))]
        dask.compute(*parts)
        return
    p.mkdir(parents=True, exist_ok=True)
    writes = []
    for name, a in (("sims", sims), ("idx", idx)):
        f = p / f"{name}.npy"
        np.lib.format.open_memmap(f, mode="w+", dtype=a.dtype, shape=a.shape).flush()
        off = np.concatenate([[0], np.cumsum(a.chunks[0])]).astype(int)
        for block, start in zip(_blocks(a), off[:-1].tolist()):
            writes.append(dask.delayed(_write_rows, pure=False)(str(f), start, block))
    dask.compute(*writes)


def _write_rows(path, start, block):
    out = np.lib.format.open_memmap(path, mode="r+")
    out[start:start + block.shape[0]] = block
    out.flush()
    del out


def load_graph(path):
    """``(sims, idx)`` written by :func:`save_graph`, left on disk (memmaps or zarr arrays);
    pass ``graph=(sims, idx)`` to :func:`hdl` or :func:`hdlfast.hdl`."""
    p = Path(path)
    if p.suffix == ".zarr":
        import zarr

        g = zarr.open_group(str(p), mode="r")
        return g["sims"], g["idx"]
    return tuple(np.load(p / f"{name}.npy", mmap_mode="r") for name in ("sims", "idx"))
