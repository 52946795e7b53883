"""Labels for every point from a few: kNN voting (docs §2) and HDL (docs §3).

HDL runs on the kNN graph of all points (labeled and unlabeled, self excluded):
phase A propagates labels one hop per level, best-supported points first; phase B searches,
with cycle detection, from points in closed unlabeled regions until a labeled point is in
view; phase C falls back to kNN voting in embedding space. Heavy loops are kernels
(``_backend`` picks native or numba); this module validates, dispatches and assembles.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .._typing import ArrayLike, BackendName
from .. import _arrays, _backend, _checks
from ..knn import METHODS as KNN_METHODS, checked_knn, knn

PROVENANCE = ("given", "propagated", "searched", "fallback")
GIVEN, PROPAGATED, SEARCHED, FALLBACK = range(4)
METHODS = ("hdl", "tree")
SCHEDULES = ("levels", "sequential")
WEIGHTINGS = ("similarity", "uniform")
FALLBACKS = ("auto", "knn-dv", None)


@dataclass
class HDLResult:
    """Per point: ``labels`` (-1 never labeled), ``confidence`` in [0, 1], ``level`` (0 given,
    then the phase-A level, the search steps for searched points, last level + 1 for fallback,
    -1 never labeled), ``provenance`` (index into PROVENANCE, -1 never labeled), ``cycles``
    (cycles met by the phase-B search). ``n_levels``: phase-A levels that labeled a point.
    ``knn_method`` and ``knn_recall``: the graph's search and recall (see
    :class:`hdlfast.KNNGraph`; None for a precomputed graph that does not say)."""

    labels: object
    confidence: object
    level: object
    provenance: object
    cycles: object
    n_levels: int
    k: int
    knn_method: str | None = None
    knn_recall: float | None = None

    def counts(self) -> dict:
        """Number of points per provenance (and never labeled)."""
        prov = _arrays.to_numpy(self.provenance)
        out = {name: int((prov == i).sum()) for i, name in enumerate(PROVENANCE)}
        out["unlabeled"] = int((prov < 0).sum())
        return out


def knn_vote(X: ArrayLike, labels: ArrayLike, k: int = 20, *, weighting: str = "similarity",
             n_classes: int | None = None, knn_method: str = "exact",
             backend: BackendName = None, memory_budget: int | None = None):
    """kNN-DV: each unlabeled point takes the vote of its k nearest labeled points.

    Weights are the cosine similarities clipped at 0 (``weighting="uniform"``: 1 each); the
    winner has the largest vote, then the largest similarity sum, then the smallest class id.
    Returns ``(labels, confidence)``; labeled points keep their label with confidence 1.
    ``n_classes`` (default max label + 1) only checks that labels are below it.
    ``memory_budget`` bounds the kNN search's scratch, as in :func:`hdlfast.knn`;
    ``knn_method`` chooses its search (unlabeled against labeled points), as ``method`` there.
    """
    _checks.choice(knn_method, "knn_method", KNN_METHODS)
    X, x_info = _checks.embeddings(X, "X")
    y = _checks.labels(labels, x_info.shape[0], n_classes)
    k = _checks.positive_int(k, "k")
    _checks.choice(weighting, "weighting", WEIGHTINGS)
    if memory_budget is not None:
        memory_budget = _checks.positive_int(memory_budget, "memory_budget")
    kern = _backend.select(backend, x_info.on_gpu, like=X).labeling
    _checks.rows(X, "X")
    out_lab, out_conf = y.copy(), np.where(y >= 0, 1.0, 0.0)
    todo = np.nonzero(y < 0)[0]
    if todo.size:
        out_lab[todo], out_conf[todo] = _vote_in_embedding(
            kern, X, y, todo, np.nonzero(y >= 0)[0], k, weighting, backend,
            memory_budget=memory_budget, knn_method=knn_method)
    return (_arrays.from_host(out_lab, X),
            _arrays.from_host(out_conf.astype(np.float32), X))


_SEARCH_CHUNK_WORK = 1 << 21  # candidate visits in the first search call
_SEARCH_CHUNK_SECONDS = 0.1  # then calls sized to this much wall time: Ctrl-C is seen between


def hdl(X: ArrayLike | None = None, labels: ArrayLike | None = None, k: int = 20, *,
        graph: tuple | None = None, method: str = "hdl", schedule: str = "levels", max_visits: int = 64,
        fallback: str | None = "auto", weighting: str = "similarity",
        n_classes: int | None = None, knn_method: str = "exact", backend: BackendName = None,
        memory_budget: int | None = None) -> HDLResult:
    """Hierarchical dynamic labeling (docs §3) of every point.

    Give embeddings ``X`` (the graph is built with :func:`hdlfast.knn`) or a precomputed
    ``graph``, the result of ``hdlfast.knn(X, k)`` for all N points (self excluded, rows by
    decreasing similarity; a ``(sims, idx)`` pair, or ``(idx, sims)``, works too; only the
    first k columns are used). ``labels``: (N,) ints, -1 for unlabeled.
    ``method="tree"`` skips propagation: phase-B search from every unlabeled point using the
    given labels only. ``schedule="sequential"`` labels one point at a time, most supported
    first (CPU, for comparison; it floods regions at large k). ``fallback``: "knn-dv" (kNN
    voting in embedding space for points the search could not label; needs X), None (leave
    them -1), or "auto" (knn-dv when X is given). Votes as in :func:`knn_vote`.
    ``n_classes`` (default max label + 1) only checks that labels are below it.
    ``memory_budget`` bounds the scratch of the kNN searches (graph and fallback), as in
    :func:`hdlfast.knn`; the labeling itself needs O(N k) (the graph and its reverse).
    ``knn_method``: the searches' ``method`` of :func:`hdlfast.knn` ("exact", "ivf" or
    "auto"; the result's ``knn_method`` and ``knn_recall`` say what the graph got).
    """
    _checks.choice(method, "method", METHODS)
    _checks.choice(knn_method, "knn_method", KNN_METHODS)
    _checks.choice(schedule, "schedule", SCHEDULES)
    _checks.choice(fallback, "fallback", FALLBACKS)
    _checks.choice(weighting, "weighting", WEIGHTINGS)
    k = _checks.positive_int(k, "k")
    max_visits = _checks.positive_int(max_visits, "max_visits")
    if memory_budget is not None:
        memory_budget = _checks.positive_int(memory_budget, "memory_budget")
    like, on_gpu, n = None, False, None
    if X is not None:
        X, x_info = _checks.embeddings(X, "X")
        like, on_gpu, n = X, x_info.on_gpu, x_info.shape[0]
    if graph is None:
        if X is None:
            raise ValueError("hdl needs embeddings X or a precomputed graph=hdlfast.knn(X, k)")
        _checks.k_at_most(k, n - 1, "other points")
    y = _checks.labels(labels, n, n_classes)
    n = y.shape[0]
    if like is None:  # graph only: the graph's device decides
        like = _checks.graph_pair(graph)[0] if graph is not None \
            else _arrays.as_array(labels, "labels")
        on_gpu = _arrays.info(like, "graph").on_gpu
    if fallback == "auto":
        fallback = "knn-dv" if X is not None else None
    if fallback == "knn-dv" and X is None:
        raise ValueError("fallback='knn-dv' needs the embeddings X; pass X or fallback=None")
    impl = _backend.select(backend, on_gpu, like=like)
    if schedule == "sequential" and impl.on_gpu:
        raise ValueError("schedule='sequential' runs on the CPU only; pass backend='native'")
    if graph is not None:
        idx, sims = _checks.graph(graph, n, k)
        g_method, g_recall = getattr(graph, "method", None), getattr(graph, "recall", None)
    if graph is None:  # the graph's own row check names X
        g = checked_knn(X, k, backend=backend, memory_budget=memory_budget, q_name="X",
                        method=knn_method, method_name="knn_method")
        sims, idx = (_arrays.to_numpy(a) for a in g)
        g_method, g_recall = g.method, g.recall
    elif X is not None:  # only row subsets of X reach the fallback's kNN search
        _checks.rows(X, "X")
    kern = impl.labeling
    uniform = weighting == "uniform"

    lab = y.copy()
    conf = np.where(y >= 0, 1.0, 0.0)
    level = np.where(y >= 0, 0, -1).astype(np.int32)
    prov = np.where(y >= 0, GIVEN, -1).astype(np.int8)
    cycles = np.zeros(n, np.int32)
    indptr, src = kern.reverse_csr(idx, k, n)
    n_levels = 0
    if method == "hdl":
        propagate = kern.propagate_levels if schedule == "levels" else kern.propagate_sequential
        n_levels = int(propagate(idx, sims, k, indptr, src, lab, conf, level, prov, uniform))

    todo = np.nonzero(lab < 0)[0]
    if todo.size:
        s_lab = np.empty(todo.size, np.int64)
        s_conf = np.empty(todo.size, np.float64)
        s_steps = np.empty(todo.size, np.int64)
        s_cyc = np.empty(todo.size, np.int64)
        # independent searches (phase-B labels do not count), in chunks of bounded time so
        # that Ctrl-C is seen between chunks on any machine: each chunk is sized from the
        # pace of the one before (growing at most 4x), at least 1024 targets
        chunk, a = max(1024, _SEARCH_CHUNK_WORK // (max_visits * k)), 0
        while a < todo.size:
            b = a + chunk
            start = time.perf_counter()
            kern.search(idx, sims, k, indptr, src, lab, todo[a:b], max_visits, uniform,
                        s_lab[a:b], s_conf[a:b], s_steps[a:b], s_cyc[a:b])
            pace = (time.perf_counter() - start) / min(chunk, todo.size - a)
            chunk = max(1024, min(4 * chunk, int(_SEARCH_CHUNK_SECONDS / max(pace, 1e-9))))
            a = b
        cycles[todo] = s_cyc
        found = s_lab >= 0
        hit = todo[found]
        lab[hit], conf[hit], level[hit], prov[hit] = s_lab[found], s_conf[found], \
            s_steps[found], SEARCHED

    todo = np.nonzero(lab < 0)[0]
    if todo.size and fallback == "knn-dv":
        known = np.nonzero(lab >= 0)[0]
        lab[todo], conf[todo] = _vote_in_embedding(kern, X, lab, todo, known, k, weighting,
                                                   backend, memory_budget=memory_budget,
                                                   knn_method=knn_method)
        level[todo], prov[todo] = n_levels + 1, FALLBACK

    return HDLResult(*(_arrays.from_host(a, like) for a in
                       (lab, conf.astype(np.float32), level, prov, cycles)),
                     n_levels=n_levels, k=k, knn_method=g_method, knn_recall=g_recall)


def _vote_inputs(X, reference, ref_labels, k, weighting):
    """The checked arguments of a vote against a labeled set: (X, X's Info, reference, the
    int64 host labels of reference, k)."""
    X, x_info = _checks.embeddings(X, "X")
    reference, r_info = _checks.embeddings(reference, "reference")
    _checks.same_device(x_info, r_info, "X", "reference")
    _checks.same_width(x_info, r_info, "X", "reference")
    y = _checks.labels(ref_labels, r_info.shape[0], name="ref_labels")
    k = _checks.positive_int(k, "k")
    _checks.choice(weighting, "weighting", WEIGHTINGS)
    _checks.rows(X, "X")
    _checks.rows(reference, "reference")
    return X, x_info, reference, y, k


def vote_against(X: ArrayLike, reference: ArrayLike, ref_labels: ArrayLike, k: int = 20, *,
                 weighting: str = "similarity", backend: BackendName = None):
    """(labels, confidence) of new points ``X`` by the vote of their k nearest points of
    ``reference`` whose ``ref_labels`` are not -1 (kNN-DV against a labeled set)."""
    X, x_info, reference, y, k = _vote_inputs(X, reference, ref_labels, k, weighting)
    kern = _backend.select(backend, x_info.on_gpu, like=X).labeling
    known = np.nonzero(y >= 0)[0]
    lab, conf = _vote_in_embedding(kern, X, y, None, known, k, weighting, backend,
                                   database=reference)
    return _arrays.from_host(lab, X), _arrays.from_host(conf.astype(np.float32), X)


def vote_shares(X, reference, ref_labels, classes, k=20, *, weighting="similarity",
                backend=None):
    """(N, len(classes)) float64 vote shares of new points ``X`` among their k nearest points
    of ``reference`` whose ``ref_labels`` are not -1: the weights of :func:`vote_against`'s
    vote (1, or the similarity floored at 0) per class, over their total, so the winner of
    :func:`vote_against` has the largest share (ties aside). Rows whose voters all weigh 0 get
    the plain vote counts."""
    X, _, reference, y, k = _vote_inputs(X, reference, ref_labels, k, weighting)
    classes = np.asarray(classes)
    known = np.nonzero(y >= 0)[0]
    if not np.isin(y[known], classes).all():
        raise ValueError("ref_labels holds a label that is not in classes")
    sims, nbr = _known_neighbours(X, None, known, k, backend, database=reference)
    col = np.searchsorted(classes, y[known][nbr])
    rows = np.arange(nbr.shape[0])[:, None]
    counts = np.zeros((nbr.shape[0], classes.size))
    np.add.at(counts, (np.broadcast_to(rows, col.shape), col), 1.0)
    if weighting == "uniform":
        return counts / counts.sum(axis=1, keepdims=True)
    shares = np.zeros_like(counts)
    np.add.at(shares, (np.broadcast_to(rows, col.shape), col),
              np.maximum(sims.astype(np.float64), 0.0))
    total = shares.sum(axis=1, keepdims=True)
    zero = total[:, 0] <= 0
    shares[zero], total[zero] = counts[zero], counts[zero].sum(axis=1, keepdims=True)
    return shares / total


def _known_neighbours(X, todo, known, k, backend, database=None, memory_budget=None,
                      knn_method="exact"):
    """Host (sims, idx) of points ``todo`` of X (all when None) against their min(k, known)
    nearest ``known`` rows of ``database`` (X itself when None); idx indexes ``known``."""
    q = X if todo is None else _arrays.take_rows(X, todo)
    db = _arrays.take_rows(X if database is None else database, known)
    return tuple(_arrays.to_numpy(a) for a in knn(q, min(k, known.size), database=db,
                                                  method=knn_method, backend=backend,
                                                  memory_budget=memory_budget))


def _vote_in_embedding(kern, X, y, todo, known, k, weighting, backend, database=None,
                       memory_budget=None, knn_method="exact"):
    """(labels, confidence) of points ``todo`` of X (all when None) by the vote of their
    nearest ``known`` points of ``database`` (X itself when None)."""
    sims, nbr = _known_neighbours(X, todo, known, k, backend, database, memory_budget,
                                  knn_method)
    out_lab = np.empty(nbr.shape[0], np.int64)
    out_conf = np.empty(nbr.shape[0], np.float64)
    kern.vote_rows(np.ascontiguousarray(nbr), np.ascontiguousarray(sims),
                   np.ascontiguousarray(y[known]), weighting == "uniform", out_lab, out_conf)
    return out_lab, out_conf
