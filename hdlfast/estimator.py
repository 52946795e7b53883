"""``HDLLabeler``: the labeling engine in scikit-learn's semi-supervised shape.

The estimator follows scikit-learn's input conventions, not the stricter ones of hdlfast's
functions: host ``X`` (numpy, lists, pandas) goes through ``validate_data`` (integers and
booleans become float32, sparse and complex input is refused with scikit-learn's messages,
feature names are recorded), ``y`` may hold any class labels (strings too) with -1 marking
unlabeled points, as in ``sklearn.semi_supervised``. torch and cupy ``X`` stay on their
device. It passes ``sklearn.utils.estimator_checks.check_estimator`` except the two checks of
``EXPECTED_FAILED_CHECKS`` (each with its reason; tests/test_estimator.py).
"""
from __future__ import annotations

import re

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data

from . import _arrays, _checks
from .clusterability import DEFAULT_CANDIDATES, candidate_ks, select_k
from .labeling import FALLBACK, GIVEN, hdl, knn_vote, vote_against, vote_shares
from .knn import METHODS as KNN_METHODS, checked_knn

# The checks of check_estimator that conflict with what the estimator is; pass this as
# check_estimator(..., expected_failed_checks=EXPECTED_FAILED_CHECKS). tests/test_estimator.py
# checks that both still fail (and every other check passes).
EXPECTED_FAILED_CHECKS = {
    "check_estimators_dtypes": (
        "cosine similarity is undefined for an all-zero row and HDLLabeler refuses one, like "
        "every hdlfast function; the check's integer data (3 * uniform, truncated) has one"),
    "check_classifiers_classes": (
        "-1 marks unlabeled points (scikit-learn's semi-supervised convention), so the check's "
        "binary target with classes -1 and 1 has one class here"),
}
_HOST_DTYPES = [np.float32, np.float64, np.float16]  # kept as they are; others -> float32


