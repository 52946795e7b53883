"""hdlfast.compat.swav.distributed_sinkhorn against SwAV's own function (main_swav.py, read
in its public repository and transcribed for one process: conftest.swav_reference)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hdlfast.compat import swav  # noqa: E402
from conftest import swav_reference  # noqa: E402


@pytest.mark.parametrize("b,k", [(256, 30), (1024, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_codes_equal_swavs(b, k, dtype):
    g = torch.Generator().manual_seed(b + k)
    z = torch.nn.functional.normalize(torch.randn(b, 16, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, 16, generator=g), dim=1)
    out = (z @ c.t()).to(dtype).requires_grad_(True)
    q = swav.distributed_sinkhorn(out)
    assert q.dtype == dtype and q.shape == (b, k) and not q.requires_grad
    ref = swav_reference(out.detach().double().numpy())
    np.testing.assert_allclose(q.double().numpy(), ref, rtol=2e-5, atol=1e-7)
    q5 = swav.distributed_sinkhorn(out, epsilon=0.1, sinkhorn_iterations=5)
    np.testing.assert_allclose(q5.double().numpy(),
                               swav_reference(out.detach().double().numpy(), 0.1, 5),
                               rtol=2e-5, atol=1e-7)


def test_scores_that_overflow_the_original():
    out = torch.tensor([[5.0, 0.0, -5.0], [0.0, 6.0, 1.0]])  # exp(6 / 0.05) = inf in float32
    assert torch.isinf(torch.exp(out / 0.05)).any()
    q = swav.distributed_sinkhorn(out)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2))


def test_bad_scores_are_named_as_swavs():
    out = torch.zeros(6, 4)
    out[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^out holds NaN or Inf \(row 3\)"):
        swav.distributed_sinkhorn(out)
    with pytest.raises(ValueError, match="out"):
        swav.distributed_sinkhorn(torch.zeros(6))
