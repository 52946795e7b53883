"""hdlfast.sinkhorn: parity with SwAV, SeLa and POT, marginals, numerics, backends, ranks."""
import importlib

import numpy as np
import pytest

import hdlfast
from conftest import CPU_BACKENDS, sela_loop, swav_reference, to_kind, to_numpy

sk_module = importlib.import_module("hdlfast.sinkhorn")  # the function shadows the module


def sela_reference(scores, lam=25.0, tol=0.1, iterations=False):
    """SeLa's optimize_L_sk (sinkhornknopp.py) on softmax probabilities, float64; with
    ``iterations`` also the number of iterations it ran."""
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels, _, counter = sela_loop(p, lam, tol)
    return (labels, counter) if iterations else labels


def logits(n, k, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal((n, k))).astype(np.float32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n,k", [(256, 10), (1000, 30), (4096, 300)])
def test_swav_codes_equal_distributed_sinkhorn(backend, n, k):
    # SwAV scores: cosine similarities of normalised features and prototypes
    z = np.random.default_rng(n).standard_normal((n, 16))
    c = np.random.default_rng(k).standard_normal((k, 16))
    scores = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ \
        (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    q, labels = hdlfast.sinkhorn(scores.astype(np.float32), kind="swav", backend=backend)
    ref = swav_reference(scores.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(q, ref, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    assert q.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.argmax(ref, axis=1))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("lam", [10.0, 25.0])
def test_sela_labels_equal_optimize_L_sk(backend, lam):
    s = logits(2000, 50, seed=int(lam), scale=0.3)
    ref_tight = sela_reference(s.astype(np.float64), lam, tol=1e-10)
    _, labels = hdlfast.sinkhorn(s, kind="sela", lam=lam, tol=1e-10, n_iters=100000,
                                 backend=backend)
    np.testing.assert_array_equal(labels, ref_tight)
    # the default stops by SeLa's own rule, from SeLa's start: the same iterations and labels
    res = hdlfast.sinkhorn(s, kind="sela", lam=lam, backend=backend)
    ref, iters = sela_reference(s.astype(np.float64), lam, iterations=True)
    np.testing.assert_array_equal(res.labels, ref)
    assert res.n_iter == iters and iters % 10 == 1
    assert res.error < 1e-2


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_result_reports_iterations_and_error(backend):
    s = logits(500, 20, seed=3)
    res = hdlfast.sinkhorn(s, backend=backend)
    q, labels = res  # unpacks as (Q, labels)
    assert res.Q is q and res.labels is labels and res.n_iter == 3
    q = np.asarray(q, np.float64)
    np.testing.assert_allclose(res.error, np.abs(q.mean(axis=0) - 1 / 20).sum(), atol=1e-6)
    tight = hdlfast.sinkhorn(s, kind="sela", tol=1e-9, n_iters=5000, backend=backend)
    assert tight.error <= 1e-9 < res.error
    with pytest.warns(RuntimeWarning, match="SeLa's stopping rule was not met"):
        hdlfast.sinkhorn(s, kind="sela", n_iters=2, backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_plan_matches_pot(backend):
    ot = pytest.importorskip("ot")
    s = logits(500, 20, seed=3)
    prior = np.random.default_rng(4).dirichlet(np.ones(20))
    weight = np.random.default_rng(5).uniform(0.5, 2.0, 500)
    q, _ = hdlfast.sinkhorn(s, kind="sela", lam=4.0, tol=1e-12, n_iters=100000,
                            cluster_prior=prior, sample_weight=weight, backend=backend)
    a = weight / weight.sum()
    plan = ot.sinkhorn(a, prior, -s.astype(np.float64), 1 / 4.0, stopThr=1e-13,
                       numItermax=1000000)
    mine = q.astype(np.float64) * a[:, None]
    assert np.abs(mine - plan).max() / plan.max() < 1e-5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_long_tailed_prior_and_weights_are_the_marginals(backend):
    s = logits(3000, 12, seed=6, scale=2.0)
    prior = 0.6 ** np.arange(12)
    prior /= prior.sum()
    w = np.random.default_rng(7).uniform(0, 3, 3000)
    q, labels = hdlfast.sinkhorn(s, kind="sela", lam=2.0, tol=1e-9, n_iters=20000,
                                 cluster_prior=prior, sample_weight=w, backend=backend)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose((w[:, None] * q).sum(axis=0) / w.sum(), prior, atol=1e-6)
    np.testing.assert_array_equal(labels, np.argmax(q, axis=1))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind,param", [("sela", {"lam": 100.0}), ("swav", {"epsilon": 0.01})])
def test_extreme_temperatures_on_large_logits_stay_finite(backend, kind, param):
    s = np.random.default_rng(8).uniform(-50, 50, (3000, 100)).astype(np.float32)
    q, labels = hdlfast.sinkhorn(s, kind=kind, backend=backend, **param)
    assert np.isfinite(q).all() and (q >= 0).all()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    if kind == "sela":  # converged: every cluster gets its share
        counts = np.bincount(labels, minlength=100)
        assert counts.min() >= 20 and counts.max() <= 40


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_scores(dtype):
    s = logits(1000, 40, seed=9, scale=20.0)
    low = to_kind(s, "numpy", dtype)
    q, labels = hdlfast.sinkhorn(low, kind="sela", lam=50.0)
    assert np.isfinite(q).all()
    ref, ref_labels = hdlfast.sinkhorn(np.asarray(low, np.float32), kind="sela", lam=50.0)
    np.testing.assert_array_equal(q, ref)


@pytest.mark.parametrize("block", [64, 4096])  # several blocks of rows, or one
def test_log_domain_path_equals_scaling_path(block):
    s = logits(700, 15, seed=10)
    q, labels = hdlfast.sinkhorn(s, kind="sela", lam=3.0, tol=1e-10, n_iters=10000)
    q_log = np.empty_like(q)
    r = np.full(700, 1 / 700)
    c = np.full(15, 1 / 15)
    log_u0 = -3.0 * np.log(np.exp(s.astype(np.float64)).sum(axis=1))  # SeLa's start
    labels_log, it, err = sk_module._log_domain(s, q_log, 3.0, r, c, 10000, 1e-10, False,
                                                log_u0, None, block)
    np.testing.assert_allclose(q_log, q, atol=1e-6)
    np.testing.assert_array_equal(labels_log, labels)
    assert err <= 1e-10 and it == q_labels_iters(s)
    # SeLa's own rule in the log domain: the same iterations as the fused path
    res = hdlfast.sinkhorn(s, kind="sela", lam=3.0)
    labels_log, it, _ = sk_module._log_domain(s, q_log, 3.0, r, c, 10000, None, True, log_u0,
                                              None, block)
    np.testing.assert_array_equal(labels_log, res.labels)
    assert it == res.n_iter


def q_labels_iters(s):
    return hdlfast.sinkhorn(s, kind="sela", lam=3.0, tol=1e-10, n_iters=10000).n_iter


@pytest.mark.skipif(len(CPU_BACKENDS) < 2, reason="needs both native and numba")
def test_native_numba_identical_and_thread_count_free(monkeypatch):
    s = logits(5000, 64, seed=11)
    runs = [hdlfast.sinkhorn(s, kind="sela", backend=b) for b in CPU_BACKENDS]
    monkeypatch.setenv("HDLFAST_NUM_THREADS", "1")
    runs.append(hdlfast.sinkhorn(s, kind="sela", backend="native"))
    for q, labels in runs[1:]:
        np.testing.assert_array_equal(q, runs[0][0])
        np.testing.assert_array_equal(labels, runs[0][1])


def test_torch_in_torch_out_and_input_untouched():
    torch = pytest.importorskip("torch")
    s = torch.from_numpy(logits(300, 8, seed=12)).requires_grad_(True)
    before = s.detach().clone()
    q, labels = hdlfast.sinkhorn(s)
    assert isinstance(q, torch.Tensor) and q.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert torch.equal(s.detach(), before)
    ref, _ = hdlfast.sinkhorn(before.numpy())
    np.testing.assert_array_equal(to_numpy(q), ref)


BAD = [
    (dict(scores=logits(10, 3, 0)[0]), ValueError, "scores must be 2-D"),
    (dict(scores=np.ones((4, 3), np.int64)), TypeError, "scores must hold floating-point"),
    (dict(scores=np.full((4, 3), np.nan, np.float32)), ValueError, "scores holds NaN or Inf"),
    (dict(scores=np.full((4, 3), np.inf, np.float32)), ValueError, "scores holds NaN or Inf"),
    (dict(kind="sk"), ValueError, "kind must be one of"),
    (dict(kind="sela", lam=0), ValueError, "lam must be > 0"),
    (dict(epsilon=-0.1), ValueError, "epsilon must be > 0"),
    (dict(n_iters=0), ValueError, "n_iters must be >= 1"),
    (dict(tol=-1.0), ValueError, "tol must be >= 0"),
    (dict(cluster_prior=[0.5, 0.6, -0.1]), ValueError, "cluster_prior must be non-negative"),
    (dict(cluster_prior=[0.5, 0.2, 0.2]), ValueError, "cluster_prior must sum to 1"),
    (dict(cluster_prior=[0.5, 0.5]), ValueError, r"cluster_prior must have shape \(3,\)"),
    (dict(cluster_prior=[0.5, np.nan, 0.5]), ValueError, "cluster_prior holds NaN"),
    (dict(sample_weight=-np.ones(10)), ValueError, "sample_weight must be non-negative"),
    (dict(sample_weight=np.ones(9)), ValueError, r"sample_weight must have shape \(10,\)"),
    (dict(sample_weight=np.zeros(10)), ValueError, "sample_weight sums to 0"),
]


@pytest.mark.parametrize("kwargs,exc,message", BAD)
def test_bad_input(kwargs, exc, message):
    kwargs = {"scores": logits(10, 3, 0), **kwargs}
    before = {k: np.array(v, copy=True) for k, v in kwargs.items() if hasattr(v, "__len__")}
    with pytest.raises(exc, match=message):
        hdlfast.sinkhorn(**kwargs)
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(kwargs[k]), v)


# --- distributed: 2 CPU processes with gloo -------------------------------------------------


def _rank_main(rank, world, init_file, scores, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    rows = np.array_split(np.arange(scores.shape[0]), world)[rank]
    for kind in ("swav", "sela"):
        q, labels = hdlfast.sinkhorn(scores[rows], kind=kind, process_group=True)
        np.save(f"{out_dir}/{kind}-{rank}-q.npy", q)
        np.save(f"{out_dir}/{kind}-{rank}-labels.npy", labels)
    dist.destroy_process_group()


def test_two_gloo_ranks_reproduce_the_single_process_result(tmp_path):
    mp = pytest.importorskip("torch.multiprocessing")
    scores = logits(1001, 17, seed=13)
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), scores, str(tmp_path)), nprocs=2,
             join=True)
    for kind in ("swav", "sela"):
        q, labels = hdlfast.sinkhorn(scores, kind=kind)
        q2 = np.concatenate([np.load(tmp_path / f"{kind}-{r}-q.npy") for r in range(2)])
        l2 = np.concatenate([np.load(tmp_path / f"{kind}-{r}-labels.npy") for r in range(2)])
        np.testing.assert_allclose(q2, q, rtol=1e-5, atol=1e-7)
        assert (l2 == labels).mean() > 0.999


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_log_probs_start_from_the_rows_as_given(backend):
    """log_probs=True: SeLa's PS ** lam as given, rows not renormalised, so SeLa's own loop
    on unnormalised PS runs the same iterations to the same labels."""
    rng = np.random.default_rng(13)
    p = np.exp(logits(2000, 25, seed=13, scale=0.5).astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    p *= rng.uniform(0.5, 2.0, (2000, 1))  # rows summing to 0.5 .. 2
    ref_labels, ref_plan, ref_iters = sela_loop(p, 10)
    res = hdlfast.sinkhorn(np.log(p), kind="sela", lam=10, log_probs=True, backend=backend)
    assert res.n_iter == ref_iters
    np.testing.assert_array_equal(res.labels, ref_labels)
    np.testing.assert_allclose(res.Q / 2000, ref_plan, rtol=1e-4, atol=1e-9)
    # on exact log-softmax rows the two starts agree
    s = np.log(p / p.sum(axis=1, keepdims=True))
    a = hdlfast.sinkhorn(s, kind="sela", lam=10, log_probs=True, backend=backend)
    b = hdlfast.sinkhorn(s, kind="sela", lam=10, backend=backend)
    assert a.n_iter == b.n_iter
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.Q, b.Q, rtol=1e-5, atol=1e-9)


def softmax_rows(n, k, seed, scale=0.5):
    p = np.exp(logits(n, k, seed=seed, scale=scale).astype(np.float64))
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("lam", [10, 25])
def test_probs_equal_selas_loop(backend, lam):
    """probs=True: SeLa's PS ** lamb from the probabilities themselves (whole-number lam:
    repeated multiplication, no log), so the plan is SeLa's to float32 rounding."""
    p = softmax_rows(3000, 40, seed=21)
    p *= np.random.default_rng(21).uniform(0.5, 2.0, (3000, 1))  # rows taken as given
    ref_labels, ref_plan, ref_iters = sela_loop(p, lam)
    res = hdlfast.sinkhorn(p, kind="sela", lam=lam, probs=True, backend=backend)
    assert res.n_iter == ref_iters
    np.testing.assert_array_equal(res.labels, ref_labels)
    np.testing.assert_allclose(res.Q / 3000, ref_plan, rtol=2e-6, atol=1e-12)
    # the log path carries float32 logs: a looser plan (lam |log p| float32 ulps)
    via_logs = hdlfast.sinkhorn(np.log(p), kind="sela", lam=lam, log_probs=True,
                                backend=backend)
    assert np.abs(res.Q / 3000 - ref_plan).max() < np.abs(via_logs.Q / 3000 - ref_plan).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("power", [1, 2, 7, 25, 1000])
def test_power_kernel_is_the_rounded_power_and_backends_agree(dtype, power):
    """Q = (p / max p) ** power in float64 rounded once: within one float32 ulp of numpy's
    power, and the native and numba kernels give the same bits (the same multiplies)."""
    if not hdlfast.info()["native"]["built"]:
        pytest.skip("native kernels not built")
    from hdlfast import _native
    from hdlfast.sinkhorn import numba_kernels as numba_sk

    p = softmax_rows(500, 37, seed=power).astype(dtype)  # 37: a tail after the vector lanes
    p[3, 5] = 0.0
    out = {}
    for name, fn in (("native", _native.sk_prepare_power), ("numba", numba_sk.prepare_power)):
        q, rowmax = np.empty(p.shape, np.float32), np.empty(500)
        fn(p, q, power, rowmax)
        out[name] = q, rowmax
    p64 = p.astype(np.float64)
    ref = (p64 / p64.max(axis=1, keepdims=True)) ** power
    np.testing.assert_array_max_ulp(out["native"][0], ref.astype(np.float32), maxulp=1)
    np.testing.assert_array_equal(out["native"][1], p64.max(axis=1))
    assert out["native"][0][3, 5] == 0.0
    np.testing.assert_array_equal(out["native"][0].view(np.int32),
                                  out["numba"][0].view(np.int32))
    np.testing.assert_array_equal(out["native"][1], out["numba"][1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_probs_inputs_and_fractional_lam(backend):
    """float32, float64 and torch probabilities give one result; a fractional lam goes
    through float64 logs, exactly as log_probs=True on those logs."""
    p = softmax_rows(800, 12, seed=22)
    a = hdlfast.sinkhorn(p, kind="sela", lam=10, probs=True, backend=backend)
    b = hdlfast.sinkhorn(p.astype(np.float32), kind="sela", lam=10, probs=True,
                         backend=backend)
    np.testing.assert_allclose(a.Q, b.Q, rtol=1e-5, atol=1e-9)
    torch = pytest.importorskip("torch")
    t = hdlfast.sinkhorn(torch.from_numpy(p), kind="sela", lam=10, probs=True,
                         backend=backend)
    assert isinstance(t.Q, torch.Tensor)
    np.testing.assert_array_equal(t.Q.numpy(), a.Q)
    frac = hdlfast.sinkhorn(p, kind="sela", lam=2.5, probs=True, backend=backend)
    logs = np.maximum(np.log(p), np.log(np.finfo(np.float64).tiny)).astype(np.float32)
    same = hdlfast.sinkhorn(logs, kind="sela", lam=2.5, log_probs=True, backend=backend)
    np.testing.assert_array_equal(frac.Q, same.Q)
    ref_labels, ref_plan, ref_iters = sela_loop(p, 2.5)
    assert frac.n_iter == ref_iters
    np.testing.assert_allclose(frac.Q / 800, ref_plan, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("lam", [10, 2.5])
@pytest.mark.parametrize("bad", ["nan", "inf", "negative", "zero row"])
def test_probs_that_are_not_probabilities(backend, lam, bad):
    p = softmax_rows(300, 6, seed=23)
    row = 117
    if bad == "zero row":
        p[row] = 0.0
    else:
        p[row, 2] = {"nan": np.nan, "inf": np.inf, "negative": -1e-3}[bad]
    before = p.copy()
    with pytest.raises(ValueError, match=f"scores must hold probabilities.*row {row} "):
        hdlfast.sinkhorn(p, kind="sela", lam=lam, probs=True, backend=backend)
    np.testing.assert_array_equal(p, before)


def test_probs_flag_checks():
    p = softmax_rows(50, 4, seed=24)
    with pytest.raises(ValueError, match="probs=True applies to kind='sela'"):
        hdlfast.sinkhorn(p, probs=True)
    with pytest.raises(TypeError, match="probs must be True or False"):
        hdlfast.sinkhorn(p, kind="sela", probs="yes")
    with pytest.raises(ValueError, match="exclude each other"):
        hdlfast.sinkhorn(p, kind="sela", probs=True, log_probs=True)


def test_log_probs_bad_input():
    s = logits(50, 4, seed=14)
    with pytest.raises(ValueError, match="log_probs=True applies to kind='sela'"):
        hdlfast.sinkhorn(s, log_probs=True)
    with pytest.raises(TypeError, match="log_probs must be True or False"):
        hdlfast.sinkhorn(s, kind="sela", log_probs=1)
    with pytest.raises(ValueError, match="sela_tol must be > 0"):
        hdlfast.sinkhorn(s, kind="sela", sela_tol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_kernel_exp_is_correctly_rounded_almost_everywhere(backend):
    """The vectorised exp of the kernel (Q = exp(beta (s - row max)) before any iteration)
    against float64 numpy rounded to float32: at most one float32 ulp off anywhere,
    correctly rounded on all but a sliver, exactly 0 where float32 underflows."""
    from hdlfast import _backend

    s = logits(4000, 64, seed=15, scale=3.0)
    s[:10, 5] = -1e30  # far below the row max: exp underflows to 0
    for beta in (2.0, 20.0, 1e4):
        state = _backend.select(backend, False, like=s).sinkhorn_state(s, beta,
                                                                       np.full(4000, 1 / 4000))
        ref = np.exp(beta * (s.astype(np.float64) - s.max(axis=1, keepdims=True)))
        ref = ref.astype(np.float32)
        ulps = np.abs(state.q.view(np.int32).astype(np.int64) -
                      ref.view(np.int32).astype(np.int64))
        assert ulps.max() <= 1 and (ulps == 0).mean() > 0.999
        np.testing.assert_array_equal(state.rowmax(), s.max(axis=1))
