"""USL (Wang, Lian et al., ECCV 2022; TonyLianLong/UnsupervisedSelectiveLabeling, MIT
license): the selection functions of its ``shared/utils/nn_utils.py``, for a one-line switch::

    from hdlfast.compat import usl as utils   # instead of USL's ``utils`` for these names

    d_knns, ind_knns = utils.partitioned_kNN(feats_list, K=cfg.USL.KNN_K)
    neighbors_dist = d_knns.mean(dim=1)
    selected_inds = utils.get_selection_with_reg(feats_list, neighbors_dist, cluster_labels,
                                                 num_centroids, final_sample_num, iters=10,
                                                 w=0.5, momentum=0.9, horizon_dist=4,
                                                 alpha=0.5)
    # ImageNet: utils.get_selection_with_reg_imagenet(..., iters=2, final_sample_num=2911,
    #     w=1.5, momentum=0.0, horizon_num=128, alpha=0.5)

Same arguments, defaults and results as the original, written from a reading of it: its
loops run here as vectorised float64 numpy (the original computes in float32 torch, so two
candidates whose scores agree to float32 rounding may be ordered differently), in blocks of
rows instead of an N x B tensor. Inputs may be torch tensors or numpy arrays on any device
(they are read to the host); outputs are what the original returns (a numpy index array;
torch tensors from ``partitioned_kNN``). Where the original fails (an ``assert``, or
``F.one_hot`` on a label out of range), these raise ``ValueError`` saying why.
"""
from __future__ import annotations

import numpy as np

from .. import _arrays, _checks
from ..knn import checked_knn

_BLOCK = 8192  # rows per block of squared distances (a block x B float64 tile)
_FAR = 1e10  # USL's squared distance for picks that must not count


def _host(x, name: str, dtype) -> np.ndarray:
    x = _arrays.as_array(x, name)
    _arrays.info(x, name)
    return np.asarray(_arrays.to_numpy(x), dtype=dtype)


def _cluster_labels(cluster_labels, n: int, limit: int, limit_name: str) -> np.ndarray:
    labels = _checks.int_vector(cluster_labels, "cluster_labels", n, "data")
    if labels.min() < 0 or labels.max() >= limit:
        raise ValueError(f"cluster_labels must be in [0, {limit_name}={limit}) (the original's "
                         f"one_hot), got [{labels.min()}, {labels.max()}]")
    return labels


def _selection_inputs(data, neighbors_dist, cluster_labels, num_centroids, label_limit=None):
    """The checked host inputs of the regularised selections: float64 data and
    neighbors_dist, num_centroids, int64 cluster labels below ``label_limit`` ((limit, its
    name); default num_centroids)."""
    x = _host(data, "data", np.float64)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"data must be a non-empty 2-D (N, dim) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("data holds NaN or Inf")
    n = x.shape[0]
    dist = _host(neighbors_dist, "neighbors_dist", np.float64)
    if dist.shape != (n,):
        raise ValueError(f"neighbors_dist must have shape ({n},), got {dist.shape}")
    if not np.isfinite(dist).all() or (dist <= 0).any():
        raise ValueError("neighbors_dist must be finite and > 0 (the score is 1 / it)")
    num_centroids = _checks.positive_int(num_centroids, "num_centroids")
    limit, limit_name = label_limit or (num_centroids, "num_centroids")
    return x, dist, num_centroids, _cluster_labels(cluster_labels, n, limit, limit_name)


def _round_params(iters, w, momentum, alpha):
    """The checked round parameters of the regularised selections."""
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    return (int(iters), _checks.positive_float(w, "w", zero=True),
            _checks.positive_float(momentum, "momentum", zero=True),
            _checks.positive_float(alpha, "alpha"))


def _rounds(x, dist, labels, num_centroids, final_sample_num, iters, w, momentum, penalty,
            after_last):
    """USL's rounds of regularised picks: in each, the cluster-by-cluster best of
    1 / dist - w * reg; then (after the last round too when ``after_last``, as the CIFAR
    code does) reg folds in, with ``momentum``, ``penalty(start, sq, picks)``: each block of
    rows' regulariser from its squared distances to the picks (written over). Returns the
    last round's picks; fewer non-empty clusters than picks is the original's assert."""
    n = x.shape[0]
    sq_norms = np.einsum("ij,ij->i", x, x)
    reg = np.zeros(n)
    for it in range(iters):
        picks = _first_per_cluster(1.0 / dist - w * reg, labels, num_centroids,
                                   final_sample_num, best_is_max=True)
        if picks.shape[0] != final_sample_num:
            raise ValueError(f"only {picks.shape[0]} of the num_centroids={num_centroids} "
                             f"clusters are non-empty, fewer than final_sample_num="
                             f"{final_sample_num} (the original's assert)")
        if it == iters - 1 and not after_last:
            break
        new = np.empty(n)
        for b in range(0, n, _BLOCK):
            new[b:b + _BLOCK] = penalty(b, _sq_dists(x, sq_norms, b, picks), picks)
        reg = reg * momentum + new * (1.0 - momentum)
    return picks


