"""USL selective labeling and knn_density (docs §6) against a float64 NumPy transcription of
USL's reference loop, across the CPU backends, plus bad input."""
import numpy as np
import pytest

from hdlfast.datasets import digits, hypersphere_mixture
from hdlfast.kmeans import kmeans
from hdlfast.knn import knn
from hdlfast.selection import knn_density, select_to_label
from conftest import CPU_BACKENDS, GPU_KINDS, reference_knn, to_kind, to_numpy


def usl_reference(x, clusters, budget, k, iters, w, momentum, alpha, horizon_dist=None):
    """USL's get_selection_with_reg (CIFAR, shared/utils/nn_utils.py) transcribed loop by loop
    in float64 from a reading of the original: ``iters`` rounds, each picking per cluster the
    argmax of 1 / neighbors_dist - w * regulariser (zero in round 1), then computing the
    regulariser of those picks: squared distances to the picks, 1e10 for a pick whose column
    is the row's cluster and (with horizon_dist) for distances >= horizon_dist, summed as
    1 / d^alpha, folded in with momentum. The picks of the last round are returned.
    neighbors_dist: the mean squared distance to the KNN_K = k + 1 nearest rows, the row
    itself included (distance 0)."""
    x = np.asarray(x, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = reference_knn(x, x, k, exclude_self=True)[0]
    neighbors_dist = (2.0 - 2.0 * sims).clip(0).sum(axis=1) / (k + 1)
    reg = np.zeros(len(x))
    mask = (clusters[:, None] == np.arange(budget)[None, :]).astype(np.float64)  # one_hot
    for _ in range(iters):
        picks = []
        for c in range(budget):
            members = np.flatnonzero(clusters == c)
            scores = 1 / neighbors_dist[members] - w * reg[members]
            picks.append(members[np.argmax(scores)])  # first maximum: smaller index
        picks = np.array(picks)
        new = ((x[:, None, :] - x[picks][None, :, :]) ** 2).sum(-1)
        new = (1 - mask) * new + mask * 1e10
        if horizon_dist is not None:
            new[new >= horizon_dist] = 1e10
        new = (1 / np.maximum(new, 1e-12) ** alpha).sum(axis=1)
        reg = reg * momentum + new * (1 - momentum)
    return picks


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("iters", [1, 2, 10])
def test_matches_usl_reference(backend, iters):
    x, _ = hypersphere_mixture(800, 16, 8, spread=1.0, seed=1)
    budget, k = 12, 10
    clusters = kmeans(x, budget, seed=3, backend=backend).labels
    ref = usl_reference(x, clusters, budget, k, iters, 0.5, 0.9, 0.5)
    got = select_to_label(x, budget, k=k, n_iters=iters, seed=3, backend=backend)
    assert got.dtype == np.int64 and got.shape == (budget,)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(clusters[got], np.arange(budget))  # one per cluster, in order


def test_iteration_count_is_usls():
    """USL's iters = n rounds of picking, the first without penalty: the reference of n - 1
    or n + 1 rounds gives other picks on this data (so the count is really checked)."""
    x, _ = hypersphere_mixture(800, 16, 8, spread=1.0, seed=1)
    clusters = kmeans(x, 12, seed=3).labels
    refs = {i: usl_reference(x, clusters, 12, 10, i, 2.0, 0.5, 0.5) for i in (2, 3, 4)}
    got = select_to_label(x, 12, k=10, n_iters=3, weight=2.0, momentum=0.5, seed=3)
    np.testing.assert_array_equal(got, refs[3])
    assert not np.array_equal(refs[2], refs[3]) and not np.array_equal(refs[4], refs[3])


@pytest.mark.parametrize("horizon", [1.0, 0.5])
def test_horizon_and_given_clusters_match_usl(horizon):
    """USL's CIFAR-100 setting (w = 1, alpha = 1, horizon 1) on clusters given by the caller
    (as USL's own k-means labels would be)."""
    x, _ = hypersphere_mixture(900, 16, 10, spread=1.0, seed=8)
    clusters = np.random.default_rng(2).integers(0, 15, 900)
    clusters[:15] = np.arange(15)  # every cluster non-empty
    ref = usl_reference(x, clusters, 15, 12, 10, 1.0, 0.9, 1.0, horizon_dist=horizon)
    got = select_to_label(x, 15, k=12, n_iters=10, weight=1.0, alpha=1.0,
                          horizon_dist=horizon, cluster_labels=clusters)
    np.testing.assert_array_equal(got, ref)
    without = usl_reference(x, clusters, 15, 12, 10, 1.0, 0.9, 1.0)
    assert not np.array_equal(ref, without)  # the horizon matters on this data


def test_euclidean_random_kmeans_option():
    x, _ = hypersphere_mixture(600, 8, 6, seed=3)
    picks = select_to_label(x, 6, k=8, spherical=False, kmeans_iters=20, seed=4)
    km = kmeans(x, 6, spherical=False, init="random", n_iters=20, tol=None, seed=4)
    np.testing.assert_array_equal(km.labels[picks], np.arange(6))


def test_refinement_spreads_the_picks():
    """The penalty moves picks away from the other clusters' picks: the closest pair of picks
    is farther apart than without refinement, on digits."""
    x, _ = digits()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)

    def min_gap(p):
        d = ((xn[p][:, None] - xn[p][None]) ** 2).sum(-1)
        return d[np.triu_indices(len(p), 1)].min()

    plain = select_to_label(x, 30, n_iters=1, seed=0)
    spread = select_to_label(x, 30, n_iters=10, weight=2.0, seed=0)
    assert not np.array_equal(plain, spread)
    assert min_gap(spread) > min_gap(plain)


