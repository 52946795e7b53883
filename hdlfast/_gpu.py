"""CUDA glue for ``hdlfast._cuda``: inverse norms, workspace, query blocks, out-of-memory retry.

The kernels read the caller's (contiguous) arrays in place and write outputs allocated in the
caller's kind, all on the caller's current stream. Only this module and ``_arrays`` touch GPU
memory from Python.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import _arrays, _checks

_INT32_MAX = np.iinfo(np.int32).max
# Share of the free device memory one call may use for its workspace.
FREE_FRACTION = 0.5


def dtype_code(x, name: str) -> int:
    """The kernels' dtype code of a GPU array; float64 (no tensor-core path) is refused."""
    dtype_name = _arrays.info(x, name).dtype
    if dtype_name == "float64":
        raise TypeError(f"{name}: float64 is not supported on the GPU; use float32, float16 "
                        "or bfloat16")
    return _arrays.DTYPE_CODES[dtype_name]


def inverse_norms(cuda, x, name: str):
    """float32 inverse row norms of ``x`` on its device; NaN/Inf or zero rows raise."""
    n, d = x.shape
    inv = _arrays.empty(x, (n,), "float32")
    bad = _arrays.full(x, (2,), _INT32_MAX, "int32")
    cuda.row_inv_norms(_arrays.cuda_view(x), inv, bad, _arrays.cuda_stream(x))
    nonfinite, zero = (int(v) for v in _arrays.to_numpy(bad))
    _checks.bad_rows(name, None if nonfinite == _INT32_MAX else nonfinite,
                     None if zero == _INT32_MAX else zero)
    return inv


_SAFE_PEAKS = (2.0 ** -40, 2.0 ** 40)


def safe_rows(x, name: str):
    """``x`` itself when every row's largest magnitude lies within 2**+-40, where the kernels'
    float32 squares and dot products can neither overflow nor underflow; else a copy with each
    row scaled by the power of two that brings its largest magnitude near 1 (exact: cosines
    unchanged to the last bit), so tiny (1e-40) and huge
    (1e38) rows work as on the CPU. NaN/Inf and zero rows raise here, naming ``name``."""
    peaks = _arrays.row_peaks(x)
    _checks.bad_peaks(peaks, name)
    if _SAFE_PEAKS[0] <= peaks.min() and peaks.max() <= _SAFE_PEAKS[1]:
        return x
    return _arrays.scale_rows_to_unit_peak(x, peaks)


