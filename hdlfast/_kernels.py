"""What a backend provides, written down as Protocols: the kernel families the compiled CPU
module and the numba twins implement under the same names and arguments, and the drivers the
public functions call (kNN search, Sinkhorn and k-means states). ``_backend.select`` assembles
a :class:`Backend` from the operations' modules; nothing here runs.

Array arguments are C-contiguous numpy arrays of the dtypes the kernels name (the bindings
check them, see csrc/array_args.h); outputs are written in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TopkKernels(Protocol):
    """Fold similarity tiles into per-row running top-k heaps, or for large k per-row
    reservoirs (csrc/cpu/topk.cpp)."""

    def merge_rows(self, tile: np.ndarray, row0: int, col0: int, heap_s: np.ndarray,
                   heap_i: np.ndarray, exclude_self: bool) -> None: ...

    def merge_cols(self, tile: np.ndarray, row0: int, col0: int, heap_s: np.ndarray,
                   heap_i: np.ndarray) -> None: ...

    def finalize(self, heap_s: np.ndarray, heap_i: np.ndarray) -> None: ...

    def reservoir_merge(self, tile: np.ndarray, row0: int, col0: int, keys: np.ndarray,
                        count: np.ndarray, thr: np.ndarray, k: int,
                        exclude_self: bool) -> None: ...

    def reservoir_finish(self, keys: np.ndarray, count: np.ndarray, out_s: np.ndarray,
                         out_i: np.ndarray) -> None: ...


@runtime_checkable
class LabelingKernels(Protocol):
    """kNN voting and HDL's phases on a kNN graph (csrc/cpu/hdl.cpp, csrc/cuda/hdl.cu)."""

    def reverse_csr(self, idx: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]: ...

    def vote_rows(self, nbr_idx: np.ndarray, nbr_sims: np.ndarray, db_labels: np.ndarray,
                  uniform: bool, out_lab: np.ndarray, out_conf: np.ndarray) -> None: ...

    def propagate_levels(self, idx, sims, k, indptr, src, labels, conf, level, prov,
                         uniform) -> int: ...

    def propagate_sequential(self, idx, sims, k, indptr, src, labels, conf, level, prov,
                             uniform) -> int: ...

    def search(self, idx, sims, k, indptr, src, labels, targets, max_visits, uniform,
               out_lab, out_conf, out_steps, out_cycles) -> None: ...


@runtime_checkable
class SinkhornKernels(Protocol):
    """The fused passes of Sinkhorn-Knopp over Q (csrc/cpu/sinkhorn.cpp)."""

    def prepare(self, src: np.ndarray, q: np.ndarray, beta: float, rowmax: np.ndarray) -> None: ...

    def prepare_power(self, p: np.ndarray, q: np.ndarray, power: int,
                      rowmax: np.ndarray) -> None: ...

    def colsum(self, q: np.ndarray, u: np.ndarray, out: np.ndarray) -> None: ...

    def iterate(self, q: np.ndarray, v: np.ndarray, r: np.ndarray, u: np.ndarray,
                out_colsum: np.ndarray) -> None: ...

    def finalize(self, q: np.ndarray, v: np.ndarray, r: np.ndarray, labels: np.ndarray,
                 out_colsum: np.ndarray) -> bool: ...


@runtime_checkable
class KMeansKernels(Protocol):
    """The fused k-means pass, exact squared distances and the k-means++ step
    (csrc/cpu/kmeans.cpp)."""

    def top2_update(self, tile: np.ndarray, bias: np.ndarray, col0: int,
                    best_s: np.ndarray, best_i: np.ndarray, second_s: np.ndarray) -> None: ...

    def set_bounds(self, rows: np.ndarray, best_s: np.ndarray, best_i: np.ndarray,
                   second_s: np.ndarray, sq_norms: np.ndarray, eps: np.ndarray, kappa: float,
                   labels: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> None: ...

    def chunk_sums(self, x: np.ndarray, inv: np.ndarray, labels: np.ndarray,
                   slot_of: np.ndarray, clusters: np.ndarray, psums: np.ndarray,
                   pcounts: np.ndarray) -> int: ...

    def fold_sums(self, clusters: np.ndarray, n_slots: int, psums: np.ndarray,
                  pcounts: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> None: ...

    def row_sq_dists(self, x: np.ndarray, centroids: np.ndarray, labels: np.ndarray,
                     out: np.ndarray) -> None: ...

    def pp_trials(self, p: np.ndarray, pp: np.ndarray, cand: np.ndarray, d2: np.ndarray,
                  out: np.ndarray, colsum: np.ndarray) -> None: ...


@runtime_checkable
class PairKernels(Protocol):
    """Paired row dot products and unit mixtures of hard negatives (csrc/cpu/pairs.cpp)."""

    def pair_dots(self, a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray,
                  out: np.ndarray) -> None: ...

    def mix_rows(self, a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray,
                 w: np.ndarray, out: np.ndarray) -> None: ...


@runtime_checkable
class KNNSearch(Protocol):
    """Exact cosine top-k (``knn.host.HostKNN``, ``knn.cuda.CudaKNN``)."""

    def __call__(self, q, db, k: int, *, exclude_self: bool, allow_tf32: bool,
                 memory_budget: int | None, q_name: str, db_name: str) -> tuple[Any, Any]: ...

    def pair(self, q, db, kq: int, kd: int, *, allow_tf32: bool, memory_budget: int | None,
             floors=(None, None)) -> list[tuple[np.ndarray, np.ndarray]]: ...


@runtime_checkable
class SinkhornState(Protocol):
    """One Sinkhorn run: the N x K buffer Q and the row scaling (``sinkhorn.host``,
    ``sinkhorn.cuda``); the driver in ``hdlfast.sinkhorn`` owns the column scaling."""

    bad_row: int
    fused_finalize: bool

    def rowmax(self) -> np.ndarray: ...

    def start(self, u: np.ndarray) -> np.ndarray: ...

    def row_scaling(self) -> np.ndarray: ...

    def iterate(self, v: np.ndarray) -> tuple[np.ndarray, bool]: ...

    def finalize(self, v: np.ndarray) -> tuple[Any, Any, np.ndarray | None, bool]: ...

    def host_buffer(self) -> np.ndarray: ...


@runtime_checkable
class KMeansState(Protocol):
    """One k-means run: the rows the top-1 search sees and the labels (``kmeans.host``,
    ``kmeans.cuda``); the driver in ``hdlfast.kmeans`` owns the centroids."""

    def host_rows(self, rows: np.ndarray) -> np.ndarray: ...

    def assign(self, centroids: np.ndarray) -> int: ...

    def sq_dists(self) -> np.ndarray: ...

    def update(self, n_clusters: int) -> tuple[np.ndarray, np.ndarray]: ...

    def labels_out(self) -> Any: ...


@dataclass(frozen=True)
class Backend:
    """What the public functions run on: built by ``_backend.select``.

    ``sinkhorn_state(scores, beta, r, power)`` and ``kmeans_state(x, spherical,
    memory_budget, allow_tf32)`` start one run; ``sinkhorn_powers`` says whether the Sinkhorn
    kernels raise probabilities to an integer power themselves (SeLa's P ** lambda);
    ``kmeans`` and ``pairs`` are always host kernels."""

    name: str
    on_gpu: bool
    knn: KNNSearch
    labeling: LabelingKernels
    sinkhorn_state: Callable[..., SinkhornState]
    sinkhorn_powers: bool
    kmeans_state: Callable[..., KMeansState]
    kmeans: KMeansKernels
    pairs: PairKernels
