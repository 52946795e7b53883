"""docs: bad input for knn and reverse_graph: error type, argument named, caller unchanged."""
import numpy as np
import pytest

import hdlfast
from conftest import CPU_BACKENDS

X = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)


def with_row(value):
    x = X.copy()
    x[3] = value
    return x


CASES = [
    (dict(queries=X[0], k=3), ValueError, "queries must be 2-D"),
    (dict(queries=X[None], k=3), ValueError, "queries must be 2-D"),
    (dict(queries=np.zeros((0, 4), np.float32), k=1), ValueError, "queries is empty"),
    (dict(queries=np.zeros((5, 0), np.float32), k=1), ValueError, "queries is empty"),
    (dict(queries=with_row(np.nan), k=3), ValueError, "queries holds NaN or Inf"),
    (dict(queries=with_row(np.inf), k=3), ValueError, "queries holds NaN or Inf"),
    (dict(queries=with_row(0.0), k=3), ValueError, "queries has a zero-norm row"),
    (dict(queries=X.astype(np.int32), k=3), TypeError, "queries must hold floating-point"),
    (dict(queries=X.astype(np.complex64), k=3), TypeError, "queries must hold floating-point"),
    (dict(queries=X.astype(bool), k=3), TypeError, "queries must hold floating-point"),
    (dict(queries="abc", k=3), TypeError, "queries must be an array"),
    (dict(queries=X, k=0), ValueError, "k must be >= 1"),
    (dict(queries=X, k=-2), ValueError, "k must be >= 1"),
    (dict(queries=X, k=2.5), TypeError, "k must be an integer"),
    (dict(queries=X, k=True), TypeError, "k must be an integer"),
    (dict(queries=X, k=20), ValueError, "k=20 is larger than the 19"),
    (dict(queries=X, k=21, exclude_self=False), ValueError, "k=21 is larger than the 20"),
    (dict(queries=X, k=5, database=X[:4]), ValueError, "k=5 is larger than the 4 database"),
    (dict(queries=X, k=2, database=X[:, :3]), ValueError, "queries has 4 columns but database"),
    (dict(queries=X, k=2, database=with_row(np.nan)), ValueError, "database holds NaN"),
    (dict(queries=X, k=2, database=with_row(0.0)), ValueError, "database has a zero-norm row"),
    (dict(queries=X[:5], k=2, database=X, exclude_self=True), ValueError, "exclude_self=True"),
    (dict(queries=X, k=2, backend="gpu"), ValueError, "backend must be one of"),
    (dict(queries=X, k=2, memory_budget=0), ValueError, "memory_budget must be >= 1"),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kwargs,exc,message", CASES)
def test_bad_input_is_rejected_clearly(backend, kwargs, exc, message):
    kwargs = dict(kwargs)
    kwargs.setdefault("backend", backend)
    arrays = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    with pytest.raises(exc, match=message.replace("(", r"\(")):
        hdlfast.knn(**kwargs)
    for key, before in arrays.items():
        np.testing.assert_array_equal(kwargs[key], before)


def test_torch_bad_inputs():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(X.copy())
    with pytest.raises(TypeError, match="queries must hold floating-point"):
        hdlfast.knn(x.to(torch.int64), 3)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"queries holds NaN or Inf \(row 2\)"):
        hdlfast.knn(bad, 3)
    assert torch.isnan(bad[2, 1])  # untouched
    with pytest.raises(ValueError, match="queries must be 2-D"):
        hdlfast.knn(x[0], 3)


@pytest.mark.cuda
def test_arrays_on_two_devices_are_refused():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    with pytest.raises(ValueError, match="same device"):
        hdlfast.knn(torch.from_numpy(X).cuda(), 2, database=torch.from_numpy(X))


# --- integers that do not fit, and graphs too large for the machine ---------------------------

BIG = np.uint64(2**63 + 5)  # int64 would read it as a negative number (as -1 = unlabeled)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_unsigned_labels_beyond_int64_are_refused(backend):
    y = np.zeros(20, np.uint64)
    y[:3] = [0, 1, 2]
    y[5] = BIG
    before = y.copy()
    for call in (lambda: hdlfast.hdl(X, y, 3, backend=backend),
                 lambda: hdlfast.knn_vote(X, y, 3, backend=backend),
                 lambda: hdlfast.label_clusterability(X, y, (1,), backend=backend)):
        with pytest.raises(ValueError, match="labels holds 9223372036854775813"):
            call()
    y[5] = np.uint64(2**64 - 1)  # the value a cast would wrap to -1
    with pytest.raises(ValueError, match="labels holds 18446744073709551615"):
        hdlfast.hdl(X, y, 3, backend=backend)
    np.testing.assert_array_equal(y[:5], before[:5])
    with pytest.raises(ValueError, match="target holds 9223372036854775813"):
        hdlfast.cluster_accuracy(np.zeros(20, np.int64), np.full(20, BIG))
    with pytest.raises(ValueError, match="idx holds 9223372036854775813"):
        hdlfast.reverse_graph(np.full((3, 2), BIG))


def test_torch_uint64_labels_beyond_int64_are_refused():
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "uint64"):
        pytest.skip("torch without uint64")
    y = np.zeros(20, np.uint64)
    y[5] = BIG
    y = torch.from_numpy(y)
    with pytest.raises(ValueError, match="labels holds 9223372036854775813"):
        hdlfast.knn_vote(torch.from_numpy(X), y, 3)


def test_reverse_graph_refuses_sizes_before_allocating(monkeypatch):
    idx = np.zeros((4, 2), np.int64)
    with pytest.raises(ValueError, match=r"^n: 2147483648 points; at most 2\*\*31 - 1"):
        hdlfast.reverse_graph(idx, n=2**31)
    idx[1, 1] = 2**31  # one index far beyond the rows: n = max + 1 would be 16 GiB of offsets
    with pytest.raises(ValueError, match=r"idx \(n = max\(idx\) \+ 1\): 2147483649 points"):
        hdlfast.reverse_graph(idx)
    from hdlfast import _checks

    monkeypatch.setattr(_checks, "available_memory", lambda: 1 << 30)  # a 1 GiB machine
    with pytest.raises(ValueError, match=r"^n: the reverse graph of 1000000000 points would "
                                         r"need 7.5 GiB, more than the 1.0 GiB"):
        hdlfast.reverse_graph(np.zeros((4, 2), np.int64), n=10**9)
    indptr, _ = hdlfast.reverse_graph(np.zeros((4, 2), np.int64), n=10**6)  # 8 MB: fine
    assert indptr.shape == (10**6 + 1,)
