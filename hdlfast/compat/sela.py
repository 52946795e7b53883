"""SeLa (Asano, Rupprecht and Vedaldi, ICLR 2020; yukimasano/self-label, MIT license): its
label optimisation ``optimize_L_sk`` for a one-line switch::

    from hdlfast.compat.sela import optimize_L_sk   # instead of sinkhornknopp's
    cost, selflabels = optimize_L_sk(PS, lamb=args.lamb)   # cifar.py's variant

Same signature (a method of SeLa's trainer: it reads ``self.PS``, the (N, K) softmax
outputs, ``self.lamb``, ``self.outs[nh]``, ``self.dtype``, ``self.L`` and ``self.dev``) and the
same effect: ``self.L[nh]`` gets the new labels and ``self.PS`` the transport plan as SeLa
leaves it, the (K, N) transpose of the (N, K) array, which (a writable numpy array of
``self.dtype``, as SeLa's is) holds the plan in place. It runs :func:`hdlfast.sinkhorn` with
``kind="sela"`` on PS itself (``probs=True``: PS ** lamb by repeated multiplication for
SeLa's whole-number lamb): the same start (uniform sample scalings on
PS ** lamb) and SeLa's own stopping rule (sum |c / c_new - 1| <= 0.1, checked every 10
iterations; 0.01 in cifar.py), so the iterations are SeLa's; the scalings are float64 and
the plan float32 (SeLa: ``self.dtype``), so labels can differ only where two clusters tie to
rounding. The iterations run are stored as ``self.sk_iters`` (SeLa prints them).
"""
from __future__ import annotations

import numpy as np

from .. import _arrays, _checks
from ..sinkhorn import sinkhorn


_CIFAR_RULE = 1e-2  # cifar.py stops at err <= 0.01 (the trainer's code at 0.1)


def optimize_L_sk(self, nh=0, *, lamb=10.0):
    """SeLa's ``optimize_L_sk(self, nh)``: balanced labels of head ``nh`` from ``self.PS``.

    Called with the (N, K) softmax outputs instead of a trainer, it is the function of SeLa's
    cifar.py, ``optimize_L_sk(PS)`` (which reads ``args.lamb``: pass ``lamb=args.lamb``,
    default its 10.0): its stopping rule at 0.01, returning ``(cost, selflabels)``, the mean
    of -log PS at the chosen labels and the (N,) int64 labels as a torch tensor (on CUDA when
    available, as SeLa's ``.cuda()``); PS is left untouched."""
    if not hasattr(self, "PS"):
        return _optimize_cifar(self, lamb)
    ps = _arrays.to_numpy(self.PS)
    k = int(self.outs[nh])
    if ps.ndim != 2 or ps.shape[1] != k:
        raise ValueError(f"self.PS must be (N, outs[{nh}]={k}) softmax outputs, got shape "
                         f"{ps.shape}")
    n = max(self.L.size())
    if ps.shape[0] != n:
        raise ValueError(f"self.PS has {ps.shape[0]} rows but self.L has {n} labels per head")
    res = sinkhorn(ps, kind="sela", lam=float(self.lamb), probs=True, _name="self.PS")
    # SeLa writes the plan over PS in place and leaves self.PS as its (K, N) transpose
    in_place = isinstance(self.PS, np.ndarray) and self.PS.flags.writeable and \
        self.PS.dtype == self.dtype
    plan = self.PS if in_place else np.empty(ps.shape, self.dtype)
    np.divide(res.Q, n, out=plan, dtype=np.float64, casting="unsafe")  # rows sum to 1 / N
    self.PS = plan.T
    self.sk_iters = res.n_iter
    import torch

    self.L[nh] = torch.as_tensor(np.asarray(res.labels), dtype=torch.long).to(self.dev)


def _optimize_cifar(ps, lamb):
    """SeLa's cifar.py optimize_L_sk(PS): (cost, selflabels)."""
    import torch

    host = _arrays.to_numpy(_arrays.as_array(ps, "PS"))
    if host.ndim != 2 or 0 in host.shape:
        raise ValueError(f"PS must be (N, K) softmax outputs, got shape {host.shape}")
    res = sinkhorn(host, kind="sela", lam=_checks.positive_float(lamb, "lamb"), probs=True,
                   sela_tol=_CIFAR_RULE, _name="PS")
    labels = np.asarray(res.labels)
    with np.errstate(divide="ignore"):
        cost = -float(np.nansum(np.log(np.asarray(host, np.float64)[np.arange(len(labels)),
                                                                      labels]))) / len(labels)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return cost, torch.as_tensor(labels, dtype=torch.long).to(device)
