"""hdlfast.compat.usl against a float64 transcription of USL's own loops (shared/utils/
nn_utils.py, read in its public repository and rewritten here in numpy, loop for loop), on
numpy and torch inputs, plus the equivalence with hdlfast.select_to_label and bad input."""
import numpy as np
import pytest

import hdlfast
from hdlfast.compat import usl
from hdlfast.datasets import hypersphere_mixture
from conftest import reference_knn


def round_picks(neighbors_dist, reg, cluster_labels, num_centroids, final_sample_num, w):
    """One round of picks as USL loops over its clusters: in each non-empty cluster, in
    order, the member of best 1 / dist - w * reg, until final_sample_num picks."""
    selected = []
    for cls_ind in range(num_centroids):
        if len(selected) == final_sample_num:
            break
        match = np.flatnonzero(cluster_labels == cls_ind)
        if len(match) == 0:
            continue
        scores = 1 / neighbors_dist[match] - w * reg[match]
        selected.append(match[scores.argmax()])
    return selected


def usl_loop(data, neighbors_dist, cluster_labels, num_centroids, final_sample_num, iters,
             w, momentum, horizon_dist, alpha):
    """get_selection_with_reg as the original runs it, with numpy in place of torch."""
    data = np.asarray(data, np.float64)
    reg = np.zeros(len(data))
    mask = np.eye(final_sample_num)[cluster_labels]  # F.one_hot(cluster_labels, final)
    for _ in range(iters):
        selected = round_picks(neighbors_dist, reg, cluster_labels, num_centroids,
                               final_sample_num, w)
        sel = data[np.array(selected)]
        new = ((data[:, None, :] - sel[None, :, :]) ** 2).sum(-1)
        new = (1 - mask) * new + mask * 1e10
        assert not (new == 0).any()
        if horizon_dist is not None:
            new[new >= horizon_dist] = 1e10
        new = (1 / new ** alpha).sum(1)
        reg = reg * momentum + new * (1 - momentum)
    assert len(selected) == final_sample_num
    return np.array(selected)


def usl_imagenet_loop(data, neighbors_dist, cluster_labels, num_centroids, iters,
                      final_sample_num, w, momentum, horizon_num, alpha, exclude_same_cluster):
    """get_selection_with_reg_imagenet as the original runs it (KeOps' Kmin / argKmin as a
    full sort), numpy in place of torch."""
    data = np.asarray(data, np.float64)
    reg = np.zeros(len(data))
    for it in range(iters):
        selected = round_picks(neighbors_dist, reg, cluster_labels, num_centroids,
                               final_sample_num, w)
        if it < iters - 1:
            sel = data[np.array(selected)]
            sq = ((data[:, None, :] - sel[None, :, :]) ** 2).sum(-1)
            order = np.argsort(sq, axis=1, kind="stable")[:, :horizon_num]
            new = np.take_along_axis(sq, order, 1)
            if not exclude_same_cluster:
                new[new == 0] = 1e10
            else:
                same = (order == cluster_labels[:, None]).astype(float)
                new = (1 - same) * new + same * 1e10
                assert not (new == 0).any()
            new = (1 / new ** alpha).sum(1)
            reg = reg * momentum + new * (1 - momentum)
    assert len(selected) == final_sample_num
    return np.array(selected)


@pytest.fixture(scope="module")
def feats():
    x, _ = hypersphere_mixture(700, 16, 8, spread=1.0, seed=5)
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = reference_knn(x, x, 15, exclude_self=True)[0]  # KNN_K = 16 with the row itself
    neighbors_dist = (2 - 2 * sims).clip(0).sum(1) / 16
    labels = hdlfast.kmeans(x, 12, seed=1).labels
    return x, neighbors_dist, labels


