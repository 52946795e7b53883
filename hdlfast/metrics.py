"""Clustering metrics (docs §7) for labels of any array kind.

Cluster accuracy matches clusters to classes one-to-one by the Hungarian algorithm on the
contingency table (as the deep-clustering papers' ``cluster_acc``); NMI and ARI are
scikit-learn's. Labels are copied to the host; these are evaluation numbers, not kernels.
"""
from __future__ import annotations

import numpy as np

from . import _checks
from ._typing import ArrayLike


def _pair(pred, target, non_negative: bool = False):
    pred = _checks.int_vector(pred, "pred")
    target = _checks.int_vector(target, "target", pred.size, "pred")
    if non_negative:
        for name, v in (("pred", pred), ("target", target)):
            if v.min() < 0:
                raise ValueError(f"{name} must be non-negative, got {v.min()}")
    return pred, target


def cluster_accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Accuracy of ``pred`` (cluster ids) under the best one-to-one map of clusters to classes
    of ``target`` (Hungarian algorithm on the contingency table). The numbers of clusters and
    classes may differ: clusters left unmatched count as wrong. Both are (N,) non-negative
    integers of any array kind. Returns a float in [0, 1]."""
    from scipy.optimize import linear_sum_assignment

    pred, target = _pair(pred, target, non_negative=True)
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(target, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), np.int64)
    np.add.at(table, (p.ravel(), t.ravel()), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / pred.size)


def nmi(pred: ArrayLike, target: ArrayLike) -> float:
    """Normalised mutual information (scikit-learn's ``normalized_mutual_info_score``,
    arithmetic mean) of two (N,) integer labelings of any array kind."""
    from sklearn.metrics import normalized_mutual_info_score

    pred, target = _pair(pred, target)
    return float(normalized_mutual_info_score(target, pred))


def ari(pred: ArrayLike, target: ArrayLike) -> float:
    """Adjusted Rand index (scikit-learn's ``adjusted_rand_score``) of two (N,) integer
    labelings of any array kind."""
    from sklearn.metrics import adjusted_rand_score

    pred, target = _pair(pred, target)
    return float(adjusted_rand_score(target, pred))
