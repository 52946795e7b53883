"""A small benchmark harness: hdlfast against its peers and against the floor, in one run.

Used by ``hdlfast bench [--quick]`` and by scripts in ``benchmarks/``. Every measurement is the
median of ``repeats`` timed runs (``time.perf_counter``; GPU contenders synchronise the device
before the clock stops) after one untimed warm-up run of the same call. In ``run``, the CPU
contenders of one workload are timed in turns (``measure_in_turns``: round after round, each
runs once), so a slow spell of a shared machine falls on all of them; GPU contenders run one
after another. Inputs are made before
the clock starts (GPU contenders get their own device copy first). Data are synthetic and
deterministic (:func:`hdlfast.datasets.synthetic_embeddings`, :func:`hdlfast.datasets.ring_graph`),
nothing is downloaded.

Public API
----------
``run(quick=False, capabilities=None, sizes=None, repeats=None, progress=print, *,
contenders=None, warmup=True) -> dict``
    Runs every capability in ``capabilities`` (default: those named in ``sizes`` when given,
    else all of ``CAPABILITIES``) at the sizes of the preset (``QUICK``, or for the full run each of
    ``FULL_SIZES[capability]`` over ``FULL``: the pairs the performance targets name), each size
    overridden by ``sizes``: ``{capability: {param: value, ...}}`` or ``{capability: [{...},
    {...}]}`` for several sizes; given params replace the preset's, the others are kept (see
    ``PARAMS`` for the names). ``repeats``: timed runs per measurement (default
    ``DEFAULT_REPEATS``). ``progress``: called with one line of text per step (None: quiet).
    ``contenders``: only these names (default: all of ``CONTENDERS``). Unknown capabilities,
    params or contenders raise ValueError. Returns the result dict below.
``format_table(result) -> str``: one line per record (capability, size, contender, median
    seconds, speed against the fastest peer of that capability and size on the same kind of
    device, written "<peer> / <contender> = 1.8x" (> 1: the contender is faster), and the ratio
    to the floor), then one line per skipped contender.
``append_line(path, record)``: append one JSON line to ``path`` at once (the GPU scripts
    write each measurement as it is made).
``format_machine(result) -> str``: one line: CPU, cores, RAM, GPU, library versions, floors.
``machine_info() -> dict``, ``gemm_rate(n=2048, d=512, repeats=5) -> GFLOP/s``,
``copy_bandwidth(nbytes=256 MiB, repeats=5) -> GB/s``, ``gpu_gemm_rate``, ``gpu_copy_bandwidth``
(None without a GPU), ``measure_floors(gpu=False) -> dict``,
``prepare(capability, params) -> data``, ``measure(capability, params, contender, *, data=None,
floors=None, repeats=3, warmup=True) -> record``, ``measure_in_turns(capability, params,
contenders, *, data, floors, repeats=3, warmup=True) -> [record, ...]`` (CPU contenders
timed in turns; ``params`` complete, as ``run`` passes them), ``availability(capability, contender, params)
-> None or the reason it cannot run``.

Capabilities, their params (``PARAMS``), contenders and floors
--------------------------------------------------------------
- "knn" (n, d, k, queries, seed): exact cosine self-graph of unit-norm float32
  ``synthetic_embeddings(n, d)``, or with ``queries`` > 0 that many query rows (seed + 1)
  against those n rows as the database. hdlfast-native, hdlfast-numba, hdlfast-cuda; faiss-cpu
  (IndexFlatIP: add, search k+1, the point itself kept; the index is built inside the clock);
  torch-cpu and torch-cuda (mm + topk in row blocks, self masked). Floor "gemm": 2 n^2 d FLOPs
  (2 queries n d for a search; the full product: hdlfast's self-graph multiplies only half of
  it, so it can go below 1) over the matmul rate.
- "hdl" (n, k, classes, label_fraction, seed): ``hdlfast.hdl(graph=(sims, idx), labels=...,
  fallback=None)`` on ``ring_graph(n, k)``. hdlfast-native, hdlfast-numba, hdlfast-cuda. Floor
  "memory": one read of idx + sims, 12 n k bytes, over the copy bandwidth.
- "sinkhorn" (n, clusters, iters, lam, swav, seed): SeLa Sinkhorn (lam=25, ``iters``
  iterations, tol=0) of (n, clusters) float32 scores 0.3 N(0, 1); with swav=1 SwAV's
  (epsilon 0.05, ``iters`` iterations) of scores 0.1 N(0, 1), its torch peer the loop of SwAV's
  distributed_sinkhorn and POT's regularisation 0.05. hdlfast-native, -numba, -cuda; pot
  (``ot.sinkhorn``, numpy float64; skipped when 5 float64 copies would not fit in half the free
  RAM); torch-cpu, torch-cuda (plain Sinkhorn: per-row max shift, exp, then column and row
  normalisations). Floor "memory": iters reads of 4 n clusters bytes over the copy bandwidth.
- "kmeans" (n, d, clusters, iters, spherical, seed): Euclidean Lloyd k-means of
  ``synthetic_embeddings(n, d, n_classes=clusters)``, ``iters`` updates, random init; with
  spherical=1 spherical k-means of the unit rows from k-means++ (faiss ``spherical=True``,
  scikit-learn Euclidean k-means++ on the unit rows). hdlfast-native, -numba, -cuda
  (``tol=None, init="random"``); faiss-cpu (``faiss.Kmeans``, every row trained on, plus one
  search for the labels); sklearn (``KMeans(init="random", n_init=1, tol=0,
  algorithm="lloyd")``). Floor "gemm": (iters + 1) products of 2 n clusters d FLOPs.
- "label" (n, d, k, classes, label_fraction, seed): end to end ``hdlfast.hdl(X, labels, k)``
  (graph, propagation, search, kNN-DV fallback) on ``synthetic_embeddings(n, d,
  n_classes=classes)`` with ``label_fraction`` of the points labeled. hdlfast-native,
  hdlfast-cuda. Floor "gemm": the kNN floor 2 n^2 d FLOPs.

Floors are measured in the same run: ``gemm_gflops`` (float32 numpy matmul of (n, d) by (d, n),
multi-threaded BLAS, 2 n^2 d FLOPs, best of 5) and ``copy_gbs`` (``np.copyto`` of 256 MiB,
counting the bytes read plus the bytes written, best of 5; one thread). For GPU contenders the
floors come from torch (or cupy) on the device: ``gpu_gemm_gflops`` (float32 mm, TF32 as torch
is set) and ``gpu_copy_gbs`` (``tensor.copy_``, synchronised).

Result (JSON-serialisable)
--------------------------
``{"schema": 1, "created": ISO-8601 UTC, "machine": machine_info(), "floors": {"gemm_gflops":
float, "copy_gbs": float, "gpu_gemm_gflops": float, "gpu_copy_gbs": float, "gpu_device": str}
(gpu keys only when measured; "gpu_error": str when measuring them failed), "settings":
{"preset": "quick"|"full", "repeats": int, "warmup": bool, "cpu_in_turns": true}, "records": [record, ...],
"skipped": [{"capability": str, "contender": str, "reason": str}, ...]}``. A contender that
cannot run here (peer not installed, no GPU, too big for POT) is listed once per capability in
"skipped", never an error.

record: ``{"capability": str, "contender": str, "n": int, "d": int|None, "k": int|None,
"params": dict (every size param of the capability), "seconds": float (median; None on error),
"times": [float, ...], "floor_seconds": float|None, "floor_kind": "gemm"|"memory",
"ratio_to_floor": float|None (seconds / floor_seconds), "device": "cpu" or the GPU name,
"peak_rss_mb": float|None}`` (d is None for hdl and sinkhorn, k for sinkhorn and kmeans:
their sizes are in params), plus ``"error": str`` when the contender failed (out of memory,
...; then seconds and ratio_to_floor are None and times is empty). ``peak_rss_mb`` is the
process's peak resident memory from the contender's setup (its own copies of the inputs)
through its timed runs (timed in turns: through its warm-up run, the earlier contenders' setups
held too), the shared inputs included (Linux, after resetting the high-water mark through
/proc/self/clear_refs; None where that is not possible).
"""
from .machine import (copy_bandwidth, gemm_rate, gpu_copy_bandwidth, gpu_gemm_rate, gpu_names,
                      machine_info, measure_floors)
from .report import append_line, format_machine, format_table
from .harness import DEFAULT_REPEATS, SCHEMA, measure, measure_in_turns, run
from .timing import paired_times, timed
from .workloads import (CAPABILITIES, CONTENDERS, FULL, FULL_SIZES, PARAMS, QUICK, availability,
                        prepare)

__all__ = ["run", "measure", "measure_in_turns", "prepare", "availability", "machine_info", "gemm_rate",
           "copy_bandwidth", "gpu_gemm_rate", "gpu_copy_bandwidth", "gpu_names",
           "measure_floors", "format_table", "format_machine", "append_line", "timed",
           "paired_times",
           "CAPABILITIES", "CONTENDERS", "PARAMS", "QUICK", "FULL", "FULL_SIZES", "DEFAULT_REPEATS",
           "SCHEMA"]