SETTINGS = [  # USL's function defaults, its CIFAR-10 config, its CIFAR-100 config
    dict(iters=1, w=1, momentum=0.5, horizon_dist=None, alpha=1),
    dict(iters=10, w=0.5, momentum=0.9, horizon_dist=4, alpha=0.5),
    dict(iters=10, w=1.0, momentum=0.9, horizon_dist=1, alpha=1.0),
    dict(iters=3, w=2.0, momentum=0.5, horizon_dist=None, alpha=0.5),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"iters{s['iters']}-w{s['w']}")
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_get_selection_with_reg_matches_the_original(feats, setting, kind):
    x, dist, labels = feats
    ref = usl_loop(x, dist, labels, 12, 12, **setting)
    args = (x, dist, labels)
    if kind == "torch":
        torch = pytest.importorskip("torch")
        args = tuple(torch.from_numpy(np.asarray(a)) for a in args)
    got = usl.get_selection_with_reg(*args, 12, 12, **setting)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, ref)


IMAGENET_SETTINGS = [  # USL's function defaults (horizon_num shrunk to fit), its config
    dict(iters=1, w=1, momentum=0.5, horizon_num=8, alpha=1, exclude_same_cluster=False),
    dict(iters=2, w=1.5, momentum=0.0, horizon_num=6, alpha=0.5, exclude_same_cluster=False),
    dict(iters=4, w=0.5, momentum=0.5, horizon_num=12, alpha=1, exclude_same_cluster=False),
    dict(iters=3, w=1.5, momentum=0.3, horizon_num=5, alpha=0.5, exclude_same_cluster=True),
]


@pytest.mark.parametrize("setting", IMAGENET_SETTINGS,
                         ids=lambda s: f"iters{s['iters']}-h{s['horizon_num']}"
                                       f"{'-excl' if s['exclude_same_cluster'] else ''}")
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_get_selection_with_reg_imagenet_matches_the_original(feats, setting, kind):
    x, dist, labels = feats
    ref = usl_imagenet_loop(x, dist, labels, 12, final_sample_num=12, **setting)
    args = (x, dist, labels)
    if kind == "torch":
        torch = pytest.importorskip("torch")
        args = tuple(torch.from_numpy(np.asarray(a)) for a in args)
    got = usl.get_selection_with_reg_imagenet(*args, 12, final_sample_num=12, **setting)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, ref)


def test_imagenet_horizon_and_exclusion_change_the_picks(feats):
    """On these inputs each knob moves picks, so the tests above would see it ignored."""
    x, dist, labels = feats
    base = dict(iters=4, w=0.5, momentum=0.5, alpha=1, final_sample_num=12)
    picks = {(h, e): tuple(usl.get_selection_with_reg_imagenet(
        x, dist, labels, 12, horizon_num=h, exclude_same_cluster=e, **base))
        for h in (2, 12) for e in (False, True)}
    assert picks[2, False] != picks[12, False] and picks[12, False] != picks[12, True]


def test_get_selection_with_reg_imagenet_bad_input(feats):
    x, dist, labels = feats
    with pytest.raises(ValueError, match="horizon_num=13 is more than the 12 picks"):
        usl.get_selection_with_reg_imagenet(x, dist, labels, 12, iters=2, final_sample_num=12,
                                            horizon_num=13)
    with pytest.raises(ValueError, match="final_sample_num is required"):
        usl.get_selection_with_reg_imagenet(x, dist, labels, 12)
    with pytest.raises(ValueError, match="final_sample_num=13"):
        usl.get_selection_with_reg_imagenet(x, dist, labels, 12, final_sample_num=13)


def test_extra_centroids_and_empty_clusters(feats):
    """USL asks for one more centroid than picks (2501 for 2500): its loop over
    range(num_centroids) stops at final_sample_num picks. An empty cluster below
    final_sample_num leaves too few picks, which the original asserts against."""
    x, dist, labels = feats
    lab = np.minimum(labels, 10)  # 11 clusters 0..10
    ref = usl_loop(x, dist, lab, 12, 11, 5, 0.5, 0.9, None, 0.5)
    got = usl.get_selection_with_reg(x, dist, lab, 12, 11, iters=5, w=0.5, momentum=0.9,
                                     alpha=0.5)
    np.testing.assert_array_equal(got, ref)
    lab = np.where(lab == 3, 4, lab)  # cluster 3 empty: 10 clusters for 11 picks
    with pytest.raises(ValueError, match="final_sample_num=11"):
        usl.get_selection_with_reg(x, dist, lab, 12, 11)