def _naming(name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with scikit-learn's ValueError/TypeError messages prefixed by
    the argument's name when they do not say it (for example "Expected 2D array")."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        if re.search(rf"\b{name}\b", str(exc)):
            raise
        raise type(exc)(f"{name}: {exc}") from None


class HDLLabeler(ClassifierMixin, BaseEstimator):
    """Label every point of ``X`` from the few labels of ``y`` (-1 = unlabeled).

    Like ``sklearn.semi_supervised.LabelSpreading``: ``fit(X, y)`` sets ``classes_`` (the
    sorted labels of ``y`` other than -1), ``transduction_`` (a label per point, from
    ``classes_``; -1 where no rule reached a point, possible only with ``fallback=None``), plus
    ``label_confidence_``, ``level_``, ``provenance_`` (indices into ``hdlfast.PROVENANCE``) and
    ``k_`` (the k used; chosen by :func:`hdlfast.select_k` when ``k="auto"``, on one kNN
    graph of the largest candidate whose first ``k_`` columns then label); ``result_``
    holds :func:`hdlfast.hdl`'s result with labels as indices into ``classes_``.
    ``predict(X_new)`` votes among the k nearest fitted points (kNN-DV); ``predict_proba(X_new)``
    gives each class's share of that vote (columns in ``classes_`` order). Before ``fit``,
    both raise scikit-learn's ``NotFittedError``.

    method: "hdl" (propagation, search, fallback), "knn-dv" (direct voting; voted points get
    provenance "fallback", level 1) or "tree" (search only, then fallback).
    knn_method: the fit's kNN search, "exact" (default), "ivf" (approximate, for million-row
    data on the CPU; ``result_.knn_recall`` holds its measured recall) or "auto", as
    ``method`` of :func:`hdlfast.knn`.
    """

    def __init__(self, k=20, method="hdl", *, schedule="levels", max_visits=64,
                 fallback="auto", weighting="similarity", candidates=DEFAULT_CANDIDATES,
                 knn_method="exact", backend=None):
        self.k = k
        self.method = method
        self.schedule = schedule
        self.max_visits = max_visits
        self.fallback = fallback
        self.weighting = weighting
        self.candidates = candidates
        self.knn_method = knn_method
        self.backend = backend

    def fit(self, X, y):
        _checks.choice(self.method, "method", ("hdl", "knn-dv", "tree"))
        _checks.choice(self.knn_method, "knn_method", KNN_METHODS)
        X = self._validate_X(X, reset=True)
        codes = self._encode_y(y, _arrays.info(X, "X").shape[0])
        graph = None
        if isinstance(self.k, str) and self.k == "auto":
            method = "hdl" if self.method == "knn-dv" else self.method
            cands = candidate_ks(self.candidates, codes.shape[0])
            if self.method != "knn-dv":  # one graph, its first k_ columns label
                graph = checked_knn(X, max(cands), backend=self.backend, q_name="X",
                                    method=self.knn_method, method_name="knn_method")
            self.selection_ = select_k(X, codes, cands, method=method, graph=graph,
                                       knn_method=self.knn_method, backend=self.backend)
            self.k_ = self.selection_.k
        else:
            self.k_ = _checks.positive_int(self.k, "k")
        if self.method == "knn-dv":
            lab, conf = (_arrays.to_numpy(a) for a in
                         knn_vote(X, codes, self.k_, weighting=self.weighting,
                                  knn_method=self.knn_method, backend=self.backend))
            given = codes >= 0
            self._codes, self.label_confidence_ = lab, conf
            self.level_ = np.where(given, 0, 1).astype(np.int32)
            self.provenance_ = np.where(given, GIVEN, FALLBACK).astype(np.int8)
        else:
            res = hdl(X, codes, self.k_, graph=graph, method=self.method,
                      schedule=self.schedule, max_visits=self.max_visits,
                      fallback=self.fallback, weighting=self.weighting,
                      knn_method=self.knn_method, backend=self.backend)
            self.result_ = res
            self._codes, self.label_confidence_, self.level_, self.provenance_ = (
                _arrays.to_numpy(a) for a in (res.labels, res.confidence, res.level,
                                              res.provenance))
        self.transduction_ = self._decode(self._codes)
        self.X_fit_ = X
        return self

    def predict(self, X):
        """Labels of new points by the vote of their k nearest fitted points."""
        return self._decode(self._vote(X)[0])

    def predict_confidence(self, X):
        """Confidence (winning vote share) of :meth:`predict`."""
        return self._vote(X)[1]

    def predict_proba(self, X):
        """(N, len(classes_)) share of each class in the vote of :meth:`predict`: the vote
        weights (1 with weighting="uniform", else the similarity floored at 0) per class over
        their total, so the predicted class has the largest share (ties aside)."""
        check_is_fitted(self, "X_fit_")
        X = self._validate_X(X, reset=False)
        return vote_shares(X, self.X_fit_, self._codes, np.arange(self.classes_.size),
                           self.k_, weighting=self.weighting, backend=self.backend)

    def _vote(self, X):
        check_is_fitted(self, "X_fit_")
        X = self._validate_X(X, reset=False)
        labels, conf = vote_against(X, self.X_fit_, self._codes, self.k_,
                                    weighting=self.weighting, backend=self.backend)
        return _arrays.to_numpy(labels), conf

    def _validate_X(self, X, *, reset: bool):
        """Host ``X`` through scikit-learn's ``validate_data`` (at least 2 rows to fit: a
        graph needs a neighbour); torch and cupy ``X`` as floats on their device, with the
        same feature-count check."""
        if _arrays.is_framework_array(X):
            X, inf = _checks.embeddings(_arrays.device_floats(X, "X"), "X")
            d = inf.shape[1]
            if reset:
                self.n_features_in_ = d
            elif d != self.n_features_in_:
                raise ValueError(f"X has {d} features, but {type(self).__name__} is "
                                 f"expecting {self.n_features_in_} features as input.")
            return X
        _arrays.refuse_non_array(X, "X")
        return _naming("X", validate_data, self, X, reset=reset, dtype=_HOST_DTYPES,
                       ensure_all_finite=False, ensure_min_samples=2 if reset else 1)

    def _encode_y(self, y, n: int) -> np.ndarray:
        """Set ``classes_`` and return ``y`` as int64 indices into it, -1 for unlabeled."""
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None.")
        y = _arrays.to_numpy(_arrays.as_array(y, "y"))
        y = _naming("y", column_or_1d, y, warn=True)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} entries but X has {n} points")
        y = _naming("y", check_array, y, ensure_2d=False, dtype=None, input_name="y")
        # elementwise for numbers and objects; a string array cannot hold -1
        unlabeled = np.zeros(n, bool) if y.dtype.kind in "US" else np.asarray(y == -1, bool)
        if unlabeled.all():
            raise ValueError("y has no labeled point (every entry is -1)")
        _naming("y", check_classification_targets, y[~unlabeled])
        self.classes_ = np.unique(y[~unlabeled])
        codes = np.full(n, -1, np.int64)
        codes[~unlabeled] = np.searchsorted(self.classes_, y[~unlabeled])
        return codes

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        """Indices into ``classes_`` as labels; -1 (unreached) stays -1."""
        codes = np.asarray(codes)
        out = self.classes_[np.maximum(codes, 0)]
        if (codes < 0).any():
            if out.dtype.kind in "US":
                out = out.astype(object)
            out[codes < 0] = -1
        return out
