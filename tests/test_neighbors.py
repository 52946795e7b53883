"""hdlfast.neighbors (SCAN and NCL utilities) against float64 NumPy references."""
import functools

import numpy as np
import pytest

import conftest
from conftest import CPU_BACKENDS, GPU_KINDS, to_kind, to_numpy
from hdlfast import neighbors as nb

clustered = functools.partial(conftest.clustered, spread=0.4)


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_neighbors(x, k, db=None):
    """Brute-force cosine (float64): indices by decreasing similarity, ties smaller index;
    self excluded for the self-graph. Returns (idx, full similarity matrix)."""
    s = unit(x) @ unit(x if db is None else db).T
    if db is None:
        np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k], s


def assert_neighbors(idx, x, k, db=None, atol=1e-5):
    """idx equals the reference wherever no near-tie makes the order float-dependent, and
    every returned neighbour is as similar as the reference one in its column."""
    idx = to_numpy(idx)
    assert idx.dtype == np.int64 and idx.shape == (len(x), k)
    ref, s = reference_neighbors(x, k, db)
    rows = np.arange(len(x))[:, None]
    np.testing.assert_allclose(s[rows, idx], s[rows, ref], atol=atol)
    # entry (i, j) is clear when the j-th best similarity is apart from the (j-1)-th and
    # (j+1)-th best by more than the float32 rounding
    top = np.pad(-np.sort(-s, axis=1), ((0, 0), (1, 1)), constant_values=(3.0, -3.0))
    gaps = np.diff(top, axis=1)
    clear = (np.minimum(-gaps[:, :-1], -gaps[:, 1:]) > 4 * atol)[:, :k]
    assert clear.mean() > 0.5  # the exact comparison below covers most entries
    np.testing.assert_array_equal(idx[clear], ref[clear])


# --- mine_neighbors -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n,d,k", [(2, 3, 1), (40, 5, 7), (300, 16, 20), (120, 8, 119)])
def test_mine_neighbors_matches_reference(backend, n, d, k):
    x = clustered(n, d, seed=n + k)
    idx = nb.mine_neighbors(x, k, backend=backend)
    assert isinstance(idx, np.ndarray)
    assert_neighbors(idx, x, k)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_scan_layout_self_in_column_zero_and_np_save_roundtrip(backend, tmp_path):
    x = clustered(250, 12, seed=1)
    plain = nb.mine_neighbors(x, 20, backend=backend)
    scan = nb.mine_neighbors(x, 20, include_self=True, backend=backend)
    assert scan.shape == (250, 21) and scan.dtype == np.int64
    np.testing.assert_array_equal(scan[:, 0], np.arange(250))
    np.testing.assert_array_equal(scan[:, 1:], plain)
    path = tmp_path / "topk-train-neighbors.npy"
    np.save(path, scan)
    loaded = np.load(path)
    assert loaded.dtype == np.int64 and loaded.shape == (250, 21)
    np.testing.assert_array_equal(loaded, scan)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mine_neighbors_exact_ties_follow_index_rule(backend):
    # d = 1: every cosine is exactly +1 or -1, so the tie rule alone fixes the order
    x = np.random.default_rng(2).choice([-2.0, -0.5, 1.0, 3.0], size=(50, 1)).astype(np.float32)
    for k in (1, 9, 49):
        ref, _ = reference_neighbors(x, k)
        np.testing.assert_array_equal(nb.mine_neighbors(x, k, backend=backend), ref)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_duplicate_of_a_point_stays_its_neighbour_with_include_self(backend):
    base = clustered(40, 6, seed=3)
    x = np.concatenate([base, base[:5]])  # rows 40..44 copy rows 0..4
    idx = nb.mine_neighbors(x, 3, include_self=True, backend=backend)
    for i in range(5):
        assert idx[i, 0] == i and idx[i, 1] == 40 + i
        assert idx[40 + i, 0] == 40 + i and idx[40 + i, 1] == i


def test_mine_neighbors_torch_cpu_in_torch_out():
    torch = pytest.importorskip("torch")
    x = clustered(200, 10, seed=4)
    xt = to_kind(x, "torch").requires_grad_(True)
    for include_self in (False, True):
        idx = nb.mine_neighbors(xt, 6, include_self=include_self)
        assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int64
        np.testing.assert_array_equal(to_numpy(idx), nb.mine_neighbors(x, 6,
                                                                       include_self=include_self))
    np.testing.assert_array_equal(to_numpy(xt), x)


