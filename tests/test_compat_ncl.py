"""hdlfast.compat.ncl against a plain transcription of NCL's models/NCL.py (NCLMemory),
written from a reading of the original: one anchor at a time, every mixture built, the
same torch.randperm calls in the same order."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from hdlfast.compat import ncl  # noqa: E402


# --- the transcription --------------------------------------------------------------------


def ref_smooth_hot(inputs, knn, w_pos):
    order = torch.sort(inputs, dim=1, descending=True).indices
    targets = torch.zeros(inputs.shape)
    weights = F.softmax(torch.ones(inputs.shape[0], knn), dim=1) * (1 - w_pos)
    targets.scatter_(1, order[:, :knn], weights)
    targets[:, 0] = float(w_pos)
    return targets


def ref_soft_ce(logits, targets):
    return (-(targets * F.log_softmax(logits, dim=1))).sum(dim=1).mean(dim=0)


def ref_supervised(inputs, all_labels, la_labels):
    targets = torch.zeros(inputs.shape)
    for i in range(inputs.shape[0]):
        hit = torch.cat((torch.tensor([True]), all_labels == la_labels[i].float()))
        targets[i, hit] = F.softmax(torch.ones(int(hit.sum())), dim=0)
    return ref_soft_ce(inputs, targets)


def ref_hng(feat, inputs, targets, memory, la_memory, num_class, hard_iter, num_hard, T):
    """NCL's ncl_hng_loss; also returns each anchor's kept hard logits (sorted)."""
    num_neg = 50 if num_class == 5 else 400
    by_sim = torch.sort(inputs[:, 1:], dim=1, descending=True).indices
    rows, kept = [], []
    for i in range(feat.shape[0]):
        neg = memory[by_sim[i, -num_neg:]]
        mixes = []
        for _ in range(hard_iter):
            pick = la_memory[torch.randperm(la_memory.shape[0])][:num_neg]
            mixes += [(neg + 2 * pick) / 3, (2 * neg + pick) / 3]
        mixes = F.normalize(torch.cat(mixes))
        simi = (feat[i:i + 1] @ mixes.t()).view(-1)
        top = simi[torch.sort(simi, descending=True).indices[:num_hard]] / T
        kept.append(top.detach())
        rows.append((torch.cat((inputs[i], top)),
                     torch.cat((targets[i], torch.zeros(top.shape)))))
    logits = torch.stack([r[0] for r in rows])
    loss = ref_soft_ce(logits, torch.stack([r[1] for r in rows]))
    return loss, torch.stack(kept)


class RefMemory:
    """NCLMemory's state and forward, transcribed."""

    def __init__(self, d, K, T, num_class, knn, w_pos, hard_iter, num_hard, start):
        stdv = 1.0 / math.sqrt(d / 3)
        self.memory = torch.rand(K, d).mul_(2 * stdv).add_(-stdv)
        self.label = torch.zeros(K) - 1
        self.K, self.T, self.num_class, self.w_pos = K, T, num_class, w_pos
        self.knn = int(K / num_class / 2) if knn == -1 else knn
        self.hard_iter, self.num_hard, self.start, self.index = hard_iter, num_hard, start, 0
        self.kept = None

    def forward(self, q, k, labels=None, epoch=0, labeled=False, la_memory=None):
        b = q.shape[0]
        l_pos = torch.bmm(q.view(b, 1, -1), k.detach().view(b, -1, 1)).view(b, 1)
        l_neg = torch.mm(self.memory.clone(), q.t()).t()
        x = torch.cat((l_pos, l_neg), dim=1) / self.T
        if labeled:
            loss = ref_supervised(x, self.label, labels)
        else:
            targets = ref_smooth_hot(x.detach().clone(), self.knn, self.w_pos)
            if epoch < self.start:
                loss = ref_soft_ce(x, targets)
            else:
                loss, self.kept = ref_hng(q, x, targets, self.memory.clone(), la_memory,
                                          self.num_class, self.hard_iter, self.num_hard,
                                          self.T)
        with torch.no_grad():
            ids = torch.fmod(torch.arange(b) + self.index, self.K).long()
            self.memory.index_copy_(0, ids, q)
            if labels is not None:
                self.label.index_copy_(0, ids, labels.float())
            self.index = (self.index + b) % self.K
        return loss


# --- helpers --------------------------------------------------------------------------------


def unit_batch(gen, b, d, centres):
    """Rows near random centres, L2-normalised as NCL's features are."""
    x = centres[torch.randint(len(centres), (b,), generator=gen)] + \
        0.5 * torch.randn(b, d, generator=gen)
    return F.normalize(x.relu() + 1e-3)


