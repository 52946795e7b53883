"""Neighbour utilities of SCAN and NCL (docs §6).

SCAN mines each point's nearest neighbours once (``mine_neighbors``, saved in its (N, k + 1)
layout), checks them against ground truth (``neighbor_accuracy``) and later trains on its own
confident predictions (``confident_labels``). NCL contrasts each sample with its neighbourhood
in a memory bank (``neighborhood_positives``) and with synthetic hard negatives
(``hard_negatives``): NCL builds those with a per-sample Python loop that materialises every
candidate mixture; here the cosine of a mixture follows from three dot products and a norm, so
the whole batch is selected at once and only the kept mixtures are built.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from .._typing import ArrayLike, BackendName
from .. import _arrays, _backend, _checks, _host
from ..knn import checked_knn


class ConfidentLabels(NamedTuple):
    """``mask`` (N,) bool: max probability > threshold; ``labels`` (N,) int64 argmax of every
    row; ``weights`` (C,) float32 class weights for the cross-entropy on the masked rows."""

    mask: object
    labels: object
    weights: object


class HardNegatives(NamedTuple):
    """Per anchor, the k kept mixtures ``mixtures`` (B, k, d) float32 (unit rows, detached),
    their cosine ``sims`` (B, k) float32 with the anchor (decreasing), the rows of the two banks
    they mix, ``unlabeled_index`` and ``labeled_index`` (B, k) int64, and ``weight`` (B, k)
    float32, the share mu of the unlabeled row."""

    mixtures: object
    sims: object
    unlabeled_index: object
    labeled_index: object
    weight: object


def mine_neighbors(X: ArrayLike, k: int, *, include_self: bool = False,
                   knn_method: str = "exact", backend: BackendName = None,
                   memory_budget: int | None = None):
    """SCAN's neighbour mining: the indices of each point's k most similar points (cosine).

    Self is excluded by index, so duplicates of a point stay its neighbours (faiss, as used by
    SCAN, may list a duplicate in column 0 instead of the point itself).

    Parameters
    ----------
    X : (N, d) float embeddings (numpy, torch or cupy).
    k : neighbours per point, 1 <= k <= N - 1.
    include_self : prepend the point's own index as column 0, giving the (N, k + 1) layout
        SCAN's ``mine_nearest_neighbors`` saves with ``np.save`` (``np.save(path,
        to_numpy(idx))`` gives a file SCAN loads unchanged).
    knn_method : the kNN search, as ``method`` of :func:`hdlfast.knn`: "exact" (default),
        "ivf" (approximate, recall measured) or "auto" (exact while cheap).
    backend, memory_budget : as for :func:`hdlfast.knn`.

    Returns
    -------
    idx : (N, k) or (N, k + 1) int64 in X's kind and on its device; neighbours by decreasing
        similarity, equal similarities by increasing index.
    """
    _, idx = checked_knn(X, k, backend=backend, memory_budget=memory_budget, q_name="X",
                         method=knn_method, method_name="knn_method")
    if not include_self:
        return idx
    n = idx.shape[0]
    out = _arrays.empty(idx, (n, idx.shape[1] + 1), "int64")
    with _arrays.device_ctx(idx):
        out[:, 0] = _arrays.from_host(np.arange(n, dtype=np.int64), idx)
        out[:, 1:] = idx
    return out


def neighbor_accuracy(idx: ArrayLike, targets: ArrayLike) -> float:
    """Fraction of neighbour entries ``idx[i, j]`` whose target equals point i's target.

    Entries with ``idx[i, j] == i`` (the point itself) are left out, so the (N, k) layout of
    :func:`mine_neighbors` and SCAN's (N, k + 1) layout with self in column 0 give the same
    number as SCAN's ``mine_nearest_neighbors``. ``idx`` (N, k) integer indices in [0, N),
    ``targets`` (N,) integer ground truth; any array kind. Returns a Python float.
    """
    t = _checks.int_vector(targets, "targets")
    shape = _arrays.info(_arrays.as_array(idx, "idx"), "idx").shape
    if len(shape) == 2 and shape[0] != t.size:
        raise ValueError(f"idx has {shape[0]} rows but targets has {t.size} entries")
    nbr, _ = _checks.indices(idx, "idx", t.size)
    keep = nbr != np.arange(t.size)[:, None]
    if not keep.any():
        raise ValueError("idx holds no neighbour other than the points themselves")
    return float((t[nbr] == t[:, None])[keep].mean())


def confident_labels(probs: ArrayLike, threshold: float = 0.99, *,
                     balance: bool = True) -> ConfidentLabels:
    """SCAN's self-labeling targets (``ConfidenceBasedCE``): confident rows, their labels and
    class-balancing weights.

    Parameters
    ----------
    probs : (N, C) class probabilities (apply softmax to logits first): non-negative rows
        summing to 1 within 1e-3 (1e-2 for bfloat16).
    threshold : in (0, 1]; a row is confident when its max probability is strictly greater,
        compared in float32 as torch does for float32 probabilities (float64 for float64).
    balance : class weights n / n_c, with n_c the confident rows labeled c and n all confident
        rows, 1 for classes with none (SCAN's ``apply_class_balancing``); False: all 1.

    Returns
    -------
    ConfidentLabels(mask (N,) bool, labels (N,) int64 argmax of every row (smaller class on
    ties), weights (C,) float32), in the kind and on the device of ``probs``. A batch with no
    confident row gets an all-False mask and a RuntimeWarning.
    """
    probs = _arrays.as_array(probs, "probs")
    inf = _arrays.info(probs, "probs")
    if inf.dtype not in _arrays.FLOAT_DTYPES:
        raise TypeError(f"probs must hold floating-point probabilities, got dtype {inf.dtype}")
    if len(inf.shape) != 2:
        raise ValueError(f"probs must be 2-D (N, C), got shape {inf.shape}")
    if 0 in inf.shape:
        raise ValueError(f"probs is empty: shape {inf.shape}")
    threshold = _checks.positive_float(threshold, "threshold")
    if threshold > 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    host = np.asarray(_arrays.to_numpy(probs), np.float64 if inf.dtype == "float64" else
                      np.float32)
    if not np.isfinite(host).all():
        raise ValueError("probs holds NaN or Inf")
    if (host < 0).any():
        raise ValueError(f"probs must be non-negative (apply softmax to logits first), "
                         f"got min {host.min()}")
    sums = host.sum(axis=1, dtype=np.float64)
    bad = np.abs(sums - 1) > (1e-2 if inf.dtype == "bfloat16" else 1e-3)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"probs rows must sum to 1 (apply softmax to logits first); row {row} "
                         f"sums to {sums[row]}")
    labels = host.argmax(axis=1)
    mask = host.max(axis=1) > host.dtype.type(threshold)
    if not mask.any():  # a loss over logits[mask] would be the mean of nothing: NaN
        warnings.warn(f"confident_labels: no row's max probability exceeds threshold="
                      f"{threshold}; a loss over the masked rows is undefined (NaN). SCAN "
                      "raises here (hdlfast.compat.scan.ConfidenceBasedCE does too)",
                      RuntimeWarning, stacklevel=2)
    weights = np.ones(inf.shape[1], np.float32)
    if balance:
        counts = np.bincount(labels[mask], minlength=inf.shape[1])
        weights[counts > 0] = mask.sum() / counts[counts > 0]
    return ConfidentLabels(*(_arrays.from_host(a, probs) for a in
                             (mask, labels.astype(np.int64), weights)))


def neighborhood_positives(z: ArrayLike, bank: ArrayLike, k: int, *,
                           backend: BackendName = None):
    """NCL's neighbourhood positives: for each row of ``z`` (B, d) the k most similar rows
    (cosine) of the memory ``bank`` (M, d). Returns ``(sims, idx)``, (B, k) float32 and int64
    in z's kind and device, by decreasing similarity (ties: smaller index), as
    :func:`hdlfast.knn` with ``database=bank``."""
    if bank is None:  # checked_knn reads None as "the self-graph of z"
        raise TypeError("bank must be an array (the memory bank), got None")
    return checked_knn(z, k, database=bank, backend=backend, q_name="z", db_name="bank")


def _bank_rows(x, name: str, normalize: bool) -> np.ndarray:
    """float64 host copy of x: unit rows (scale-safe; zero rows are bad input) or, without
    ``normalize``, the rows as stored (finite, with finite squared norms)."""
    if normalize:
        return _host.normalize(x, name, np.float64)
    host = np.array(_arrays.to_host(x), dtype=np.float64)
    sq = np.einsum("ij,ij->i", host, host)
    if not np.isfinite(sq).all():
        row = int(np.argmin(np.isfinite(sq)))
        raise ValueError(f"{name} row {row} holds NaN/Inf or is too large to mix as stored "
                         "(normalize=False)")
    return host


def _pair_dots(pairs, a: np.ndarray, neg: np.ndarray, b: np.ndarray,
               lab: np.ndarray) -> np.ndarray:
    """``ab[i, r, j] = a[neg[i, j]] · b[lab[i, r, j]]`` (float64), the dot products of the
    paired rows only, read in place by the CPU backend's ``pairs`` kernel (a gathered copy of
    the rows cost 20x more at NCL's sizes; a GEMM of the used rows computes far more pairs
    than are used)."""
    ra = np.ascontiguousarray(np.broadcast_to(neg[:, None, :], lab.shape)).reshape(-1)
    rb = np.ascontiguousarray(lab, dtype=np.int64).reshape(-1)
    out = np.empty(ra.size)
    pairs.pair_dots(a, b, ra, rb, out)
    return out.reshape(lab.shape)


def _smallest(s: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the n smallest entries of each row of s, in increasing order, equal
    values by increasing column: ``np.argsort(s, kind="stable")[:, :n]``, partitioned first."""
    if n >= s.shape[1]:
        return np.argsort(s, axis=1, kind="stable")[:, :n]
    part = np.sort(np.argpartition(s, n - 1, axis=1)[:, :n], axis=1)
    vals = np.take_along_axis(s, part, 1)
    out = np.take_along_axis(part, np.argsort(vals, axis=1, kind="stable"), 1)
    edge = vals.max(axis=1, keepdims=True)  # rows with ties cut at the n-th value: sort fully
    cut = (s == edge).sum(axis=1) != (vals == edge).sum(axis=1)
    if cut.any():
        out[cut] = np.argsort(s[cut], axis=1, kind="stable")[:, :n]
    return out