# --- neighbor_accuracy ----------------------------------------------------------------------


def scan_neighbor_accuracy(indices, targets):
    """SCAN's mine_nearest_neighbors accuracy: column 0 (the point itself) is dropped."""
    neighbor_targets = np.take(targets, indices[:, 1:], axis=0)
    anchor_targets = np.repeat(targets.reshape(-1, 1), indices.shape[1] - 1, axis=1)
    return np.mean(neighbor_targets == anchor_targets)


def test_neighbor_accuracy_equals_scan_for_both_layouts():
    x = clustered(300, 8, seed=5)
    targets = np.random.default_rng(5).integers(0, 4, 300)
    targets[::3] = (np.arange(300) % 6)[::3]
    scan = nb.mine_neighbors(x, 15, include_self=True)
    expected = scan_neighbor_accuracy(scan, targets)
    assert 0 < expected < 1
    assert nb.neighbor_accuracy(scan, targets) == pytest.approx(expected, abs=1e-12)
    assert nb.neighbor_accuracy(scan[:, 1:], targets) == pytest.approx(expected, abs=1e-12)
    assert isinstance(nb.neighbor_accuracy(scan, targets), float)


def test_neighbor_accuracy_hand_example_skips_only_self_entries():
    idx = np.array([[0, 1, 2], [2, 1, 0], [2, 0, 3], [1, 2, 0]])
    targets = np.array([7, 7, 8, 8])
    # kept entries: row0 1,2 -> 1 of 2; row1 2,0 -> 1 of 2; row2 0,3 -> 1 of 2; row3 1,2,0 -> 1/3
    assert nb.neighbor_accuracy(idx, targets) == pytest.approx(4 / 9)


def test_neighbor_accuracy_any_kind():
    torch = pytest.importorskip("torch")
    idx = np.array([[1, 2], [0, 2], [0, 1]])
    targets = np.array([0, 0, 1])
    expected = nb.neighbor_accuracy(idx, targets)
    assert expected == pytest.approx(2 / 6)
    assert nb.neighbor_accuracy(torch.from_numpy(idx), torch.from_numpy(targets)) == expected
    assert nb.neighbor_accuracy(idx.astype(np.int32).tolist(), targets.tolist()) == expected


# --- confident_labels -----------------------------------------------------------------------


def scan_confidence_targets(probs, threshold, balance):
    """ConfidenceBasedCE (SCAN losses.py) on probabilities, in torch as SCAN runs it."""
    import torch

    max_prob, target = torch.max(probs, dim=1)
    mask = max_prob > threshold
    target_masked = torch.masked_select(target, mask.squeeze())
    n = target_masked.size(0)
    weight = torch.ones(probs.shape[1])
    if balance:
        idx, counts = torch.unique(target_masked, return_counts=True)
        weight[idx] = 1 / (counts.float() / n)
    return mask, target, weight


@pytest.mark.parametrize("balance", [True, False])
@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.99])
def test_confident_labels_equal_scan_confidence_based_ce(balance, threshold):
    torch = pytest.importorskip("torch")
    logits = torch.from_numpy(np.random.default_rng(6).standard_normal((500, 10)) * 4).float()
    logits[:, 7] -= 20  # class 7 is never confident: weight 1
    probs = torch.softmax(logits, dim=1)
    before = probs.clone()
    out = nb.confident_labels(probs, threshold, balance=balance)
    mask, target, weight = scan_confidence_targets(probs, threshold, balance)
    assert out.mask.dtype == torch.bool and out.labels.dtype == torch.int64
    assert out.weights.dtype == torch.float32 and out.weights.shape == (10,)
    assert 0 < int(mask.sum()) < 500
    assert torch.equal(out.mask, mask) and torch.equal(out.labels, target)
    torch.testing.assert_close(out.weights, weight, rtol=1e-6, atol=0)
    assert out.weights[7] == 1
    assert torch.equal(probs, before)


