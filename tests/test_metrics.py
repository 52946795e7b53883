"""hdlfast.metrics: cluster accuracy against a brute-force matching, NMI and ARI against
scikit-learn, any array kind, bad input."""
import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from conftest import GPU_KINDS
from hdlfast import metrics


def brute_force_accuracy(pred, target):
    """Best one-to-one map of clusters to classes by trying every permutation."""
    k, c = pred.max() + 1, target.max() + 1
    d = max(k, c)
    table = np.zeros((d, d), np.int64)
    np.add.at(table, (pred, target), 1)
    best = max(table[np.arange(d), list(perm)].sum() for perm in itertools.permutations(range(d)))
    return best / pred.size


@pytest.mark.parametrize("n_clusters,n_classes", [(1, 1), (3, 3), (5, 3), (2, 6), (6, 6)])
@pytest.mark.parametrize("seed", range(4))
def test_cluster_accuracy_equals_brute_force(n_clusters, n_classes, seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, n_classes, 60)
    noisy = rng.random(60) < 0.4
    pred = np.where(noisy, rng.integers(0, n_clusters, 60), target % n_clusters)
    assert metrics.cluster_accuracy(pred, target) == pytest.approx(
        brute_force_accuracy(pred, target), abs=1e-12)


def test_relabelled_clustering_has_accuracy_one():
    target = np.random.default_rng(0).integers(0, 10, 1000)
    relabel = np.random.default_rng(1).permutation(10) + 3  # cluster ids need not be 0..C-1
    assert metrics.cluster_accuracy(relabel[target], target) == 1.0
    assert metrics.nmi(relabel[target], target) == pytest.approx(1.0)
    assert metrics.ari(relabel[target], target) == pytest.approx(1.0)


def test_unmatched_clusters_count_as_wrong():
    target = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 2, 2, 3])  # four clusters, two classes: two clusters unmatched
    assert metrics.cluster_accuracy(pred, target) == pytest.approx(4 / 6)
    assert metrics.cluster_accuracy(target, pred) == pytest.approx(4 / 6)


def test_nmi_and_ari_equal_scikit_learn():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 7, 500)
    pred = np.where(rng.random(500) < 0.5, target, rng.integers(0, 9, 500))
    assert metrics.nmi(pred, target) == pytest.approx(normalized_mutual_info_score(target, pred),
                                                      abs=1e-12)
    assert metrics.ari(pred, target) == pytest.approx(adjusted_rand_score(target, pred),
                                                      abs=1e-12)
    assert 0 < metrics.ari(pred, target) < metrics.nmi(pred, target) < 1
    assert isinstance(metrics.nmi(pred, target), float)
    # NMI and ARI take any integers, negative ones included (-1 = noise)
    assert metrics.nmi(pred - 1, target) == pytest.approx(metrics.nmi(pred, target))


def test_torch_lists_and_int32_inputs():
    torch = pytest.importorskip("torch")
    target = np.random.default_rng(3).integers(0, 4, 100)
    pred = (target + (np.arange(100) % 5 == 0)) % 4
    expected = [f(pred, target) for f in (metrics.cluster_accuracy, metrics.nmi, metrics.ari)]
    assert expected[0] == pytest.approx(0.8)
    for p, t in [(torch.from_numpy(pred), torch.from_numpy(target)),
                 (pred.tolist(), target.astype(np.int32)),
                 (pred.astype(np.uint8), torch.from_numpy(target).to(torch.int32))]:
        got = [f(p, t) for f in (metrics.cluster_accuracy, metrics.nmi, metrics.ari)]
        assert got == expected


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
def test_gpu_labels(kind):
    target = np.random.default_rng(4).integers(0, 5, 300)
    pred = np.where(np.arange(300) % 3 == 0, 0, target)
    if kind == "cupy":
        import cupy

        p, t = cupy.asarray(pred), cupy.asarray(target)
    else:
        import torch

        p, t = torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda()
    for f in (metrics.cluster_accuracy, metrics.nmi, metrics.ari):
        assert f(p, t) == f(pred, target)


PRED = np.array([0, 1, 1, 2, 0])
TARGET = np.array([1, 1, 0, 0, 2])

BAD = [
    (dict(pred=PRED.astype(np.float32)), TypeError, "pred must hold integer labels"),
    (dict(target=TARGET.astype(bool)), TypeError, "target must hold integer labels"),
    (dict(pred="abc"), TypeError, "pred"),
    (dict(pred=None), TypeError, "pred must be an array"),
    (dict(pred=PRED[None]), ValueError, "pred must be 1-D"),
    (dict(target=TARGET.reshape(5, 1)), ValueError, "target must be 1-D"),
    (dict(pred=PRED[:0], target=TARGET[:0]), ValueError, "pred is empty"),
    (dict(target=TARGET[:4]), ValueError, "target has 4 entries but pred has 5"),
]


@pytest.mark.parametrize("fn", [metrics.cluster_accuracy, metrics.nmi, metrics.ari])
@pytest.mark.parametrize("kwargs,exc,message", BAD)
def test_bad_input_is_rejected(fn, kwargs, exc, message):
    kwargs = {"pred": PRED, "target": TARGET, **kwargs}
    before = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    with pytest.raises(exc, match=message):
        fn(**kwargs)
    for key, value in before.items():
        np.testing.assert_array_equal(kwargs[key], value)


@pytest.mark.parametrize("name", ["pred", "target"])
def test_cluster_accuracy_rejects_negative_labels(name):
    kwargs = {"pred": PRED.copy(), "target": TARGET.copy()}
    kwargs[name][2] = -1
    with pytest.raises(ValueError, match=f"{name} must be non-negative"):
        metrics.cluster_accuracy(**kwargs)
    assert kwargs[name][2] == -1
