"""SPEC "Bad input" for knn and reverse_graph: error type, argument named, caller unchanged."""
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


def test_arrays_on_two_devices_are_refused():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    with pytest.raises(ValueError, match="same device"):
        hdlfast.knn(torch.from_numpy(X).cuda(), 2, database=torch.from_numpy(X))