def _sq_dists(x: np.ndarray, sq_norms: np.ndarray, start: int, picks: np.ndarray):
    """Squared distances of rows start.. start + _BLOCK of x to the picks: |a|^2 + |b|^2 -
    2 a.b by BLAS, with the entries that cancel to (near) 0 recomputed as sum (a - b)^2, so a
    row and its copies are at exactly 0 from each other, as in the original's direct sums."""
    rows = slice(start, start + _BLOCK)
    scale = sq_norms[rows, None] + sq_norms[None, picks]
    sq = np.maximum(scale - 2.0 * (x[rows] @ x[picks].T), 0.0)
    r, c = np.nonzero(sq <= 1e-9 * scale)
    if r.size:
        sq[r, c] = ((x[start + r] - x[picks[c]]) ** 2).sum(axis=1)
    return sq


def _first_per_cluster(score: np.ndarray, labels: np.ndarray, clusters: int, take: int,
                       best_is_max: bool) -> np.ndarray:
    """The original's loop ``for cls_ind in range(clusters)``: in each non-empty cluster the
    member of best score (argmax/argmin: the first on ties), clusters in order, stopping
    after ``take`` picks."""
    key = -score if best_is_max else score
    order = np.lexsort((np.arange(score.shape[0]), key, labels))
    first = np.concatenate([[True], labels[order][1:] != labels[order][:-1]])
    picks = order[first]
    picks = picks[labels[picks] < clusters]
    return picks[:take].astype(np.int64)


def get_selection_with_reg(data, neighbors_dist, cluster_labels, num_centroids,
                           final_sample_num, iters=1, w=1, momentum=0.5, horizon_dist=None,
                           alpha=1, verbose=False):
    """USL's regularised selection: ``iters`` rounds; each picks, cluster by cluster
    (``range(num_centroids)``, empty clusters skipped, at most ``final_sample_num`` picks),
    the point maximising 1 / neighbors_dist - w * regulariser (zero in the first round), then
    computes the regulariser of those picks: the squared distances of every row of ``data``
    to the picks, 1e10 where the pick's column j equals the row's cluster label (the
    original's ``one_hot(cluster_labels, final_sample_num)``) or the distance reaches
    ``horizon_dist``, summed as 1 / d^alpha and folded in with ``momentum``. Returns the last
    round's picks as a numpy int64 array. ``verbose`` is accepted and ignored."""
    del verbose
    final_sample_num = _checks.positive_int(final_sample_num, "final_sample_num")
    x, dist, num_centroids, labels = _selection_inputs(
        data, neighbors_dist, cluster_labels, num_centroids,
        (final_sample_num, "final_sample_num"))
    iters, w, momentum, alpha = _round_params(iters, w, momentum, alpha)
    if horizon_dist is not None:
        horizon_dist = _checks.positive_float(horizon_dist, "horizon_dist")

    cols = np.arange(final_sample_num)

    def penalty(b, sq, picks):
        sq[labels[b:b + _BLOCK, None] == cols[None, :]] = _FAR
        if (sq == 0).any():
            r, c = np.argwhere(sq == 0)[0]
            raise ValueError(f"row {b + r} of data coincides with pick {picks[c]} of another "
                             "cluster: the regulariser 1 / 0 is undefined (the original's "
                             "assert)")
        if horizon_dist is not None:
            sq[sq >= horizon_dist] = _FAR
        return (sq ** -alpha).sum(axis=1)

    return _rounds(x, dist, labels, num_centroids, final_sample_num, iters, w, momentum,
                   penalty, after_last=True)


