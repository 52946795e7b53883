"""benchmarks/plot.py turns a result file of the ``hdlfast.bench`` schema into charts."""
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
PLOT = Path(__file__).resolve().parents[1] / "benchmarks" / "plot.py"


def load_plot():
    spec = importlib.util.spec_from_file_location("bench_plot", PLOT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def record(cap, contender, n, seconds, k=20, d=64, floor=None, rss=None):
    return {"capability": cap, "contender": contender, "n": n, "d": d, "k": k, "params": {},
            "seconds": seconds, "times": [seconds], "floor_seconds": floor, "floor_kind": "gemm",
            "ratio_to_floor": seconds / floor if floor else None, "device": "cpu",
            "peak_rss_mb": rss}


def test_charts_from_a_result_file(tmp_path):
    recs = [record("knn", "hdlfast-native", n, n / 1e4, floor=n / 2e4, rss=100 + n / 100)
            for n in (1000, 10000)]
    recs += [record("knn", "faiss-cpu", n, n / 5e3) for n in (1000, 10000)]
    recs += [record("knn", "hdlfast-native", 10000, 1.0 + k / 100, k=k) for k in (10, 100)]
    recs += [record("sinkhorn", "pot", 1000, 0.5, k=None, d=None),
             {**record("sinkhorn", "hdlfast-numba", 1000, None, k=None, d=None),
              "error": "out of memory"}]
    result = {"schema": 1, "machine": {"cpu": "Test CPU"}, "records": recs}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    out = tmp_path / "plots"
    load_plot().main([str(path), "--out", str(out)])
    names = sorted(p.name for p in out.iterdir())
    assert "knn-time-vs-n-k20-d64.png" in names
    assert "knn-time-vs-k-n10000.png" in names
    assert "ratios.png" in names and "memory-vs-n.png" in names
    assert all((out / n).stat().st_size > 1000 for n in names)


def test_no_timed_records_is_an_error(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema": 1, "machine": {}, "records": []}))
    with pytest.raises(SystemExit, match="no timed records"):
        load_plot().main([str(path), "--out", str(tmp_path / "p")])
