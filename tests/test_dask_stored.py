"""hdlfast.dask on stored embeddings (.npy paths and memmaps, zarr, array-likes) that the
block tasks read themselves: equal to hdlfast.knn, memory bounded by blocks (out of core),
graphs written to and read from disk, processes as workers, and where a block task computes."""
import tracemalloc

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import hdlfast  # noqa: E402
import hdlfast.dask as hdask  # noqa: E402
from hdlfast import _arrays, _backend  # noqa: E402
from conftest import clustered  # noqa: E402
from test_dask import check_same, count_block_tasks, local_cluster  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return clustered(403, 24, seed=11, n_centres=9)


@pytest.fixture(scope="module")
def npy(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("emb") / "x.npy"
    np.save(p, data)
    return p


def compute(X, k, **kw):
    return dask.compute(*hdask.knn(X, k, **kw), scheduler="threads")


# ---------------------------------------------------------------- every kind of stored source

def sources(data, npy):
    out = {
        "numpy": data,
        "npy path": str(npy),
        "npy pathlib": npy,
        "memmap": np.load(npy, mmap_mode="r"),
        "memmap view": np.load(npy, mmap_mode="r")[:, :],  # not the whole mapping: sliced
        "raw memmap": np.memmap(npy, dtype=np.float32, mode="r", offset=128,
                                shape=data.shape),
    }
    try:
        import torch

        out["torch"] = torch.from_numpy(data.copy())
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("block_rows", [None, 29, 100, 403])
def test_stored_sources_equal_single_machine(data, npy, block_rows):
    s1, i1 = hdlfast.knn(data, 9)
    for name, src in sources(data, npy).items():
        s, i = compute(src, 9, block_rows=block_rows)
        np.testing.assert_array_equal(i, i1, err_msg=name)
        np.testing.assert_allclose(s, s1, atol=1e-6, rtol=0, err_msg=name)
    check_same(s, i, data, data, 9, True)


def test_memmap_reader_is_a_path(npy, data):
    src = hdask._stored(np.load(npy, mmap_mode="r"), "X")
    assert isinstance(src, hdask.NpyRows) and src.offset == 128
    np.testing.assert_array_equal(src[10:20], data[10:20])
    np.testing.assert_array_equal(src[400:500], data[400:])
    assert src[5:5].shape == (0, 24)
    # a view of a mapping is not the whole file: sliced in the task as an array
    assert isinstance(hdask._stored(np.load(npy, mmap_mode="r")[3:], "X"), np.memmap)


def test_npy_dtypes_and_versions(tmp_path, data):
    for dt in ("float16", "float64"):
        p = tmp_path / f"x_{dt}.npy"
        np.save(p, data.astype(dt))
        s, i = compute(str(p), 5, block_rows=50)
        s1, i1 = hdlfast.knn(data.astype(dt), 5)
        np.testing.assert_allclose(s, s1, atol=1e-6 if dt == "float64" else 1e-3)
    p = tmp_path / "v2.npy"  # a version 2.0 header
    with open(p, "wb") as fh:
        np.lib.format.write_array(fh, data, version=(2, 0))
    s, i = compute(str(p), 5, block_rows=64)
    np.testing.assert_array_equal(i, hdlfast.knn(data, 5)[1])


def test_zarr_array_and_path(tmp_path, data):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "x.zarr"
    z = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(64, 24),
                        dtype="float32")
    z[:] = data
    s1, i1 = hdlfast.knn(data, 7)
    for src in (z, str(path), path):
        s, i = compute(src, 7, block_rows=90)
        np.testing.assert_array_equal(i, i1)
        np.testing.assert_allclose(s, s1, atol=1e-6, rtol=0)


def test_stored_database_and_mixed_sources(data, npy):
    q = clustered(50, 24, seed=12)
    for X, D, ref_q in [(q, str(npy), q), (da.from_array(q, chunks=(13, 24)), npy, q),
                        (str(npy), q, data)]:
        s, i = compute(X, 11, database=D, block_rows=60)
        s1, i1 = hdlfast.knn(ref_q, 11, database=data if ref_q is q else q)
        np.testing.assert_array_equal(i, i1)
        np.testing.assert_allclose(s, s1, atol=1e-6, rtol=0)
    # exclude_self with a stored database: split like X whatever block_rows says
    s, i = compute(da.from_array(data, chunks=(77, 24)), 8, database=str(npy),
                   exclude_self=True, block_rows=150)
    np.testing.assert_array_equal(i, hdlfast.knn(data, 8)[1])


