"""The one place that picks a backend says so when work does not run where the caller would
expect it to (GPU arrays without a usable GPU, no compiled CPU module)."""
import platform
import re
import warnings

import numpy as np
import pytest

import hdlfast
from hdlfast import _backend


@pytest.fixture
def fresh_warnings():
    _backend._warn_fallback.cache_clear()
    yield
    _backend._warn_fallback.cache_clear()


@pytest.mark.skipif(_backend.usable("cuda"), reason="a GPU is usable here")
def test_gpu_data_without_a_usable_gpu_warns_once(fresh_warnings):
    with pytest.warns(RuntimeWarning, match="GPU arrays run on the CPU .*: " +
                      re.escape(_backend.cuda_problem())):
        impl = _backend.select(None, True)
    assert impl.name in ("native", "numba")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _backend.select(None, True)  # said once per process
        _backend.select(None, False)  # host data on the CPU: nothing to say


def test_missing_compiled_module_warns(monkeypatch, fresh_warnings):
    real = _backend._module
    monkeypatch.setattr(_backend, "_module",
                        lambda name: None if name == "native" else real(name))
    with pytest.warns(RuntimeWarning, match="compiled CPU module is not built"):
        impl = _backend.select(None, False)
    assert impl.name == "numba"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _backend.select("numba", False)  # asked for by name: nothing to say


def test_info_says_why_cuda_is_not_usable():
    cuda = hdlfast.info()["cuda"]
    if cuda["usable"]:
        assert cuda["devices"] > 0
    else:
        assert isinstance(cuda["why_not"], str) and cuda["why_not"]
        assert cuda["why_not"] == _backend.cuda_problem()


def test_info_describes_the_cpu_and_the_kernel_clones_that_run():
    cpu = hdlfast.info()["cpu"]
    assert isinstance(cpu["model"], str) and cpu["model"]
    if _backend.built("native"):
        assert cpu["native_simd"] in ("x86-64-v4", "x86-64-v3", "x86-64", "generic")
        if cpu.get("avx512") is False:
            assert cpu["native_simd"] != "x86-64-v4"
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert isinstance(cpu["family"], int) and isinstance(cpu["avx512"], bool)


def test_knn_result_is_unchanged_by_the_choice(fresh_warnings):
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    a = hdlfast.knn(x, 5)
    b = hdlfast.knn(x, 5, backend=_backend.select(None, False).name)
    np.testing.assert_array_equal(a.idx, b.idx)


@pytest.mark.parametrize("name", [n for n in ("native", "numba") if _backend.usable(n)])
def test_cpu_backends_implement_the_protocols(name):
    """Every kernel family a CPU backend hands out has the methods _kernels names (a kernel
    renamed on one side only fails here, not at the first call that needs it)."""
    from hdlfast import _kernels

    impl = _backend.select(name, False)
    assert impl.name == name and not impl.on_gpu
    assert isinstance(impl.knn, _kernels.KNNSearch)
    assert isinstance(impl.knn.kernels, _kernels.TopkKernels)
    assert isinstance(impl.labeling, _kernels.LabelingKernels)
    assert isinstance(impl.kmeans, _kernels.KMeansKernels)
    assert isinstance(impl.pairs, _kernels.PairKernels)
    x = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    state = impl.sinkhorn_state(x, 1.0, np.full(50, 1 / 50))
    assert isinstance(state, _kernels.SinkhornState)
    assert isinstance(impl.kmeans_state(x, True, None, False), _kernels.KMeansState)
    kernels = _backend._cpu_kernels(name)["sinkhorn"]
    assert isinstance(kernels, _kernels.SinkhornKernels)


def test_cuda_drivers_implement_the_protocols():
    """The CUDA drivers, checked by their classes (no GPU needed)."""
    from hdlfast import _kernels
    from hdlfast.kmeans.cuda import KMeansState
    from hdlfast.knn.cuda import CudaKNN
    from hdlfast.labeling.cuda import CudaLabeling
    from hdlfast.sinkhorn.cuda import SinkhornState

    for cls, proto in ((CudaKNN, _kernels.KNNSearch), (CudaLabeling, _kernels.LabelingKernels),
                       (SinkhornState, _kernels.SinkhornState),
                       (KMeansState, _kernels.KMeansState)):
        methods = [m for m, v in vars(proto).items()
                   if callable(v) and (m == "__call__" or not m.startswith("_"))]
        missing = [m for m in methods if m not in dir(cls)]
        assert methods and not missing, (cls, missing)