def test_same_indices_on_every_backend_and_kind():
    x, _ = digits()
    runs = [select_to_label(x, 25, seed=5, backend=b) for b in CPU_BACKENDS]
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])
    torch = pytest.importorskip("torch")
    t = select_to_label(torch.from_numpy(x), 25, seed=5)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), runs[0])
    assert len(set(runs[0].tolist())) == 25


def test_budget_equal_to_n_picks_every_point():
    x, _ = hypersphere_mixture(40, 8, 4, seed=2)
    got = select_to_label(x, 40, k=5)
    np.testing.assert_array_equal(np.sort(got), np.arange(40))


@pytest.mark.parametrize("count_self", [True, False])
def test_knn_density(count_self):
    x, _ = hypersphere_mixture(300, 8, 3, seed=4)
    sims, _ = knn(x, 7)
    dens = knn_density(sims, count_self=count_self)
    ref_s = reference_knn(x, x, 7, exclude_self=True)[0]
    ref = (7 + count_self) / (2.0 - 2.0 * ref_s).sum(axis=1)
    np.testing.assert_allclose(dens, ref, rtol=1e-4)
    # denser = closer neighbours: density increases with the mean similarity
    order = np.argsort(ref_s.mean(axis=1))
    assert (np.diff(dens[order]) >= -1e-4 * dens[order][1:]).all()


def test_knn_density_duplicates_are_infinitely_dense():
    sims = np.array([[1.0, 1.0], [0.5, 0.2]], np.float32)
    dens = knn_density(sims)
    assert np.isinf(dens[0]) and np.isfinite(dens[1])


@pytest.mark.parametrize("sims, err, match", [
    (np.ones((3, 2), np.int64), TypeError, "sims must hold cosine similarities"),
    (np.ones(3, np.float32), ValueError, "sims must be a non-empty 2-D"),
    (np.full((2, 2), np.nan, np.float32), ValueError, "sims holds NaN"),
])
def test_knn_density_bad_input(sims, err, match):
    with pytest.raises(err, match=match):
        knn_density(sims)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(budget=0), ValueError, "budget must be >= 1"),
    (dict(budget=101), ValueError, "budget=101 is larger than the 100 rows"),
    (dict(budget=3.0), TypeError, "budget must be an integer"),
    (dict(k=100), ValueError, "k=100 is larger than the 99"),
    (dict(n_iters=-1), ValueError, "n_iters must be an integer >= 1"),
    (dict(n_iters=0), ValueError, "n_iters must be an integer >= 1"),
    (dict(horizon_dist=0.0), ValueError, "horizon_dist must be > 0"),
    (dict(cluster_labels=np.full(100, 5)), ValueError, r"cluster_labels must be in \[0, budget=5\)"),
    (dict(cluster_labels=np.zeros(99, np.int64)), ValueError, "cluster_labels has 99 entries"),
    (dict(cluster_labels=np.zeros(100)), TypeError, "cluster_labels must hold integer"),
    (dict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\)"),
    (dict(alpha=0.0), ValueError, "alpha must be > 0"),
    (dict(weight=-1.0), ValueError, "weight must be >= 0"),
])
def test_bad_arguments(kwargs, err, match):
    x, _ = hypersphere_mixture(100, 8, 4, seed=6)
    keep = x.copy()
    args = dict(budget=5)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        select_to_label(x, **args)
    np.testing.assert_array_equal(x, keep)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
def test_cuda_matches_cpu(kind):
    x, _ = hypersphere_mixture(3000, 32, 10, spread=0.5, seed=7)
    ref = select_to_label(x, 20, seed=1, backend=CPU_BACKENDS[0])
    got = select_to_label(to_kind(x, kind), 20, seed=1, backend="cuda")
    np.testing.assert_array_equal(to_numpy(got), ref)
