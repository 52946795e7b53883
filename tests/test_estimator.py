"""HDLLabeler as a scikit-learn estimator: check_estimator, label encoding, input conversion."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

import hdlfast
from hdlfast.datasets import synthetic_embeddings
from hdlfast.estimator import EXPECTED_FAILED_CHECKS


@parametrize_with_checks([hdlfast.HDLLabeler(k=3)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_check(estimator, check):
    check(estimator)


def test_expected_failures_still_fail():
    """Each documented exclusion is a real conflict: the check fails for the stated reason
    (so the list cannot go stale once a change makes a check pass)."""
    results = check_estimator(hdlfast.HDLLabeler(k=3), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == set(EXPECTED_FAILED_CHECKS)


def _data(n=300, d=16, seed=0):
    x, y = synthetic_embeddings(n, d, n_classes=4, spread=1.5, seed=seed)
    labels = np.full(n, -1, np.int64)
    labels[::10] = y[::10]
    return x, y, labels


def test_labels_are_encoded_and_decoded():
    """Any label values (non-contiguous integers, objects with -1 for unlabeled, strings)
    give the labeling of the integer classes 0..C-1 mapped through classes_."""
    x, truth, labels = _data()
    values = np.array(["ant", "bee", "cat", "dog"])
    cases = [(np.array([3, 7, 11, 400]), labels),   # integers, -1 unlabeled
             (values.astype(object), labels),       # objects, the integer -1 unlabeled
             (values, truth)]                       # strings cannot hold -1: all labeled
    for classes, codes in cases:
        y = classes[np.maximum(codes, 0)]
        if (codes < 0).any():
            y[codes < 0] = -1
        ref = hdlfast.HDLLabeler(k=10).fit(x, codes)
        clf = hdlfast.HDLLabeler(k=10).fit(x, y)
        np.testing.assert_array_equal(clf.classes_, classes)
        np.testing.assert_array_equal(clf.transduction_, classes[ref.transduction_])
        np.testing.assert_array_equal(clf.result_.labels, ref.result_.labels)
        np.testing.assert_array_equal(clf.predict(x[:50]), classes[ref.predict(x[:50])])
        np.testing.assert_array_equal(clf.predict_proba(x[:50]), ref.predict_proba(x[:50]))


def test_transduction_matches_hdl():
    x, _, labels = _data()
    clf = hdlfast.HDLLabeler(k=10).fit(x, labels)
    res = hdlfast.hdl(x, labels, 10)
    np.testing.assert_array_equal(clf.transduction_, res.labels)
    np.testing.assert_array_equal(clf.label_confidence_, res.confidence)


def test_unreached_points_stay_minus_one():
    """fallback=None can leave points unlabeled: -1 in transduction_, even for string classes
    (which then come back as an object array)."""
    x, _, labels = _data()
    y = np.array(["a", "b", "c", "d"], dtype=object)[np.maximum(labels, 0)]
    y[labels < 0] = -1
    clf = hdlfast.HDLLabeler(k=10, method="tree", fallback=None, max_visits=1).fit(x, y)
    codes = clf.result_.labels
    assert (codes < 0).any(), "the case needs an unreached point"
    assert clf.transduction_.dtype == object
    assert all(v == -1 for v in clf.transduction_[codes < 0])


def test_host_input_is_converted_like_scikit_learn():
    """Integer X becomes float32; a pandas DataFrame records its feature names; a column y is
    flattened with scikit-learn's DataConversionWarning; the caller's arrays are untouched."""
    pd = pytest.importorskip("pandas")
    x, _, labels = _data()
    xi = np.round(x * 100).astype(np.int64)
    before = xi.copy()
    a = hdlfast.HDLLabeler(k=10).fit(xi, labels)
    b = hdlfast.HDLLabeler(k=10).fit(xi.astype(np.float32), labels)
    np.testing.assert_array_equal(a.transduction_, b.transduction_)
    np.testing.assert_array_equal(xi, before)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    clf = hdlfast.HDLLabeler(k=10).fit(df, labels)
    assert list(clf.feature_names_in_) == list(df.columns)
    with pytest.warns(Warning, match="column-vector y"):
        hdlfast.HDLLabeler(k=10).fit(x, labels[:, None])


def test_torch_input_stays_a_tensor_path():
    torch = pytest.importorskip("torch")
    x, _, labels = _data()
    t = torch.from_numpy(np.round(x * 100).astype(np.int32))
    a = hdlfast.HDLLabeler(k=10).fit(t, torch.from_numpy(labels))
    b = hdlfast.HDLLabeler(k=10).fit(t.float().numpy(), labels)
    np.testing.assert_array_equal(a.transduction_, b.transduction_)
    assert t.dtype == torch.int32
    with pytest.raises(ValueError, match="X has 3 features"):
        a.predict(t[:, :3].float())


def test_not_fitted_and_sparse():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(NotFittedError):
        hdlfast.HDLLabeler().predict_proba(np.ones((2, 3), np.float32))
    m = sparse.random(30, 5, density=0.5, format="csr", random_state=0)
    with pytest.raises(TypeError, match="X.*[Ss]parse"):
        hdlfast.HDLLabeler(k=3).fit(m, np.arange(30) % 3)
    with pytest.raises(TypeError, match="queries.*sparse"):
        hdlfast.knn(m, 3)


@pytest.mark.parametrize("method", ["hdl", "tree"])
def test_auto_k_searches_one_graph(method, monkeypatch):
    """k="auto" builds one kNN graph of all points, at the largest candidate: select_k chooses
    k_ on it and its first k_ columns label (the labels of hdl on that graph)."""
    from hdlfast.clusterability import DEFAULT_CANDIDATES
    from hdlfast.knn import host

    x, _, labels = _data(n=400)
    calls = []
    real = host.HostKNN.__call__

    def counting(self, q, db, k, **kwargs):
        calls.append((q.shape[0], db is None, k))
        return real(self, q, db, k, **kwargs)

    monkeypatch.setattr(host.HostKNN, "__call__", counting)
    est = hdlfast.HDLLabeler(k="auto", method=method).fit(x, labels)
    assert [c for c in calls if c[0] == x.shape[0]] == [(400, True, max(DEFAULT_CANDIDATES))]
    monkeypatch.setattr(host.HostKNN, "__call__", real)
    ref = hdlfast.hdl(x, labels, est.k_, graph=hdlfast.knn(x, max(DEFAULT_CANDIDATES)),
                      method=method)
    np.testing.assert_array_equal(est.result_.labels, ref.labels)
    np.testing.assert_array_equal(est.transduction_, ref.labels)