def topk(cuda, q, db, k: int, exclude_self: bool, allow_tf32: bool,
         memory_budget: int | None, q_name: str = "queries", db_name: str = "database"):
    """(sims, idx) on the device of ``q``; ``db`` None means the self-graph. The names are
    the caller's argument names, used in error messages."""
    name_db = q_name if db is None else db_name
    with _arrays.device_ctx(q):
        dtype = dtype_code(q, q_name)
        q = safe_rows(_arrays.gpu_contiguous(q), q_name)
        db = q if db is None else safe_rows(_arrays.gpu_contiguous(db), db_name)
        dtype_name = _arrays.info(q, q_name).dtype
        if _arrays.info(db, name_db).dtype != dtype_name:
            raise TypeError(f"{q_name} and {name_db} must have the same dtype on the GPU, got "
                            f"{dtype_name} and {_arrays.info(db, name_db).dtype}")
        q_inv = inverse_norms(cuda, q, q_name)
        db_inv = q_inv if db is q else inverse_norms(cuda, db, name_db)
        nq, d = q.shape
        nd = db.shape[0]
        sims = _arrays.empty(q, (nq, k), "float32")
        idx = _arrays.empty(q, (nq, k), "int64")
        budget = memory_budget
        if budget is None:
            budget = int(_arrays.gpu_free_bytes(q) * FREE_FRACTION)
        block = _first_block(cuda, nq, nd, d, k, dtype, budget)
        stream = _arrays.cuda_stream(q)
        q_view, db_view = _arrays.cuda_view(q), _arrays.cuda_view(db)
        start = 0
        while start < nq:
            stop = min(start + block, nq)
            try:
                ws_bytes = cuda.knn_workspace_bytes(stop - start, nd, d, k, dtype)
                ws = _arrays.empty(q, (max(ws_bytes, 1),), "uint8")
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not _arrays.is_out_of_memory(exc) or block == 1:
                    raise
                block = max(block // 2, 1)
                warnings.warn(f"hdlfast.knn: out of GPU memory for the workspace; retrying "
                              f"with blocks of {block} queries", RuntimeWarning, stacklevel=4)
                continue
            cuda.knn(q_view[start:stop], db_view, q_inv[start:stop], db_inv, start,
                     exclude_self, allow_tf32, sims[start:stop], idx[start:stop], ws, stream)
            del ws
            start = stop
        return sims, idx


def _first_block(cuda, nq, nd, d, k, dtype, budget) -> int:
    """Largest block nq // 2**i whose workspace fits the budget (1 if none does)."""
    block = nq
    while block > 1 and cuda.knn_workspace_bytes(block, nd, d, k, dtype) > budget:
        block //= 2
    return max(block, 1)


class CudaLabeling:
    """The HDL labeling kernels of ``hdlfast._cuda`` behind the interface of
    the CPU labeling kernels (``numba_kernels.labeling``): host (numpy) arrays in and out (the orchestrator in
    ``labeling`` works on the host), copied to the device of ``like`` (a torch or cupy GPU
    array), run on its current stream and copied back. Results are identical to the CPU
    kernels. ``propagate_levels`` synchronises the stream once per level."""

    def __init__(self, cuda_module, like):
        self._m = cuda_module
        self._like = like
        self._graph_host = self._graph_dev = None
        self._labels_host = self._labels_dev = None

    def _dev(self, a, dtype):
        return _arrays.to_device(np.ascontiguousarray(a, dtype=dtype), self._like)

    def _graph(self, idx, sims, indptr, src):
        """The graph on the device, copied once per host graph (phase A and the chunks of
        the search reuse it; the host arrays are held, so identity is a safe key: the
        labeling driver never changes a graph, nor the labels between chunks of a search)."""
        host = (idx, sims, indptr, src)
        if self._graph_host is None or any(a is not b for a, b in zip(host, self._graph_host)):
            self._graph_host = host
            self._graph_dev = (self._dev(idx, np.int64), self._dev(sims, np.float32),
                               self._dev(indptr, np.int64), self._dev(src, np.int32))
        return self._graph_dev

    def _empty(self, shape, dtype: str):
        return _arrays.empty(self._like, shape, dtype)

    def _workspace(self, nbytes: int):
        return self._empty((max(int(nbytes), 1),), "uint8")

    def reverse_csr(self, idx, k, n):
        rows = idx.shape[0]
        with _arrays.device_ctx(self._like):
            d_idx = self._dev(idx, np.int64)
            indptr = self._empty((n + 1,), "int64")
            src = self._empty((rows * k,), "int32")
            ws_bytes = self._m.reverse_csr_workspace_bytes(rows, k, n)
            ws = self._workspace(ws_bytes)
            self._m.reverse_csr(d_idx, indptr, src, ws, _arrays.cuda_stream(self._like))
            return _arrays.to_numpy(indptr), _arrays.to_numpy(src)

    def propagate_levels(self, idx, sims, k, indptr, src, labels, conf, level, prov, uniform):
        n = idx.shape[0]
        with _arrays.device_ctx(self._like):
            d_idx, d_sims, d_indptr, d_src = self._graph(idx, sims, indptr, src)
            state = [self._dev(a, dt) for a, dt in zip((labels, conf, level, prov),
                                                       (np.int64, np.float64, np.int32, np.int8))]
            ws_bytes = self._m.propagate_levels_workspace_bytes(n, k)
            ws = self._workspace(ws_bytes)
            h = self._m.propagate_levels(d_idx, d_sims, d_indptr, d_src, *state, bool(uniform),
                                         ws, _arrays.cuda_stream(self._like))
            for host, dev in zip((labels, conf, level, prov), state):
                host[...] = _arrays.to_numpy(dev)
        return h

    def propagate_sequential(self, *args):
        del args
        raise ValueError("schedule='sequential' runs on the CPU only")

    def search(self, idx, sims, k, indptr, src, labels, targets, max_visits, uniform,
               out_lab, out_conf, out_steps, out_cycles):
        n, n_targets = idx.shape[0], targets.shape[0]
        if n_targets == 0:
            return
        nnz = int(indptr[-1])
        with _arrays.device_ctx(self._like):
            d_idx, d_sims, d_indptr, d_src = self._graph(idx, sims, indptr, src)
            if self._labels_host is not labels:  # chunks of one search share the labels
                self._labels_host, self._labels_dev = labels, self._dev(labels, np.int64)
            d_lab, d_tgt = self._labels_dev, self._dev(targets, np.int64)
            outs = [self._empty((n_targets,), dt)
                    for dt in ("int64", "float64", "int64", "int64")]
            # Targets per launch: the per-target scratch (visited list, path, scan positions)
            # of a chunk must fit the budget; out-of-memory halves the chunk.
            budget = int(_arrays.gpu_free_bytes(self._like) * FREE_FRACTION)
            chunk = n_targets
            while chunk > 1 and self._m.search_workspace_bytes(n, k, nnz, chunk,
                                                               max_visits) > budget:
                chunk = (chunk + 1) // 2
            while True:
                ws_bytes = self._m.search_workspace_bytes(n, k, nnz, chunk, max_visits)
                try:
                    ws = self._workspace(ws_bytes)
                    break
                except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                    if not _arrays.is_out_of_memory(exc) or chunk == 1:
                        raise
                    chunk = (chunk + 1) // 2
                    warnings.warn(f"hdlfast: out of GPU memory for the label search; "
                                  f"retrying {chunk} targets at a time", RuntimeWarning,
                                  stacklevel=4)
            self._m.search(d_idx, d_sims, d_indptr, d_src, nnz, d_lab, d_tgt, max_visits,
                           bool(uniform), *outs, chunk, ws, _arrays.cuda_stream(self._like))
            for host, dev in zip((out_lab, out_conf, out_steps, out_cycles), outs):
                host[...] = _arrays.to_numpy(dev)

    def vote_rows(self, nbr_idx, nbr_sims, db_labels, uniform, out_lab, out_conf):
        rows, k = nbr_idx.shape
        if rows == 0:
            return
        with _arrays.device_ctx(self._like):
            d_in = [self._dev(a, dt) for a, dt in zip((nbr_idx, nbr_sims, db_labels),
                                                      (np.int64, np.float32, np.int64))]
            outs = [self._empty((rows,), "int64"), self._empty((rows,), "float64")]
            self._m.vote_rows(*d_in, bool(uniform), *outs, _arrays.cuda_stream(self._like))
            out_lab[...], out_conf[...] = (_arrays.to_numpy(a) for a in outs)


class SinkhornState:
    """One Sinkhorn run on the device of ``scores`` (a torch or cupy GPU array) behind the
    interface of ``_cpu.SinkhornState``: Q (the only N x K buffer, float32, allocated once on
    the device), the float64 row scaling u and the row weights r live on the device; the
    column scaling v and the column sums cross to the host once per iteration (K doubles).
    Every kernel runs on the caller's current stream."""

    def __init__(self, cuda_module, scores, beta: float, r: np.ndarray, power=None):
        if power is not None:
            raise ValueError("the CUDA Sinkhorn kernels take no power: pass log-probabilities")
        self._m = cuda_module
        with _arrays.device_ctx(scores):
            scores = _arrays.gpu_contiguous(scores)
            dtype_code(scores, "scores")  # float64 is refused
            n, k = scores.shape
            self._n, self._k, self._beta, self._like = n, k, float(beta), scores
            self.q = _arrays.empty(scores, (n, k), "float32")
            rowmax = _arrays.empty(scores, (n,), "float64")
            bad = _arrays.full(scores, (1,), _INT32_MAX, "int32")
            self._m.sk_prepare(_arrays.cuda_view(scores), self._beta, self.q, rowmax, bad,
                               self._stream())
            bad_row = int(_arrays.to_numpy(bad)[0])
            self.bad_row = -1 if bad_row == _INT32_MAX else bad_row  # NaN or Inf there
            self._rowmax = np.asarray(_arrays.to_numpy(rowmax), np.float64)
            self._r = _arrays.to_device(np.asarray(r, np.float64), scores)
            self._u = _arrays.empty(scores, (n,), "float64")
            self._ws = _arrays.empty(scores, (max(int(self._m.sk_workspace_bytes(n, k)), 1),),
                                     "uint8")
            self._colsum = _arrays.empty(scores, (k,), "float64")
            self._u_bad = _arrays.empty(scores, (1,), "int32")
            self._v = None

    def _stream(self) -> int:
        return _arrays.cuda_stream(self._like)

    def _dev(self, a):
        return _arrays.to_device(np.ascontiguousarray(a, dtype=np.float64), self._like)

    def _colsum_host(self) -> np.ndarray:
        return np.array(_arrays.to_numpy(self._colsum), dtype=np.float64)  # own copy

    def rowmax(self) -> np.ndarray:
        return self._rowmax

    def row_scaling(self) -> np.ndarray:
        return np.array(_arrays.to_numpy(self._u), dtype=np.float64)

    def start(self, u: np.ndarray) -> np.ndarray:
        """Column sums for the first step, from the initial row scaling ``u`` (host)."""
        with _arrays.device_ctx(self._like):
            self._u = self._dev(u)
            self._m.sk_colsum(self.q, self._u, self._ws, self._colsum, self._stream())
            return self._colsum_host()

    def iterate(self, v: np.ndarray):
        """One fused pass; returns (local column sums, whether u stayed finite)."""
        with _arrays.device_ctx(self._like):
            self._v = d_v = self._dev(v)  # kept alive until the next launch
            self._m.sk_iterate(self.q, d_v, self._r, self._u, self._ws, self._colsum,
                               self._u_bad, self._stream())
            colsum = self._colsum_host()
            u_ok = int(_arrays.to_numpy(self._u_bad)[0]) == 0
            return colsum, u_ok

    #: the driver runs every iterate; finalize only applies the last column scaling
    fused_finalize = False

    def finalize(self, v: np.ndarray):
        with _arrays.device_ctx(self._like):
            self._v = d_v = self._dev(v)  # kept alive past the asynchronous launch
            labels = _arrays.empty(self._like, (self._n,), "int64")
            self._m.sk_finalize(self.q, d_v, labels, self._stream())
            return self.q, labels, None, True  # marginals: those of the last iterate

    def host_buffer(self) -> np.ndarray:
        """A host Q for the log-domain fallback (which fills it); the device Q and scratch
        are released first, since the driver copies the host result back to the device."""
        self.q = self._ws = None
        return np.empty((self._n, self._k), np.float32)


class KMeansState:
    """One k-means run on the device of ``x`` behind the interface of ``_cpu.KMeansState``:
    the rows (in the caller's dtype; [x, 1, 0] for Euclidean k-means), the labels and the
    top-1 similarities stay on the device; the centroids (C x d) and their float64 sums cross
    to the host once per iteration."""

    def __init__(self, cuda_module, x, spherical: bool, memory_budget, allow_tf32: bool):
        self._m, self._budget, self._tf32 = cuda_module, memory_budget, bool(allow_tf32)
        with _arrays.device_ctx(x):
            x = _arrays.gpu_contiguous(x)
            dtype_code(x, "X")  # float64 is refused
            self._x, self._spherical = x, spherical
            if spherical:
                x = self._x = safe_rows(x, "X")
                self._inv = inverse_norms(cuda_module, x, "X")  # the update sums unit rows
                self.q = x
            else:
                self._inv = None
                self.q = _arrays.with_columns(x, (1.0, 0.0))
                self.aug_norms = 1.0 / _arrays.to_numpy(
                    inverse_norms(cuda_module, self.q, "X")).astype(np.float64)
        self.labels = None
        self._sims = None

    def host_rows(self, rows: np.ndarray) -> np.ndarray:
        out = _arrays.to_numpy(_arrays.take_rows(self._x, rows)).astype(np.float64)
        if self._spherical:
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def assign(self, db: np.ndarray) -> int:
        with _arrays.device_ctx(self._x):
            d_db = _arrays.as_dtype_of(np.asarray(db, np.float32), self.q)
            sims, idx = topk(self._m, self.q, d_db, 1, False, self._tf32, self._budget)
            new = idx[:, 0]
            changed = self._x.shape[0] if self.labels is None else \
                int(_arrays.to_numpy((new != self.labels).sum()))
            self.labels, self._sims = new, sims[:, 0]
            return changed

    def fit_scores(self) -> np.ndarray:
        return _arrays.to_numpy(self._sims).astype(np.float64)

    def update(self, n_clusters: int):
        n, d = self._x.shape
        with _arrays.device_ctx(self._x):
            sums = _arrays.empty(self._x, (n_clusters, d), "float64")
            counts = _arrays.empty(self._x, (n_clusters,), "int64")
            self._m.cluster_sums(_arrays.cuda_view(self._x), self._inv, self.labels, sums,
                                 counts, _arrays.cuda_stream(self._x))
            return _arrays.to_numpy(sums), _arrays.to_numpy(counts)

    def labels_out(self):
        return self.labels
