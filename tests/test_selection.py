"""USL selective labeling and knn_density (SPEC 6) against a float64 NumPy transcription of
USL's reference loop, across the CPU backends, plus bad input."""
import numpy as np
import pytest

from hdlfast.datasets import digits, hypersphere_mixture
from hdlfast.kmeans import kmeans
from hdlfast.knn import knn
from hdlfast.selection import knn_density, select_to_label
from conftest import CPU_BACKENDS, GPU_KINDS, reference_knn, to_kind, to_numpy


def usl_reference(x, clusters, budget, k, iters, w, momentum, alpha):
    """USL's get_selection_with_reg in float64, cluster by cluster as in its code (density =
    1 / mean squared distance to the k neighbours and the point itself)."""
    x = np.asarray(x, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = reference_knn(x, x, k, exclude_self=True)[0]
    density = (k + 1) / (2.0 - 2.0 * sims).clip(0).sum(axis=1)
    reg = np.zeros(len(x))
    same = clusters[:, None] == np.arange(budget)[None, :]

    def pick(score):
        out = []
        for c in range(budget):
            members = np.flatnonzero(clusters == c)
            out.append(members[np.argmax(score[members])])  # first maximum: smaller index
        return np.array(out)

    picks = pick(density)
    for _ in range(iters):
        sq = ((x[:, None, :] - x[picks][None, :, :]) ** 2).sum(-1)
        sq = np.where(same[:, clusters[picks]], 1e10, np.maximum(sq, 1e-12))
        reg = reg * momentum + (1 / sq ** alpha).sum(axis=1) * (1 - momentum)
        picks = pick(density - w * reg)
    return picks


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("iters", [0, 1, 10])
def test_matches_usl_reference(backend, iters):
    x, _ = hypersphere_mixture(800, 16, 8, spread=1.0, seed=1)
    budget, k = 12, 10
    clusters = kmeans(x, budget, seed=3, backend=backend).labels
    ref = usl_reference(x, clusters, budget, k, iters, 0.5, 0.9, 0.5)
    got = select_to_label(x, budget, k=k, n_iters=iters, seed=3, backend=backend)
    assert got.dtype == np.int64 and got.shape == (budget,)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(clusters[got], np.arange(budget))  # one per cluster, in order


def test_refinement_spreads_the_picks():
    """The penalty moves picks away from the other clusters' picks: the closest pair of picks
    is farther apart than without refinement, on digits."""
    x, _ = digits()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)

    def min_gap(p):
        d = ((xn[p][:, None] - xn[p][None]) ** 2).sum(-1)
        return d[np.triu_indices(len(p), 1)].min()

    plain = select_to_label(x, 30, n_iters=0, seed=0)
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
    (dict(n_iters=-1), ValueError, "n_iters must be an integer >= 0"),
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