def test_select_to_label_is_the_same_selection(feats):
    """hdlfast.select_to_label with the caller's clusters is USL's selection on unit rows,
    its k being USL's KNN_K minus the row itself."""
    x, dist, labels = feats
    ref = usl.get_selection_with_reg(x, dist, labels, 12, 12, iters=10, w=0.5, momentum=0.9,
                                     horizon_dist=4, alpha=0.5)
    got = hdlfast.select_to_label(x, 12, k=15, n_iters=10, weight=0.5, momentum=0.9,
                                  alpha=0.5, horizon_dist=4, cluster_labels=labels)
    np.testing.assert_array_equal(got, ref)


def test_get_selection_without_reg(feats):
    x, dist, labels = feats
    got = usl.get_selection_without_reg(labels, dist, 12, 12)
    ref = [np.flatnonzero(labels == c)[np.argmin(dist[labels == c])] for c in range(12)]
    np.testing.assert_array_equal(got, ref)
    order = [5, 2, 7]
    np.testing.assert_array_equal(usl.get_selection_without_reg(labels, dist, order, 2),
                                  np.array(ref)[[5, 2]])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_partitioned_knn(feats, kind):
    x, dist, _ = feats
    feats_in = x.astype(np.float32)
    if kind == "torch":
        torch = pytest.importorskip("torch")
        feats_in = torch.from_numpy(feats_in)
    d_knns, ind_knns = usl.partitioned_kNN(feats_in, K=16)
    d_knns, ind_knns = np.asarray(d_knns), np.asarray(ind_knns)
    assert d_knns.shape == (700, 16) and d_knns.dtype == np.float32
    np.testing.assert_array_equal(ind_knns[:, 0], np.arange(700))  # the row itself first
    assert (d_knns[:, 0] == 0).all() and (np.diff(d_knns, axis=1) >= 0).all()
    np.testing.assert_allclose(d_knns.mean(axis=1), dist, rtol=1e-4)
    with pytest.raises(ValueError, match="feats_list must be L2-normalised"):
        usl.partitioned_kNN(2 * x, K=5)


@pytest.mark.parametrize("call, exc, match", [
    (lambda x, d, l: usl.get_selection_with_reg(x, d, l + 20, 12, 12), ValueError,
     r"cluster_labels must be in \[0, final_sample_num=12\)"),
    (lambda x, d, l: usl.get_selection_with_reg(x, d[:5], l, 12, 12), ValueError,
     "neighbors_dist must have shape"),
    (lambda x, d, l: usl.get_selection_with_reg(x, 0 * d, l, 12, 12), ValueError,
     "neighbors_dist must be finite and > 0"),
    (lambda x, d, l: usl.get_selection_with_reg(x, d, l, 12, 12, iters=0), ValueError,
     "iters must be an integer >= 1"),
    (lambda x, d, l: usl.get_selection_with_reg(x, d, l.astype(float), 12, 12), TypeError,
     "cluster_labels must hold integer"),
    (lambda x, d, l: usl.get_selection_with_reg(x, d, l, 12, 12, alpha=0), ValueError,
     "alpha must be > 0"),
    (lambda x, d, l: usl.get_selection_with_reg("x", d, l, 12, 12), TypeError, "data"),
])
def test_bad_input(feats, call, exc, match):
    x, dist, labels = feats
    keep = x.copy()
    with pytest.raises(exc, match=match):
        call(x, dist, labels)
    np.testing.assert_array_equal(x, keep)
