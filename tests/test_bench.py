"""hdlfast.bench and ``hdlfast bench``: the synthetic generator, the record schema, skipped and
failing contenders, the table and the command (toy sizes; no timing is asserted)."""
import json

import numpy as np
import pytest

from hdlfast import bench, cli
from hdlfast.bench import harness
from hdlfast.datasets import SYNTHETIC_BLOCK, _synthetic_block_at, synthetic_embeddings

TINY = {
    "knn": {"n": 300, "d": 16, "k": 5},
    "hdl": {"n": 2000, "k": 5, "classes": 10, "label_fraction": 0.01},
    "sinkhorn": {"n": 500, "clusters": 8, "iters": 3},
    "kmeans": {"n": 400, "d": 8, "clusters": 4, "iters": 3},
    "label": {"n": 300, "d": 8, "k": 5, "classes": 5, "label_fraction": 0.05},
}
RECORD_KEYS = {"capability", "contender", "n", "d", "k", "params", "seconds", "times",
               "floor_seconds", "floor_kind", "ratio_to_floor", "device", "peak_rss_mb"}


# --- the generator --------------------------------------------------------------------------


def test_generator_is_deterministic():
    x1, y1 = synthetic_embeddings(1000, 12, n_classes=7, seed=3)
    x2, y2 = synthetic_embeddings(1000, 12, n_classes=7, seed=3)
    assert x1.dtype == np.float32 and x1.shape == (1000, 12) and y1.dtype == np.int64
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    x3, _ = synthetic_embeddings(1000, 12, n_classes=7, seed=4)
    assert not np.array_equal(x1, x3)
    assert y1.min() >= 0 and y1.max() < 7


def test_memmap_equals_in_memory(tmp_path):
    n = SYNTHETIC_BLOCK + 1234  # two blocks, the second cut short
    x, y = synthetic_embeddings(n, 6, n_classes=5, seed=1)
    path = tmp_path / "emb.npy"
    xm, ym = synthetic_embeddings(n, 6, n_classes=5, seed=1, path=path)
    assert isinstance(xm, np.memmap)
    assert np.array_equal(np.asarray(xm), x) and np.array_equal(ym, y)
    assert np.array_equal(np.load(path, mmap_mode="r"), x)
    assert np.array_equal(np.load(tmp_path / "emb.labels.npy"), y)


def test_blocks_regenerate_alone_and_prefixes_agree():
    n = 2 * SYNTHETIC_BLOCK + 10
    x, y = synthetic_embeddings(n, 4, n_classes=6, seed=2)
    for b in range(3):
        xb, yb = _synthetic_block_at(b, n, 4, n_classes=6, seed=2)
        rows = slice(b * SYNTHETIC_BLOCK, min(n, (b + 1) * SYNTHETIC_BLOCK))
        assert np.array_equal(xb, x[rows]) and np.array_equal(yb, y[rows])
    xs, ys = synthetic_embeddings(500, 4, n_classes=6, seed=2)
    assert np.array_equal(xs, x[:500]) and np.array_equal(ys, y[:500])


def test_labels_are_long_tailed_and_rows_clustered():
    n, c = 200_000, 10
    x, y = synthetic_embeddings(n, 8, n_classes=c, imbalance=10.0, spread=0.2, seed=0)
    counts = np.bincount(y, minlength=c)
    expected = 10.0 ** (-np.arange(c) / (c - 1))
    expected = n * expected / expected.sum()
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    assert 8 < counts.max() / counts.min() < 12.5
    assert counts.argmax() == 0 and counts.argmin() == c - 1
    # rows sit near their class centre (unit norm), noise of norm about spread
    for cls in (0, c - 1):
        rows = x[y == cls]
        centre = rows.mean(0)
        assert abs(np.linalg.norm(centre) - 1) < 0.05
        assert abs(np.linalg.norm(rows - centre, axis=1).mean() - 0.2) < 0.03
    assert np.array_equal(synthetic_embeddings(100, 8, n_classes=c, seed=0)[1],
                          synthetic_embeddings(100, 8, n_classes=c, seed=0)[1])


