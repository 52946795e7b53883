"""docs: bad input for every public function that takes arrays, as one table.

For each function: a valid call on tiny arrays, and generators of bad variants of each of its
arguments (wrong rank, empty, NaN/Inf, zero-norm rows where cosine is used, integer / complex /
bool / object embeddings, non-arrays, mismatched lengths, bad labels, bad k, a wrong backend
name, and the function-specific cases of the docs). Every case checks

* the exception type (ValueError or TypeError),
* that the message names the argument (and what was wrong), and
* that every array passed (numpy, and torch CPU tensors for a subset) is bit-for-bit unchanged
  afterwards, with the same dtype, shape and ``writeable`` flag.

Functions that take ``backend=`` run on every CPU backend. Arrays on two devices need a GPU.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import hdlfast
from conftest import CPU_BACKENDS

try:
    import torch
except ImportError:  # pragma: no cover - torch is a test dependency
    torch = None

N, D = 12, 4
RNG = np.random.default_rng(7)
X = RNG.standard_normal((N, D)).astype(np.float32)
# 3 classes, two labels each; rows 0 (labeled) and N - 1 (unlabeled) get the bad values
Y = np.array([0, 1, 2, 0, 1, 2, -1, -1, -1, -1, -1, -1], np.int64)
BANK = RNG.standard_normal((10, D)).astype(np.float32)
BANK_L = RNG.standard_normal((8, D)).astype(np.float32)
Z = RNG.standard_normal((5, D)).astype(np.float32)
SCORES = RNG.standard_normal((N, 3)).astype(np.float32)
PROBS = np.exp(SCORES) / np.exp(SCORES).sum(axis=1, keepdims=True)
PRED = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2], np.int64)
TARGET = np.array([1, 1, 0, 0, 2, 2, 1, 0, 2, 1, 0, 2], np.int64)
GRAPH_SIMS, GRAPH_IDX = hdlfast.knn(X, 4, backend=CPU_BACKENDS[0])
INIT = X[:3].copy()


# --- the table -------------------------------------------------------------------------------


@dataclass
class Fn:
    """A public function: how to call it, a valid set of arguments, whether it takes backend=."""

    name: str
    call: Callable
    valid: dict
    backend: bool = True


@dataclass
class Case:
    fn: Fn
    bad: dict  # arguments replacing those of fn.valid
    exc: type
    match: str
    label: str
    drop: tuple = ()  # valid arguments left out

    def kwargs(self, backend):
        kw = {k: v for k, v in self.fn.valid.items() if k not in self.drop}
        kw.update(self.bad)
        if self.fn.backend and "backend" not in kw:
            kw["backend"] = backend
        return kw


def names(*args: str) -> str:
    """A regex that holds when the message names every argument in ``args`` (whole words)
    and, with more than one piece, matches the last one (a regex for what was wrong)."""
    *words, problem = args if len(args) > 1 else (*args, "")
    parts = [rf"(?=.*\b{re.escape(w)}\b)" for w in words]
    if problem:
        parts.append(f"(?=.*(?:{problem}))")
    return "(?s)" + "".join(parts)


def with_row(a, row, value):
    a = np.array(a, copy=True)
    a[row] = value
    return a


def _object_array(a):
    out = np.empty(a.shape, object)
    out[...] = a.tolist()
    return out


def bad_embeddings(arg: str, base: np.ndarray, *, cosine=True, required=True, rows=(0, -1)):
    """(label, value, exc, regex) for one 2-D float argument."""
    n, d = base.shape
    out = [
        ("rank1", base[0], ValueError, names(arg, "2-D")),
        ("rank3", base[None], ValueError, names(arg, "2-D")),
        ("scalar", 5.0, ValueError, names(arg, "2-D")),
        ("no_rows", np.zeros((0, d), np.float32), ValueError, names(arg, "empty")),
        ("no_cols", np.zeros((n, 0), np.float32), ValueError, names(arg, "empty")),
        ("int32", np.round(base * 10).astype(np.int32), TypeError, names(arg, "float|dtype")),
        ("int64", np.round(base * 10).astype(np.int64), TypeError, names(arg, "float|dtype")),
        ("uint8", np.abs(base * 10).astype(np.uint8), TypeError, names(arg, "float|dtype")),
        ("complex", base.astype(np.complex64), TypeError, names(arg, "float|dtype")),
        ("bool", base > 0, TypeError, names(arg, "float|dtype")),
        ("object", _object_array(base), TypeError, names(arg, "float|dtype")),
        ("str", "abc", TypeError, names(arg, "array")),
        ("dict", {"a": 1}, TypeError, names(arg, "array")),
        ("ragged", [[1.0, 2.0], [3.0]], TypeError, names(arg, "array")),
        ("list_nan", with_row(base, rows[0], np.nan).tolist(), ValueError,
         names(arg, "NaN or Inf")),
    ]
    if required:
        out.append(("none", None, TypeError, names(arg, "array")))
    for r in rows:
        out += [
            (f"nan_row{r}", with_row(base, r, np.nan), ValueError, names(arg, "NaN or Inf")),
            (f"one_nan{r}", with_row(base, (r, 1), np.nan), ValueError, names(arg, "NaN or Inf")),
            (f"inf_row{r}", with_row(base, r, np.inf), ValueError, names(arg, "NaN or Inf")),
            (f"neginf_row{r}", with_row(base, r, -np.inf), ValueError,
             names(arg, "NaN or Inf")),
        ]
        if cosine:
            out.append((f"zero_row{r}", with_row(base, r, 0.0), ValueError,
                        names(arg, "zero-norm")))
    return out


def bad_labels(arg: str, base: np.ndarray, *, unlabeled=True, non_negative=False,
               required=True):
    """(label, value, exc, regex) for one 1-D integer label argument of len(base)."""
    out = [
        ("short", base[:-1], ValueError, names(arg, "entries|points|length|shape")),
        ("long", np.concatenate([base, base[:1]]), ValueError,
         names(arg, "entries|points|length|shape")),
        ("rank2", base[:, None], ValueError, names(arg, "1-D")),
        ("scalar", 1, ValueError, names(arg, "1-D")),
        ("empty", base[:0], ValueError, names(arg, "empty|entries")),
        ("float", base.astype(np.float32), TypeError, names(arg, "integer")),
        ("complex", base.astype(np.complex64), TypeError, names(arg, "integer")),
        ("bool", base > 0, TypeError, names(arg, "integer")),
        ("str", "abc", TypeError, names(arg, "array")),
        ("ragged", [[1], [1, 2]], TypeError, names(arg, "array")),
    ]
    if required:
        out.append(("none", None, TypeError, names(arg, "array")))
    if unlabeled:
        out += [
            ("below_minus_1", with_row(base, 1, -2), ValueError, names(arg, ">= -1")),
            ("all_unlabeled", np.full_like(base, -1), ValueError, names(arg, "no labeled")),
        ]
    if non_negative:
        out.append(("negative", with_row(base, 1, -1), ValueError, names(arg, "non-negative")))
    return out


def bad_vector(arg: str, length: int):
    """(label, value, exc, regex) for a non-negative real vector of ``length`` summing to 1."""
    base = np.full(length, 1 / length)
    neg = with_row(with_row(base, 0, base[0] + 0.5), 1, base[1] - 0.5)
    out = [
        ("short", base[:-1], ValueError, "shape"),
        ("long", np.append(base, 0.0), ValueError, "shape"),
        ("rank2", base[None], ValueError, "shape"),
        ("empty", base[:0], ValueError, "shape"),
        ("nan", with_row(base, 1, np.nan), ValueError, "NaN or Inf"),
        ("inf", with_row(base, 1, np.inf), ValueError, "NaN or Inf"),
        ("negative", neg, ValueError, "non-negative"),
        ("complex", base.astype(np.complex128), TypeError, "real"),
        ("bool", np.ones(length, bool), TypeError, "real"),
        ("object", _object_array(base), TypeError, "real"),
        ("strings", np.array(["a"] * length), TypeError, "real"),
        ("str", "abc", TypeError, "array"),
    ]
    return [(lab, v, e, names(arg, rx)) for lab, v, e, rx in out]


def bad_int(arg: str, too_large=None, *, none_ok=False, zero_ok=False):
    """(label, value, exc, regex) for an integer argument >= 1 (>= 0 with zero_ok)."""
    out = [
        ("neg", -1, ValueError, names(arg, ">= ?[01]")),
        ("float", 2.5, TypeError, names(arg, "integer")),
        ("float_int", 3.0, TypeError, names(arg, "integer")),
        ("bool", True, TypeError, names(arg, "integer")),
        ("str", "3", TypeError, names(arg, "integer")),
        ("array", np.array([3, 4]), TypeError, names(arg, "integer")),
    ]
    if not zero_ok:
        out.append(("zero", 0, ValueError, names(arg, ">= 1")))
    if not none_ok:
        out.append(("none", None, TypeError, names(arg, "integer")))
    if too_large is not None:
        out.append(("too_large", too_large, ValueError, names(arg, "larger than")))
    return out


def bad_choice(arg: str, values=("nope", None, 3)):
    return [(f"{v!r}", v, ValueError, names(arg, "must be one of")) for v in values]


def bad_real(arg: str, values):
    """(label, value, exc, regex) for a real argument; each value is (value, exc)."""
    out = []
    for v, exc in values:
        out.append((f"{v!r}", v, exc, names(arg, "number|must be|integer")))
    return out


def cases_for(fn: Fn, arg: str, variants, **extra) -> list:
    """One case per variant of ``arg``; ``with=`` other arguments changed in every case."""
    other = extra.get("with", {})
    tag = "".join(f"({k}={v})" for k, v in other.items())
    return [Case(fn, {arg: v, **other}, exc, rx, f"{arg}{tag}-{label}")
            for label, v, exc, rx in variants]


# HDLLabeler follows scikit-learn's conventions (see hdlfast/estimator.py): what check_array
# converts is valid, scikit-learn's messages (prefixed with the argument's name) replace some
# of hdlfast's, and y may hold any class label (-1 = unlabeled). None = the variant is valid.
ESTIMATOR_X = {
    "rank1": (ValueError, names("X", "2-?D")), "scalar": (ValueError, names("X", "2-?D")),
    "rank3": (ValueError, names("X", "2-D|dim 3")),
    "no_rows": (ValueError, names("X", "empty|0 sample")),
    "no_cols": (ValueError, names("X", "empty|0 feature")),
    "int32": None, "int64": None, "uint8": None, "bool": None, "object": None,
    "complex": (ValueError, names("X", "Complex")),
    "ragged": ((TypeError, ValueError), names("X", "array|sequence")),
}
ESTIMATOR_Y = {
    "rank2": None, "float": None, "bool": None, "below_minus_1": None,
    "scalar": (ValueError, names("y", "1d")), "complex": (ValueError, names("y", "Complex")),
    "none": (ValueError, names("y", "None")),
}


def for_estimator(variants, changes):
    """``variants`` with the rows of ``changes`` replaced (exc, regex) or dropped (None)."""
    out = []
    for label, value, exc, rx in variants:
        if label in changes:
            if changes[label] is None:
                continue
            exc, rx = changes[label]
        out.append((label, value, exc, rx))
    return out


def _labeler(backend, **params):
    return hdlfast.HDLLabeler(backend=backend, **params)


_FITTED = {}


def _fitted(backend):
    if backend not in _FITTED:
        _FITTED[backend] = _labeler(backend, k=3).fit(X.copy(), Y.copy())
    return _FITTED[backend]


def build_cases() -> list:
    cases = []
    add = cases.extend
    BAD_BACKEND = [("gpu", "gpu", ValueError, names("backend", "must be one of"))]

    # knn -------------------------------------------------------------------------------
    f = Fn("knn", hdlfast.knn, dict(queries=X, k=3))
    add(cases_for(f, "queries", bad_embeddings("queries", X)))
    add(cases_for(f, "k", bad_int("k", N)))
    add([Case(f, dict(database=v), e, rx, f"database-{lab}")
         for lab, v, e, rx in bad_embeddings("database", BANK, required=False)])
    add([
        Case(f, dict(k=N + 1, exclude_self=False), ValueError, names("k", "larger than"),
             "k-too_large_no_self"),
        Case(f, dict(database=BANK, k=11), ValueError, names("k", str(10), "database"),
             "k-larger_than_database"),
        Case(f, dict(database=BANK[:, :3]), ValueError, names("queries", "database", "columns"),
             "database-width"),
        Case(f, dict(database=BANK, exclude_self=True), ValueError, names("exclude_self"),
             "exclude_self-rows"),
        Case(f, dict(memory_budget=0), ValueError, names("memory_budget", ">= 1"),
             "memory_budget-zero"),
        Case(f, dict(memory_budget=1.5), TypeError, names("memory_budget", "integer"),
             "memory_budget-float"),
    ])
    add(cases_for(f, "backend", BAD_BACKEND))

    # reverse_graph -----------------------------------------------------------------------
    f = Fn("reverse_graph", hdlfast.reverse_graph, dict(idx=GRAPH_IDX, n=N))
    add(cases_for(f, "idx", [
        ("rank1", GRAPH_IDX[0], ValueError, names("idx", "2-D")),
        ("rank3", GRAPH_IDX[None], ValueError, names("idx", "2-D")),
        ("no_rows", GRAPH_IDX[:0], ValueError, names("idx", "empty")),
        ("no_cols", GRAPH_IDX[:, :0], ValueError, names("idx", "empty")),
        ("float", GRAPH_IDX.astype(np.float32), TypeError, names("idx", "integer")),
        ("complex", GRAPH_IDX.astype(np.complex64), TypeError, names("idx", "integer")),
        ("bool", GRAPH_IDX > 3, TypeError, names("idx", "integer")),
        ("negative", with_row(GRAPH_IDX, (2, 1), -1), ValueError, names("idx", "outside")),
        ("too_big", with_row(GRAPH_IDX, (2, 1), N), ValueError, names("idx", "outside")),
        ("str", "abc", TypeError, names("idx", "array")),
        ("none", None, TypeError, names("idx", "array")),
        ("ragged", [[1, 2], [3]], TypeError, names("idx", "array")),
    ]))
    add(cases_for(f, "n", bad_int("n", none_ok=True)))
    add(cases_for(f, "backend", BAD_BACKEND))

    # knn_vote ----------------------------------------------------------------------------
    f = Fn("knn_vote", hdlfast.knn_vote, dict(X=X, labels=Y, k=3))
    add(cases_for(f, "X", bad_embeddings("X", X)))
    add(cases_for(f, "labels", bad_labels("labels", Y)))
    add(cases_for(f, "k", bad_int("k")))
    add(cases_for(f, "weighting", bad_choice("weighting")))
    add(cases_for(f, "n_classes", bad_int("n_classes", none_ok=True)))
    add([Case(f, dict(n_classes=2), ValueError, names("labels", "n_classes"),
              "labels-above_n_classes")])
    add(cases_for(f, "backend", BAD_BACKEND))

    # hdl ---------------------------------------------------------------------------------
    f = Fn("hdl", hdlfast.hdl, dict(X=X, labels=Y, k=3))
    add(cases_for(f, "X", bad_embeddings("X", X, required=False)))
    add(cases_for(f, "labels", bad_labels("labels", Y)))
    add(cases_for(f, "k", bad_int("k", N)))
    add(cases_for(f, "max_visits", bad_int("max_visits")))
    add(cases_for(f, "n_classes", bad_int("n_classes", none_ok=True)))
    add([Case(f, dict(n_classes=2), ValueError, names("labels", "n_classes"),
              "labels-above_n_classes")])
    for arg in ("method", "schedule", "weighting"):
        add(cases_for(f, arg, bad_choice(arg)))
    add(cases_for(f, "fallback", bad_choice("fallback", ("nope", "knn", 3))))
    add(cases_for(f, "backend", BAD_BACKEND))
    add([
        Case(f, dict(X=None), ValueError, names("X", "graph"), "X-and-graph-none"),
        Case(f, dict(X=None, graph=(GRAPH_IDX, GRAPH_SIMS), fallback="knn-dv"), ValueError,
             names("X", "fallback"), "fallback-needs-X"),
    ])
    g = dict(X=None, fallback=None)
    graph_cases = [
        ("not_pair", GRAPH_IDX, TypeError, names("graph", "pair")),
        ("triple", (GRAPH_IDX, GRAPH_SIMS, GRAPH_SIMS), TypeError, names("graph", "pair")),
        ("str", "abc", TypeError, names("graph")),
        ("idx_float", (GRAPH_IDX.astype(np.float32), GRAPH_SIMS), TypeError,
         names("graph", "integer")),
        ("sims_int", (GRAPH_IDX, GRAPH_IDX), TypeError, names("graph", "float")),
        ("sims_complex", (GRAPH_IDX, GRAPH_SIMS.astype(np.complex64)), TypeError,
         names("graph", "float")),
        ("shapes", (GRAPH_IDX, GRAPH_SIMS[:, :3]), ValueError, names("graph", "N, k")),
        ("rank1", (GRAPH_IDX[:, 0], GRAPH_SIMS[:, 0]), ValueError, names("graph", "N, k")),
        ("rows", (GRAPH_IDX[:-1], GRAPH_SIMS[:-1]), ValueError, names("graph", "rows")),
        ("narrow", (GRAPH_IDX[:, :2], GRAPH_SIMS[:, :2]), ValueError,
         names("k", "graph", "columns")),
        ("idx_negative", (with_row(GRAPH_IDX, (1, 1), -1), GRAPH_SIMS), ValueError,
         names("graph", "outside")),
        ("idx_too_big", (with_row(GRAPH_IDX, (1, 1), N), GRAPH_SIMS), ValueError,
         names("graph", "outside")),
        ("sims_nan", (GRAPH_IDX, with_row(GRAPH_SIMS, (1, 1), np.nan)), ValueError,
         names("graph", "NaN or Inf")),
        ("sims_inf", (GRAPH_IDX, with_row(GRAPH_SIMS, (1, 1), np.inf)), ValueError,
         names("graph", "NaN or Inf")),
    ]
    add([Case(f, dict(graph=v, **g), e, rx, f"graph-{lab}") for lab, v, e, rx in graph_cases])
    add([Case(f, dict(graph=v), e, rx, f"graph_with_X-{lab}") for lab, v, e, rx in graph_cases
         if lab in ("not_pair", "rows", "sims_nan", "idx_too_big")])
    add([Case(f, dict(graph=(GRAPH_IDX, GRAPH_SIMS), labels=v, **g), e, rx,
              f"graph_labels-{lab}") for lab, v, e, rx in bad_labels("labels", Y)
         if lab not in ("short", "long", "empty")])

    # vote_against ------------------------------------------------------------------------
    f = Fn("vote_against", hdlfast.vote_against, dict(X=Z, reference=X, ref_labels=Y, k=3))
    add(cases_for(f, "X", bad_embeddings("X", Z)))
    add(cases_for(f, "reference", bad_embeddings("reference", X)))
    add(cases_for(f, "ref_labels", bad_labels("ref_labels", Y)))
    add(cases_for(f, "k", bad_int("k")))
    add(cases_for(f, "weighting", bad_choice("weighting")))
    add(cases_for(f, "backend", BAD_BACKEND))
    add([Case(f, dict(reference=X[:, :3]), ValueError, names("X", "reference", "columns"),
              "reference-width")])

    # sinkhorn ----------------------------------------------------------------------------
    f = Fn("sinkhorn", hdlfast.sinkhorn, dict(scores=SCORES))
    add(cases_for(f, "scores", bad_embeddings("scores", SCORES, cosine=False)))
    add(cases_for(f, "kind", bad_choice("kind")))
    add(cases_for(f, "n_iters", bad_int("n_iters", none_ok=True)))
    for arg, kind in (("lam", "sela"), ("epsilon", "swav")):
        add(cases_for(f, arg, bad_real(arg, [(0.0, ValueError), (-1.0, ValueError),
                                             (np.nan, ValueError), (np.inf, ValueError),
                                             ("a", TypeError), (None, TypeError),
                                             (True, TypeError)]), **{"with": {"kind": kind}}))
    add(cases_for(f, "tol", bad_real("tol", [(-1.0, ValueError), (np.nan, ValueError),
                                             ("a", TypeError)])))
    add(cases_for(f, "cluster_prior", bad_vector("cluster_prior", 3) + [
        ("not_summing", np.array([0.5, 0.5, 0.5]), ValueError, names("cluster_prior", "sum")),
        ("zeros", np.zeros(3), ValueError, names("cluster_prior", "sum")),
    ]))
    add(cases_for(f, "sample_weight", bad_vector("sample_weight", N) + [
        ("zeros", np.zeros(N), ValueError, names("sample_weight", "sums to 0")),
    ]))
    add(cases_for(f, "backend", BAD_BACKEND))

    # kmeans ------------------------------------------------------------------------------
    f = Fn("kmeans", hdlfast.kmeans, dict(X=X, n_clusters=3))
    add(cases_for(f, "X", bad_embeddings("X", X)))
    add([Case(f, dict(X=v, spherical=False), e, rx, f"X-euclid-{lab}")
         for lab, v, e, rx in bad_embeddings("X", X, cosine=False)
         if lab.startswith(("nan", "inf", "one_nan", "neginf", "int", "complex"))])
    add(cases_for(f, "n_clusters", bad_int("n_clusters", N + 1)))
    add(cases_for(f, "n_iters", bad_int("n_iters")))
    add(cases_for(f, "tol", bad_real("tol", [(-1.0, ValueError), (np.nan, ValueError),
                                             ("a", TypeError)])))
    add(cases_for(f, "seed", [("float", 1.5, TypeError, names("seed", "integer")),
                              ("str", "1", TypeError, names("seed", "integer")),
                              ("negative", -1, ValueError, names("seed", ">= 0"))]))
    add(cases_for(f, "init", bad_choice("init", ("nope", "kmeans++"))))
    add(cases_for(f, "init", [  # init's shape is checked against (n_clusters, width of X)
        (lab, v, e, names("init", "shape") if lab.startswith(("rank", "scalar", "no_")) else rx)
        for lab, v, e, rx in bad_embeddings("init", INIT, required=False)
        if lab not in ("str",)] + [
        ("rows", X[:2], ValueError, names("init", "shape")),
        ("cols", X[:3, :3], ValueError, names("init", "shape")),
    ]))
    add(cases_for(f, "memory_budget", bad_int("memory_budget", none_ok=True)))
    add(cases_for(f, "backend", BAD_BACKEND))

    # knn_density -------------------------------------------------------------------------
    f = Fn("knn_density", hdlfast.knn_density, dict(sims=GRAPH_SIMS), backend=False)
    add(cases_for(f, "sims", [(lab, v, e, rx) for lab, v, e, rx in
                              bad_embeddings("sims", GRAPH_SIMS, cosine=False)]))

    # select_to_label ---------------------------------------------------------------------
    f = Fn("select_to_label", hdlfast.select_to_label, dict(X=X, budget=3, k=3, n_iters=2,
                                                            kmeans_iters=5))
    add(cases_for(f, "X", bad_embeddings("X", X)))
    add(cases_for(f, "budget", bad_int("budget", N + 1)))
    add(cases_for(f, "k", bad_int("k", N)))
    add(cases_for(f, "n_iters", [("neg", -1, ValueError, names("n_iters", ">= 1")),
                                 ("zero", 0, ValueError, names("n_iters", ">= 1")),
                                 ("float", 2.5, (TypeError, ValueError),
                                  names("n_iters", "integer"))]))
    add(cases_for(f, "kmeans_iters", bad_int("kmeans_iters")))
    add(cases_for(f, "horizon_dist", bad_real("horizon_dist", [(0.0, ValueError),
                                                               (np.nan, ValueError),
                                                               ("a", TypeError)])))
    add(cases_for(f, "cluster_labels", [
        ("out_of_range", np.full(N, 3), ValueError,
         names("cluster_labels", re.escape("[0, budget=3)"))),
        ("short", np.zeros(N - 1, np.int64), ValueError, names("cluster_labels", "entries")),
        ("floats", np.zeros(N), TypeError, names("cluster_labels", "integer"))]))
    add(cases_for(f, "seed", [("float", 1.5, TypeError, names("seed", "integer")),
                              ("negative", -1, ValueError, names("seed", ">= 0"))]))
    for arg, vals in (("weight", [(-1.0, ValueError), (np.nan, ValueError), ("a", TypeError)]),
                      ("momentum", [(1.0, ValueError), (-0.1, ValueError), ("a", TypeError)]),
                      ("alpha", [(0.0, ValueError), (np.inf, ValueError), (None, TypeError)])):
        add(cases_for(f, arg, bad_real(arg, vals)))
    add(cases_for(f, "backend", BAD_BACKEND))

    # mine_neighbors ----------------------------------------------------------------------
    f = Fn("mine_neighbors", hdlfast.mine_neighbors, dict(X=X, k=3))
    add(cases_for(f, "X", bad_embeddings("X", X)))
    add(cases_for(f, "k", bad_int("k", N)))
    add(cases_for(f, "memory_budget", bad_int("memory_budget", none_ok=True)))
    add(cases_for(f, "backend", BAD_BACKEND))

    # neighbor_accuracy -------------------------------------------------------------------
    f = Fn("neighbor_accuracy", hdlfast.neighbor_accuracy, dict(idx=GRAPH_IDX, targets=TARGET),
           backend=False)
    add(cases_for(f, "idx", [
        ("rank1", GRAPH_IDX[:, 0], ValueError, names("idx", "2-D")),
        ("rows", GRAPH_IDX[:-1], ValueError, names("idx", "rows")),
        ("no_cols", GRAPH_IDX[:, :0], ValueError, names("idx", "empty|no neighbour")),
        ("float", GRAPH_IDX.astype(np.float32), TypeError, names("idx", "integer")),
        ("bool", GRAPH_IDX > 3, TypeError, names("idx", "integer")),
        ("negative", with_row(GRAPH_IDX, (2, 1), -1), ValueError, names("idx", "outside")),
        ("too_big", with_row(GRAPH_IDX, (2, 1), N), ValueError, names("idx", "outside")),
        ("only_self", np.arange(N)[:, None], ValueError, names("idx", "no neighbour")),
        ("str", "abc", TypeError, names("idx", "array")),
        ("none", None, TypeError, names("idx", "array")),
    ]))
    add(cases_for(f, "targets", [(lab, v, e, rx) for lab, v, e, rx in
                                 bad_labels("targets", TARGET, unlabeled=False)]))

    # confident_labels --------------------------------------------------------------------
    f = Fn("confident_labels", hdlfast.confident_labels, dict(probs=PROBS, threshold=0.5),
           backend=False)
    add(cases_for(f, "probs", bad_embeddings("probs", PROBS, cosine=False)))
    add(cases_for(f, "probs", [
        ("not_summing", PROBS * 0.5, ValueError, names("probs", "sum to 1")),
        ("zero_row", with_row(PROBS, 2, 0.0), ValueError, names("probs", "sum to 1")),
        ("logits", SCORES, ValueError, names("probs", "non-negative|sum to 1")),
        ("negative", with_row(PROBS, 2, [1.5, -0.25, -0.25]), ValueError,
         names("probs", "non-negative")),
    ]))
    add(cases_for(f, "threshold", bad_real("threshold", [
        (0.0, ValueError), (-0.5, ValueError), (1.5, ValueError), (np.nan, ValueError),
        (np.inf, ValueError), ("a", TypeError), (None, TypeError)])))

    # neighborhood_positives --------------------------------------------------------------
    f = Fn("neighborhood_positives", hdlfast.neighborhood_positives, dict(z=Z, bank=BANK, k=3))
    add(cases_for(f, "z", bad_embeddings("z", Z)))
    add(cases_for(f, "bank", bad_embeddings("bank", BANK)))
    add(cases_for(f, "k", bad_int("k", len(BANK) + 1)))
    add([Case(f, dict(bank=BANK[:, :3]), ValueError, names("z", "bank", "columns"),
              "bank-width")])
    add(cases_for(f, "backend", BAD_BACKEND))

    # hard_negatives ----------------------------------------------------------------------
    f = Fn("hard_negatives", hdlfast.hard_negatives,
           dict(z=Z, bank_unlabeled=BANK, bank_labeled=BANK_L, k=4, n_neg=3, n_mix=2))
    add(cases_for(f, "z", bad_embeddings("z", Z)))
    add(cases_for(f, "bank_unlabeled", bad_embeddings("bank_unlabeled", BANK)))
    add(cases_for(f, "bank_labeled", bad_embeddings("bank_labeled", BANK_L)))
    add(cases_for(f, "k", bad_int("k", 2 * 2 * 3 + 1)))
    add(cases_for(f, "n_neg", bad_int("n_neg", len(BANK_L) + 1, none_ok=True)))
    add(cases_for(f, "n_mix", bad_int("n_mix")))
    add(cases_for(f, "mu", [
        ("above_1", (0.5, 1.5), ValueError, names("mu", r"\[0, 1\]")),
        ("negative", (-0.1,), ValueError, names("mu", r"\[0, 1\]")),
        ("nan", (np.nan,), ValueError, names("mu", r"\[0, 1\]")),
        ("empty", (), ValueError, names("mu", r"\[0, 1\]")),
        ("str", "abc", TypeError, names("mu", "numbers")),
        ("none", None, TypeError, names("mu", "numbers")),
    ]))
    add(cases_for(f, "seed", [("float", 1.5, TypeError, names("seed", "integer")),
                              ("negative", -1, ValueError, names("seed", ">= 0"))]))
    add([
        Case(f, dict(bank_unlabeled=BANK[:, :3]), ValueError,
             names("z", "bank_unlabeled", "columns"), "bank_unlabeled-width"),
        Case(f, dict(bank_labeled=BANK_L[:, :3]), ValueError,
             names("z", "bank_labeled", "columns"), "bank_labeled-width"),
        Case(f, dict(n_neg=len(BANK) + 1, bank_labeled=BANK), ValueError,
             names("n_neg", "bank_unlabeled"), "n_neg-above_unlabeled"),
        Case(f, dict(k=len(BANK_L) + 1), ValueError, names("n_neg", "bank_labeled"),
             "n_neg-default_k",
             drop=("n_neg",)),
    ])
    add(cases_for(f, "backend", BAD_BACKEND))

    # metrics -----------------------------------------------------------------------------
    for fn in (hdlfast.cluster_accuracy, hdlfast.nmi, hdlfast.ari):
        f = Fn(fn.__name__, fn, dict(pred=PRED, target=TARGET), backend=False)
        nonneg = fn is hdlfast.cluster_accuracy
        add(cases_for(f, "pred", [(lab, v, e, rx) for lab, v, e, rx in
                                  bad_labels("pred", PRED, unlabeled=False, non_negative=nonneg)
                                  if lab not in ("short", "long")]))
        add(cases_for(f, "target", bad_labels("target", TARGET, unlabeled=False,
                                              non_negative=nonneg)))

    # label_clusterability ----------------------------------------------------------------
    f = Fn("label_clusterability", hdlfast.label_clusterability, dict(X=X, labels=Y, ks=(1, 2)))
    add(cases_for(f, "X", bad_embeddings("X", X)))
    add(cases_for(f, "labels", bad_labels("labels", Y)))
    add(cases_for(f, "ks", [("zero", (0, 2), ValueError, names("ks", ">= 1")),
                            ("float", (2.5,), TypeError, names("ks", "integer")),
                            ("str", "abc", TypeError, names("ks", "integer")),
                            ("nested", [[1, 2]], TypeError, names("ks", "integer")),
                            ("none", None, TypeError, names("ks", "integer")),
                            ("empty", (), ValueError, names("ks", "empty|at least"))]))
    add(cases_for(f, "backend", BAD_BACKEND))

    # select_k ----------------------------------------------------------------------------
    f = Fn("select_k", hdlfast.select_k, dict(X=X, labels=Y, candidates=(2, 3), n_folds=2))
    add(cases_for(f, "X", bad_embeddings("X", X)))
    add(cases_for(f, "labels", bad_labels("labels", Y)))
    add(cases_for(f, "candidates", [
        ("zero", (0, 2), ValueError, names("candidates", ">= 1")),
        ("float", (2.5,), TypeError, names("candidates", "integer")),
        ("str", "abc", TypeError, names("candidates", "integer")),
        ("none", None, TypeError, names("candidates", "integer")),
        ("empty", (), ValueError, names("candidates")),
        ("too_large", (N, N + 5), ValueError, names("candidates", str(N - 1))),
    ]))
    add(cases_for(f, "n_folds", bad_int("n_folds")))
    add(cases_for(f, "threshold", bad_real("threshold", [
        (np.nan, ValueError), (-0.5, ValueError), (1.5, ValueError), ("a", TypeError)])))
    add(cases_for(f, "seed", [("float", 1.5, TypeError, names("seed", "integer")),
                              ("str", "1", TypeError, names("seed", "integer")),
                              ("negative", -1, ValueError, names("seed", ">= 0"))]))
    add(cases_for(f, "method", bad_choice("method", ("nope", "knn-dv", None))))
    add([Case(f, dict(graph=v), e, rx, f"graph-{lab}") for lab, v, e, rx in graph_cases
         if lab not in ("narrow",)])
    add([Case(f, dict(graph=(GRAPH_IDX[:, :2], GRAPH_SIMS[:, :2])), ValueError,
              names("graph", "columns"), "graph-narrow")])
    add(cases_for(f, "backend", BAD_BACKEND))

    # HDLLabeler.fit / predict ------------------------------------------------------------
    f = Fn("HDLLabeler.fit", lambda X, y, backend, **p: _labeler(backend, **p).fit(X, y),
           dict(X=X, y=Y, k=3))
    add(cases_for(f, "X", for_estimator(bad_embeddings("X", X), ESTIMATOR_X)))
    add(cases_for(f, "y", for_estimator(bad_labels("y", Y), ESTIMATOR_Y)))
    add(cases_for(f, "k", bad_int("k", N, none_ok=False)))
    add(cases_for(f, "max_visits", bad_int("max_visits")))
    add(cases_for(f, "method", bad_choice("method")))
    add(cases_for(f, "schedule", bad_choice("schedule")))
    add(cases_for(f, "fallback", bad_choice("fallback", ("nope", 3))))
    add(cases_for(f, "weighting", bad_choice("weighting")))
    add(cases_for(f, "weighting", bad_choice("weighting"), **{"with": {"method": "knn-dv"}}))
    add(cases_for(f, "candidates", [("zero", (0, 2), ValueError, names("candidates", ">= 1"))],
                  **{"with": {"k": "auto"}}))
    add(cases_for(f, "k", [("auto_typo", "Auto", (TypeError, ValueError), names("k"))]))
    add(cases_for(f, "backend", BAD_BACKEND))

    f = Fn("HDLLabeler.predict", lambda X, backend: _fitted(backend).predict(X), dict(X=Z))
    add(cases_for(f, "X", for_estimator(bad_embeddings("X", Z), ESTIMATOR_X)))
    add([Case(f, dict(X=Z[:, :3]), ValueError, names("X", "features"), "X-width")])
    return cases


CASES = build_cases()


def _id(case: Case) -> str:
    return f"{case.fn.name}:{case.label}"


# --- snapshots of the caller's arrays ---------------------------------------------------------


def _arrays_in(value):
    if isinstance(value, np.ndarray) or (torch is not None and isinstance(value, torch.Tensor)):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _arrays_in(v)


def _state(a):
    if isinstance(a, np.ndarray):
        raw = a.tolist() if a.dtype == object else a.tobytes()
        return ("numpy", a.dtype.str, a.shape, a.strides, a.flags.writeable, raw)
    return ("torch", str(a.dtype), tuple(a.shape), a.stride(), a.requires_grad,
            a.detach().numpy().tobytes())


def snapshot(kwargs: dict) -> list:
    """(array, state) of every array reachable from the arguments."""
    return [(a, _state(a)) for v in kwargs.values() for a in _arrays_in(v)]


def assert_unchanged(snap: list) -> None:
    for a, before in snap:
        after = _state(a)
        assert after[:5] == before[:5], "the call changed dtype, shape, strides or flags"
        if a.dtype == object:
            assert after[5] == before[5]
        else:
            assert after[5] == before[5], "the call modified the caller's array"


def to_torch(value):
    """numpy arrays in value as torch CPU tensors (None when one cannot be converted)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "USV":
            return None
        return torch.from_numpy(value.copy())
    if isinstance(value, tuple):
        out = tuple(to_torch(v) for v in value)
        return None if any(o is None and v is not None for o, v in zip(out, value)) else out
    return value