def run_both(cfg, batches, seed=0, la_memory=None):
    """Feed the same batches to NCLMemory and the transcription with the same torch seed;
    yield per step (ours, ref, our loss, ref loss, our grad, ref grad, rng states)."""
    torch.manual_seed(seed)
    ours = ncl.NCLMemory(*cfg)
    torch.manual_seed(seed)
    ref = RefMemory(*cfg)
    assert torch.equal(ours.memory, ref.memory)
    for q, k, labels, epoch, labeled in batches:
        qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
        torch.manual_seed(seed + 1)
        la = la_memory
        loss_a = ours(qa, k, labels, epoch, labeled, la)
        loss_a.backward()
        state_a = torch.get_rng_state()
        torch.manual_seed(seed + 1)
        loss_b = ref.forward(qb, k, labels, epoch, labeled, la)
        loss_b.backward()
        state_b = torch.get_rng_state()
        yield ours, ref, loss_a, loss_b, qa.grad, qb.grad, state_a, state_b


def assert_step(step, rtol=2e-6):
    ours, ref, loss_a, loss_b, grad_a, grad_b, state_a, state_b = step
    assert loss_a.dtype == torch.float32
    torch.testing.assert_close(loss_a, loss_b, rtol=rtol, atol=1e-6)
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-6)
    assert torch.equal(state_a, state_b)  # the same generator calls
    assert torch.equal(ours.memory, ref.memory)
    assert torch.equal(ours.label, ref.label)
    assert ours.index == ref.index


def training_batches(gen, n, b, d, epochs, labeled=False, n_classes=10):
    centres = torch.randn(n_classes, d, generator=gen) * 2
    out = []
    for step in range(n):
        q = unit_batch(gen, b, d, centres)
        k = F.normalize(q + 0.05 * torch.randn(b, d, generator=gen))
        labels = torch.randint(n_classes, (b,), generator=gen)
        out.append((q, k, labels, epochs[step], labeled))
    return out


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_class,K,knn", [(5, 600, -1), (10, 800, -1), (5, 300, 7)])
def test_ncl_memory_equals_transcription(num_class, K, knn):
    """Several steps through the queue, from plain NCL to hard negatives: same losses,
    gradients, queue, labels and torch generator state. The first hard-negative step still
    sees part of the random (non-unit) initial queue."""
    gen = torch.Generator().manual_seed(1)
    d, b = 32, 40
    la_memory = unit_batch(gen, 700, d, torch.randn(10, d, generator=gen) * 2)
    cfg = (d, K, 0.05, num_class, knn, 0.2, 5, 400, 2)
    batches = training_batches(gen, 6, b, d, epochs=[0, 1, 2, 2, 3, 5])
    for step in run_both(cfg, batches, la_memory=la_memory):
        assert_step(step)


def test_hard_negatives_from_the_first_step():
    """hard_negative_start = 0: the queue is still NCL's random (non-unit) start, which NCL
    mixes as stored; both num_neg settings (50 for 5 classes, else 400)."""
    gen = torch.Generator().manual_seed(2)
    d, b, K = 24, 30, 500
    la_memory = unit_batch(gen, 500, d, torch.randn(8, d, generator=gen) * 2)
    for num_class in (5, 20):
        cfg = (d, K, 0.05, num_class, -1, 0.2, 5, 400, 0)
        for step in run_both(cfg, training_batches(gen, 2, b, d, epochs=[0, 0]), seed=3,
                             la_memory=la_memory):
            assert_step(step)


@pytest.mark.parametrize("num_class,num_hard", [(5, 400), (5, 37), (12, 400), (5, 600)])
def test_hard_logits_match_per_anchor(monkeypatch, num_class, num_hard):
    """Each anchor keeps NCL's hard logits (the same draws and selection); num_hard above
    the 500 candidates keeps them all, as NCL's slice does."""
    gen = torch.Generator().manual_seed(5)
    d, b, K, T = 16, 12, 450, 0.05
    memory = unit_batch(gen, K, d, torch.randn(6, d, generator=gen) * 2)
    la_memory = unit_batch(gen, 450, d, torch.randn(6, d, generator=gen) * 2)
    feat = unit_batch(gen, b, d, torch.randn(6, d, generator=gen) * 2)
    inputs = torch.cat(((feat * feat).sum(1, keepdim=True), feat @ memory.t()), 1) / T
    targets = ref_smooth_hot(inputs, 30, 0.2)
    mod = ncl.NCLMemory(d, K, T, num_class, 30, 0.2, 5, num_hard, 0)
    mod.la_memory = la_memory
    seen = {}
    real = ncl.hard_negatives
    monkeypatch.setattr(ncl, "hard_negatives",
                        lambda *a, **kw: seen.setdefault("out", real(*a, **kw)))
    torch.manual_seed(6)
    loss = mod.ncl_hng_loss(feat, inputs, targets, memory)
    torch.manual_seed(6)
    ref_loss, kept = ref_hng(feat, inputs, targets, memory, la_memory, num_class, 5,
                             num_hard, T)
    ours = torch.sort(torch.einsum("bd,bkd->bk", feat, seen["out"].mixtures) / T, dim=1,
                      descending=True).values
    assert ours.shape == kept.shape
    torch.testing.assert_close(ours, kept, rtol=0, atol=2e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=2e-6, atol=1e-6)


