import numpy as np
import pytest

import hdlfast
from hdlfast import _backend

CPU_BACKENDS = [b for b in ("native", "numba") if _backend.usable(b)]


def _gpu_kinds():
    kinds = []
    try:
        import torch

        if torch.cuda.is_available():
            kinds.append("torch-cuda")
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            kinds.append("cupy")
    except Exception:  # noqa: BLE001 - no cupy, or no driver
        pass
    return kinds


GPU_KINDS = _gpu_kinds()
HAS_CUDA_BACKEND = _backend.usable("cuda")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA_BACKEND and GPU_KINDS:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU with cupy or torch visible")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def clustered(n, d, seed, n_centres=6, spread=0.3):
    """(n, d) float32 points around n_centres Gaussian centres (spread: the noise scale)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, d))
    x = centres[rng.integers(0, n_centres, n)] + spread * rng.standard_normal((n, d))
    return x.astype(np.float32)


def few_labels(y, per_class, seed):
    """Labels with ``per_class`` seeded points of every class of ``y`` kept, the rest -1."""
    rng = np.random.default_rng(seed)
    lab = np.full(y.shape[0], -1)
    for c in np.unique(y):
        lab[rng.choice(np.nonzero(y == c)[0], per_class, replace=False)] = c
    return lab


def to_kind(x: np.ndarray, kind: str, dtype: str = "float32"):
    """x (numpy) as an array of the given kind and dtype."""
    if kind == "numpy":
        if dtype == "bfloat16":
            import ml_dtypes

            return x.astype(ml_dtypes.bfloat16)
        return x.astype(dtype)
    if kind in ("torch", "torch-cuda"):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(getattr(torch, dtype))
        return t.cuda() if kind == "torch-cuda" else t
    if kind == "cupy":
        import cupy

        return cupy.asarray(x.astype(dtype))
    raise ValueError(kind)


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def reference_knn(q, db, k, exclude_self):
    """float64 NumPy reference: (sims, idx) with the tie rule of the docs (sim desc, index asc)."""
    q = np.asarray(q, np.float64)
    db = np.asarray(db, np.float64)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = db / np.linalg.norm(db, axis=1, keepdims=True)
    s = qn @ dn.T
    if exclude_self:
        s[np.arange(len(q)), np.arange(len(q))] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), order, s


def assert_knn(sims, idx, q, db, k, exclude_self, atol=1e-5):
    """Check a kNN result against the float64 reference, tolerating only near-ties."""
    sims, idx = to_numpy(sims), to_numpy(idx)
    assert sims.dtype == np.float32 and idx.dtype == np.int64
    assert sims.shape == idx.shape == (len(q), k)
    ref_s, ref_i, full = reference_knn(q, db, k, exclude_self)
    rows = np.arange(len(q))[:, None]
    # every returned index is real, its similarity is the one reported, and the k best
    assert idx.min() >= 0 and idx.max() < len(db)
    np.testing.assert_allclose(sims, full[rows, idx], atol=atol)
    np.testing.assert_allclose(sims, ref_s, atol=atol)
    for r in range(len(q)):
        assert len(set(idx[r].tolist())) == k, "duplicate neighbour"
    if exclude_self:
        assert not (idx == np.arange(len(q))[:, None]).any(), "self not excluded"
    # order: similarity descending; equal similarity -> smaller index first
    assert (np.diff(sims, axis=1) <= 0).all()
    eq = np.diff(sims, axis=1) == 0
    assert (np.diff(idx, axis=1)[eq] > 0).all()
    # indices equal the reference wherever the reference has no near-tie around them
    gap = np.full(full.shape[0], np.inf)
    srt = -np.sort(-full, axis=1)
    for r in range(len(q)):
        top = srt[r, : min(k + 1, srt.shape[1])]
        if len(top) > 1:
            gap[r] = np.min(np.abs(np.diff(top)))
    clear = gap > 4 * atol
    np.testing.assert_array_equal(idx[clear], ref_i[clear])


def sela_loop(probs, lamb, tol=0.1):
    """SeLa's optimize_L_sk (sinkhornknopp.py) transcribed in float64 from a reading of it, on
    (N, K) probabilities: (labels, plan (N, K), iterations). Its rule: stop once
    sum |c / c_new - 1| <= tol, checked every 10 iterations from the first."""
    ps = probs.T.astype(np.float64) ** lamb  # K x N
    k, n = ps.shape
    c = np.ones((n, 1)) / n
    err, counter = 1e6, 0
    while err > tol:
        r = (1.0 / k) / (ps @ c)
        c_new = (1.0 / n) / (r.T @ ps).T
        if counter % 10 == 0:
            err = np.nansum(np.abs(c / c_new - 1))
        c = c_new
        counter += 1
    plan = ps * c.T * r
    return np.nanargmax(plan, axis=0), plan.T, counter


def swav_reference(scores, epsilon=0.05, n_iters=3):
    """SwAV's distributed_sinkhorn (main_swav.py), single process, float64."""
    q = np.exp(scores / epsilon).T  # K x B
    k, b = q.shape
    q /= q.sum()
    for _ in range(n_iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    q *= b
    return q.T


def strided_view(a: np.ndarray) -> np.ndarray:
    """A non-C-contiguous view with a's shape and values (every other column of a wider copy),
    for the tests that kernel boundaries refuse strided arrays."""
    wide = np.repeat(a[..., None], 2, axis=-1) if a.ndim == 1 else np.repeat(a, 2, axis=1)
    view = wide[..., 0] if a.ndim == 1 else wide[:, ::2]
    assert view.shape == a.shape and not view.flags.c_contiguous
    return view
