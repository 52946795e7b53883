"""hdlfast.dask.knn: the kNN graph of a dask array equals the single-machine hdlfast.knn, on
the local scheduler and on a distributed LocalCluster; merge() is a proper reduction."""
import os
import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import hdlfast  # noqa: E402
import hdlfast.dask as hdask  # noqa: E402
from conftest import assert_knn, clustered, reference_knn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def local_cluster(processes):
    """A client of a two-worker LocalCluster (threads or processes), not the default one."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


@pytest.fixture(scope="module")
def client():
    yield from local_cluster(processes=False)


def count_block_tasks(monkeypatch):
    """A list that records the name of every block task run (diagonal or pair)."""
    calls = []
    for name in ("_block_knn", "_pair_knn"):
        def counting(*a, _real=getattr(hdask, name), _name=name, **kw):
            calls.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(hdask, name, counting)
    return calls


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request):
    if request.param == "threads":
        return "threads"
    return request.getfixturevalue("client")


def run(q, k, scheduler="threads", **kw):
    sims, idx = hdask.knn(q, k, **kw)
    assert isinstance(sims, da.Array) and isinstance(idx, da.Array)
    out = dask.compute(sims, idx, scheduler=scheduler)
    assert out[0].shape == out[1].shape == (q.shape[0], k)
    return sims, idx, out[0], out[1]


def check_same(sims, idx, q, db, k, exclude_self, **kw):
    """Equal to hdlfast.knn on the whole arrays (indices wherever no near-tie, sims 1e-6),
    and correct against the float64 reference."""
    assert_knn(sims, idx, q, db, k, exclude_self)
    s1, i1 = hdlfast.knn(q, k, database=None if db is q else db, exclude_self=exclude_self,
                         **kw)
    np.testing.assert_allclose(sims, s1, atol=1e-6, rtol=0)
    _, ref_i, full = reference_knn(q, db, k, exclude_self)
    srt = -np.sort(-full, axis=1)[:, : min(k + 1, full.shape[1])]
    clear = np.array([len(r) < 2 or np.min(np.abs(np.diff(r))) > 2e-5 for r in srt])
    np.testing.assert_array_equal(idx[clear], i1[clear])


# ---------------------------------------------------------------- self graph, many chunkings

@pytest.mark.parametrize("n,chunks,k", [
    (97, 97, 10),                 # a single block
    (97, (30, 30, 37), 10),       # even-ish
    (97, (5, 40, 1, 51), 10),     # uneven, a one-row block
    (40, 3, 7),                   # blocks smaller than k
    (40, (1, 39), 39),            # k = N - 1
    (25, 4, 24),                  # k = N - 1 and blocks smaller than k
])
def test_self_graph_matches_single_machine(scheduler, n, chunks, k):
    x = clustered(n, 12, seed=n + k)
    X = da.from_array(x, chunks=(chunks, 12))
    sims, idx, s, i = run(X, k, scheduler)
    assert sims.chunks[0] == X.chunks[0] and idx.chunks[0] == X.chunks[0]
    check_same(s, i, x, x, k, True)


def test_self_graph_without_exclusion_returns_self_first():
    x = clustered(60, 8, seed=1)
    *_, s, i = run(da.from_array(x, chunks=(13, 8)), 60, exclude_self=False)
    check_same(s, i, x, x, 60, False)
    np.testing.assert_array_equal(i[:, 0], np.arange(60))


def test_split_every_does_not_change_result():
    x = clustered(90, 16, seed=2)
    X = da.from_array(x, chunks=(7, 16))  # 13 database blocks: trees of several shapes
    outs = [run(X, 9, split_every=s)[2:] for s in (2, 3, 5, 100)]
    for s, i in outs[1:]:
        np.testing.assert_array_equal(s, outs[0][0])  # merge is exact: bitwise equal
        np.testing.assert_array_equal(i, outs[0][1])
    check_same(*outs[0], x, x, 9, True)


def test_column_chunks_and_dtypes():
    x = clustered(50, 20, seed=3)
    *_, s, i = run(da.from_array(x, chunks=(11, 6)), 5)  # columns merged into one chunk
    check_same(s, i, x, x, 5, True)
    for dt in ("float64", "float16"):
        xd = x.astype(dt)
        *_, s, i = run(da.from_array(xd, chunks=(11, 20)), 5)
        s1, i1 = hdlfast.knn(xd, 5)
        np.testing.assert_allclose(s, s1, atol=1e-6 if dt == "float64" else 1e-3)
        assert s.dtype == np.float32 and i.dtype == np.int64


# ---------------------------------------------------------------- with a database

@pytest.mark.parametrize("nq,nd,q_chunks,d_chunks,k", [
    (70, 45, 20, (17, 25, 3), 6),
    (70, 45, 70, 4, 45),          # k = database size, blocks smaller than k
    (1, 30, 1, 7, 30),
])
def test_database_matches_single_machine(scheduler, nq, nd, q_chunks, d_chunks, k):
    q = clustered(nq, 10, seed=4)
    db = clustered(nd, 10, seed=5)
    *_, s, i = run(da.from_array(q, chunks=(q_chunks, 10)), k, scheduler,
                   database=da.from_array(db, chunks=(d_chunks, 10)))
    check_same(s, i, q, db, k, False)


def test_numpy_database_and_exclude_self_with_other_chunking():
    x = clustered(55, 9, seed=6)
    X = da.from_array(x, chunks=(20, 9))
    *_, s, i = run(X, 4, database=x)  # a numpy database: one block
    check_same(s, i, x, x, 4, False)
    # exclude_self with a differently chunked database: rechunked to X's rows
    *_, s, i = run(X, 54, database=da.from_array(x, chunks=(8, 9)), exclude_self=True)
    check_same(s, i, x, x, 54, True)


# ---------------------------------------------------------------- ties across blocks

@pytest.mark.parametrize("chunks", [5, (13, 2, 30, 15), 60])
def test_duplicates_ties_resolved_by_index(scheduler, chunks):
    # rows of +-1 in 16 columns: normalised entries +-1/4, every product exact, so duplicates
    # (spread over all blocks) tie exactly and the order must be by index alone
    rng = np.random.default_rng(7)
    base = rng.choice([-1.0, 1.0], size=(6, 16))
    x = base[rng.integers(0, 6, 60)].astype(np.float32)
    k = 15
    *_, s, i = run(da.from_array(x, chunks=(chunks, 16)), k, scheduler)
    ref_s, ref_i, _ = reference_knn(x, x, k, True)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s.astype(np.float32))
    s1, i1 = hdlfast.knn(x, k)
    np.testing.assert_array_equal(i, i1)
    np.testing.assert_array_equal(s, s1)


# ---------------------------------------------------------------- merge is a reduction

def _partial(rng, n, k, pool):
    """A padded partial top-k: sims from a small grid (many ties), distinct indices drawn
    from ``pool``, sorted by the tie rule, the last columns maybe padding."""
    m = int(rng.integers(0, k + 1))
    s = np.full((n, k), hdask.PAD_SIM, np.float32)
    i = np.full((n, k), hdask.PAD_IDX, np.int64)
    for r in range(n):
        s[r, :m] = rng.integers(-4, 5, m) / 4
        i[r, :m] = rng.choice(pool, m, replace=False)
    o = np.lexsort((i, -s), axis=1)  # sorted by the tie rule, as the block tasks return them
    return np.take_along_axis(s, o, 1), np.take_along_axis(i, o, 1)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), k=st.integers(1, 8))
def test_merge_associative_commutative(seed, n, k):
    rng = np.random.default_rng(seed)
    pools = np.array_split(rng.permutation(100), 3)  # disjoint database blocks
    a, b, c = (_partial(rng, n, k, p) for p in pools)

    def eq(x, y):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])

    m = hdask.merge
    eq(m(a, b), m(b, a))
    eq(m(m(a, b), c), m(a, m(b, c)))
    assert m(a, (a[0][:, :0], a[1][:, :0]))[1].tolist() == a[1].tolist()  # empty list: identity
    # and it is the k best of everything by (sim desc, index asc)
    s = np.concatenate([a[0], b[0], c[0]], 1)
    i = np.concatenate([a[1], b[1], c[1]], 1)
    o = np.lexsort((i, -s), axis=1)[:, :k]
    eq(m(m(a, b), c), (np.take_along_axis(s, o, 1), np.take_along_axis(i, o, 1)))


# ---------------------------------------------------------------- bad input

X0 = da.from_array(clustered(20, 4, seed=8), chunks=(6, 4))


@pytest.mark.parametrize("call,exc,words", [
    (lambda: hdask.knn(da.zeros((20,), chunks=5), 2), ValueError, ["X", "2-D"]),
    (lambda: hdask.knn(da.zeros((20, 4), dtype=int, chunks=5), 2), TypeError, ["X", "int64"]),
    (lambda: hdask.knn(da.zeros((0, 4), chunks=5), 2), ValueError, ["X", "empty"]),
    (lambda: hdask.knn({"a": 1}, 2), TypeError, ["X", "dict"]),
    (lambda: hdask.knn(42, 2), TypeError, ["X", "int"]),
    (lambda: hdask.knn("no-such-file.npy", 2), ValueError, ["X", "no-such-file.npy"]),
    (lambda: hdask.knn(__file__, 2), ValueError, ["X", ".npy"]),
    (lambda: hdask.knn(X0, 2, block_rows=0), ValueError, ["block_rows"]),
    (lambda: hdask.knn(np.zeros((5, 3), np.int32), 2), TypeError, ["X", "int32"]),
    (lambda: hdask.knn(X0, 0), ValueError, ["k"]),
    (lambda: hdask.knn(X0, 2.5), TypeError, ["k"]),
    (lambda: hdask.knn(X0, 20), ValueError, ["k=20", "19"]),
    (lambda: hdask.knn(X0, 21, exclude_self=False), ValueError, ["k=21", "20"]),
    (lambda: hdask.knn(X0, 2, database=da.zeros((9, 5), chunks=3)), ValueError,
     ["database", "5"]),
    (lambda: hdask.knn(X0, 10, database=X0[:9]), ValueError, ["k=10", "9"]),
    (lambda: hdask.knn(X0, 2, database=X0[:9], exclude_self=True), ValueError,
     ["exclude_self", "20", "9"]),
    (lambda: hdask.knn(X0, 2, split_every=1), ValueError, ["split_every"]),
    (lambda: hdask.knn(X0, 2, memory_budget=0), ValueError, ["memory_budget"]),
    (lambda: hdask.knn(X0, 2, backend="nope"), ValueError, ["backend"]),
    (lambda: hdask.knn(X0[X0[:, 0] > 0], 2), ValueError, ["X", "compute_chunk_sizes"]),
])
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as err:
        call()
    for w in words:
        assert w in str(err.value)


def test_bad_rows_named_at_compute(scheduler):
    x = clustered(30, 4, seed=9)
    x[17, 2] = np.nan
    sims, idx = hdask.knn(da.from_array(x, chunks=(7, 4)), 3)  # lazy: no error yet
    with pytest.raises(ValueError, match=r"X holds NaN or Inf \(row 17\)"):
        dask.compute(sims, idx, scheduler=scheduler)
    db = clustered(12, 4, seed=10)
    db[9] = 0
    sims, idx = hdask.knn(da.from_array(x[:5], chunks=2), 3,
                          database=da.from_array(db, chunks=(5, 4)))
    with pytest.raises(ValueError, match=r"database has a zero-norm row \(row 9\)"):
        dask.compute(sims, idx, scheduler=scheduler)


# ---------------------------------------------------------------- dask stays optional

def test_dask_is_optional():
    code = ("import sys; sys.modules['dask'] = None; import hdlfast\n"
            "try:\n    import hdlfast.dask\nexcept ImportError as e:\n"
            "    assert 'pip install hdlfast[dask]' in str(e), e; print('ok')\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
    code = "import sys, hdlfast; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------- both halves of a block pair

@pytest.mark.parametrize("nq,nd,kq,kd", [(37, 50, 5, 9), (1, 40, 40, 1), (64, 3, 3, 20),
                                         (130, 129, 17, 4)])
@pytest.mark.parametrize("threads", [1, 3])
def test_pair_halves_equal_two_searches(nq, nd, kq, kd, threads):
    """knn.host.topk_pair: one pass of tiles (small budget: many tiles, rounds on a thread pool)
    gives both directions exactly as two hdlfast.knn searches; ties by index."""
    from hdlfast import _backend, _host
    from conftest import CPU_BACKENDS

    rng = np.random.default_rng(nq + nd)
    base = rng.choice([-1.0, 1.0], size=(5, 16))
    q = base[rng.integers(0, 5, nq)].astype(np.float32)  # exact products: ties everywhere
    d = base[rng.integers(0, 5, nd)].astype(np.float32)
    for name in CPU_BACKENDS:
        impl = _backend.select(name, False)
        with _host.threads(threads):
            (sq, iq), (sd, id_) = impl.knn.pair(q, d, kq, kd, allow_tf32=False,
                                                memory_budget=64 * 16 * 16 * 4)
        for (s, i), (a, b, k) in zip(((sq, iq), (sd, id_)), ((q, d, kq), (d, q, kd))):
            ref_s, ref_i, _ = reference_knn(a, b, k, False)
            np.testing.assert_array_equal(i, ref_i)
            np.testing.assert_array_equal(s, ref_s.astype(np.float32))


def test_bipartite_rounds_cover_every_pair_once():
    from hdlfast.knn.host import bipartite_rounds

    for nbq, nbd in [(1, 1), (1, 5), (5, 1), (3, 7), (7, 3), (4, 4)]:
        rounds = list(bipartite_rounds(nbq, nbd))
        flat = [p for r in rounds for p in r]
        assert sorted(flat) == [(a, b) for a in range(nbq) for b in range(nbd)]
        for r in rounds:
            assert len({a for a, _ in r}) == len(r) == len({b for _, b in r})


@pytest.mark.parametrize("backend", ["native", "numba"])
def test_pair_floors_skip_only_what_cannot_enter(backend):
    """With per-row floors the pair keeps exactly the reference entries at or above the
    floor (ties at the floor included, by index), then index sentinels."""
    from hdlfast import _backend, _host

    if not _backend.usable(backend):
        pytest.skip(f"{backend} not built")
    rng = np.random.default_rng(3)
    base = rng.choice([-1.0, 1.0], size=(6, 16))
    q = base[rng.integers(0, 6, 40)].astype(np.float32)
    d = base[rng.integers(0, 6, 70)].astype(np.float32)
    fq = rng.integers(-4, 5, 40) / 4  # on the grid of possible cosines: exact ties
    fd = np.full(70, -np.inf)
    fd[::3] = rng.integers(-4, 5, 24)[:len(fd[::3])] / 4
    impl = _backend.select(backend, False)
    with _host.threads(2):
        halves = impl.knn.pair(q, d, 9, 12, allow_tf32=False, memory_budget=32 * 32 * 4 * 64,
                               floors=(fq, fd))
    for (s, i), (a, b, k, floor) in zip(halves, ((q, d, 9, fq), (d, q, 12, fd))):
        ref_s, ref_i, _ = reference_knn(a, b, k, False)
        for r in range(a.shape[0]):
            keep = ref_s[r] >= floor[r]
            m = int(keep.sum())
            np.testing.assert_array_equal(i[r, :m], ref_i[r][keep])
            np.testing.assert_array_equal(s[r, :m], ref_s[r][keep].astype(np.float32))
            assert (i[r, m:] == np.iinfo(np.int64).max).all()