def test_confident_labels_numpy_reference_strict_threshold_and_ties():
    probs = np.array([[0.99, 0.01, 0.0],     # exactly at threshold: not confident (strict >)
                      [0.995, 0.005, 0.0],   # confident, class 0
                      [0.0, 0.999, 0.001],   # confident, class 1
                      [0.0, 0.996, 0.004],   # confident, class 1
                      [0.5, 0.0, 0.5],       # tie: smaller class
                      [0.001, 0.998, 0.001]], np.float32)
    out = nb.confident_labels(probs, 0.99)
    np.testing.assert_array_equal(out.mask, [False, True, True, True, False, True])
    np.testing.assert_array_equal(out.labels, [0, 0, 1, 1, 0, 1])
    n, n_c = 4, np.array([1, 3])
    np.testing.assert_allclose(out.weights, [n / n_c[0], n / n_c[1], 1.0], rtol=1e-7)
    assert out.weights.dtype == np.float32 and out.labels.dtype == np.int64
    np.testing.assert_array_equal(nb.confident_labels(probs, 0.99, balance=False).weights, 1)
    none = nb.confident_labels(probs, 1.0)
    assert not none.mask.any()
    np.testing.assert_array_equal(none.weights, 1)


# --- neighborhood_positives -----------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("b,m,d,k", [(1, 1, 4, 1), (32, 500, 16, 30), (64, 200, 8, 200)])
def test_neighborhood_positives_match_reference(backend, b, m, d, k):
    z = clustered(b, d, seed=7)
    bank = clustered(m, d, seed=8)
    sims, idx = nb.neighborhood_positives(z, bank, k, backend=backend)
    assert sims.dtype == np.float32 and sims.shape == (b, k)
    assert_neighbors(idx, z, k, db=bank)
    np.testing.assert_allclose(sims, (unit(z) @ unit(bank).T)[np.arange(b)[:, None], idx],
                               atol=1e-5)


def test_neighborhood_positives_torch_cpu_in_torch_out():
    torch = pytest.importorskip("torch")
    z, bank = clustered(16, 8, seed=9), clustered(100, 8, seed=10)
    sims, idx = nb.neighborhood_positives(to_kind(z, "torch"), to_kind(bank, "torch"), 5)
    assert isinstance(sims, torch.Tensor) and isinstance(idx, torch.Tensor)
    assert_neighbors(idx, z, 5, db=bank)


# --- hard_negatives -------------------------------------------------------------------------


def ncl_reference(z, bank_u, bank_l, k, n_neg, n_mix, mu, seed=0, draws=None, normalize=True):
    """NCL's ncl_hng_loss selection, one anchor at a time, every mixture materialised (float64),
    with the same labeled draws (or the given ones); normalize=False mixes the bank rows as
    stored. Returns (mixtures, sims, unlabeled_index, labeled_index, w)."""
    z = unit(z)
    a, b = (unit(x) if normalize else np.asarray(x, np.float64) for x in (bank_u, bank_l))
    if draws is None:
        draws = nb._draw_labeled(seed, len(z), n_mix, len(b), n_neg)
    out = [[] for _ in range(5)]
    for i in range(len(z)):
        neg_idx = np.argsort(a @ z[i], kind="stable")[:n_neg]
        mixes, u_idx, l_idx, weights = [], [], [], []
        for j in range(n_mix):
            rand_idx = draws[i, j]
            for w in mu:
                mixes.append(a[neg_idx] * w + b[rand_idx] * (1 - w))
                u_idx.append(neg_idx)
                l_idx.append(rand_idx)
                weights.append(np.full(n_neg, w))
        mixes = unit(np.concatenate(mixes))
        simi = mixes @ z[i]
        order = np.argsort(-simi, kind="stable")[:k]
        for lst, v in zip(out, (mixes, simi, np.concatenate(u_idx), np.concatenate(l_idx),
                                np.concatenate(weights))):
            lst.append(v[order])
    return [np.stack(v) for v in out]


