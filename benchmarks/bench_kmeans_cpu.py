"""k-means on the CPU: N=100,000 x d=128 float32 (hypersphere_mixture, 100 classes, spread 1,
seed 0) into 100 clusters, exactly 20 Lloyd iterations, hdlfast native and numba against
faiss-cpu ``faiss.Kmeans`` and scikit-learn ``KMeans(algorithm="lloyd")`` in the same run, plus
the floor: the 20 assignment products X @ C.T alone (numpy float32, multi-threaded BLAS).

Every contender does 20 centroid updates and 21 assignments (the last one gives labels that
match the final centroids): hdlfast ``tol=None, n_iters=20``; faiss ``niter=20`` training on
every row (``max_points_per_centroid`` raised, faiss would otherwise subsample to 256 rows per
centroid) plus one ``index.search(X, 1)``; scikit-learn ``max_iter=20, tol=0`` (its own final
E-step; it stops early only on a strict fixed point, n_iter is recorded).

Initialisation (each library's own, so the timings include it):
- "random" (k distinct rows): hdlfast init="random" against faiss (its only init) and against
  scikit-learn init="random". The rows drawn differ between libraries (different RNGs).
- "k-means++": hdlfast init="k-means++" (greedy, 2 + ln C trials, on a seeded sample of 256
  rows per cluster) against scikit-learn's default greedy k-means++ (on all rows).
- Spherical k-means: hdlfast spherical=True against faiss spherical=True, both random init, on
  the unit-normalised rows (faiss only normalises the centroids).

Quality: the inertia of every timed run is recomputed the same way in float64 (squared distance
of each row to its assigned final centroid; for spherical runs on unit rows, 2 - 2 cos), and
``test_inertia_over_seeds`` (not timed) repeats every configuration over 5 seeds. The summary
(``hdlfast_summary["kmeans"]`` in the JSON) holds speedups = peer time / hdlfast time (from the
medians, and from the fastest rounds), ratios to the floor, and hdlfast inertia / peer inertia - 1.
OMP_WAIT_POLICY defaults to PASSIVE for this module (see below).
Run: pytest benchmarks/bench_kmeans_cpu.py --benchmark-json=benchmarks/results/<name>.json
"""
import os

# On the 2-core VM of the recorded run, faiss (OpenMP, libgomp) fell now and then into a mode
# about 1.65x slower, for seconds up to a whole process; with passive waiting this happened less
# often (scikit-learn's times did not change). Set before libgomp loads; recorded in the JSON,
# and the summary gives speedups from the fastest rounds too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _gomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libgomp" in f.read()
    except OSError:
        return False


_GOMP_BEFORE = _gomp_loaded()  # True: the setting came too late for this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

faiss = pytest.importorskip("faiss")  # imported before hdlfast: peers keep their own defaults
sk_cluster = pytest.importorskip("sklearn.cluster")

from hdlfast import _backend  # noqa: E402
from hdlfast.datasets import hypersphere_mixture  # noqa: E402
from hdlfast.kmeans import kmeans  # noqa: E402

N, D, C, ITERS = 100_000, 128, 100, 20
ROUNDS = 7
QUALITY_SEEDS = range(5)
BACKENDS = [b for b in ("native", "numba") if _backend.usable(b)]
HDLFAST_CONFIGS = [("euclidean", "random"), ("euclidean", "kmeanspp"), ("spherical", "random")]
INIT = {"random": "random", "kmeanspp": "k-means++"}

_RUNS = {}  # benchmark name -> {"inertia": ..., ...}, for the summary
_SEEDS = {}  # configuration -> inertias over QUALITY_SEEDS
_LOAD = {}  # machine load when the module starts (the box may be shared)


def _run(benchmark, fn):
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)


