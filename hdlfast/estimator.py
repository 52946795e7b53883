"""``HDLLabeler``: the labeling engine in scikit-learn's semi-supervised shape."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from . import _arrays, _checks
from .clusterability import DEFAULT_CANDIDATES, select_k
from .labeling import FALLBACK, GIVEN, hdl, knn_vote, vote_against, vote_shares


class HDLLabeler(ClassifierMixin, BaseEstimator):
    """Label every point of ``X`` from the few labels of ``y`` (-1 = unlabeled).

    Like ``sklearn.semi_supervised.LabelSpreading``: ``fit(X, y)`` sets ``transduction_``
    (a label per point), plus ``label_confidence_``, ``level_``, ``provenance_`` (indices into
    ``hdlfast.PROVENANCE``) and ``k_`` (the k used; chosen by :func:`hdlfast.select_k` when
    ``k="auto"``). ``predict(X_new)`` votes among the k nearest fitted points (kNN-DV);
    ``predict_proba(X_new)`` gives each class's share of that vote (columns in ``classes_``
    order). Before ``fit``, both raise scikit-learn's ``NotFittedError``.

    method: "hdl" (propagation, search, fallback), "knn-dv" (direct voting; voted points get
    provenance "fallback", level 1) or "tree" (search only, then fallback).
    """

    def __init__(self, k=20, method="hdl", *, schedule="levels", max_visits=64,
                 fallback="auto", weighting="similarity", candidates=DEFAULT_CANDIDATES,
                 backend=None):
        self.k = k
        self.method = method
        self.schedule = schedule
        self.max_visits = max_visits
        self.fallback = fallback
        self.weighting = weighting
        self.candidates = candidates
        self.backend = backend

    def fit(self, X, y):
        _checks.choice(self.method, "method", ("hdl", "knn-dv", "tree"))
        X, _ = _checks.embeddings(X, "X")
        labels = _checks.labels(y, _arrays.info(X, "X").shape[0], name="y")
        if isinstance(self.k, str) and self.k == "auto":
            method = "hdl" if self.method == "knn-dv" else self.method
            self.selection_ = select_k(X, labels, self.candidates, method=method,
                                       backend=self.backend)
            self.k_ = self.selection_.k
        else:
            self.k_ = _checks.positive_int(self.k, "k")
        if self.method == "knn-dv":
            lab, conf = (_arrays.to_numpy(a) for a in
                         knn_vote(X, labels, self.k_, weighting=self.weighting,
                                  backend=self.backend))
            given = labels >= 0
            self.transduction_, self.label_confidence_ = lab, conf
            self.level_ = np.where(given, 0, 1).astype(np.int32)
            self.provenance_ = np.where(given, GIVEN, FALLBACK).astype(np.int8)
        else:
            res = hdl(X, labels, self.k_, method=self.method, schedule=self.schedule,
                      max_visits=self.max_visits, fallback=self.fallback,
                      weighting=self.weighting, backend=self.backend)
            self.result_ = res
            self.transduction_, self.label_confidence_, self.level_, self.provenance_ = (
                _arrays.to_numpy(a) for a in (res.labels, res.confidence, res.level,
                                              res.provenance))
        self.classes_ = np.unique(labels[labels >= 0])
        self.n_features_in_ = _arrays.info(X, "X").shape[1]
        self.X_fit_ = X
        return self

    def predict(self, X):
        """Labels of new points by the vote of their k nearest fitted points."""
        labels, _ = self._vote(X)
        return labels

    def predict_confidence(self, X):
        """Confidence (winning vote share) of :meth:`predict`."""
        return self._vote(X)[1]

    def predict_proba(self, X):
        """(N, len(classes_)) share of each class in the vote of :meth:`predict`: the vote
        weights (1 with weighting="uniform", else the similarity floored at 0) per class over
        their total, so the predicted class has the largest share (ties aside)."""
        check_is_fitted(self, "X_fit_")
        return vote_shares(X, self.X_fit_, self.transduction_, self.classes_, self.k_,
                           weighting=self.weighting, backend=self.backend)

    def _vote(self, X):
        check_is_fitted(self, "X_fit_")
        return vote_against(X, self.X_fit_, self.transduction_, self.k_,
                            weighting=self.weighting, backend=self.backend)