def test_other_dtypes_and_bad_arguments():
    x32, _ = synthetic_embeddings(50, 5, seed=0)
    x64, _ = synthetic_embeddings(50, 5, seed=0, dtype=np.float64)
    assert x64.dtype == np.float64 and np.allclose(x64, x32, atol=1e-6)
    for kwargs in ({"n": 0, "d": 3}, {"n": 5, "d": 2.5}, {"n": 5, "d": 3, "imbalance": 0.5},
                   {"n": 5, "d": 3, "seed": -1}, {"n": 5, "d": 3, "dtype": np.int32},
                   {"n": 5, "d": 3, "spread": -1.0}):
        with pytest.raises(ValueError):
            synthetic_embeddings(**kwargs)


# --- the harness ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_result():
    lines = []
    result = bench.run(sizes=TINY, repeats=2, progress=lines.append)
    assert lines  # progress was reported
    return result


def _check_record(r):
    assert RECORD_KEYS <= set(r), set(RECORD_KEYS) - set(r)
    assert r["capability"] in bench.CAPABILITIES
    assert r["contender"] in bench.CONTENDERS[r["capability"]]
    assert isinstance(r["n"], int) and r["n"] == r["params"]["n"]
    assert r["d"] is None or isinstance(r["d"], int)
    assert r["k"] is None or isinstance(r["k"], int)
    assert set(r["params"]) == set(bench.PARAMS[r["capability"]])
    assert r["floor_kind"] in ("gemm", "memory")
    assert isinstance(r["device"], str) and r["device"]
    assert r["peak_rss_mb"] is None or r["peak_rss_mb"] > 0


def test_run_records_follow_the_schema(tiny_result):
    res = json.loads(json.dumps(tiny_result))  # JSON-serialisable, unchanged by the trip
    assert res == tiny_result
    assert res["schema"] == 1 and isinstance(res["created"], str)
    assert res["floors"]["gemm_gflops"] > 0 and res["floors"]["copy_gbs"] > 0
    m = res["machine"]
    assert {"platform", "python", "cpu", "logical_cores", "usable_cores", "ram_gb", "gpus",
            "versions", "hdlfast_info"} <= set(m)
    assert {"hdlfast", "numpy"} <= set(m["versions"])
    assert res["settings"] == {"preset": "full", "repeats": 2, "warmup": True,
                               "cpu_in_turns": True}
    assert {r["capability"] for r in res["records"]} == set(bench.CAPABILITIES)
    for r in res["records"]:
        _check_record(r)
        assert "error" not in r, r
        assert len(r["times"]) == 2 and all(t > 0 for t in r["times"])
        assert r["seconds"] == pytest.approx(float(np.median(r["times"])))
        assert r["floor_seconds"] > 0
        assert r["ratio_to_floor"] == pytest.approx(r["seconds"] / r["floor_seconds"])
        assert r["params"] == {**bench.FULL[r["capability"]], **TINY[r["capability"]]}
    knn = [r for r in res["records"] if r["capability"] == "knn"]
    assert {(r["n"], r["d"], r["k"]) for r in knn} == {(300, 16, 5)}
    assert {r["floor_kind"] for r in res["records"] if r["capability"] in ("hdl", "sinkhorn")} \
        == {"memory"}


def test_every_contender_is_run_or_skipped_with_a_reason(tiny_result):
    ran = {(r["capability"], r["contender"]) for r in tiny_result["records"]}
    skipped = {(s["capability"], s["contender"]) for s in tiny_result["skipped"]}
    assert not ran & skipped
    for cap, names in bench.CONTENDERS.items():
        for name in names:
            assert (cap, name) in ran | skipped, (cap, name)
    assert all(isinstance(s["reason"], str) and s["reason"] for s in tiny_result["skipped"])
    assert ("knn", "hdlfast-native") in ran