def inertia(x, centroids, labels):
    """Sum of squared distances of the rows to their assigned centroid, in float64."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    total = 0.0
    c = np.asarray(centroids, np.float64)
    for i in range(0, x.shape[0], 16384):
        diff = x[i:i + 16384].astype(np.float64) - c[labels[i:i + 16384]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


@pytest.fixture(scope="module")
def data():
    x, _ = hypersphere_mixture(N, D, n_classes=C, spread=1.0, seed=0)
    return x


@pytest.fixture(scope="module")
def unit(data):
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


class _Summary:
    """Adds the k-means speedups and inertias to hdlfast_summary (after conftest wrote it)."""

    @pytest.hookimpl(trylast=True)
    def pytest_benchmark_update_json(self, config, benchmarks, output_json):
        med = output_json["hdlfast_summary"]["median_s"]
        pairs = {"faiss_euclidean": "euclidean-random", "sklearn_random": "euclidean-random",
                 "sklearn_kmeanspp": "euclidean-kmeanspp",
                 "faiss_spherical": "spherical-random"}
        speedup, rel_inertia = {}, {}
        for backend in BACKENDS:
            for peer, cfg in pairs.items():
                mine = f"hdlfast_{backend}-{cfg}"
                if mine in med and peer in med:
                    key = f"{peer} / {mine}"
                    speedup[key] = med[peer] / med[mine]
                    rel_inertia[f"{mine} vs {peer}"] = (
                        _RUNS[mine]["inertia"] / _RUNS[peer]["inertia"] - 1.0)
        best = {b["name"].replace("test_", "").replace("[", "_").rstrip("]"): b["stats"]["min"]
                for b in output_json["benchmarks"]}
        speedup_min = {}
        for backend in BACKENDS:
            for peer, cfg in pairs.items():
                mine = f"hdlfast_{backend}-{cfg}"
                if mine in best and peer in best:
                    speedup_min[f"{peer} / {mine}"] = best[peer] / best[mine]
        floor = med.get("assign_products_floor")
        seeds = {k: {"inertias": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
                 for k, v in _SEEDS.items()}
        seed_rel = {}
        for peer, cfg in pairs.items():
            if f"hdlfast-{cfg}" in seeds and peer in seeds:
                seed_rel[f"hdlfast-{cfg} vs {peer}"] = (
                    seeds[f"hdlfast-{cfg}"]["mean"] / seeds[peer]["mean"] - 1.0)
        output_json["hdlfast_summary"]["kmeans"] = {
            "problem": {"n": N, "d": D, "clusters": C, "iterations": ITERS,
                        "assignments": ITERS + 1, "dtype": "float32",
                        "data": "hypersphere_mixture(100000, 128, n_classes=100, spread=1.0, "
                                "seed=0)"},
            "init": {"faiss": "random rows (its only init), all rows trained on "
                              "(max_points_per_centroid=N)",
                     "sklearn_random": "init='random'", "sklearn_kmeanspp": "init='k-means++'"
                     " (greedy, all rows)",
                     "hdlfast-*-random": "init='random'", "hdlfast-*-kmeanspp":
                     "init='k-means++' (greedy, sample of 256 rows per cluster)",
                     "spherical": "unit-normalised rows for both hdlfast and faiss"},
            "speedup_peer_time_over_hdlfast_time": speedup,
            "speedup_from_min_times": speedup_min,
            "ratio_to_floor": {k: v / floor for k, v in med.items()} if floor else None,
            "runs": _RUNS,
            "inertia_hdlfast_over_peer_minus_1": rel_inertia,
            "inertia_over_seeds": seeds,
            "inertia_over_seeds_hdlfast_over_peer_minus_1": seed_rel,
            "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                                                    "OPENBLAS_NUM_THREADS",
                                                    "HDLFAST_NUM_THREADS")},
            "libgomp_loaded_before_this_module": _GOMP_BEFORE,
            "loadavg_1_5_15": {"start": _LOAD.get("start"), "end": list(os.getloadavg())},
        }


@pytest.fixture(scope="module", autouse=True)
def _summary_plugin(request):
    _LOAD["start"] = list(os.getloadavg())
    pm = request.config.pluginmanager
    if not pm.has_plugin("hdlfast-kmeans-summary"):
        pm.register(_Summary(), "hdlfast-kmeans-summary")


def _faiss(x, spherical, seed):
    km = faiss.Kmeans(D, C, niter=ITERS, seed=seed, spherical=spherical,
                      max_points_per_centroid=N, verbose=False)
    km.train(x)
    _, labels = km.index.search(x, 1)
    return km.centroids, labels[:, 0]


def _sklearn(x, init, seed):
    est = sk_cluster.KMeans(n_clusters=C, init=init, n_init=1, max_iter=ITERS, tol=0,
                            algorithm="lloyd", random_state=seed).fit(x)
    return est.cluster_centers_, est.labels_, est.n_iter_


@pytest.mark.parametrize("geometry", ["euclidean", "spherical"])
def test_faiss(benchmark, data, unit, geometry):
    x = unit if geometry == "spherical" else data
    cent, labels = _run(benchmark, lambda: _faiss(x, geometry == "spherical", 1234))
    _RUNS[f"faiss_{geometry}"] = {"inertia": inertia(x, cent, labels), "n_iter": ITERS}
    benchmark.extra_info.update(_RUNS[f"faiss_{geometry}"])


@pytest.mark.parametrize("init", ["kmeanspp", "random"])
def test_sklearn(benchmark, data, init):
    cent, labels, n_iter = _run(benchmark, lambda: _sklearn(data, INIT[init], 0))
    _RUNS[f"sklearn_{init}"] = {"inertia": inertia(data, cent, labels), "n_iter": int(n_iter)}
    benchmark.extra_info.update(_RUNS[f"sklearn_{init}"])


@pytest.mark.parametrize("geometry,init", HDLFAST_CONFIGS,
                         ids=[f"{g}-{i}" for g, i in HDLFAST_CONFIGS])
@pytest.mark.parametrize("backend", BACKENDS)
def test_hdlfast(benchmark, data, unit, backend, geometry, init):
    spherical = geometry == "spherical"
    x = unit if spherical else data
    kmeans(x[:5000], 10, spherical=spherical, n_iters=2, init=INIT[init],
           backend=backend)  # compile / warm up outside the timing
    res = _run(benchmark, lambda: kmeans(x, C, spherical=spherical, n_iters=ITERS, tol=None,
                                         init=INIT[init], seed=0, backend=backend))
    name = f"hdlfast_{backend}-{geometry}-{init}"
    _RUNS[name] = {"inertia": inertia(x, res.centroids, res.labels),
                   "inertia_reported": res.inertia, "n_iter": res.n_iter}
    benchmark.extra_info.update(_RUNS[name])
    assert res.n_iter == ITERS
    assert abs(res.inertia / _RUNS[name]["inertia"] - 1) < 1e-3


def test_assign_products_floor(benchmark, data):
    """The 20 assignment products X @ C.T alone (no argmin, no update)."""
    cent = np.ascontiguousarray(data[:C])
    out = np.empty((N, C), np.float32)

    def run():
        for _ in range(ITERS):
            np.matmul(data, cent.T, out=out)

    _run(benchmark, run)


def test_inertia_over_seeds(data, unit):
    """Not timed: every configuration over QUALITY_SEEDS (hdlfast on the default backend)."""
    for seed in QUALITY_SEEDS:
        for geometry, init in HDLFAST_CONFIGS:
            spherical = geometry == "spherical"
            x = unit if spherical else data
            res = kmeans(x, C, spherical=spherical, n_iters=ITERS, tol=None, init=INIT[init],
                         seed=seed)
            _SEEDS.setdefault(f"hdlfast-{geometry}-{init}", []).append(
                inertia(x, res.centroids, res.labels))
        for geometry in ("euclidean", "spherical"):
            x = unit if geometry == "spherical" else data
            cent, labels = _faiss(x, geometry == "spherical", 1234 + seed)
            _SEEDS.setdefault(f"faiss_{geometry}", []).append(inertia(x, cent, labels))
        for init in ("kmeanspp", "random"):
            cent, labels, _ = _sklearn(data, INIT[init], seed)
            _SEEDS.setdefault(f"sklearn_{init}", []).append(inertia(data, cent, labels))
