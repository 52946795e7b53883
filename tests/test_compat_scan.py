"""hdlfast.compat.scan against SCAN's own computations (utils/memory.py, losses/losses.py,
read in its public repository and rewritten here in torch from that reading): mining, the
evaluation kNN and the self-labeling loss."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import hdlfast  # noqa: E402
from hdlfast.compat import scan  # noqa: E402


def filled_bank(n=400, dim=16, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, n)
    f = centres[y] + 0.6 * rng.standard_normal((n, dim))
    f = torch.from_numpy(f / np.linalg.norm(f, axis=1, keepdims=True)).float()
    bank = scan.MemoryBank(n, dim, classes, temperature=0.1)
    for b in range(0, n, 64):  # batch by batch, as SCAN's fill_memory_bank
        bank.update(f[b:b + 64], torch.from_numpy(y[b:b + 64]))
    return bank, f, y


def test_mine_nearest_neighbors_is_the_exact_graph_with_self_first():
    bank, f, y = filled_bank()
    indices, accuracy = bank.mine_nearest_neighbors(20)
    assert isinstance(indices, np.ndarray) and indices.dtype == np.int64
    assert indices.shape == (400, 21)
    np.testing.assert_array_equal(indices[:, 0], np.arange(400))
    # faiss IndexFlatIP's answer on unit rows, in float64: the 20 most similar other rows
    sims = f.double().numpy() @ f.double().numpy().T
    np.fill_diagonal(sims, -np.inf)
    ref = np.argsort(-sims, axis=1, kind="stable")[:, :20]
    kth = np.take_along_axis(sims, ref[:, -1:], 1)
    got_sims = np.take_along_axis(sims, indices[:, 1:], 1)
    assert (got_sims >= kth - 1e-6).all()  # the same neighbours up to float32 near-ties
    assert (indices[:, 1:] == ref).mean() > 0.99
    np.testing.assert_allclose(accuracy, np.mean(y[indices[:, 1:]] == y[:, None]))
    assert accuracy > 0.5
    np.testing.assert_array_equal(bank.mine_nearest_neighbors(5, calculate_accuracy=False),
                                  hdlfast.mine_neighbors(f, 5, include_self=True).numpy())


def test_mining_refuses_unnormalised_features():
    bank, f, y = filled_bank(n=64)
    bank.features *= 3
    with pytest.raises(ValueError, match="L2-normalised"):
        bank.mine_nearest_neighbors(5)


def scan_weighted_knn(bank, predictions):
    """The original's weighted kNN: one-hot retrievals of the K most similar rows weighted by
    exp(similarity / temperature), summed, the top class."""
    corr = predictions @ bank.features.t()
    yd, yi = corr.topk(bank.K, dim=1, largest=True, sorted=True)
    one_hot = F.one_hot(bank.targets[yi], bank.C).float()
    probs = (one_hot * (yd / bank.temperature).exp()[..., None]).sum(1)
    return probs.sort(1, True)[1][:, 0]


def test_evaluation_knn():
    bank, f, y = filled_bank()
    queries = f[:50] + 0.05 * torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(bank.weighted_knn(queries), scan_weighted_knn(bank, queries))
    nearest = (queries @ bank.features.t()).argmax(1)
    np.testing.assert_array_equal(bank.knn(queries), bank.targets[nearest])


def scan_confidence_ce(weak, strong, threshold, balance):
    """The original's ConfidenceBasedCE.forward (its class weights live on the logits'
    device here instead of .cuda())."""
    prob = F.softmax(weak, dim=1)
    max_prob, target = prob.max(dim=1)
    mask = max_prob > threshold
    if not mask.any():
        raise ValueError("Mask in MaskedCrossEntropyLoss is all zeros.")
    weight = None
    if balance:
        t = target[mask]
        idx, counts = torch.unique(t, return_counts=True)
        weight = torch.ones(weak.shape[1])
        weight[idx] = 1 / (counts.float() / t.shape[0])
    return F.cross_entropy(strong[mask], target[mask], weight=weight, reduction="mean")


@pytest.mark.parametrize("balance", [True, False])
def test_confidence_based_ce(balance):
    g = torch.Generator().manual_seed(0)
    weak = 4 * torch.randn(256, 10, generator=g)
    strong = weak + torch.randn(256, 10, generator=g)
    loss = scan.ConfidenceBasedCE(0.9, balance)(weak, strong)
    ref = scan_confidence_ce(weak, strong, 0.9, balance)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    strong.requires_grad_(True)
    scan.ConfidenceBasedCE(0.9, balance)(weak, strong).backward()  # gradients reach the logits
    assert strong.grad is not None and strong.grad.abs().sum() > 0


def test_no_confident_row_raises_as_scan():
    weak = torch.zeros(8, 4)  # uniform softmax: nothing above 0.99
    with pytest.raises(ValueError, match="Mask in MaskedCrossEntropyLoss is all zeros"):
        scan.ConfidenceBasedCE(0.99, True)(weak, weak)


def test_bank_bookkeeping():
    bank = scan.MemoryBank(10, 4, 2, 0.1)
    bank.update(torch.ones(6, 4), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="overflow the bank of n=10"):
        bank.update(torch.ones(6, 4), torch.zeros(6, dtype=torch.long))
    bank.reset()
    assert bank.ptr == 0
    bank.cpu()
    assert bank.device == "cpu" and bank.features.device.type == "cpu"