def assert_hard_negatives(out, ref, atol=1e-6):
    mixtures, sims, u_idx, l_idx, weight = (to_numpy(v) for v in out)
    assert mixtures.dtype == sims.dtype == weight.dtype == np.float32
    assert u_idx.dtype == l_idx.dtype == np.int64
    np.testing.assert_allclose(sims, ref[1], atol=atol)
    np.testing.assert_array_equal(u_idx, ref[2])
    np.testing.assert_array_equal(l_idx, ref[3])
    np.testing.assert_allclose(weight, ref[4], rtol=1e-7)
    np.testing.assert_allclose(mixtures, ref[0], atol=atol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("b,mu_rows,ml_rows,d,k,n_neg,n_mix,mu", [
    (1, 5, 3, 4, 1, 1, 1, (1 / 3, 2 / 3)),
    (8, 200, 100, 16, 40, 40, 5, (1 / 3, 2 / 3)),
    (16, 300, 150, 32, 60, 25, 3, (0.0, 0.25, 1.0)),
    (4, 50, 20, 8, 120, 20, 3, (0.5, 0.7)),  # keeps every candidate
])
def test_hard_negatives_equal_ncl_loop(backend, b, mu_rows, ml_rows, d, k, n_neg, n_mix, mu):
    z = clustered(b, d, seed=11)
    bank_u, bank_l = clustered(mu_rows, d, seed=12), clustered(ml_rows, d, seed=13)
    out = nb.hard_negatives(z, bank_u, bank_l, k, n_neg=n_neg, n_mix=n_mix, mu=mu, seed=3,
                            backend=backend)
    assert out.mixtures.shape == (b, k, d)
    assert_hard_negatives(out, ncl_reference(z, bank_u, bank_l, k, n_neg, n_mix, mu, 3))
    # the sims are the cosines of z with the returned unit mixtures, sorted
    np.testing.assert_allclose(np.einsum("bd,bkd->bk", unit(z), out.mixtures), out.sims,
                               atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out.mixtures, axis=2), 1, atol=1e-6)
    assert (np.diff(out.sims, axis=1) <= 0).all()


@pytest.mark.parametrize("normalize", [True, False])
def test_hard_negatives_native_and_numba_give_the_same_bits(normalize):
    """The pair dots and the mixtures run in the CPU backend's kernels, in one order of
    operations: both backends agree to the bit, at a width with a tail after the 8 lanes."""
    if len(CPU_BACKENDS) < 2:
        pytest.skip("needs both CPU backends")
    z = clustered(32, 77, seed=40)
    bank_u, bank_l = clustered(500, 77, seed=41), clustered(300, 77, seed=42)
    out = [nb.hard_negatives(z, bank_u, bank_l, 150, n_neg=60, n_mix=5, seed=7,
                             normalize=normalize, backend=b) for b in CPU_BACKENDS]
    for x, y in zip(*out):
        np.testing.assert_array_equal(to_numpy(x), to_numpy(y))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_pair_kernels_equal_a_float64_reference(backend):
    """pair_dots: a[ra] . b[rb] in float64; mix_rows: the float32 mixture over its length."""
    from hdlfast import _backend

    pairs = _backend.select(backend, False).pairs
    rng = np.random.default_rng(43)
    a, b = rng.standard_normal((40, 19)), rng.standard_normal((25, 19))
    ra, rb = rng.integers(0, 40, 300), rng.integers(0, 25, 300)
    dots = np.empty(300)
    pairs.pair_dots(a, b, ra, rb, dots)
    np.testing.assert_allclose(dots, np.einsum("ij,ij->i", a[ra], b[rb]), rtol=1e-13,
                               atol=1e-13)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    w = rng.uniform(0, 1, 300).astype(np.float32)
    w[:3] = [0.0, 1.0, 0.5]
    out = np.empty((300, 19), np.float32)
    pairs.mix_rows(a32, b32, ra, rb, w, out)
    m = a32[ra].astype(np.float64) * w[:, None] + b32[rb] * (1 - w[:, None].astype(np.float64))
    np.testing.assert_allclose(out, m / np.linalg.norm(m, axis=1, keepdims=True), atol=1e-6)
    zero = np.empty((1, 19), np.float32)  # a zero mixture stays zero, as F.normalize's
    pairs.mix_rows(np.zeros((1, 19), np.float32), b32, np.zeros(1, np.int64),
                   np.zeros(1, np.int64), np.ones(1, np.float32), zero)
    assert not zero.any()


def test_hard_negatives_defaults_are_ncl():
    z, bank_u, bank_l = clustered(4, 8, 14), clustered(60, 8, 15), clustered(30, 8, 16)
    out = nb.hard_negatives(z, bank_u, bank_l, 10)
    assert_hard_negatives(out, ncl_reference(z, bank_u, bank_l, 10, 10, 5, (1 / 3, 2 / 3), 0))
    assert set(np.round(out.weight.ravel(), 6)) <= {np.float32(1 / 3).round(6),
                                                    np.float32(2 / 3).round(6)}