def test_truncated_npy_named(tmp_path, data):
    p = tmp_path / "cut.npy"
    np.save(p, data)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 4 * 24 * 10])  # ten rows short of its header
    with pytest.raises(ValueError, match="shorter than its header"):
        compute(str(p), 3, block_rows=100)


def test_stored_bad_rows_named_at_compute(tmp_path, data):
    x = data.copy()
    x[250] = 0
    p = tmp_path / "bad.npy"
    np.save(p, x)
    with pytest.raises(ValueError, match=r"X has a zero-norm row \(row 250\)"):
        compute(str(p), 3, block_rows=64)


@pytest.mark.parametrize("make,exc,words", [
    (lambda t: t / "nothing.npy", ValueError, ["X", "no such file"]),
    (lambda t: (t / "a.txt").write_text("1") and t / "a.txt", ValueError, ["X", ".npy", "a.txt"]),
    (lambda t: np.save(t / "i.npy", np.zeros((4, 3), np.int64)) or t / "i.npy", TypeError,
     ["X", "int64"]),
    (lambda t: np.save(t / "v.npy", np.zeros(4, np.float32)) or t / "v.npy", ValueError,
     ["X", "2-D"]),
    (lambda t: np.save(t / "e.npy", np.zeros((0, 3), np.float32)) or t / "e.npy", ValueError,
     ["X", "empty"]),
    (lambda t: np.save(t / "f.npy", np.asfortranarray(np.ones((4, 3), np.float32)))
     or t / "f.npy", ValueError, ["Fortran"]),
])
def test_stored_bad_input(tmp_path, make, exc, words):
    with pytest.raises(exc) as err:
        hdask.knn(make(tmp_path), 2)
    for w in words:
        assert w in str(err.value)


# ---------------------------------------------------------------- out of core

def _peak_numpy_bytes(path, k, block_rows):
    tracemalloc.start()
    try:
        out = dask.compute(*hdask.knn(str(path), k, block_rows=block_rows),
                           scheduler="threads", num_workers=2)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_a_few_blocks_not_the_data(tmp_path):
    """Stored embeddings: the tasks read their own rows, so the (numpy) memory at any moment
    is a few blocks per thread whatever N is; doubling N does not raise it. (A dask array
    built from the file would hold every block it has read until the last query block.)"""
    d, block = 4096, 256
    rng = np.random.default_rng(13)
    peaks = {}
    for n in (2048, 4096):
        p = tmp_path / f"x{n}.npy"
        out = np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, d))
        for a in range(0, n, 512):
            out[a:a + 512] = rng.standard_normal((512, d), dtype=np.float32)
        out.flush()
        del out
        (sims, idx), peaks[n] = _peak_numpy_bytes(p, 10, block)
    size = 4096 * d * 4
    assert peaks[4096] < 1.25 * peaks[2048], peaks
    assert peaks[4096] < 0.6 * size, (peaks, size)
    x = np.load(p, mmap_mode="r")
    rows = np.arange(0, 4096, 61)
    ref_s, ref_i = hdlfast.knn(np.asarray(x[rows]), 11, database=np.asarray(x))
    assert (ref_i[:, 0] == rows).all()  # itself first (no exclusion here); compare the rest
    np.testing.assert_array_equal(idx[rows], ref_i[:, 1:])
    np.testing.assert_allclose(sims[rows], ref_s[:, 1:], atol=1e-6, rtol=0)


# ---------------------------------------------------------------- graphs on disk

@pytest.mark.parametrize("fmt", ["npy", "zarr"])
def test_save_and_load_graph(tmp_path, data, npy, fmt):
    if fmt == "zarr":
        pytest.importorskip("zarr")
    path = tmp_path / ("g.zarr" if fmt == "zarr" else "g")
    sims, idx = hdask.knn(da.from_array(data, chunks=((100, 3, 300), 24)), 12)  # uneven
    hdask.save_graph(sims, idx, path)
    gs, gi = hdask.load_graph(path)
    s1, i1 = hdlfast.knn(data, 12)
    np.testing.assert_array_equal(np.asarray(gi[:]), i1)
    np.testing.assert_allclose(np.asarray(gs[:]), s1, atol=1e-6, rtol=0)
    assert np.asarray(gi[:]).dtype == np.int64 and np.asarray(gs[:]).dtype == np.float32


