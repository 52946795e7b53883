"""Sinkhorn-Knopp equipartition (docs §5): balanced soft assignments as in SeLa and SwAV.

Q is proportional to exp(beta * scores) with beta = lam (SeLa: P^lam, P the row softmax, whose
row factor the row scaling absorbs) or 1 / epsilon (SwAV), rescaled until every sample carries
its weight and every cluster its prior mass. The kernel is stored once, in Q itself, after a
per-row max shift (never exp of a raw logit); the scalings are float64 vectors. Each iteration
is one fused pass over Q: row scaling and the column sums for the next step. Points where even
the shifted kernel cannot represent the plan (scalings that would overflow) are redone in the
log domain.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._typing import ArrayLike, BackendName
from .. import _arrays, _backend, _checks

_KINDS = ("sela", "swav")
_DEFAULT_ITERS = {"sela": 10_000, "swav": 3}
_SELA_ERR = 0.1  # SeLa's rule: sum_i |u_i / u_new_i - 1| <= 0.1, checked every 10 iterations
_SELA_EVERY = 10
_LOG_BLOCK = 4096  # rows per block of the log-domain fallback, without a memory_budget
_LOG_COPIES = 6  # float64 block-sized arrays alive at once in the log-domain fallback


class SinkhornResult(tuple):
    """``(Q, labels)`` (unpack it as before: ``Q, labels = sinkhorn(...)``), with
    ``n_iter``, the iterations run, and ``error``, the L1 error of Q's column marginals
    against the cluster prior (total mass 1) when it stopped."""

    def __new__(cls, q, labels, n_iter: int, error: float):
        self = super().__new__(cls, (q, labels))
        self.n_iter, self.error = int(n_iter), float(error)
        return self

    @property
    def Q(self):
        return self[0]

    @property
    def labels(self):
        return self[1]


def sinkhorn(scores: ArrayLike, *, kind: str = "swav", lam: float = 25.0,
             epsilon: float = 0.05, n_iters: int | None = None, tol: float | None = None,
             cluster_prior: ArrayLike | None = None, sample_weight: ArrayLike | None = None,
             process_group: object | None = None, log_probs: bool = False, probs: bool = False,
             sela_tol: float = _SELA_ERR, backend: BackendName = None,
             memory_budget: int | None = None, _name: str = "scores") -> SinkhornResult:
    """Balanced assignment of N samples to K clusters: returns ``(Q, labels)`` (a
    :class:`SinkhornResult`, which also carries ``n_iter`` and ``error``).

    scores : (N, K) logits, log-probabilities or probabilities (float32, float16, bfloat16
        or float64; on the GPU float64 is read as float32, the kernels' precision).
    kind : "swav" (Q ~ exp(scores / epsilon), 3 iterations as in SwAV's distributed_sinkhorn)
        or "sela" (Q ~ softmax(scores) ** lam, from uniform sample scalings as SeLa's
        optimize_L_sk, until SeLa's own rule holds).
    n_iters, tol : at most ``n_iters`` iterations (swav 3; sela 10,000, with a warning if its
        rule is not met by then). With ``tol`` given, stop once the column marginals are within
        ``tol`` (L1, total mass 1); else swav runs its n_iters and sela stops by SeLa's rule:
        sum over samples of |u_i / u_new_i - 1| <= ``sela_tol`` (0.1 as SeLa's ImageNet
        code; its CIFAR code uses 0.01) for the sample scalings u, checked every 10
        iterations (from the first), so it runs exactly SeLa's iterations.
    cluster_prior : (K,) column marginal (non-negative, sums to 1; long-tailed priors work);
        default uniform 1/K. sample_weight : (N,) non-negative row weights, default uniform.
    process_group : a torch.distributed group (or True for the default group) across which
        the rows are split; column sums are all-reduced each iteration, as SwAV does.
    log_probs : kind="sela" only: the rows of ``scores`` are already log-probabilities (log
        of softmax outputs), so Q starts from exp(lam * scores), SeLa's ``PS ** lamb``, and
        the pass computing each row's log-sum-exp is skipped.
    probs : kind="sela" only: the rows of ``scores`` are probabilities (softmax outputs,
        SeLa's ``PS``), raised to ``lam`` as they are: for an integer ``lam`` (SeLa's 10 and
        25) by repeated multiplication in float64 on the CPU, with no logarithm taken (one
        pass over the scores); else through their float64 logs rounded to float32, as
        ``log_probs``. Each row needs an entry > 0, and none negative.
    memory_budget : bytes of scratch for the log-domain fallback, which works on blocks of
        rows (about 6 float64 copies of a block; default 4096 rows). The fused iterations need
        no N x K scratch: Q, the output, is the only N x K buffer.
    Q : (N, K) float32 in the caller's kind and device, rows summing to 1 (soft assignment;
        SwAV's codes). labels : (N,) int64 row argmax (smaller index on ties).
    """
    scores, s_info = _checks.embeddings(scores, _name)  # _name: the caller's (compat) name
    _checks.choice(kind, "kind", _KINDS)
    beta = _checks.positive_float(lam, "lam") if kind == "sela" else \
        1.0 / _checks.positive_float(epsilon, "epsilon")
    n_iters = _DEFAULT_ITERS[kind] if n_iters is None else _checks.positive_int(n_iters,
                                                                                "n_iters")
    tol = None if tol is None else _checks.positive_float(tol, "tol", zero=True)
    sela_rule = kind == "sela" and tol is None
    sela_tol = _checks.positive_float(sela_tol, "sela_tol")
    for flag, name in ((log_probs, "log_probs"), (probs, "probs")):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
        if flag and kind != "sela":
            raise ValueError(f"{name}=True applies to kind='sela' (SwAV's scores are logits)")
    if log_probs and probs:
        raise ValueError("log_probs=True and probs=True exclude each other: pick the one "
                         "that describes scores")
    n, k = s_info.shape
    block = _LOG_BLOCK
    if memory_budget is not None:
        memory_budget = _checks.positive_int(memory_budget, "memory_budget")
        block = max(1, memory_budget // (_LOG_COPIES * 8 * k))
    c = _checks.distribution(cluster_prior, k, "cluster_prior")
    w = _checks.weights(sample_weight, n, "sample_weight")
    impl = _backend.select(backend, s_info.on_gpu, like=scores)
    power = _integer_power(beta) if probs and impl.sinkhorn_powers else None
    if probs and power is None:  # the general power: exp(lam log p)
        scores, bad = _arrays.log_probs(scores)
        if bad >= 0:
            raise ValueError(_bad_scores(_name, bad, probs=True))
        probs, log_probs = False, True

    group = process_group
    total_w = float(_arrays.allreduce(np.array([w.sum()]), group, "sum")[0])
    if total_w <= 0:
        raise ValueError("sample_weight sums to 0 over all ranks")
    r = w / total_w

    state = impl.sinkhorn_state(scores, beta, r, power)  # Q = exp(beta (s - row max)), once
    if state.bad_row >= 0:
        raise ValueError(_bad_scores(_name, state.bad_row, probs))
    # Initial sample scalings, relative to Q's row shift: uniform on exp(beta * scores)
    # (SwAV), or uniform on softmax(scores) ** lam (SeLa), whose rows carry 1 / Z_i ** lam.
    log_u = beta * state.rowmax()
    if kind == "sela" and not (log_probs or probs):
        log_u = log_u - beta * _arrays.row_logsumexp(scores)
    g = float(_arrays.allreduce(np.array([log_u.max() if n else -np.inf]), group, "max")[0])
    log_u = log_u - g
    colsum = _arrays.allreduce(state.start(np.exp(log_u)), group, "sum")
    v = np.zeros(k)
    ok, it, rule_met = True, 0, not sela_rule
    while it < n_iters:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            v = np.where(c > 0, c / colsum, 0.0)
        check = sela_rule and it % _SELA_EVERY == 0
        if it + 1 == n_iters and tol is None and not check and state.fused_finalize:
            it += 1  # nothing to test after the last step: finalize does its row scaling
            break
        u_before = state.row_scaling() if check else None
        local, u_ok = state.iterate(v)
        it += 1
        colsum = _arrays.allreduce(local, group, "sum")
        bad = 0.0 if u_ok and np.isfinite(v).all() and np.isfinite(colsum).all() else 1.0
        ok = _arrays.allreduce(np.array([bad]), group, "max")[0] == 0  # every rank agrees
        if not ok:
            break
        if check:
            with np.errstate(divide="ignore", invalid="ignore"):
                rule_met = _sela_done(u_before / state.row_scaling(), group, sela_tol)
            if rule_met:
                break
        if tol is not None and np.abs(colsum * v - c).sum() <= tol:
            break
    if ok:
        if not rule_met:
            warnings.warn(f"sinkhorn(kind='sela'): SeLa's stopping rule was not met in "
                          f"n_iters={n_iters} iterations", RuntimeWarning, stacklevel=2)
        q, labels, marginals, rows_ok = state.finalize(v)
        rows_ok = _arrays.allreduce(np.array([0.0 if rows_ok else 1.0]), group, "max")[0] == 0
        if rows_ok:
            err = np.abs(colsum * v - c).sum() if marginals is None else \
                np.abs(_arrays.allreduce(marginals, group, "sum") - c).sum()
            return SinkhornResult(q, labels, it, float(err))
    # the shifted kernel underflows where the plan needs mass: redo in the log domain
    warnings.warn("sinkhorn: the shifted kernel cannot carry this plan (extreme "
                  "temperature); redoing it in the log domain", RuntimeWarning, stacklevel=2)
    q = state.host_buffer()
    if probs:  # the log domain works on log-probabilities
        scores = _arrays.log_probs(scores)[0]
    log_u0 = log_u - beta * state.rowmax()  # relative to exp(beta * scores)
    labels, it, err = _log_domain(scores, q, beta, r, c, n_iters, tol, sela_rule, log_u0,
                                  group, block, sela_tol)
    return SinkhornResult(_arrays.from_host(q, scores), _arrays.from_host(labels, scores),
                          it, err)


_MAX_POWER = 1 << 20  # larger powers go through logs (binary powering: 20 squarings)


def _bad_scores(name: str, row: int, probs: bool) -> str:
    """The ValueError text for a row of scores that cannot be used."""
    if probs:
        return (f"{name} must hold probabilities (finite, >= 0, some entry > 0 in every row); "
                f"row {row} does not")
    return f"{name} holds NaN or Inf (row {row})"


def _integer_power(lam: float):
    """``lam`` as an int when it is a whole number the power kernels take, else None."""
    return int(lam) if float(lam).is_integer() and 1 <= lam <= _MAX_POWER else None


def _sela_done(ratio: np.ndarray, group, sela_tol: float) -> bool:
    """SeLa's rule on the ratios u / u_new of the sample scalings (summed over all ranks)."""
    err = np.nansum(np.abs(ratio - 1.0))
    return bool(_arrays.allreduce(np.array([err]), group, "sum")[0] <= sela_tol)


def _log_domain(scores, q, beta, r, c, n_iters, tol, sela_rule, log_u0, group, block,
                sela_tol=_SELA_ERR):
    """Log-domain iterations over blocks of rows (extra memory: a few blocks), from the row
    scaling ``log_u0`` (on exp(beta * scores)) and with the same stopping rules; fills Q and
    returns (labels, iterations, column-marginal error). Used only when the shifted kernel
    cannot carry the plan."""
    n, k = q.shape
    log_r = np.log(r)
    with np.errstate(divide="ignore"):
        log_c = np.log(c)
    log_u = np.array(log_u0, np.float64)
    log_v = np.zeros(k)

    def blocks():
        for b in range(0, n, block):
            blk = np.empty((min(block, n - b), k), np.float64)
            _arrays.copy_to_host(blk, scores, rows=slice(b, b + blk.shape[0]))
            yield b, beta * blk

    def col_lse():
        m, s = np.full(k, -np.inf), np.zeros(k)
        for b, lk in blocks():
            a = lk + log_u[b:b + lk.shape[0], None]
            nm = np.maximum(m, a.max(axis=0))
            s = s * np.exp(m - nm) + np.exp(a - nm).sum(axis=0)
            m = nm
        gm = _arrays.allreduce(m, group, "max")
        s = _arrays.allreduce(s * np.exp(m - gm), group, "sum")
        return gm + np.log(s)

    def row_lse(a):
        am = a.max(axis=1, keepdims=True)
        return am[:, 0] + np.log(np.exp(a - am).sum(axis=1))

    it = 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        while it < n_iters:
            check = sela_rule and it % _SELA_EVERY == 0
            before = log_u.copy() if check else None
            log_v = np.where(c > 0, log_c - col_lse(), -np.inf)
            for b, lk in blocks():
                log_u[b:b + lk.shape[0]] = log_r[b:b + lk.shape[0]] - row_lse(lk + log_v)
            it += 1
            if check and _sela_done(np.exp(before - log_u), group, sela_tol):
                break
            if tol is not None:
                marg = np.where(c > 0, np.exp(col_lse() + log_v), 0.0)
                if np.abs(marg - c).sum() <= tol:
                    break
        marg = np.where(c > 0, np.exp(col_lse() + log_v), 0.0)
        labels = np.empty(n, np.int64)
        for b, lk in blocks():
            a = lk + log_v
            q[b:b + lk.shape[0]] = np.exp(a - row_lse(a)[:, None])
            labels[b:b + lk.shape[0]] = np.argmax(a, axis=1)
    return labels, it, float(np.abs(marg - c).sum())
