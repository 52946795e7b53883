"""CUDA twins of the hdlfast.compat tests: torch tensors on the GPU in, the same results as
the CPU transcriptions of the originals, the caller's device out. Skipped without a GPU."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from conftest import swav_reference  # noqa: E402
from hdlfast.compat import ncl, scan, swav, usl  # noqa: E402

pytestmark = pytest.mark.cuda


def test_swav_codes_on_the_gpu():
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(1024, 16, generator=g), dim=1)
    c = F.normalize(torch.randn(300, 16, generator=g), dim=1)
    out = (z @ c.t()).cuda()
    q = swav.distributed_sinkhorn(out)
    assert q.device == out.device and q.dtype == torch.float32
    np.testing.assert_allclose(q.double().cpu().numpy(),
                               swav_reference(out.double().cpu().numpy()), rtol=2e-5, atol=1e-7)


def test_ncl_memory_on_the_gpu_equals_the_transcription():
    from test_compat_ncl import RefMemory, training_batches, unit_batch

    gen = torch.Generator().manual_seed(2)
    d, b, K = 32, 40, 600
    la_memory = unit_batch(gen, 700, d, torch.randn(10, d, generator=gen) * 2)
    cfg = (d, K, 0.05, 5, -1, 0.2, 5, 400, 1)
    torch.manual_seed(0)
    ours = ncl.NCLMemory(*cfg).cuda()
    torch.manual_seed(0)
    ref = RefMemory(*cfg)
    for q, k, labels, epoch, labeled in training_batches(gen, 4, b, d, epochs=[0, 1, 2, 3]):
        qa = q.detach().cuda().requires_grad_()
        qb = q.detach().clone().requires_grad_()
        torch.manual_seed(5)
        loss_a = ours(qa, k.cuda(), labels.cuda(), epoch, labeled, la_memory.cuda())
        loss_a.backward()
        torch.manual_seed(5)
        loss_b = ref.forward(qb, k, labels, epoch, labeled, la_memory)
        loss_b.backward()
        assert loss_a.device.type == "cuda"
        torch.testing.assert_close(loss_a.cpu(), loss_b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(qa.grad.cpu(), qb.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours.memory.cpu(), ref.memory)


def test_scan_mining_and_loss_on_the_gpu():
    from test_compat_scan import filled_bank, scan_confidence_ce

    bank = filled_bank()[0]
    cpu_idx, cpu_acc = bank.mine_nearest_neighbors(20)
    bank.cuda()
    idx, acc = bank.mine_nearest_neighbors(20)
    assert isinstance(idx, np.ndarray) and acc == cpu_acc
    np.testing.assert_array_equal(idx, cpu_idx)
    g = torch.Generator().manual_seed(3)
    weak, strong = 8 * torch.randn(64, 5, generator=g), torch.randn(64, 5, generator=g)
    loss = scan.ConfidenceBasedCE(0.9, True)(weak.cuda(), strong.cuda())
    assert loss.device.type == "cuda"
    torch.testing.assert_close(loss.cpu(), scan_confidence_ce(weak, strong, 0.9, True),
                               rtol=1e-5, atol=1e-6)


def test_usl_selection_from_gpu_tensors():
    from test_compat_usl import usl_loop

    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dist = rng.uniform(0.5, 1.5, 300)
    labels = np.arange(300) % 6
    ref = usl_loop(x, dist, labels, 6, 6, 3, 0.5, 0.9, 4, 0.5)
    got = usl.get_selection_with_reg(*(torch.from_numpy(a).cuda() for a in (x, dist, labels)),
                                     6, 6, iters=3, w=0.5, momentum=0.9, horizon_dist=4,
                                     alpha=0.5)
    np.testing.assert_array_equal(got, ref)