def _torch_cases():
    if torch is None:
        return []
    out = []
    for case in CASES:
        bad = {k: to_torch(v) for k, v in case.bad.items()}
        if any(bad[k] is None and case.bad[k] is not None for k in bad):
            continue
        if not any(True for v in bad.values() for _ in _arrays_in(v)):
            continue
        if not any(isinstance(a, torch.Tensor) for v in bad.values() for a in _arrays_in(v)):
            continue
        out.append(pytest.param(case, bad, id=_id(case)))
    return out


# --- the tests --------------------------------------------------------------------------------

FUNCTIONS = {c.fn.name: c.fn for c in CASES}


@pytest.mark.parametrize("readonly", [False, True], ids=["writeable", "readonly"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_valid_call_runs_and_leaves_inputs_alone(name, backend, readonly):
    """The table's valid call works, so every bad case below differs from a working call in
    one argument only."""
    fn = FUNCTIONS[name]
    kw = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in fn.valid.items()}
    if readonly:
        for v in kw.values():
            if isinstance(v, np.ndarray):
                v.flags.writeable = False
    if fn.backend:
        kw["backend"] = backend
    snap = snapshot(kw)
    fn.call(**kw)
    assert_unchanged(snap)


BACKEND_CASES = [pytest.param(case, backend, id=f"{_id(case)}[{backend}]")
                 for case in CASES for backend in CPU_BACKENDS
                 if case.fn.backend or backend == CPU_BACKENDS[0]]


@pytest.fixture
def no_work(monkeypatch):
    """Make the start of any real work (the blocked top-k of every kNN search and k-means
    assignment, Sinkhorn's first pass, the labeling kernels) fail loudly, so a bad input
    must be refused before it. Row contents (NaN, zero rows) are checked when the rows are
    normalised, which comes before the first tile."""
    from hdlfast import _backend
    from hdlfast.knn import host as knn_host
    from hdlfast.sinkhorn import host as sk_host

    def started(*args, **kwargs):
        raise AssertionError("work started before the bad input was refused")

    monkeypatch.setattr(knn_host, "topk", started)
    monkeypatch.setattr(sk_host.SinkhornState, "start", started)
    if "native" in CPU_BACKENDS:
        native = _backend._module("native")
        for meth in ("reverse_indptr", "propagate_levels", "propagate_sequential", "search",
                     "vote_rows"):
            monkeypatch.setattr(native, meth, started)
    if "numba" in CPU_BACKENDS:
        from hdlfast.labeling import numba_kernels as labeling

        for meth in ("reverse_csr", "propagate_levels", "propagate_sequential", "search",
                     "vote_rows"):
            monkeypatch.setattr(labeling, meth, started)


@pytest.mark.parametrize("case,backend", BACKEND_CASES)
def test_bad_input(case, backend, request):
    if case.fn.name == "HDLLabeler.predict":
        _fitted(backend)  # fit before work is forbidden
    request.getfixturevalue("no_work")
    kwargs = case.kwargs(backend)
    snap = snapshot(kwargs)
    with pytest.raises(case.exc, match=case.match):
        case.fn.call(**kwargs)
    assert_unchanged(snap)


@pytest.mark.skipif(torch is None, reason="needs torch")
@pytest.mark.parametrize("case,bad", _torch_cases())
def test_bad_input_torch(case, bad, request):
    """The same cases with torch CPU tensors (on the first CPU backend)."""
    if case.fn.name == "HDLLabeler.predict":
        _fitted(CPU_BACKENDS[0])
    request.getfixturevalue("no_work")
    kwargs = case.kwargs(CPU_BACKENDS[0])
    kwargs.update(bad)
    valid_t = {k: to_torch(v) for k, v in case.fn.valid.items()
               if k not in case.bad and k not in case.drop}
    kwargs.update({k: v for k, v in valid_t.items() if v is not None})
    snap = snapshot(kwargs)
    with pytest.raises(case.exc, match=case.match):
        case.fn.call(**kwargs)
    assert_unchanged(snap)


def test_case_table_covers_the_public_api():
    """Every public function that takes arrays has rows in the table."""
    covered = {c.fn.name for c in CASES}
    array_functions = {"knn", "reverse_graph", "knn_vote", "hdl", "vote_against", "sinkhorn",
                       "kmeans", "knn_density", "select_to_label", "mine_neighbors",
                       "neighbor_accuracy", "confident_labels", "neighborhood_positives",
                       "hard_negatives", "cluster_accuracy", "nmi", "ari",
                       "label_clusterability", "select_k"}
    assert array_functions <= set(hdlfast.__all__)
    assert array_functions | {"HDLLabeler.fit", "HDLLabeler.predict"} <= covered


def test_predict_before_fit():
    with pytest.raises(ValueError, match="fit"):
        hdlfast.HDLLabeler(k=3).predict(Z)


def _cuda_torch():
    if torch is None or not torch.cuda.is_available():
        pytest.skip("needs a CUDA device visible to torch")
    return torch


TWO_DEVICE = [
    ("knn", lambda a, b: hdlfast.knn(a, 2, database=b), X, BANK, ("queries", "database")),
    ("vote_against", lambda a, b: hdlfast.vote_against(a, b, Y, 2), Z, X, ("X", "reference")),
    ("neighborhood_positives", lambda a, b: hdlfast.neighborhood_positives(a, b, 2), Z, BANK,
     ("z", "bank")),
    ("hard_negatives_u", lambda a, b: hdlfast.hard_negatives(a, b, BANK_L, 2), Z, BANK,
     ("z", "bank_unlabeled")),
    ("hard_negatives_l",
     lambda a, b: hdlfast.hard_negatives(a, torch.from_numpy(BANK).to(a.device), b, 2), Z,
     BANK_L, ("z", "bank_labeled")),
]


@pytest.mark.cuda
@pytest.mark.parametrize("gpu_first", [True, False], ids=["gpu-cpu", "cpu-gpu"])
@pytest.mark.parametrize("call,a,b,arg_names", [t[1:] for t in TWO_DEVICE],
                         ids=[t[0] for t in TWO_DEVICE])
def test_arrays_on_two_devices(call, a, b, arg_names, gpu_first):
    t = _cuda_torch()
    a, b = t.from_numpy(a.copy()), t.from_numpy(b.copy())
    if gpu_first:
        a = a.cuda()
    else:
        b = b.cuda()
    snap = [(x, x.detach().cpu().clone()) for x in (a, b)]
    with pytest.raises(ValueError, match=names(*arg_names, "same device")):
        call(a, b)
    for x, before in snap:
        assert t.equal(x.detach().cpu(), before)