def _draw_labeled(seed: int, batch: int, n_mix: int, n_labeled: int, n_neg: int):
    """The bank_labeled rows mixed in: for each anchor and round the first n_neg entries of a
    random permutation (NCL's ``torch.randperm(L)[:num_neg]``); (batch, n_mix, n_neg) int64."""
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(np.arange(n_labeled, dtype=np.int64), (batch * n_mix, 1)),
                         axis=1)
    return perms[:, :n_neg].reshape(batch, n_mix, n_neg)


def hard_negatives(z: ArrayLike, bank_unlabeled: ArrayLike, bank_labeled: ArrayLike, k: int,
                   *, n_neg: int | None = None, n_mix: int = 5,
                   mu: tuple[float, float] = (1 / 3, 2 / 3), seed: int = 0,
                   draws: ArrayLike | None = None, normalize: bool = True,
                   backend: BackendName = None) -> HardNegatives:
    """NCL's hard negatives (``ncl_hng_loss``) for a whole batch at once.

    For each anchor z_i: take the ``n_neg`` rows a of ``bank_unlabeled`` least similar to z_i
    (least similar first; ties: smaller index); in each of ``n_mix`` rounds pair them with
    ``n_neg`` rows b of ``bank_labeled`` drawn without replacement, and for each w in ``mu``
    form the mixture w a + (1 - w) b of the unit-length rows, rescaled to unit length. Of these
    len(mu) x n_mix x n_neg candidates (ordered by round, then mu, then a) keep the k most
    similar to z_i (ties: earlier candidate). NCL's defaults: mu = (1/3, 2/3), n_mix
    (hard_iter) = 5, n_neg = 400 (50 for 5 classes), k (num_hard) = 400;
    :class:`hdlfast.compat.ncl.NCLMemory` applies them.

    The selection is exact float64 arithmetic on the host (cosines from z·a, z·b and a·b of
    the paired rows only, never every mixture); the draws come from
    ``np.random.default_rng(seed)`` unless given, so every backend and device gives the same
    result. Only the kept mixtures are built, on z's device. Use them as extra negative
    logits with gradients through z, e.g. ``torch.einsum('bd,bkd->bk', z, out.mixtures) / T``.

    Parameters
    ----------
    z : (B, d) float anchors. bank_unlabeled : (Mu, d), bank_labeled : (Ml, d) memory banks
        (NCL's queue and labeled queue) on z's device.
    k : mixtures kept per anchor, 1 <= k <= len(mu) * n_mix * n_neg.
    n_neg : unlabeled rows per anchor (default k), at most Mu and Ml.
    n_mix : rounds of random pairing. mu : shares of the unlabeled row, each in [0, 1].
    seed : non-negative int seeding the draws.
    draws : optional (B, n_mix, n_neg) integer rows of bank_labeled to pair in each round with
        the anchor's n_neg unlabeled rows (least similar first) instead of seeded draws, e.g.
        the caller's own ``torch.randperm`` prefixes.
    normalize : False ranks and mixes the bank rows as stored (NCL's code does; the same
        result as True when they are unit-length, as NCL's queues are once filled).
    backend : the CPU backend of the selection ("native" or "numba"), which runs on the host
        whatever z's device ("cuda", or None: the default CPU backend).

    Returns
    -------
    HardNegatives(mixtures, sims, unlabeled_index, labeled_index, weight), see the class.
    """
    z, z_info = _checks.embeddings(z, "z")
    bank_unlabeled, u_info = _checks.embeddings(bank_unlabeled, "bank_unlabeled")
    bank_labeled, l_info = _checks.embeddings(bank_labeled, "bank_labeled")
    infos = {"bank_unlabeled": u_info, "bank_labeled": l_info}
    for name, inf in infos.items():
        _checks.same_device(z_info, inf, "z", name)
        _checks.same_width(z_info, inf, "z", name)
    k = _checks.positive_int(k, "k")
    neg_name = "n_neg (default: k)" if n_neg is None else "n_neg"
    n_neg = k if n_neg is None else _checks.positive_int(n_neg, "n_neg")
    n_mix = _checks.positive_int(n_mix, "n_mix")
    mu = _mixing_weights(mu)
    seed = _checks.seed(seed)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    if backend is not None:
        _checks.choice(backend, "backend", _backend.NAMES)
    for name, inf in infos.items():
        if n_neg > inf.shape[0]:
            raise ValueError(f"{neg_name} = {n_neg} is larger than the {inf.shape[0]} rows of "
                             f"{name}")
    _checks.k_at_most(k, mu.size * n_mix * n_neg, "candidate mixtures (len(mu) x n_mix x "
                      "n_neg)")
    batch = z_info.shape[0]
    if draws is not None:
        draws = _given_draws(draws, (batch, n_mix, n_neg), l_info.shape[0])

    pairs = _backend.host(backend).pairs
    zh = _host.normalize(z, "z", np.float64)
    a = _bank_rows(bank_unlabeled, "bank_unlabeled", normalize)
    b = _bank_rows(bank_labeled, "bank_labeled", normalize)
    sim_a = zh @ a.T
    neg = _smallest(sim_a, n_neg)  # (B, n_neg)
    lab = _draw_labeled(int(seed), batch, n_mix, b.shape[0], n_neg) if draws is None \
        else draws  # (B, R, n_neg)
    rows = np.arange(batch)[:, None, None]
    za = np.take_along_axis(sim_a, neg, 1)[:, None, None, :]
    zb = (zh @ b.T)[rows, lab][:, :, None, :]
    ab = _pair_dots(pairs, a, neg, b, lab)[:, :, None, :]
    w = mu[None, None, :, None]
    if normalize:
        sq = w * w + (1 - w) ** 2 + 2 * w * (1 - w) * ab
    else:
        aa = np.einsum("ij,ij->i", a, a)[neg][:, None, None, :]
        bb = np.einsum("ij,ij->i", b, b)[lab][:, :, None, :]
        sq = w * w * aa + (1 - w) ** 2 * bb + 2 * w * (1 - w) * ab
    norm = np.sqrt(np.maximum(sq, 0.0))
    cand = ((w * za + (1 - w) * zb) / np.maximum(norm, 1e-12)).reshape(batch, -1)
    keep = _smallest(-cand, k)  # (B, k) candidate positions
    rnd, wi, pos = keep // (mu.size * n_neg), keep // n_neg % mu.size, keep % n_neg
    u_idx = np.take_along_axis(neg, pos, 1)
    l_idx = lab[np.arange(batch)[:, None], rnd, pos]
    weight = mu[wi].astype(np.float32)
    mixtures = _arrays.unit_mixtures(bank_unlabeled, u_idx, bank_labeled, l_idx, weight, z,
                                     pairs.mix_rows, normalize=normalize)
    sims = np.take_along_axis(cand, keep, 1).astype(np.float32)
    return HardNegatives(mixtures, *(_arrays.from_host(v, z) for v in
                                     (sims, u_idx, l_idx, weight)))


