"""hdlfast.compat.sela.optimize_L_sk against SeLa's own loop (sinkhornknopp.py, read in its
public repository and transcribed in numpy: conftest.sela_loop): the same iterations, labels
and plan."""
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hdlfast.compat import sela  # noqa: E402
from conftest import sela_loop  # noqa: E402


def trainer(n, k, seed, dtype, heads=1):
    logits = 0.5 * np.random.default_rng(seed).standard_normal((n, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return types.SimpleNamespace(PS=p.astype(dtype), lamb=25, outs=[k] * heads, dtype=dtype,
                                 L=torch.zeros(heads, n, dtype=torch.long), dev="cpu")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,k", [(3000, 30), (1200, 100)])
def test_optimize_L_sk_matches_selas_loop(dtype, n, k):
    self = trainer(n, k, seed=n + k, dtype=dtype)
    labels, plan, iters = sela_loop(self.PS, self.lamb)
    buffer = self.PS
    sela.optimize_L_sk(self, nh=0)
    assert self.sk_iters == iters
    assert self.L.dtype == torch.long and self.L.shape == (1, n)
    np.testing.assert_array_equal(self.L[0].numpy(), labels)
    # as SeLa: the plan over the (N, K) buffer in place, self.PS its (K, N) transpose
    assert self.PS.dtype == dtype and self.PS.shape == (k, n)
    assert self.PS.base is buffer
    np.testing.assert_allclose(self.PS.T, plan, rtol=1e-4, atol=1e-9)


def test_optimize_L_sk_torch_or_read_only_ps_gets_a_new_plan():
    self = trainer(600, 12, seed=4, dtype=np.float64)
    labels, plan, _ = sela_loop(self.PS, self.lamb)
    self.PS.flags.writeable = False
    before = self.PS.copy()
    sela.optimize_L_sk(self, nh=0)
    assert self.PS.shape == (12, 600)
    np.testing.assert_allclose(self.PS.T, plan, rtol=1e-4, atol=1e-9)
    self.PS = torch.from_numpy(before.copy())
    sela.optimize_L_sk(self, nh=0)
    assert isinstance(self.PS, np.ndarray) and self.PS.shape == (12, 600)
    np.testing.assert_array_equal(self.L[0].numpy(), labels)


def test_second_head_and_bad_shapes():
    self = trainer(500, 10, seed=1, dtype=np.float64, heads=2)
    sela.optimize_L_sk(self, nh=1)
    assert (self.L[0] == 0).all() and len(np.unique(self.L[1].numpy())) == 10
    self.PS = np.ones((500, 7)) / 7
    with pytest.raises(ValueError, match=r"self.PS must be \(N, outs\[0\]=10\)"):
        sela.optimize_L_sk(self, nh=0)


@pytest.mark.parametrize("lamb", [10.0, 25.0])
def test_cifar_variant_returns_selas_cost_and_labels(lamb):
    """cifar.py's optimize_L_sk(PS): its rule at 0.01 (more iterations than the trainer's
    0.1), the labels, and cost = -(1 / lamb) sum log (PS ** lamb at the labels) / N."""
    p = trainer(2500, 40, seed=7, dtype=np.float64).PS
    before = p.copy()
    labels, _, iters = sela_loop(p, lamb, tol=1e-2)
    assert iters > sela_loop(p, lamb)[2]  # the tolerance matters on these inputs
    cost, selflabels = sela.optimize_L_sk(p, lamb=lamb)
    assert isinstance(selflabels, torch.Tensor) and selflabels.dtype == torch.long
    np.testing.assert_array_equal(selflabels.cpu().numpy(), labels)
    ref_cost = -(1 / lamb) * np.nansum(np.log(p[np.arange(2500), labels] ** lamb)) / 2500
    assert isinstance(cost, float) and abs(cost - ref_cost) <= 1e-12 * abs(ref_cost)
    np.testing.assert_array_equal(p, before)
    with pytest.raises(ValueError, match=r"PS must be \(N, K\)"):
        sela.optimize_L_sk(p[0])
    bad = p.copy()
    bad[11, 2] = -0.5
    with pytest.raises(ValueError, match=r"^PS must hold probabilities.*row 11 "):
        sela.optimize_L_sk(bad, lamb=lamb)


def test_trainer_bad_probabilities_are_named_as_selas():
    self = trainer(300, 10, seed=2, dtype=np.float64)
    self.PS[5] = 0.0
    with pytest.raises(ValueError, match=r"^self.PS must hold probabilities.*row 5 "):
        sela.optimize_L_sk(self, 0)