def test_table_mentions_every_contender(tiny_result):
    table = bench.format_table(tiny_result)
    for r in tiny_result["records"]:
        assert r["contender"] in table
    for s in tiny_result["skipped"]:
        assert s["contender"] in table
    assert len([ln for ln in table.splitlines() if not ln.startswith("skipped")]) == \
        1 + len(tiny_result["records"])
    assert "GFLOP/s" in bench.format_machine(tiny_result)


def test_missing_peer_is_skipped_not_an_error(monkeypatch):
    from hdlfast.bench import workloads

    real = workloads._import
    monkeypatch.setattr(workloads, "_import", lambda name: None if name in ("faiss", "ot")
                        else real(name))
    res = bench.run(sizes={"knn": TINY["knn"], "sinkhorn": TINY["sinkhorn"]}, repeats=1,
                    progress=None)
    reasons = {(s["capability"], s["contender"]): s["reason"] for s in res["skipped"]}
    assert "not installed" in reasons[("knn", "faiss-cpu")]
    assert "not installed" in reasons[("sinkhorn", "pot")]
    assert "faiss-cpu" not in {r["contender"] for r in res["records"]}
    assert "faiss-cpu" in bench.format_table(res)


def test_failing_contender_is_recorded(monkeypatch):
    real = harness._setup

    def setup(capability, contender, params, data):
        if contender == "hdlfast-numba":
            def boom():
                raise MemoryError("pretend out of memory")
            return boom
        return real(capability, contender, params, data)

    monkeypatch.setattr(harness, "_setup", setup)
    res = bench.run(sizes={"hdl": TINY["hdl"]}, repeats=1, progress=None,
                    contenders=["hdlfast-native", "hdlfast-numba"])
    by = {r["contender"]: r for r in res["records"]}
    assert by["hdlfast-numba"]["error"] == "MemoryError: pretend out of memory"
    assert by["hdlfast-numba"]["seconds"] is None and by["hdlfast-numba"]["times"] == []
    assert by["hdlfast-numba"]["ratio_to_floor"] is None
    assert by["hdlfast-native"]["seconds"] > 0 and "error" not in by["hdlfast-native"]
    _check_record(by["hdlfast-numba"])
    assert "pretend out of memory" in bench.format_table(res)


def test_cpu_contenders_are_timed_in_turns(monkeypatch):
    """Each contender is set up and warmed up, then the rounds run every contender once in
    turn; one failing in round two keeps its error and no times, the others all rounds."""
    calls = []

    def setup(capability, contender, params, data):
        def fn():
            calls.append(contender)
            if contender == "sklearn" and calls.count("sklearn") == 3:
                raise RuntimeError("second round")
        return fn

    monkeypatch.setattr(harness, "_setup", setup)
    params = harness._complete("kmeans", TINY["kmeans"], bench.QUICK)
    names = ["hdlfast-native", "hdlfast-numba", "sklearn"]
    recs = bench.measure_in_turns("kmeans", params, names, data=None,
                                  floors={"gemm_gflops": 1.0, "copy_gbs": 1.0}, repeats=3)
    assert calls == names + names + names[:2] + ["sklearn"] + names[:2]
    by = {r["contender"]: r for r in recs}
    assert by["sklearn"]["error"] == "RuntimeError: second round" and by["sklearn"]["times"] == []
    assert by["sklearn"]["seconds"] is None
    for name in names[:2]:
        assert len(by[name]["times"]) == 3 and "error" not in by[name]
        assert by[name]["seconds"] == pytest.approx(float(np.median(by[name]["times"])))


def test_sizes_override_and_several_sizes():
    plan = harness._plan(True, None, {"knn": [{"n": 100}, {"n": 200, "d": 4}]}, None)
    assert [(cap, p["n"], p["d"], p["k"]) for cap, p, _ in plan] == \
        [("knn", 100, 128, 20), ("knn", 200, 4, 20)]
    plan = harness._plan(False, ["kmeans", "hdl"], None, ["hdlfast-native"])
    assert [(cap, names) for cap, _, names in plan] == \
        [("hdl", ["hdlfast-native"])] + [("kmeans", ["hdlfast-native"])] * 2
    assert plan[0][1] == bench.FULL["hdl"]
    assert [p for _, p, _ in plan[1:]] == [{**bench.FULL["kmeans"], **s}
                                           for s in bench.FULL_SIZES["kmeans"]]


