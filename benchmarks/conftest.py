"""Shared fixtures for the pytest-benchmark suites and the JSON summary they leave behind.

Run:  pytest benchmarks/bench_knn_cpu.py --benchmark-json=benchmarks/results/<name>.json
Each result records the machine, the library versions, and ratios to the named peer and to
the floor (the tile products alone), computed from the medians of the same run.
"""
import numpy as np
import pytest


def pytest_benchmark_update_json(config, benchmarks, output_json):
    med = {b["name"].replace("test_", "").replace("[", "_").rstrip("]"): b["stats"]["median"]
           for b in output_json["benchmarks"]}
    summary = {"median_s": med}
    if "pot_sinkhorn" in med:
        summary["ratio_to_pot"] = {k: v / med["pot_sinkhorn"] for k, v in med.items()}
    if "read_floor" in med:
        summary["ratio_to_read_floor"] = {k: v / med["read_floor"] for k, v in med.items()}
    if "faiss_flat_ip" in med:
        summary["ratio_to_faiss"] = {k: v / med["faiss_flat_ip"] for k, v in med.items()}
    if "tile_products_floor" in med:
        summary["ratio_to_floor"] = {k: v / med["tile_products_floor"] for k, v in med.items()}
    from hdlfast import bench

    machine = bench.machine_info()  # the machine facts of every hdlfast benchmark record
    output_json["hdlfast_summary"] = {"versions": machine["versions"],
                                      "backends": machine["hdlfast_info"],
                                      "machine": machine, **summary}


@pytest.fixture(scope="session")
def embeddings_50k():
    from hdlfast.datasets import hypersphere_mixture

    x, _ = hypersphere_mixture(50_000, 256, n_classes=100, spread=1.0, seed=0)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