@pytest.mark.parametrize("fmt", ["npy", "zarr"])
def test_save_graph_runs_block_tasks_once(tmp_path, data, monkeypatch, fmt):
    if fmt == "zarr":
        pytest.importorskip("zarr")
    calls = count_block_tasks(monkeypatch)
    sims, idx = hdask.knn(da.from_array(data, chunks=(101, 24)), 4)  # 4 blocks
    hdask.save_graph(sims, idx, tmp_path / ("g.zarr" if fmt == "zarr" else "g"))
    # a self-graph: one task per diagonal block, one per pair i < j for both directions
    assert sorted(calls) == ["_block_knn"] * 4 + ["_pair_knn"] * 6


def test_save_graph_bad_input(tmp_path, data):
    with pytest.raises(TypeError, match="dask arrays"):
        hdask.save_graph(*hdlfast.knn(data, 3), tmp_path / "g")
    sims, idx = hdask.knn(data, 3)
    with pytest.raises(ValueError, match="both be"):
        hdask.save_graph(sims, idx[:, :2], tmp_path / "g")


# ---------------------------------------------------------------- processes as workers

@pytest.fixture(scope="module")
def process_client():
    yield from local_cluster(processes=True)


def test_process_workers_read_stored_rows(process_client, tmp_path, data, npy):
    """Tasks pickled to other processes: the stored sources travel as readers, the graph
    written by the workers into files they share with this process."""
    s1, i1 = hdlfast.knn(data, 6)
    for src in (str(npy), np.load(npy, mmap_mode="r"), data):
        s, i = dask.compute(*hdask.knn(src, 6, block_rows=120), scheduler=process_client)
        np.testing.assert_array_equal(i, i1)
    with process_client.as_current():
        hdask.save_graph(*hdask.knn(str(npy), 6, block_rows=120), tmp_path / "g")
    np.testing.assert_array_equal(hdask.load_graph(tmp_path / "g")[1], i1)


# ---------------------------------------------------------------- where a block task computes

def test_block_tasks_move_host_blocks_to_the_workers_gpu(monkeypatch):
    """backend None (or 'cuda') and a usable CUDA device: numpy blocks go to the GPU; a CPU
    backend, HDLFAST_BACKEND naming one, or no GPU keep them on the CPU."""
    moved = []
    monkeypatch.setattr(_arrays, "to_gpu", lambda a: moved.append(a) or ("gpu", a))
    monkeypatch.setattr(_arrays, "to_device", lambda a, like: ("gpu", a))
    q, d = np.ones((3, 4), np.float32), np.ones((5, 4), np.float32)
    monkeypatch.delenv("HDLFAST_BACKEND", raising=False)
    for gpu, backend, env, expect in [(True, None, None, True), (True, "cuda", None, True),
                                      (True, "native", None, False), (True, None, "numba", False),
                                      (False, None, None, False), (False, "cuda", None, False)]:
        monkeypatch.setattr(_backend, "usable", lambda name, g=gpu: g or name != "cuda")
        if env:
            monkeypatch.setenv("HDLFAST_BACKEND", env)
        else:
            monkeypatch.delenv("HDLFAST_BACKEND", raising=False)
        out = hdask._where(q, d, backend)
        assert (out[0][0] == "gpu" if isinstance(out[0], tuple) else False) == expect, \
            (gpu, backend, env)


@pytest.mark.cuda
def test_block_tasks_on_the_gpu_equal_cpu(data, npy):
    s_cpu, i_cpu = compute(str(npy), 9, block_rows=100, backend="native")
    s_gpu, i_gpu = compute(str(npy), 9, block_rows=100)  # the worker's GPU
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-5, rtol=0)
    check_same(s_gpu, i_gpu, data, data, 9, True)


@pytest.mark.cuda
def test_gpu_blocks_of_a_dask_array(data):
    """A dask array of cupy blocks: the tasks compute on the blocks' GPU, results in numpy."""
    cupy = pytest.importorskip("cupy")
    X = da.from_array(cupy.asarray(data), chunks=(100, 24), asarray=False)
    s, i = dask.compute(*hdask.knn(X, 9), scheduler="threads")
    assert isinstance(s, np.ndarray) and isinstance(i, np.ndarray)
    check_same(s, i, data, data, 9, True)