def test_hard_negative_draws_are_seeded_permutation_prefixes():
    draws = nb._draw_labeled(5, 6, 4, 30, 30)
    assert draws.shape == (6, 4, 30) and draws.dtype == np.int64
    for row in draws.reshape(-1, 30):
        np.testing.assert_array_equal(np.sort(row), np.arange(30))
    assert len({tuple(r) for r in draws.reshape(-1, 30)}) == 24
    np.testing.assert_array_equal(draws, nb._draw_labeled(5, 6, 4, 30, 30))
    z, bank_u, bank_l = clustered(4, 8, 17), clustered(60, 8, 18), clustered(30, 8, 19)
    a = nb.hard_negatives(z, bank_u, bank_l, 10, seed=1)
    b = nb.hard_negatives(z, bank_u, bank_l, 10, seed=1)
    c = nb.hard_negatives(z, bank_u, bank_l, 10, seed=2)
    np.testing.assert_array_equal(a.labeled_index, b.labeled_index)
    assert not np.array_equal(a.labeled_index, c.labeled_index)


def test_hard_negatives_given_draws_are_used_as_given():
    z, bank_u, bank_l = clustered(5, 8, 23), clustered(70, 8, 24), clustered(35, 8, 25)
    seeded = nb.hard_negatives(z, bank_u, bank_l, 12, n_neg=9, n_mix=3, seed=4)
    draws = nb._draw_labeled(4, 5, 3, 35, 9)
    given = nb.hard_negatives(z, bank_u, bank_l, 12, n_neg=9, n_mix=3, draws=draws, seed=99)
    for a, b in zip(seeded, given):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    # any rows, repeats allowed: each kept mixture pairs the draw at its round and position
    draws = np.random.default_rng(5).integers(0, 35, (5, 3, 9)).astype(np.int32)
    out = nb.hard_negatives(z, bank_u, bank_l, 12, n_neg=9, n_mix=3, draws=draws)
    ref = ncl_reference(z, bank_u, bank_l, 12, 9, 3, (1 / 3, 2 / 3), draws=draws)
    assert_hard_negatives(out, ref)


def test_hard_negatives_normalize_false_mixes_rows_as_stored():
    """NCL's code mixes its queue rows as stored: rows of other lengths weigh more."""
    rng = np.random.default_rng(6)
    z = clustered(6, 8, 26)
    bank_u = clustered(60, 8, 27) * rng.uniform(0.2, 3.0, (60, 1)).astype(np.float32)
    bank_l = clustered(30, 8, 28) * rng.uniform(0.2, 3.0, (30, 1)).astype(np.float32)
    out = nb.hard_negatives(z, bank_u, bank_l, 15, n_neg=10, n_mix=2, normalize=False)
    ref = ncl_reference(z, bank_u, bank_l, 15, 10, 2, (1 / 3, 2 / 3), 0, normalize=False)
    assert_hard_negatives(out, ref)
    unit_out = nb.hard_negatives(z, bank_u, bank_l, 15, n_neg=10, n_mix=2)
    assert not np.allclose(unit_out.sims, out.sims, atol=1e-3)
    # unit-length banks: the same as normalize=True
    same = nb.hard_negatives(z, unit(bank_u), unit(bank_l), 15, n_neg=10, n_mix=2,
                             normalize=False)
    np.testing.assert_array_equal(same.unlabeled_index, unit_out.unlabeled_index)
    np.testing.assert_allclose(same.sims, unit_out.sims, atol=1e-6)


@pytest.mark.parametrize("draws,err,match", [
    (np.zeros((5, 3, 9)), TypeError, "draws must hold integer rows"),
    (np.zeros((5, 3, 8), np.int64), ValueError, r"draws must have shape \(B, n_mix, n_neg\)"),
    (np.full((5, 3, 9), 35), ValueError, r"outside \[0, 35\)"),
    (np.full((5, 3, 9), -1), ValueError, r"outside \[0, 35\)"),
])
def test_hard_negatives_bad_draws(draws, err, match):
    z, bank_u, bank_l = clustered(5, 8, 23), clustered(70, 8, 24), clustered(35, 8, 25)
    with pytest.raises(err, match=match):
        nb.hard_negatives(z, bank_u, bank_l, 12, n_neg=9, n_mix=3, draws=draws)
    with pytest.raises(TypeError, match="normalize must be True or False"):
        nb.hard_negatives(z, bank_u, bank_l, 12, n_neg=9, n_mix=3, normalize="no")