def _given_draws(draws, shape: tuple, n_labeled: int) -> np.ndarray:
    """The caller's labeled draws as an int64 host array of ``shape``, rows in [0, Ml)."""
    draws = _arrays.as_array(draws, "draws")
    inf = _arrays.info(draws, "draws")
    if not inf.dtype.startswith(("int", "uint")):
        raise TypeError(f"draws must hold integer rows of bank_labeled, got dtype {inf.dtype}")
    if tuple(inf.shape) != shape:
        raise ValueError(f"draws must have shape (B, n_mix, n_neg) = {shape}, got "
                         f"{tuple(inf.shape)}")
    host = _checks.int64_host(draws, "draws")
    if host.min() < 0 or host.max() >= n_labeled:
        raise ValueError(f"draws holds rows outside [0, {n_labeled}) of bank_labeled: min "
                         f"{host.min()}, max {host.max()}")
    return host


def _mixing_weights(mu) -> np.ndarray:
    if mu is None or isinstance(mu, (str, bytes)):
        raise TypeError(f"mu must be a sequence of numbers, got {type(mu).__name__}")
    try:
        values = np.asarray(mu, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"mu must be a sequence of numbers, got {type(mu).__name__}") from None
    if values.size == 0 or not np.isfinite(values).all() or (values < 0).any() or \
            (values > 1).any():
        raise ValueError(f"mu must be one or more numbers in [0, 1], got {mu!r}")
    return values
