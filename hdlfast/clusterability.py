"""Label clusterability and the choice of k for HDL from the labeled data alone (docs §4)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._typing import ArrayLike, BackendName
from . import _arrays, _backend, _checks
from .knn import METHODS as KNN_METHODS, knn

DEFAULT_CANDIDATES = (5, 10, 15, 20, 30, 50)


def label_clusterability(X: ArrayLike, labels: ArrayLike,
                         ks: tuple[int, ...] = (1, 5, 10, 20, 50), *,
                         backend: BackendName = None) -> dict:
    """For each k: ``mu`` = fraction of labeled points whose k nearest labeled points (self
    excluded) all carry its label, and ``agreement`` = mean fraction of those k that do.

    With full ground truth this measures how clusterable an encoder's embedding space is.
    k values above (labeled points - 1) are dropped. Returns {"k": [...], "mu": [...],
    "agreement": [...]} (plain lists, ready for JSON or a plot).
    """
    X, x_info = _checks.embeddings(X, "X")
    y = _checks.labels(labels, x_info.shape[0])
    ks = sorted({_checks.positive_int(k, "ks") for k in np.atleast_1d(ks).tolist()})
    if not ks:
        raise ValueError("ks is empty: give one or more k >= 1")
    _backend.select(backend, x_info.on_gpu, like=X)  # a bad backend name fails here
    _checks.rows(X, "X")
    known = np.nonzero(y >= 0)[0]
    usable = [k for k in ks if k <= known.size - 1]
    out = {"k": usable, "mu": [], "agreement": []}
    if not usable:
        return out
    _, nbr = knn(_arrays.take_rows(X, known), max(usable), backend=backend)
    same = y[known][_arrays.to_numpy(nbr)] == y[known][:, None]
    for k in usable:
        out["mu"].append(float(same[:, :k].all(axis=1).mean()))
        out["agreement"].append(float(same[:, :k].mean()))
    return out


@dataclass
class KSelection:
    """The chosen ``k``, the ``rule`` that chose it ("holdout", "clusterability" or
    "consensus"), the score per candidate (hold-out accuracy, or agreement with the other
    candidates' labelings; empty for the clusterability rule) and the clusterability curve."""

    k: int
    rule: str
    scores: dict = field(default_factory=dict)
    clusterability: dict = field(default_factory=dict)


def candidate_ks(candidates, n: int) -> list[int]:
    """The candidates of :func:`select_k` that n points allow (k <= n - 1), sorted, distinct."""
    cands = sorted({_checks.positive_int(k, "candidates") for k in np.atleast_1d(candidates)})
    cands = [k for k in cands if k <= n - 1]
    if not cands:
        raise ValueError(f"candidates must hold a k <= {n - 1} (number of points - 1)")
    return cands


def select_k(X: ArrayLike, labels: ArrayLike,
             candidates: tuple[int, ...] = DEFAULT_CANDIDATES, *,
             n_folds: int = 5, threshold: float = 0.9, seed: int = 0, method: str = "hdl",
             graph: tuple | None = None, knn_method: str = "exact",
             backend: BackendName = None) -> KSelection:
    """Pick k for HDL from the labeled data alone.

    With >= 2 labels in every class: stratified hold-out (hide one fold of the labels, run
    HDL, score accuracy on the hidden labels, average over folds; the best k wins, ties to the
    smaller k). Otherwise: the largest candidate whose mu_k (see
    :func:`label_clusterability`) is >= ``threshold``. With one label in a class mu_k is 0 for
    every k, so when no candidate passes, the k whose HDL labeling agrees most with the
    labelings at the other candidates wins ("consensus"; measured on digits and a synthetic
    mixture with one label per class it lands within 1-3 points of the best k in hindsight).
    ``graph``: a precomputed kNN graph of X (``hdlfast.knn(X, k)``, or a ``(sims, idx)``
    pair) with at least max(candidates) columns. ``knn_method``: the search of that graph
    when it is not given, as ``method`` of :func:`hdlfast.knn` ("exact", "ivf", "auto").
    """
    from .labeling import hdl

    X, x_info = _checks.embeddings(X, "X")
    n = x_info.shape[0]
    y = _checks.labels(labels, n)
    cands = candidate_ks(candidates, n)
    n_folds = _checks.positive_int(n_folds, "n_folds")
    threshold = _checks.fraction(threshold, "threshold")
    seed = _checks.seed(seed)
    _checks.choice(method, "method", ("hdl", "tree"))
    _checks.choice(knn_method, "knn_method", KNN_METHODS)
    if graph is not None:
        idx, sims = _checks.graph(graph, n, max(cands))
    curve = label_clusterability(X, y, cands, backend=backend)
    counts = np.bincount(y[y >= 0])
    counts = counts[counts > 0]
    if graph is None:
        sims, idx = (_arrays.to_numpy(a) for a in knn(X, max(cands), method=knn_method,
                                                      backend=backend))
    if counts.min() < 2 or n_folds < 2:
        ok = [k for k, mu in zip(curve["k"], curve["mu"]) if mu >= threshold]
        if ok:
            return KSelection(max(ok), "clusterability", {}, curve)
        runs = {k: _arrays.to_numpy(hdl(X, y, k, graph=(sims, idx), method=method,
                                        backend=backend).labels) for k in cands}
        scores = {k: float(np.mean([(runs[k] == runs[j]).mean() for j in cands if j != k]))
                  if len(cands) > 1 else 1.0 for k in cands}
        return KSelection(max(cands, key=lambda k: (scores[k], -k)), "consensus", scores, curve)

    folds = _stratified_folds(y, min(n_folds, int(counts.min())), seed)
    scores = {}
    for k in cands:
        acc = []
        for f in range(folds.max() + 1):
            hidden = np.nonzero(folds == f)[0]
            train = y.copy()
            train[hidden] = -1
            res = hdl(X, train, k, graph=(sims, idx), method=method, backend=backend)
            acc.append(float((_arrays.to_numpy(res.labels)[hidden] == y[hidden]).mean()))
        scores[k] = float(np.mean(acc))
    best = max(cands, key=lambda k: (scores[k], -k))
    return KSelection(best, "holdout", scores, curve)


def _stratified_folds(y, n_folds, seed):
    """Fold id per labeled point (-1 for unlabeled): each class dealt round-robin after a
    seeded shuffle, so every fold holds about 1/n_folds of every class."""
    rng = np.random.default_rng(seed)
    folds = np.full(y.shape[0], -1)
    for c in np.unique(y[y >= 0]):
        members = rng.permutation(np.nonzero(y == c)[0])
        folds[members] = np.arange(members.size) % n_folds
    return folds
