"""HDL labeling on the GPU: the kernels of ``hdlfast._cuda`` behind the interface of the CPU
labeling kernels."""
from __future__ import annotations

import warnings

import numpy as np

from .. import _arrays


class CudaLabeling:
    """The HDL labeling kernels of ``hdlfast._cuda`` behind the interface of the CPU labeling
    kernels (``numba_kernels``): host (numpy) arrays in and out (the drivers in
    ``hdlfast.labeling`` work on the host), copied to the device of ``like`` (a torch or cupy GPU
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
            budget = _arrays.gpu_budget(self._like)
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
