"""label_clusterability, select_k and the HDLLabeler estimator."""
import numpy as np
import pytest
from sklearn.base import clone

import hdlfast
from conftest import CPU_BACKENDS, few_labels, reference_knn
from hdlfast.datasets import digits, hypersphere_mixture


@pytest.fixture(scope="module")
def mixture():
    return hypersphere_mixture(800, 24, n_classes=5, spread=1.2, imbalance=3, seed=4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_label_clusterability_matches_reference(mixture, backend):
    x, y = mixture
    lab = few_labels(y, 30, seed=1)
    ks = [1, 3, 10, 40, 149, 150, 500]
    out = hdlfast.label_clusterability(x, lab, ks, backend=backend)
    known = np.nonzero(lab >= 0)[0]
    _, nbr, _ = reference_knn(x[known], x[known], 149, exclude_self=True)
    same = lab[known][nbr] == lab[known][:, None]
    assert out["k"] == [1, 3, 10, 40, 149]  # k above (labeled - 1) is dropped
    for k, mu, a in zip(out["k"], out["mu"], out["agreement"]):
        assert mu == pytest.approx(same[:, :k].all(axis=1).mean())
        assert a == pytest.approx(same[:, :k].mean())
    assert all(0 <= m <= a <= 1 for m, a in zip(out["mu"], out["agreement"]))


def test_select_k_holdout_scores_are_hidden_fold_accuracy(mixture):
    x, y = mixture
    lab = few_labels(y, 6, seed=2)
    sel = hdlfast.select_k(x, lab, candidates=[4, 8, 16], n_folds=3, seed=5)
    assert sel.rule == "holdout" and set(sel.scores) == {4, 8, 16}
    assert sel.k == max(sel.scores, key=lambda k: (sel.scores[k], -k))
    # recompute the score of k=8 by hand: the same stratified folds, HDL on the rest
    rng = np.random.default_rng(5)
    folds = np.full(lab.shape[0], -1)
    for c in np.unique(lab[lab >= 0]):
        members = rng.permutation(np.nonzero(lab == c)[0])
        folds[members] = np.arange(members.size) % 3
    accs = []
    for f in range(3):
        train = lab.copy()
        train[folds == f] = -1
        res = hdlfast.hdl(x, train, 8)
        accs.append((res.labels[folds == f] == lab[folds == f]).mean())
    assert sel.scores[8] == pytest.approx(np.mean(accs))
    assert hdlfast.select_k(x, lab, candidates=[4, 8, 16], n_folds=3, seed=5).k == sel.k


def test_select_k_with_one_label_per_class_uses_consensus(mixture):
    x, y = mixture
    lab = few_labels(y, 1, seed=3)
    cands = [3, 6, 12]
    sel = hdlfast.select_k(x, lab, candidates=cands)
    assert sel.rule == "consensus"
    runs = {k: hdlfast.hdl(x, lab, k).labels for k in cands}
    for k in cands:
        expected = np.mean([(runs[k] == runs[j]).mean() for j in cands if j != k])
        assert sel.scores[k] == pytest.approx(expected)
    assert sel.k == max(cands, key=lambda k: (sel.scores[k], -k))
    assert sel.clusterability["mu"] == [0.0, 0.0] or all(m < 0.9 for m in
                                                         sel.clusterability["mu"])


def test_select_k_bad_input(mixture):
    x, y = mixture
    with pytest.raises(ValueError, match="candidates"):
        hdlfast.select_k(x, few_labels(y, 2, 0), candidates=[5000])
    with pytest.raises(ValueError, match="labels"):
        hdlfast.select_k(x, np.full(len(y), -1))
    with pytest.raises(ValueError, match="candidates"):
        hdlfast.select_k(x, few_labels(y, 2, 0), candidates=[0, 5])


def test_hdl_labeler_matches_functions_and_is_a_sklearn_estimator():
    x, y = digits()
    lab = few_labels(y, 3, seed=7)
    clf = hdlfast.HDLLabeler(k=10).fit(x[:1500], lab[:1500])
    res = hdlfast.hdl(x[:1500], lab[:1500], 10)
    np.testing.assert_array_equal(clf.transduction_, res.labels)
    np.testing.assert_array_equal(clf.level_, res.level)
    np.testing.assert_array_equal(clf.provenance_, res.provenance)
    np.testing.assert_allclose(clf.label_confidence_, res.confidence)
    pred = clf.predict(x[1500:])
    ref, _ = hdlfast.vote_against(x[1500:], x[:1500], res.labels, 10)
    np.testing.assert_array_equal(pred, ref)
    assert clf.score(x[1500:], y[1500:]) > 0.8
    assert clone(clf).get_params()["k"] == 10
    auto = hdlfast.HDLLabeler(k="auto", candidates=(5, 10)).fit(x, lab)
    assert auto.k_ == auto.selection_.k in (5, 10)
    dv = hdlfast.HDLLabeler(k=10, method="knn-dv").fit(x, lab)
    np.testing.assert_array_equal(dv.transduction_, hdlfast.knn_vote(x, lab, 10)[0])
    assert set(np.unique(dv.provenance_)) == {0, 3}
    with pytest.raises(ValueError, match="not fitted"):
        hdlfast.HDLLabeler().predict(x)
    with pytest.raises(ValueError, match="method"):
        hdlfast.HDLLabeler(method="spread").fit(x, lab)


@pytest.mark.parametrize("weighting", ["similarity", "uniform"])
def test_hdl_labeler_predict_proba_is_the_vote(weighting):
    """Each row sums to 1, the predicted class has the largest share, and the shares are the
    vote weights of a float64 reference; before fit: scikit-learn's NotFittedError."""
    from sklearn.exceptions import NotFittedError

    x, y = digits()
    lab = few_labels(y, 3, seed=8)
    clf = hdlfast.HDLLabeler(k=10, weighting=weighting)
    with pytest.raises(NotFittedError):
        clf.predict_proba(x[1500:])
    with pytest.raises(NotFittedError):
        clf.predict(x[1500:])
    clf.fit(x[:1500], lab[:1500])
    proba = clf.predict_proba(x[1500:])
    assert proba.shape == (len(x) - 1500, len(clf.classes_)) and clf.n_features_in_ == x.shape[1]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    pred = clf.predict(x[1500:])
    best = proba.max(axis=1)
    assert (proba[np.arange(len(pred)), np.searchsorted(clf.classes_, pred)] == best).all()
    # reference: the 10 nearest fitted points by exact float64 cosine, their labels, weights
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u[1500:] @ u[:1500].T
    nbr = np.argsort(-s, axis=1, kind="stable")[:, :10]
    w = np.ones(nbr.shape) if weighting == "uniform" else \
        np.maximum(np.take_along_axis(s, nbr, 1), 0)
    ref = np.zeros_like(proba)
    for c_i, c in enumerate(clf.classes_):
        ref[:, c_i] = (w * (clf.transduction_[nbr] == c)).sum(1)
    np.testing.assert_allclose(proba, ref / ref.sum(1, keepdims=True), atol=1e-5)