def test_smooth_hot_counts_the_positive():
    """NCL's knn includes the positive logit: knn - 1 queue positives when it ranks in the
    top knn, knn when it does not; bit-identical targets."""
    gen = torch.Generator().manual_seed(7)
    inputs = torch.randn(6, 41, generator=gen)
    inputs[:3, 0] = 10.0  # the positive on top
    inputs[3:, 0] = -10.0  # the positive last
    for knn in (1, 5, 13, 40):
        got = ncl.smooth_hot(inputs, knn, 0.2)
        ref = ref_smooth_hot(inputs, knn, 0.2)
        assert got.dtype == torch.float32 and torch.equal(got, ref)
        queue_pos = (got[:, 1:] > 0).sum(1)
        assert queue_pos[:3].tolist() == [knn - 1] * 3 and queue_pos[3:].tolist() == [knn] * 3


def test_smooth_hot_ties_take_the_smaller_column():
    inputs = torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.2]])
    got = ncl.smooth_hot(inputs, 3, 0.2)
    assert (got[0] > 0).tolist() == [True, True, True, False, False]


def test_labeled_loss_equals_transcription():
    gen = torch.Generator().manual_seed(8)
    d, b, K = 32, 40, 400
    cfg = (d, K, 0.05, 5, -1, 0.2, 5, 400, 1000)
    batches = training_batches(gen, 14, b, d, epochs=[0] * 14, labeled=True, n_classes=5)
    for step in run_both(cfg, batches):  # the queue wraps around after 10 steps
        assert_step(step)


def test_hard_negatives_need_la_memory():
    mod = ncl.NCLMemory(8, 100, knn=-1, hard_negative_start=0)
    q = F.normalize(torch.rand(4, 8))
    with pytest.raises(ValueError, match="la_memory"):
        mod(q, q, None, 0, False, None)


def test_knn_none_is_a_clear_error():
    """NCL's default knn=None fails inside its loss; here the message says what to pass."""
    mod = ncl.NCLMemory(8, 100)
    q = F.normalize(torch.rand(4, 8))
    with pytest.raises(ValueError, match="knn=-1"):
        mod(q, q, None, 0, False, None)
    with pytest.raises(ValueError, match="knn must be"):
        ncl.smooth_hot(torch.rand(3, 5), 6)


@pytest.mark.parametrize("args,match", [
    (lambda q: (q[:, :7], q), r"q must be \(B, inputSize=8\)"),
    (lambda q: (q, q[:3]), "k has shape"),
    (lambda q: (q.numpy(), q), "q must be a float torch tensor"),
    (lambda q: (q, q, torch.zeros(3, dtype=torch.long)), r"labels must be \(4,\)"),
    (lambda q: (q, q, None, 0, True), "labeled=True needs labels"),
    (lambda q: (q, q, None, 0, False, torch.rand(10, 5)), r"la_memory must be \(L, inputSize"),
])
def test_bad_arguments_are_named_as_ncl_names_them(args, match):
    mod = ncl.NCLMemory(8, 100, knn=-1)
    before = mod.memory.clone()
    with pytest.raises((TypeError, ValueError), match=match):
        mod(*args(F.normalize(torch.rand(4, 8))))
    assert torch.equal(mod.memory, before) and mod.index == 0


def test_state_dict_keys_are_ncls():
    mod = ncl.NCLMemory(16, 50, knn=-1)
    assert set(mod.state_dict()) == {"memory", "label"}
    assert mod.knn == 5 and mod.memory.shape == (50, 16)
    assert not mod.label.requires_grad and (mod.label == -1).all()


def test_callers_queues_are_not_modified():
    """The queues handed to the loss are left as they were."""
    gen = torch.Generator().manual_seed(9)
    mod = ncl.NCLMemory(16, 200, knn=-1, hard_negative_start=0)
    la = F.normalize(torch.rand(200, 16, generator=gen))
    before_la, before_mem = la.clone(), mod.memory.clone()
    q = F.normalize(torch.rand(8, 16, generator=gen))
    mod(q, q, None, 0, False, la)
    assert torch.equal(la, before_la)
    assert torch.equal(mod.memory[8:], before_mem[8:])
    np.testing.assert_array_equal(mod.memory[:8].numpy(), q.numpy())