def get_selection_with_reg_imagenet(data, neighbors_dist, cluster_labels, num_centroids,
                                    iters=1, final_sample_num=None, w=1, momentum=0.5,
                                    horizon_num=256, alpha=1, exclude_same_cluster=False,
                                    verbose=False):
    """USL's ImageNet selection (its config: iters 2, w 1.5, momentum 0, horizon_num 128,
    alpha 0.5): rounds as in :func:`get_selection_with_reg`, but between rounds only (none
    after the last) the regulariser of a row sums 1 / d^alpha over its ``horizon_num``
    smallest squared distances d to the picks, with d = 0 (the row itself, or a copy of it)
    counted as 1e10, or, with ``exclude_same_cluster``, the picks at positions equal to the
    row's cluster label counted as 1e10 instead (the original's note: positions and clusters
    agree when no cluster is skipped). Returns the last round's picks (numpy int64)."""
    del verbose
    x, dist, num_centroids, labels = _selection_inputs(data, neighbors_dist, cluster_labels,
                                                       num_centroids)
    if final_sample_num is None:
        raise ValueError("final_sample_num is required (the original's assert compares the "
                         "picks with it)")
    final_sample_num = _checks.positive_int(final_sample_num, "final_sample_num")
    iters, w, momentum, alpha = _round_params(iters, w, momentum, alpha)
    horizon_num = _checks.positive_int(horizon_num, "horizon_num")
    if iters > 1 and horizon_num > final_sample_num:
        raise ValueError(f"horizon_num={horizon_num} is more than the {final_sample_num} "
                         "picks (the original's Kmin needs that many)")

    def penalty(b, sq, picks):
        near = np.argpartition(sq, horizon_num - 1, axis=1)[:, :horizon_num]
        d = np.take_along_axis(sq, near, 1)
        if exclude_same_cluster:
            d[near == labels[b:b + _BLOCK, None]] = _FAR
            if (d == 0).any():
                r = int(np.argwhere(d == 0)[0][0])
                raise ValueError(f"row {b + r} of data coincides with a pick of another "
                                 "cluster: the regulariser 1 / 0 is undefined (the "
                                 "original's assert)")
        else:
            d[d == 0] = _FAR
        return (d ** -alpha).sum(axis=1)

    return _rounds(x, dist, labels, num_centroids, final_sample_num, iters, w, momentum,
                   penalty, after_last=False)


def get_selection_without_reg(cluster_labels, neighbors_dist, centroid_ordering,
                              final_sample_num):
    """USL's plain selection: in each cluster of ``centroid_ordering`` (an int n means
    range(n)), the point of smallest ``neighbors_dist`` (the first on ties), empty clusters
    skipped, cut to the first ``final_sample_num``. Returns a numpy int64 array."""
    dist = _host(neighbors_dist, "neighbors_dist", np.float64)
    if dist.ndim != 1 or dist.size == 0 or not np.isfinite(dist).all():
        raise ValueError("neighbors_dist must be a non-empty 1-D array of finite numbers")
    labels = _checks.int_vector(cluster_labels, "cluster_labels", dist.shape[0],
                                "neighbors_dist")
    final_sample_num = _checks.positive_int(final_sample_num, "final_sample_num")
    if isinstance(centroid_ordering, (int, np.integer)) and not isinstance(centroid_ordering,
                                                                           bool):
        centroid_ordering = range(int(centroid_ordering))
    order = np.asarray(list(centroid_ordering), np.int64)
    picks = []
    for c in order:
        members = np.flatnonzero(labels == c)
        if members.size:
            picks.append(members[np.argmin(dist[members])])
    if len(picks) < final_sample_num:
        raise ValueError(f"Insufficient data: expected: {final_sample_num}, actual: "
                         f"{len(picks)} (the original's assert)")
    return np.asarray(picks[:final_sample_num], np.int64)


def partitioned_kNN(feats_list, K=20, recompute=True, partitions_size=130000, verify=False):
    """USL's kNN: ``(d_knns, ind_knns)``, the squared L2 distances to the K nearest rows
    (the row itself included, at distance 0) in increasing order and their indices (float32 /
    int64, in the kind and on the device of ``feats_list``: torch tensors for USL's). Exact (hdlfast's kNN
    graph; ties: smaller index first). USL runs it on L2-normalised features, whose squared
    distance is 2 - 2 cos; other rows are refused here. ``recompute``, ``partitions_size`` and
    ``verify`` (the original's file cache and tiling) are accepted and ignored."""
    del recompute, partitions_size, verify
    feats, _ = _checks.embeddings(feats_list, "feats_list")
    _checks.rows(feats, "feats_list")
    host = _host(feats, "feats_list", np.float64)
    off = np.abs(np.sqrt(np.einsum("ij,ij->i", host, host)) - 1.0)
    if off.max() > 1e-3:
        row = int(np.argmax(off))
        raise ValueError(f"feats_list must be L2-normalised (as USL's features are): row {row} "
                         f"has norm {1.0 + off[row]:.4g}")
    K = _checks.positive_int(K, "K")
    sims, idx = (_arrays.to_numpy(a) for a in
                 checked_knn(feats, K, exclude_self=False, database=feats,
                             q_name="feats_list", db_name="feats_list"))
    d = np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0).astype(np.float32)
    self_first = idx == np.arange(idx.shape[0])[:, None]
    d[self_first] = 0.0  # the row itself, exactly at distance 0 as in the original
    return _arrays.from_host(d, feats), _arrays.from_host(idx.astype(np.int64), feats)