@pytest.mark.parametrize("n", [1, 3, 10, 39, 40])
def test_smallest_is_a_stable_argsort_prefix(n):
    s = np.random.default_rng(n).integers(-3, 4, (50, 40)).astype(np.float64)  # many ties
    np.testing.assert_array_equal(nb._smallest(s, n), np.argsort(s, axis=1, kind="stable")[:, :n])
    s = np.random.default_rng(n).standard_normal((50, 40))
    np.testing.assert_array_equal(nb._smallest(s, n), np.argsort(s, axis=1, kind="stable")[:, :n])


def test_hard_negatives_ties_smaller_index_and_earlier_candidate():
    z = np.array([[1.0, 0.0, 0.0]], np.float32)
    bank_u = np.array([[1, 0, 0], [0, 1, 0], [-2, 0, 0], [0, 0, 1], [-1, 0, 0]], np.float32)
    bank_l = np.array([[0, 1, 0], [0, 0, 2], [0, 3, 0]], np.float32)
    # rows 2 and 4 are equally (least) similar: n_neg=1 takes row 2
    out = nb.hard_negatives(z, bank_u, bank_l, 4, n_neg=1, n_mix=2, mu=(0.5, 0.5), seed=0)
    np.testing.assert_array_equal(out.unlabeled_index, 2)
    # equal weights make every candidate a twin: each kept mixture is followed by its twin
    np.testing.assert_array_equal(out.sims[:, 0::2], out.sims[:, 1::2])
    np.testing.assert_array_equal(out.labeled_index[:, 0::2], out.labeled_index[:, 1::2])
    np.testing.assert_allclose(out.sims, -np.sqrt(0.5), atol=1e-6)


def test_hard_negatives_torch_cpu_detached_and_differentiable_through_z():
    torch = pytest.importorskip("torch")
    z, bank_u, bank_l = clustered(6, 8, 20), clustered(80, 8, 21), clustered(40, 8, 22)
    zt = torch.nn.functional.normalize(to_kind(z, "torch"), dim=1).requires_grad_(True)
    banks = [to_kind(bank_u, "torch", "bfloat16"), to_kind(bank_l, "torch", "bfloat16")]
    before = [t.clone() for t in banks]
    out = nb.hard_negatives(zt, *banks, 12, n_neg=10)
    assert all(isinstance(v, torch.Tensor) for v in out)
    assert out.mixtures.dtype == torch.float32 and not out.mixtures.requires_grad
    held = [to_numpy(t).astype(np.float64) for t in banks]
    assert_hard_negatives(out, ncl_reference(z, *held, 12, 10, 5, (1 / 3, 2 / 3), 0),
                          atol=1e-5)
    torch.einsum("bd,bkd->bk", zt, out.mixtures).sum().backward()
    torch.testing.assert_close(zt.grad, out.mixtures.sum(dim=1))
    assert all(torch.equal(t, b) for t, b in zip(banks, before))


# --- CUDA -----------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("kind", GPU_KINDS or ["torch-cuda"])
def test_cuda_results_in_caller_kind_equal_cpu(kind):
    x = clustered(400, 16, seed=23)
    xg = to_kind(x, kind)
    for include_self in (False, True):
        idx = nb.mine_neighbors(xg, 10, include_self=include_self)
        assert type(idx) is type(xg)
        np.testing.assert_array_equal(to_numpy(idx),
                                      nb.mine_neighbors(x, 10, include_self=include_self))
    sims, idx = nb.neighborhood_positives(xg[:50], xg[50:], 8)
    assert type(idx) is type(xg)
    assert_neighbors(idx, x[:50], 8, db=x[50:])
    out = nb.hard_negatives(xg[:20], xg[100:300], xg[300:], 30, n_neg=25, n_mix=3)
    assert type(out.mixtures) is type(xg)
    assert_hard_negatives(out, ncl_reference(x[:20], x[100:300], x[300:], 30, 25, 3,
                                             (1 / 3, 2 / 3), 0))
    probs = np.random.default_rng(24).dirichlet(np.full(5, 0.05), 300).astype(np.float32)
    got, ref = nb.confident_labels(to_kind(probs, kind), 0.9), nb.confident_labels(probs, 0.9)
    assert type(got.mask) is type(xg)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(to_numpy(g), r)
    idx = nb.mine_neighbors(xg, 5, include_self=True)
    targets = np.arange(400) % 3
    assert nb.neighbor_accuracy(idx, to_kind(targets, kind, "int64")) == \
        nb.neighbor_accuracy(to_numpy(idx), targets)


