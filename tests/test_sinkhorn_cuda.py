"""CUDA Sinkhorn-Knopp kernels (hdlfast._cuda via hdlfast.sinkhorn.cuda.SinkhornState) against the CPU
kernels on the same scores: Q to float rounding, labels (near-ties aside) equal. Skipped where no
CUDA GPU with torch or cupy is visible."""
import numpy as np
import pytest

import hdlfast
from hdlfast import _backend
from conftest import GPU_KINDS, to_kind, to_numpy

KINDS = GPU_KINDS or ["torch-cuda"]
CPU = "native" if _backend.usable("native") else "numba"


def logits(n, k, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal((n, k))).astype(np.float32)


def same_place(out, like):
    assert type(out) is type(like)
    assert out.device == like.device


def compare(s_np, s_gpu, rtol=1e-5, **kw):
    q, labels = hdlfast.sinkhorn(s_gpu, backend="cuda", **kw)
    ref_q, ref_labels = hdlfast.sinkhorn(s_np, backend=CPU, **kw)
    same_place(q, s_gpu)
    same_place(labels, s_gpu)
    q, labels = to_numpy(q), to_numpy(labels)
    assert q.dtype == np.float32 and labels.dtype == np.int64
    assert q.shape == s_np.shape and labels.shape == (s_np.shape[0],)
    np.testing.assert_allclose(q, ref_q, rtol=rtol, atol=1e-7)
    assert (labels == ref_labels).mean() > 0.999
    return q, labels


# (n, k): rows not a multiple of the 256-row chunk or of the 8-row group; k > 4096 takes the
# unfused path (row-dot kernel, then column tiles).
SHAPES = [(1, 3), (1003, 37), (4096, 300), (300, 5000)]


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_swav_matches_cpu(kind, n, k):
    s = logits(n, k, seed=n + k)
    compare(s, to_kind(s, kind), kind="swav")


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lam", [10, 2.5])
def test_sela_probabilities_match_cpu(kind, lam):
    """probs=True on the GPU goes through float32 logs taken on the device; the CPU raises
    whole-number powers directly: the same plan to the logs' rounding."""
    p = np.exp(logits(1003, 37, seed=5, scale=0.5).astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    compare(p, to_kind(p, kind), rtol=2e-5, kind="sela", lam=lam, probs=True)
    bad = p.copy()
    bad[7, 3] = -1.0
    with pytest.raises(ValueError, match="row 7 "):
        hdlfast.sinkhorn(to_kind(bad, kind), kind="sela", lam=lam, probs=True, backend="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_sela_matches_cpu(kind, n, k):
    s = logits(n, k, seed=2 * n + k, scale=3.0)
    q, labels = compare(s, to_kind(s, kind), kind="sela", lam=10.0, n_iters=50, tol=0.0)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_sela_default_tolerance_and_priors(kind):
    s = logits(2000, 50, seed=3, scale=2.0)
    rng = np.random.default_rng(4)
    prior = rng.uniform(0.1, 1.0, 50)
    prior /= prior.sum()
    w = rng.uniform(0.5, 2.0, 2000)
    kw = dict(kind="sela", lam=20.0, n_iters=200, tol=0.0, cluster_prior=prior,
              sample_weight=w)
    q, _ = compare(s, to_kind(s, kind), **kw)
    col = (q * (w / w.sum())[:, None]).sum(axis=0)
    np.testing.assert_allclose(col, prior, atol=1e-3)
    # default stopping rule (tol 1e-4): same labels as the CPU run
    q, labels = hdlfast.sinkhorn(to_kind(s, kind), kind="sela", backend="cuda")
    _, ref_labels = hdlfast.sinkhorn(s, kind="sela", backend=CPU)
    assert (to_numpy(labels) == ref_labels).mean() > 0.999


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_repeated_runs_are_bit_identical(kind):
    s = to_kind(logits(3000, 100, seed=5), kind)
    a = [to_numpy(x) for x in hdlfast.sinkhorn(s, kind="sela", backend="cuda", n_iters=30)]
    b = [to_numpy(x) for x in hdlfast.sinkhorn(s, kind="sela", backend="cuda", n_iters=30)]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_scores(kind, dtype):
    if kind == "cupy" and dtype == "bfloat16":
        pytest.skip("cupy has no bfloat16")
    s = to_kind(logits(1000, 40, seed=9, scale=20.0), kind, dtype)
    s_np = to_numpy(s).astype(np.float32)  # the same (rounded) values on the CPU
    q, _ = compare(s_np, s, kind="sela", lam=50.0, n_iters=100, tol=0.0)
    assert np.isfinite(q).all()


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("skind,param", [("sela", {"lam": 100.0}), ("swav", {"epsilon": 0.01})])
def test_extreme_temperatures_on_large_logits_stay_finite(kind, skind, param):
    s = np.random.default_rng(8).uniform(-50, 50, (3000, 100)).astype(np.float32)
    q, labels = hdlfast.sinkhorn(to_kind(s, kind), kind=skind, backend="cuda", **param)
    q, labels = to_numpy(q), to_numpy(labels)
    assert np.isfinite(q).all() and (q >= 0).all()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    if skind == "sela":
        counts = np.bincount(labels, minlength=100)
        assert counts.min() >= 20 and counts.max() <= 40


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(kind, bad):
    s = logits(100, 10, seed=6)
    s[37, 4] = bad
    s[60, 1] = bad
    with pytest.raises(ValueError, match=r"scores holds NaN or Inf \(row 37\)"):
        hdlfast.sinkhorn(to_kind(s, kind), backend="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_caller_array_unchanged_outputs_on_its_device(kind):
    s_np = logits(500, 20, seed=7)
    s = to_kind(s_np, kind)
    q, labels = hdlfast.sinkhorn(s, kind="sela", backend="cuda")
    np.testing.assert_array_equal(to_numpy(s), s_np)
    same_place(q, s)
    same_place(labels, s)
    q2, _ = hdlfast.sinkhorn(s, kind="sela")  # GPU input selects the CUDA backend itself
    np.testing.assert_array_equal(to_numpy(q2), to_numpy(q))


@pytest.mark.cuda
def test_torch_non_contiguous_and_grad_input():
    torch = pytest.importorskip("torch")
    s_np = logits(400, 30, seed=10)
    base = torch.from_numpy(np.ascontiguousarray(s_np.T)).cuda().requires_grad_(True)
    s = base.t()  # a non-contiguous view that requires grad
    assert not s.is_contiguous()
    compare(s_np, s, kind="swav")


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_float64_scores_read_as_float32(kind):
    """float64 GPU scores are computed in float32 (a copy; the caller's array is untouched):
    the same plan as the float32 scores on the CPU."""
    s_np = logits(300, 7, seed=1)
    s = to_kind(s_np.astype(np.float64), kind, "float64")
    before = to_numpy(s).copy()
    compare(s_np, s, kind="swav")
    np.testing.assert_array_equal(to_numpy(s), before)
