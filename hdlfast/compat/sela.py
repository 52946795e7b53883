"""SeLa (Asano, Rupprecht and Vedaldi, ICLR 2020; yukimasano/self-label, MIT license): its
label optimisation ``optimize_L_sk`` for a one-line switch::

    from hdlfast.compat.sela import optimize_L_sk   # instead of sinkhornknopp's

Same signature (a method of SeLa's trainer: it reads ``self.PS``, the (N, K) softmax
outputs, ``self.lamb``, ``self.outs[nh]``, ``self.dtype``, ``self.L`` and ``self.dev``) and the
same effect: ``self.L[nh]`` gets the new labels and ``self.PS`` the (N, K) transport plan.
It runs :func:`hdlfast.sinkhorn` with ``kind="sela"``: the same start (uniform sample
scalings on PS ** lamb) and SeLa's own stopping rule (sum |c / c_new - 1| <= 0.1, checked
every 10 iterations), so the iterations are SeLa's; the scalings are float64 and the plan
float32 (SeLa: ``self.dtype``), so labels can differ only where two clusters tie to rounding.
The iterations run are stored as ``self.sk_iters`` (SeLa prints them).
"""
from __future__ import annotations

import numpy as np

from .. import _arrays
from ..sinkhorn import sinkhorn


def optimize_L_sk(self, nh=0):
    """SeLa's ``optimize_L_sk(self, nh)``: balanced labels of head ``nh`` from ``self.PS``."""
    ps = _arrays.to_numpy(self.PS)
    k = int(self.outs[nh])
    if ps.ndim != 2 or ps.shape[1] != k:
        raise ValueError(f"self.PS must be (N, outs[{nh}]={k}) softmax outputs, got shape "
                         f"{ps.shape}")
    n = max(self.L.size())
    if ps.shape[0] != n:
        raise ValueError(f"self.PS has {ps.shape[0]} rows but self.L has {n} labels per head")
    with np.errstate(divide="ignore"):
        log_p = np.log(np.maximum(np.asarray(ps, np.float64), np.finfo(np.float64).tiny))
    res = sinkhorn(log_p, kind="sela", lam=float(self.lamb))
    self.PS = (np.asarray(res.Q, np.float64) / n).astype(self.dtype)  # plan, rows sum to 1/N
    self.sk_iters = res.n_iter
    import torch

    self.L[nh] = torch.as_tensor(np.asarray(res.labels), dtype=torch.long).to(self.dev)