# --- bad input ------------------------------------------------------------------------------

X = clustered(20, 4, seed=25)
BANK = clustered(30, 4, seed=26)
PROBS = np.full((6, 3), 1 / 3, np.float32)
IDX = np.tile(np.arange(1, 4), (20, 1))
TARGETS = np.arange(20) % 3


def with_row(x, value, row=3):
    x = x.copy()
    x[row] = value
    return x


def fn_mine(**kw):
    return nb.mine_neighbors(**{"X": X, "k": 3, **kw})


def fn_acc(**kw):
    return nb.neighbor_accuracy(**{"idx": IDX, "targets": TARGETS, **kw})


def fn_conf(**kw):
    return nb.confident_labels(**{"probs": PROBS, **kw})


def fn_pos(**kw):
    return nb.neighborhood_positives(**{"z": X, "bank": BANK, "k": 3, **kw})


def fn_hard(**kw):
    return nb.hard_negatives(**{"z": X, "bank_unlabeled": BANK, "bank_labeled": BANK[:10],
                                "k": 5, **kw})


BAD = [
    (fn_mine, dict(X=X[0]), ValueError, "X must be 2-D"),
    (fn_mine, dict(X=with_row(X, np.nan)), ValueError, "X holds NaN or Inf"),
    (fn_mine, dict(X=with_row(X, 0.0)), ValueError, "X has a zero-norm row"),
    (fn_mine, dict(X=X.astype(np.int64)), TypeError, "X must hold floating-point"),
    (fn_mine, dict(X=np.zeros((0, 4), np.float32)), ValueError, "X is empty"),
    (fn_mine, dict(k=0), ValueError, "k must be >= 1"),
    (fn_mine, dict(k=2.0), TypeError, "k must be an integer"),
    (fn_mine, dict(k=20), ValueError, "k=20 is larger than the 19"),
    (fn_mine, dict(k=20, include_self=True), ValueError, "k=20 is larger than the 19"),
    (fn_mine, dict(memory_budget=0), ValueError, "memory_budget must be >= 1"),
    (fn_mine, dict(backend="gpu"), ValueError, "backend must be one of"),
    (fn_acc, dict(idx=IDX.astype(np.float32)), TypeError, "idx must hold integer"),
    (fn_acc, dict(idx=IDX[0]), ValueError, "idx must be 2-D"),
    (fn_acc, dict(idx=IDX + 17), ValueError, "idx holds indices outside"),
    (fn_acc, dict(idx=IDX - 2), ValueError, "idx holds indices outside"),
    (fn_acc, dict(idx=IDX[:5]), ValueError, "idx has 5 rows but targets has 20"),
    (fn_acc, dict(idx=np.arange(20)[:, None]), ValueError, "idx holds no neighbour"),
    (fn_acc, dict(targets=TARGETS.astype(np.float64)), TypeError, "targets must hold integer"),
    (fn_acc, dict(targets=TARGETS[None]), ValueError, "targets must be 1-D"),
    (fn_acc, dict(targets=TARGETS[:0]), ValueError, "targets is empty"),
    (fn_acc, dict(targets="abc"), TypeError, "targets"),
    (fn_conf, dict(probs=PROBS.astype(np.int32)), TypeError, "probs must hold floating"),
    (fn_conf, dict(probs=PROBS[0]), ValueError, "probs must be 2-D"),
    (fn_conf, dict(probs=PROBS[:0]), ValueError, "probs is empty"),
    (fn_conf, dict(probs=with_row(PROBS, np.nan, 2)), ValueError, "probs holds NaN"),
    (fn_conf, dict(probs=with_row(PROBS, [1.5, -0.5, 0.0], 2)), ValueError,
     "probs must be non-negative"),
    (fn_conf, dict(probs=PROBS * 2), ValueError, "probs rows must sum to 1.*softmax"),
    (fn_conf, dict(probs=with_row(PROBS, [0.5, 0.4, 0.0], 4)), ValueError, "row 4 sums to"),
    (fn_conf, dict(threshold=0), ValueError, "threshold must be > 0"),
    (fn_conf, dict(threshold=1.01), ValueError, "threshold must be in"),
    (fn_conf, dict(threshold=float("nan")), ValueError, "threshold must be > 0"),
    (fn_conf, dict(threshold="high"), TypeError, "threshold must be a number"),
    (fn_pos, dict(bank=BANK[:, :3]), ValueError, "but bank has 3"),
    (fn_pos, dict(bank=with_row(BANK, np.inf)), ValueError, "bank holds NaN or Inf"),
    (fn_pos, dict(bank=with_row(BANK, 0.0)), ValueError, "bank has a zero-norm row"),
    (fn_pos, dict(bank=BANK[0]), ValueError, "bank must be 2-D"),
    (fn_pos, dict(z=with_row(X, np.nan)), ValueError, "z holds NaN or Inf"),
    (fn_pos, dict(k=31), ValueError, "k=31 is larger than the 30 bank rows"),
    (fn_pos, dict(k=-1), ValueError, "k must be >= 1"),
    (fn_hard, dict(bank_unlabeled=BANK[:, :2]), ValueError, "but bank_unlabeled has 2"),
    (fn_hard, dict(bank_labeled=BANK[:, :3]), ValueError, "but bank_labeled has 3"),
    (fn_hard, dict(bank_labeled=BANK.astype(np.int32)), TypeError, "bank_labeled must hold"),
    (fn_hard, dict(bank_unlabeled=with_row(BANK, np.nan)), ValueError,
     "bank_unlabeled holds NaN"),
    (fn_hard, dict(bank_labeled=with_row(BANK, 0.0)), ValueError,
     "bank_labeled has a zero-norm row"),
    (fn_hard, dict(z=with_row(X, 0.0)), ValueError, "z has a zero-norm row"),
    (fn_hard, dict(k=0), ValueError, "k must be >= 1"),
    (fn_hard, dict(k=7, n_neg=1, n_mix=3), ValueError, "k=7 is larger than the 6 candidate"),
    (fn_hard, dict(n_neg=31), ValueError, "n_neg = 31 is larger than the 30 rows of "
     "bank_unlabeled"),
    (fn_hard, dict(n_neg=11), ValueError, "n_neg = 11 is larger than the 10 rows of bank_labeled"),
    (fn_hard, dict(k=11), ValueError, r"n_neg \(default: k\) = 11 is larger than the 10 rows"),
    (fn_hard, dict(n_neg=0), ValueError, "n_neg must be >= 1"),
    (fn_hard, dict(n_mix=0), ValueError, "n_mix must be >= 1"),
    (fn_hard, dict(mu=(0.5, 1.5)), ValueError, "mu must be one or more numbers in"),
    (fn_hard, dict(mu=(-0.1,)), ValueError, "mu must be one or more numbers in"),
    (fn_hard, dict(mu=()), ValueError, "mu must be one or more numbers in"),
    (fn_hard, dict(mu="ab"), TypeError, "mu must be a sequence"),
    (fn_hard, dict(seed=1.5), TypeError, "seed must be an integer"),
    (fn_hard, dict(seed=-1), ValueError, "seed must be >= 0"),
    (fn_hard, dict(backend="tpu"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("fn,kwargs,exc,message", BAD)
def test_bad_input_is_rejected_and_arrays_unchanged(fn, kwargs, exc, message):
    arrays = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    globals_before = [a.copy() for a in (X, BANK, PROBS, IDX, TARGETS)]
    with pytest.raises(exc, match=message):
        fn(**kwargs)
    for key, before in arrays.items():
        np.testing.assert_array_equal(kwargs[key], before)
    for a, before in zip((X, BANK, PROBS, IDX, TARGETS), globals_before):
        np.testing.assert_array_equal(a, before)


def test_bad_input_torch_arrays_unchanged():
    torch = pytest.importorskip("torch")
    bad = torch.from_numpy(with_row(BANK, np.nan))
    with pytest.raises(ValueError, match="bank_labeled holds NaN"):
        nb.hard_negatives(torch.from_numpy(X), torch.from_numpy(BANK), bad, 3)
    assert torch.isnan(bad[3]).all()
    logits = torch.randn(5, 3)
    before = logits.clone()
    with pytest.raises(ValueError, match="softmax"):
        nb.confident_labels(logits)
    assert torch.equal(logits, before)


def test_confident_labels_without_a_confident_row_warns():
    """SCAN raises when no row of a batch is confident; the core function returns the
    all-False mask (a caller may skip the batch) and says so."""
    probs = np.full((6, 3), 1 / 3)
    with pytest.warns(RuntimeWarning, match="no row's max probability exceeds"):
        mask, labels, weights = nb.confident_labels(probs, 0.9)
    assert not mask.any() and (weights == 1).all()
