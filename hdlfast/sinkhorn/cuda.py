"""Sinkhorn-Knopp state on the GPU (the kernels of ``hdlfast._cuda``), driven by
``hdlfast.sinkhorn`` as the host state is."""
from __future__ import annotations

import numpy as np

from .. import _arrays
from ..knn.cuda import operand

_INT32_MAX = np.iinfo(np.int32).max


class SinkhornState:
    """One Sinkhorn run on the device of ``scores`` (a torch or cupy GPU array) behind the
    interface of ``sinkhorn.host.SinkhornState``: Q (the only N x K buffer, float32, allocated
    once on the device), the float64 row scaling u and the row weights r live on the device; the
    column scaling v and the column sums cross to the host once per iteration (K doubles).
    Every kernel runs on the caller's current stream."""

    def __init__(self, cuda_module, scores, beta: float, r: np.ndarray, power=None):
        if power is not None:
            raise ValueError("the CUDA Sinkhorn kernels take no power: pass log-probabilities")
        self._m = cuda_module
        with _arrays.device_ctx(scores):
            scores = operand(scores, "scores")
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
