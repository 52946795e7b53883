// hdlfast._native: CPU kernels. Plain integers cross the boundary (pointers, shapes); the GIL
// is released around every kernel so several Python worker threads can run them at once.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cpu/hdl.h"
#include "cpu/kmeans.h"
#include "cpu/parallel.h"
#include "cpu/sinkhorn.h"
#include "cpu/topk.h"


namespace py = pybind11;
using hdlfast::cpu::finalize;
using hdlfast::cpu::merge_cols;
using hdlfast::cpu::merge_rows;

template <typename T>
static T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// Polled by long kernels (cpu/interrupt.h): runs Python's signal handlers, so Ctrl-C sets
// KeyboardInterrupt and the kernel returns early. Only the main thread handles signals.
static bool python_interrupted() {
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

// A phase-A kernel returned -1: it was interrupted and the Python error is set.
static int64_t checked(int64_t result) {
  if (result < 0) throw py::error_already_set();
  return result;
}

PYBIND11_MODULE(_native, m) {
  m.doc() = "hdlfast CPU kernels (C++, std::thread workers)";
  m.def(
      "merge_rows",
      [](uintptr_t tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0, int64_t col0,
         uintptr_t heap_s, uintptr_t heap_i, int64_t k, bool exclude_self) {
        py::gil_scoped_release nogil;
        merge_rows(ptr<const float>(tile), rows, cols, ld, row0, col0, ptr<float>(heap_s),
                   ptr<int64_t>(heap_i), k, exclude_self);
      },
      "Merge tile rows into the running top-k heaps of rows row0.. (candidates col0..).");
  m.def(
      "merge_cols",
      [](uintptr_t tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0, int64_t col0,
         uintptr_t heap_s, uintptr_t heap_i, int64_t k) {
        py::gil_scoped_release nogil;
        merge_cols(ptr<const float>(tile), rows, cols, ld, row0, col0, ptr<float>(heap_s),
                   ptr<int64_t>(heap_i), k);
      },
      "Merge tile columns into the heaps of rows col0.. (candidates row0..).");
  m.def(
      "finalize",
      [](uintptr_t heap_s, uintptr_t heap_i, int64_t n, int64_t k) {
        py::gil_scoped_release nogil;
        finalize(ptr<float>(heap_s), ptr<int64_t>(heap_i), n, k);
      },
      "Sort every heap: similarity descending, index ascending.");
  namespace c = hdlfast::cpu;
  m.def(
      "reverse_indptr",
      [](uintptr_t idx, int64_t rows, int64_t k, int64_t n, uintptr_t indptr) {
        py::gil_scoped_release nogil;
        c::reverse_indptr(ptr<const int64_t>(idx), rows, k, n, ptr<int64_t>(indptr));
      },
      "In-edge counts as CSR offsets (n + 1).");
  m.def(
      "reverse_fill",
      [](uintptr_t idx, int64_t rows, int64_t k, int64_t n, uintptr_t indptr, uintptr_t src) {
        py::gil_scoped_release nogil;
        c::reverse_fill(ptr<const int64_t>(idx), rows, k, n, ptr<const int64_t>(indptr),
                        ptr<int32_t>(src));
      },
      "In-edge sources per target, ascending.");
  m.def(
      "vote_rows",
      [](uintptr_t nbr_idx, uintptr_t nbr_sims, int64_t rows, int64_t k, uintptr_t db_labels,
         bool uniform, uintptr_t out_lab, uintptr_t out_conf) {
        py::gil_scoped_release nogil;
        c::vote_rows(ptr<const int64_t>(nbr_idx), ptr<const float>(nbr_sims), rows, k,
                     ptr<const int64_t>(db_labels), uniform, ptr<int64_t>(out_lab),
                     ptr<double>(out_conf));
      },
      "kNN-DV votes of neighbour lists.");
  m.def(
      "propagate_levels",
      [](uintptr_t idx, uintptr_t sims, int64_t n, int64_t k, uintptr_t indptr, uintptr_t src,
         uintptr_t labels, uintptr_t conf, uintptr_t level, uintptr_t prov, bool uniform) {
        c::Interrupt stop(python_interrupted);
        int64_t h;
        {
          py::gil_scoped_release nogil;
          h = c::propagate_levels(ptr<const int64_t>(idx), ptr<const float>(sims), n, k,
                                  ptr<const int64_t>(indptr), ptr<const int32_t>(src),
                                  ptr<int64_t>(labels), ptr<double>(conf), ptr<int32_t>(level),
                                  ptr<int8_t>(prov), uniform, stop);
        }
        return checked(h);
      },
      "HDL phase A (levels schedule), in place; returns the number of levels (Ctrl-C: "
      "KeyboardInterrupt).");
  m.def(
      "propagate_sequential",
      [](uintptr_t idx, uintptr_t sims, int64_t n, int64_t k, uintptr_t indptr, uintptr_t src,
         uintptr_t labels, uintptr_t conf, uintptr_t level, uintptr_t prov, bool uniform) {
        c::Interrupt stop(python_interrupted);
        int64_t steps;
        {
          py::gil_scoped_release nogil;
          steps = c::propagate_sequential(ptr<const int64_t>(idx), ptr<const float>(sims), n, k,
                                          ptr<const int64_t>(indptr), ptr<const int32_t>(src),
                                          ptr<int64_t>(labels), ptr<double>(conf),
                                          ptr<int32_t>(level), ptr<int8_t>(prov), uniform, stop);
        }
        return checked(steps);
      },
      "HDL phase A (sequential schedule), in place; returns the number of steps.");
  m.def(
      "search",
      [](uintptr_t idx, uintptr_t sims, int64_t n, int64_t k, uintptr_t indptr, uintptr_t src,
         uintptr_t labels, uintptr_t targets, int64_t n_targets,
         int64_t max_visits, bool uniform, uintptr_t out_lab, uintptr_t out_conf,
         uintptr_t out_steps, uintptr_t out_cycles) {
        py::gil_scoped_release nogil;
        c::search(ptr<const int64_t>(idx), ptr<const float>(sims), n, k,
                  ptr<const int64_t>(indptr), ptr<const int32_t>(src), ptr<const int64_t>(labels), ptr<const int64_t>(targets), n_targets, max_visits,
                  uniform, ptr<int64_t>(out_lab), ptr<double>(out_conf), ptr<int64_t>(out_steps),
                  ptr<int64_t>(out_cycles));
      },
      "HDL phase B: bounded depth-first label search from each target.");
  m.def(
      "sk_prepare",
      [](uintptr_t src, uintptr_t q, int64_t n, int64_t k, double beta, uintptr_t rowmax) {
        py::gil_scoped_release nogil;
        c::sk_prepare(ptr<const float>(src), ptr<float>(q), n, k, beta, ptr<double>(rowmax));
      },
      "Sinkhorn kernel exp(beta (s - row max)) of the scores src into q; row maxima out.");
  m.def(
      "sk_colsum",
      [](uintptr_t q, int64_t n, int64_t k, uintptr_t u, uintptr_t out) {
        py::gil_scoped_release nogil;
        c::sk_colsum(ptr<const float>(q), n, k, ptr<const double>(u), ptr<double>(out));
      },
      "Column sums of diag(u) q.");
  m.def(
      "sk_iterate",
      [](uintptr_t q, int64_t n, int64_t k, uintptr_t v, uintptr_t r, uintptr_t u,
         uintptr_t out) {
        py::gil_scoped_release nogil;
        c::sk_iterate(ptr<const float>(q), n, k, ptr<const double>(v), ptr<const double>(r),
                      ptr<double>(u), ptr<double>(out));
      },
      "One fused Sinkhorn pass: row scaling u, then the column sums with it.");
  m.def(
      "sk_finalize",
      [](uintptr_t q, int64_t n, int64_t k, uintptr_t v, uintptr_t r, uintptr_t labels,
         uintptr_t out) {
        py::gil_scoped_release nogil;
        return c::sk_finalize(ptr<float>(q), n, k, ptr<const double>(v), ptr<const double>(r),
                              ptr<int64_t>(labels), ptr<double>(out));
      },
      "Rows of q diag(v) normalised to 1, row argmax labels, the plan's column sums.");
  m.def(
      "cluster_sums",
      [](uintptr_t x, int64_t n, int64_t d, uintptr_t inv, uintptr_t labels, int64_t n_clusters,
         uintptr_t sums, uintptr_t counts) {
        py::gil_scoped_release nogil;
        hdlfast::cpu::cluster_sums(ptr<const float>(x), n, d, ptr<const float>(inv),
                                   ptr<const int64_t>(labels), n_clusters, ptr<double>(sums),
                                   ptr<int64_t>(counts));
      },
      "k-means update: per-cluster float64 sums of rows x * inv (inv 0: weight 1) and counts.");
  m.def("num_threads", &hdlfast::cpu::num_threads, "Worker threads the kernels use.");
}
