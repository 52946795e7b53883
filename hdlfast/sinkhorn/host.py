"""Sinkhorn-Knopp state on the host, driven by ``hdlfast.sinkhorn`` through the native or
numba kernels (csrc/cpu/sinkhorn.cpp, ``numba_kernels``)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .. import _arrays


def native_kernels(mod):
    """The Sinkhorn kernels of the compiled module ``mod`` under the names of
    ``numba_kernels``."""
    return SimpleNamespace(prepare=mod.sk_prepare, prepare_power=mod.sk_prepare_power,
                           colsum=mod.sk_colsum, iterate=mod.sk_iterate,
                           finalize=mod.sk_finalize)


class SinkhornState:
    """One Sinkhorn run on the host: Q (the only N x K buffer, float32) and the float64 row
    scaling u, driven by ``hdlfast.sinkhorn`` through the backend's kernels."""

    def __init__(self, kernels, scores, beta: float, r: np.ndarray, power=None):
        n, k = scores.shape
        self._kern, self._r, self._beta, self._like = kernels, r, beta, scores
        self.q = np.empty((n, k), np.float32)
        self._rowmax = np.empty(n, np.float64)  # NaN marks a bad row
        if power is None:
            src = _arrays.host_view(scores)  # read by prepare, never written
            if src is None:
                _arrays.copy_to_host(self.q, scores)  # cast in place: no temporary
                src = self.q
            kernels.prepare(src, self.q, beta, self._rowmax)
        else:  # probabilities, raised to the integer power beta
            src = _arrays.host_view(scores, (np.float32, np.float64))
            if src is None:
                src = np.empty((n, k), np.float64)
                _arrays.copy_to_host(src, scores)
            kernels.prepare_power(src, self.q, power, self._rowmax)
        finite = np.isfinite(self._rowmax)
        #: the first row prepare refused (NaN or Inf; with a power, not probabilities), or -1
        self.bad_row = -1 if finite.all() else int(np.argmin(finite))
        if power is not None:
            with np.errstate(invalid="ignore"):
                self._rowmax = np.log(self._rowmax)  # Q = exp(beta (log p - log max p))
        self._u = np.empty(n, np.float64)
        self._colsum = np.empty(k, np.float64)

    def rowmax(self) -> np.ndarray:
        """The row maxima m_i of the scores (Q holds exp(beta (s - m_i)))."""
        return self._rowmax

    def start(self, u: np.ndarray) -> np.ndarray:
        """Column sums for the first step, from the initial row scaling ``u`` (host float64)."""
        self._u[:] = u
        self._kern.colsum(self.q, self._u, self._colsum)
        return self._colsum.copy()

    def row_scaling(self) -> np.ndarray:
        """A copy of the current row scaling u (for SeLa's stopping rule)."""
        return self._u.copy()

    def iterate(self, v: np.ndarray):
        """One fused pass; returns (local column sums, whether u stayed finite)."""
        self._kern.iterate(self.q, np.ascontiguousarray(v, np.float64), self._r, self._u,
                           self._colsum)
        return self._colsum.copy(), bool(np.isfinite(self._u).all())

    #: finalize does the last row scaling itself, so the driver skips the last iterate
    fused_finalize = True

    def finalize(self, v: np.ndarray):
        """The plan with column scaling ``v``, rows normalised (the last row scaling):
        (Q, labels, the plan's column marginals (host), whether every row had mass)."""
        labels = np.empty(self.q.shape[0], np.int64)
        marginals = np.empty(self.q.shape[1], np.float64)
        ok = bool(self._kern.finalize(self.q, np.ascontiguousarray(v, np.float64), self._r,
                                      labels, marginals))
        return (_arrays.from_host(self.q, self._like), _arrays.from_host(labels, self._like),
                marginals, ok)

    def host_buffer(self) -> np.ndarray:
        return self.q