def test_full_run_holds_the_target_pairs():
    """The default full run measures every pair the performance targets name: the self-graph
    at k = 20 and k = 1,000, a query-database search and a single query, both k-means kinds,
    SwAV's Sinkhorn; each size is valid and labelled."""
    plan = harness._plan(False, None, None, None)
    labels = {(cap, harness.size_label(cap, p)) for cap, p, _ in plan}
    assert {("knn", "50,000x128 k=20"), ("knn", "50,000x256 k=20"), ("knn", "50,000x128 k=1000"),
            ("knn", "2,000 vs 400,000x128 k=10"), ("knn", "1 vs 400,000x128 k=10"),
            ("kmeans", "100,000x128 C=100 it=20"),
            ("kmeans", "100,000x128 C=100 it=20 spherical++"),
            ("sinkhorn", "4,096x3000 it=3 swav")} <= labels
    for cap, p, names in plan:
        assert names == list(bench.CONTENDERS[cap])
    assert [c for c, _, _ in harness._plan(True, None, None, None)] == list(bench.CAPABILITIES)


@pytest.mark.parametrize("kwargs", [
    {"capabilities": ["nonsense"]}, {"sizes": {"knn": {"bogus": 1}}},
    {"sizes": {"knn": {"n": 10, "k": 20}}}, {"sizes": {"knn": {"n": 0}}},
    {"sizes": {"sinkhorn": {"lam": -1.0}}}, {"contenders": ["nobody"]}, {"repeats": 0},
    {"sizes": {"nonsense": {}}}, {"sizes": [1, 2]}, {"sizes": {"hdl": {"n": 150}}},
])
def test_run_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bench.run(progress=None, **kwargs)


# --- the command ----------------------------------------------------------------------------


def test_cli_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "results.json"
    sizes = json.dumps({"knn": TINY["knn"]})
    assert cli.main(["bench", "--quick", "--only", "knn", "--repeats", "1", "--out", str(out),
                     "--sizes", sizes]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["schema"] == 1 and res["settings"]["preset"] == "quick"
    assert {r["capability"] for r in res["records"]} == {"knn"}
    assert all(len(r["times"]) == 1 for r in res["records"])
    assert printed.startswith("machine: ")
    for r in res["records"]:
        assert r["contender"] in printed
    assert str(out) in printed


@pytest.mark.parametrize("argv", [["--only", "nonsense"], ["--only", "knn,bogus"],
                                  ["--repeats", "0"], ["--sizes", "{not json"],
                                  ["--sizes", '{"knn": {"n": 3}}'],
                                  ["--out", "/nonexistent-dir/x.json"]])
def test_cli_bench_bad_options_exit_2(argv, capsys):
    assert cli.main(["bench", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hdlfast bench: error:") and err.count("\n") == 1


def test_timers():
    """The one timer of the benchmarks: median of the timed calls after a warm-up call, the
    last result returned; paired timing gives one median per side."""
    calls = []
    sec, times, out = bench.timed(lambda: calls.append(1) or len(calls), 3)
    assert len(calls) == 4 and out == 4 and len(times) == 3 and sec == sorted(times)[1]
    sec, times, out = bench.timed(lambda: calls.append(1) or len(calls), 2, warmup=False)
    assert len(calls) == 6 and out == 6 and len(times) == 2
    a, b = bench.paired_times(lambda: calls.append("a"), lambda: calls.append("b"), 3)
    assert calls[6:] == ["a", "b"] * 4 and a >= 0 and b >= 0


def test_bench_is_not_imported_with_hdlfast():
    """The harness stays out of the core import path (``import hdlfast`` does not load it)."""
    import subprocess
    import sys

    code = "import sys, hdlfast; print('hdlfast.bench' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert out.stdout.strip() == "False"
