// hdlfast._native: CPU kernels. Arrays cross the boundary, checked there (array_args.h:
// dtype, shape, C-contiguity, writability) before any work; sizes come from the arrays. The
// GIL is released around every kernel so several Python worker threads can run them at once.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

#include "array_args.h"
#include "cpu/hdl.h"
#include "cpu/kmeans.h"
#include "cpu/pairs.h"
#include "cpu/parallel.h"
#include "cpu/rows.h"
#include "cpu/sinkhorn.h"
#include "cpu/topk.h"

namespace py = pybind11;
namespace c = hdlfast::cpu;
using hdlfast::args::in;
using hdlfast::args::in_range;
using hdlfast::args::kAny;
using hdlfast::args::out;
using Arr = const py::array&;

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

// Array arguments are never converted (a converted output would be a copy the kernel writes
// in vain): anything but a numpy array of the right kind is a TypeError.
static py::arg a(const char* name) { return py::arg(name).noconvert(); }

// Two row tables a (na, d), b (nb, d) of T and the pairs of their rows ra, rb (n,), each index
// checked to be in range.
template <typename T>
struct RowPairs {
  RowPairs(Arr a_rows, Arr b_rows, Arr ra_arr, Arr rb_arr)
      : a(in<T>(a_rows, "a", {kAny, kAny})), d(a_rows.shape(1)),
        b(in<T>(b_rows, "b", {kAny, d})), ra(in<int64_t>(ra_arr, "ra", {kAny})),
        n(ra_arr.shape(0)), rb(in<int64_t>(rb_arr, "rb", {n})) {
    in_range(ra, n, a_rows.shape(0), "ra");
    in_range(rb, n, b_rows.shape(0), "rb");
  }
  const T* a;
  const int64_t d;
  const T* b;
  const int64_t* ra;
  const int64_t n;
  const int64_t* rb;
};

PYBIND11_MODULE(_native, m) {
  m.doc() = "hdlfast CPU kernels (C++, std::thread workers)";
  // A similarity tile and the running heaps it merges into; `span` (rows for merge_rows,
  // columns for merge_cols) must land inside the heaps from `start`.
  struct Tile {
    const float* t;
    float* hs;
    int64_t* hi;
    int64_t rows, cols, k;
  };
  auto tile_args = [](Arr tile, Arr heap_s, Arr heap_i, int64_t start, bool by_rows) {
    Tile x;
    x.t = in<float>(tile, "tile", {kAny, kAny});
    x.rows = tile.shape(0);
    x.cols = tile.shape(1);
    x.hs = out<float>(heap_s, "heap_s", {kAny, kAny});
    x.k = heap_s.shape(1);
    x.hi = out<int64_t>(heap_i, "heap_i", {heap_s.shape(0), x.k});
    const int64_t span = by_rows ? x.rows : x.cols;
    if (start < 0 || start + span > heap_s.shape(0))
      throw py::value_error("the tile falls outside the heaps");
    return x;
  };
  m.def(
      "merge_rows",
      [tile_args](Arr tile, int64_t row0, int64_t col0, Arr heap_s, Arr heap_i,
                  bool exclude_self) {
        const Tile x = tile_args(tile, heap_s, heap_i, row0, true);
        py::gil_scoped_release nogil;
        c::merge_rows(x.t, x.rows, x.cols, x.cols, row0, col0, x.hs, x.hi, x.k, exclude_self);
      },
      a("tile"), py::arg("row0"), py::arg("col0"), a("heap_s"), a("heap_i"),
      py::arg("exclude_self"),
      "Merge tile rows into the running top-k heaps of rows row0.. (candidates col0..).");
  m.def(
      "merge_cols",
      [tile_args](Arr tile, int64_t row0, int64_t col0, Arr heap_s, Arr heap_i) {
        const Tile x = tile_args(tile, heap_s, heap_i, col0, false);
        py::gil_scoped_release nogil;
        c::merge_cols(x.t, x.rows, x.cols, x.cols, row0, col0, x.hs, x.hi, x.k);
      },
      a("tile"), py::arg("row0"), py::arg("col0"), a("heap_s"), a("heap_i"),
      "Merge tile columns into the heaps of rows col0.. (candidates row0..).");
  m.def(
      "merge_listed",
      [](Arr tile, Arr row_ids, Arr self_ids, Arr col_ids, Arr heap_s, Arr heap_i,
         bool exclude_self) {
        const float* t = in<float>(tile, "tile", {kAny, kAny});
        const int64_t rows = tile.shape(0), cols = tile.shape(1);
        const int64_t* ri = in<int64_t>(row_ids, "row_ids", {rows});
        const int64_t* si = in<int64_t>(self_ids, "self_ids", {rows});
        const int64_t* ci = in<int64_t>(col_ids, "col_ids", {cols});
        float* hs = out<float>(heap_s, "heap_s", {kAny, kAny});
        const int64_t k = heap_s.shape(1);
        int64_t* hi = out<int64_t>(heap_i, "heap_i", {heap_s.shape(0), k});
        in_range(ri, rows, heap_s.shape(0), "row_ids");
        py::gil_scoped_release nogil;
        c::merge_listed(t, rows, cols, cols, ri, si, ci, hs, hi, k, exclude_self);
      },
      a("tile"), a("row_ids"), a("self_ids"), a("col_ids"), a("heap_s"), a("heap_i"),
      py::arg("exclude_self"),
      "Merge tile[r, c] into the heap of row row_ids[r] (distinct) as candidate col_ids[c], "
      "skipping col_ids[c] == self_ids[r] with exclude_self.");
  m.def(
      "finalize",
      [](Arr heap_s, Arr heap_i) {
        float* hs = out<float>(heap_s, "heap_s", {kAny, kAny});
        int64_t* hi = out<int64_t>(heap_i, "heap_i", {heap_s.shape(0), heap_s.shape(1)});
        const int64_t n = heap_s.shape(0), k = heap_s.shape(1);
        py::gil_scoped_release nogil;
        c::finalize(hs, hi, n, k);
      },
      a("heap_s"), a("heap_i"), "Sort every heap: similarity descending, index ascending.");
  m.def(
      "rows_are_unit",
      [](Arr x) {
        const float* xp = in<float>(x, "x", {kAny, kAny});
        const int64_t n = x.shape(0), d = x.shape(1);
        py::gil_scoped_release nogil;
        return c::rows_are_unit(xp, n, d);
      },
      a("x"),
      "Whether every float32 row of x has unit norm to float32 precision (|sum x^2 - 1| <= "
      "2 (d + 8) 2^-24) and holds no NaN, Inf or -0.");
  m.def(
      "unit_rows",
      [](Arr x, Arr out_rows, Arr bad) {
        const bool in64 = py::isinstance<py::array_t<double>>(x);
        const bool out64 = py::isinstance<py::array_t<double>>(out_rows);
        const int64_t n = x.ndim() == 2 ? x.shape(0) : -1, d = x.ndim() == 2 ? x.shape(1) : -1;
        const void* xp = in64 ? static_cast<const void*>(in<double>(x, "x", {kAny, kAny}))
                              : static_cast<const void*>(in<float>(x, "x", {kAny, kAny}));
        void* op = out64 ? static_cast<void*>(out<double>(out_rows, "out", {n, d}))
                         : static_cast<void*>(out<float>(out_rows, "out", {n, d}));
        int64_t* b = out<int64_t>(bad, "bad", {2});
        py::gil_scoped_release nogil;
        if (in64 && out64) {
          c::unit_rows(static_cast<const double*>(xp), n, d, static_cast<double*>(op), b);
        } else if (in64) {
          c::unit_rows(static_cast<const double*>(xp), n, d, static_cast<float*>(op), b);
        } else if (out64) {
          c::unit_rows(static_cast<const float*>(xp), n, d, static_cast<double*>(op), b);
        } else {
          c::unit_rows(static_cast<const float*>(xp), n, d, static_cast<float*>(op), b);
        }
      },
      a("x"), a("out"), a("bad"),
      "Rows of x (float32 or float64) scaled to unit norm in float64 (divided by their peak,\n"
      "then by the norm) into out (float32 or float64); bad = [first NaN/Inf row, first zero\n"
      "row] (-1: none).");
  m.def(
      "row_hashes",
      [](Arr words, Arr mult, Arr hashes) {
        const uint32_t* w = in<uint32_t>(words, "words", {kAny, kAny});
        const int64_t n = words.shape(0), d = words.shape(1);
        const uint64_t* mu = in<uint64_t>(mult, "mult", {d});
        uint64_t* h = out<uint64_t>(hashes, "hashes", {n});
        py::gil_scoped_release nogil;
        c::row_hashes(w, n, d, mu, h);
      },
      a("words"), a("mult"), a("hashes"),
      "hashes[i] = sum_j words[i, j] * mult[j] mod 2**64 (duplicate-row candidates).");
  m.def(
      "reservoir_merge",
      [](Arr tile, int64_t row0, int64_t col0, Arr keys, Arr count, Arr thr, int64_t k,
         bool exclude_self) {
        const float* t = in<float>(tile, "tile", {kAny, kAny});
        const int64_t rows = tile.shape(0), cols = tile.shape(1);
        uint64_t* kk = out<uint64_t>(keys, "keys", {rows, kAny});
        const int64_t cap = keys.shape(1);
        int64_t* cnt = out<int64_t>(count, "count", {rows});
        uint64_t* th = out<uint64_t>(thr, "thr", {rows});
        if (k < 1 || cap <= k) throw py::value_error("reservoir_merge: need 1 <= k < cap");
        if (col0 < 0 || col0 + cols > (int64_t(1) << 32))
          throw py::value_error("reservoir_merge: candidate indices must be < 2**32");
        for (int64_t r = 0; r < rows; ++r)
          if (cnt[r] < 0 || cnt[r] >= cap) throw py::value_error("reservoir_merge: bad count");
        py::gil_scoped_release nogil;
        c::reservoir_merge(t, rows, cols, cols, row0, col0, kk, cap, cnt, th, k, exclude_self);
      },
      a("tile"), py::arg("row0"), py::arg("col0"), a("keys"), a("count"), a("thr"),
      py::arg("k"), py::arg("exclude_self"),
      "Merge tile rows into the reservoirs of rows row0.. (keys (rows, cap) uint64, count and\n"
      "thr (rows,), candidates col0..): the large-k top-k.");
  m.def(
      "reservoir_finish",
      [](Arr keys, Arr count, Arr out_s, Arr out_i) {
        uint64_t* kk = out<uint64_t>(keys, "keys", {kAny, kAny});
        const int64_t rows = keys.shape(0), cap = keys.shape(1);
        const int64_t* cnt = in<int64_t>(count, "count", {rows});
        float* os = out<float>(out_s, "out_s", {rows, kAny});
        const int64_t k = out_s.shape(1);
        int64_t* oi = out<int64_t>(out_i, "out_i", {rows, k});
        if (k < 1 || cap <= k) throw py::value_error("reservoir_finish: need 1 <= k < cap");
        for (int64_t r = 0; r < rows; ++r)
          if (cnt[r] < 0 || cnt[r] >= cap) throw py::value_error("reservoir_finish: bad count");
        py::gil_scoped_release nogil;
        c::reservoir_finish(kk, rows, cap, cnt, k, os, oi);
      },
      a("keys"), a("count"), a("out_s"), a("out_i"),
      "The best k of each reservoir, sorted (sim descending, index ascending), into out_s and\n"
      "out_i (rows, k).");
  m.def(
      "reverse_indptr",
      [](Arr idx, int64_t k, Arr indptr) {
        const int64_t* g = in<int64_t>(idx, "idx", {kAny, kAny});
        const int64_t rows = idx.shape(0);
        if (k < 0 || k > idx.shape(1)) throw py::value_error("reverse_indptr: k exceeds idx");
        int64_t* ip = out<int64_t>(indptr, "indptr", {kAny});
        const int64_t n = indptr.shape(0) - 1;
        for (int64_t r = 0; r < rows; ++r) in_range(g + r * idx.shape(1), k, n, "idx");
        py::gil_scoped_release nogil;
        c::reverse_indptr(g, rows, k, n, ip);
      },
      a("idx"), py::arg("k"), a("indptr"), "In-edge counts as CSR offsets (n + 1).");
  m.def(
      "reverse_fill",
      [](Arr idx, int64_t k, Arr indptr, Arr src) {
        const int64_t* g = in<int64_t>(idx, "idx", {kAny, kAny});
        const int64_t rows = idx.shape(0);
        if (k < 0 || k > idx.shape(1)) throw py::value_error("reverse_fill: k exceeds idx");
        const int64_t* ip = in<int64_t>(indptr, "indptr", {kAny});
        const int64_t n = indptr.shape(0) - 1;
        if (n < 0) throw py::value_error("indptr must hold n + 1 offsets");
        for (int64_t r = 0; r < rows; ++r) in_range(g + r * idx.shape(1), k, n, "idx");
        int32_t* s = out<int32_t>(src, "src", {ip[n]});
        py::gil_scoped_release nogil;
        c::reverse_fill(g, rows, k, n, ip, s);
      },
      a("idx"), py::arg("k"), a("indptr"), a("src"), "In-edge sources per target, ascending.");
  m.def(
      "vote_rows",
      [](Arr nbr_idx, Arr nbr_sims, Arr db_labels, bool uniform, Arr out_lab, Arr out_conf) {
        const int64_t* ni = in<int64_t>(nbr_idx, "nbr_idx", {kAny, kAny});
        const int64_t rows = nbr_idx.shape(0), k = nbr_idx.shape(1);
        const float* ns = in<float>(nbr_sims, "nbr_sims", {rows, k});
        const int64_t* dl = in<int64_t>(db_labels, "db_labels", {kAny});
        in_range(ni, rows * k, db_labels.shape(0), "nbr_idx");
        int64_t* ol = out<int64_t>(out_lab, "out_lab", {rows});
        double* oc = out<double>(out_conf, "out_conf", {rows});
        py::gil_scoped_release nogil;
        c::vote_rows(ni, ns, rows, k, dl, uniform, ol, oc);
      },
      a("nbr_idx"), a("nbr_sims"), a("db_labels"), py::arg("uniform"), a("out_lab"),
      a("out_conf"), "kNN-DV votes of neighbour lists.");

  // HDL phases: the graph (idx, sims), its reverse (indptr, src) and the per-point state.
  struct Phase {
    const int64_t* idx;
    const float* sims;
    const int64_t* indptr;
    const int32_t* src;
    int64_t n, k;
  };
  auto phase = [](Arr idx, Arr sims, int64_t k, Arr indptr, Arr src) {
    Phase p;
    p.idx = in<int64_t>(idx, "idx", {kAny, kAny});
    p.n = idx.shape(0);
    if (k < 1 || k > idx.shape(1)) throw py::value_error("k must be in [1, idx columns]");
    p.k = k;
    p.sims = in<float>(sims, "sims", {p.n, idx.shape(1)});
    p.indptr = in<int64_t>(indptr, "indptr", {p.n + 1});
    if (p.indptr[0] != 0) throw py::value_error("indptr must start at 0");
    p.src = in<int32_t>(src, "src", {p.indptr[p.n]});  // the reverse graph of idx
    return p;
  };
  auto propagate = [phase](bool sequential) {
    return [phase, sequential](Arr idx, Arr sims, int64_t k, Arr indptr, Arr src, Arr labels,
                               Arr conf, Arr level, Arr prov, bool uniform) {
      const Phase p = phase(idx, sims, k, indptr, src);
      int64_t* lab = out<int64_t>(labels, "labels", {p.n});
      double* cf = out<double>(conf, "conf", {p.n});
      int32_t* lv = out<int32_t>(level, "level", {p.n});
      int8_t* pv = out<int8_t>(prov, "prov", {p.n});
      c::Interrupt stop(python_interrupted);
      int64_t result;
      {
        py::gil_scoped_release nogil;
        result = sequential ? c::propagate_sequential(p.idx, p.sims, p.n, p.k, p.indptr, p.src,
                                                      lab, cf, lv, pv, uniform, stop)
                            : c::propagate_levels(p.idx, p.sims, p.n, p.k, p.indptr, p.src,
                                                  lab, cf, lv, pv, uniform, stop);
      }
      return checked(result);
    };
  };
  m.def("propagate_levels", propagate(false), a("idx"), a("sims"), py::arg("k"), a("indptr"),
        a("src"), a("labels"), a("conf"), a("level"), a("prov"), py::arg("uniform"),
        "HDL phase A (levels schedule), in place; returns the number of levels (Ctrl-C: "
        "KeyboardInterrupt).");
  m.def("propagate_sequential", propagate(true), a("idx"), a("sims"), py::arg("k"),
        a("indptr"), a("src"), a("labels"), a("conf"), a("level"), a("prov"),
        py::arg("uniform"),
        "HDL phase A (sequential schedule), in place; returns the number of steps.");
  m.def(
      "search",
      [phase](Arr idx, Arr sims, int64_t k, Arr indptr, Arr src, Arr labels, Arr targets,
              int64_t max_visits, bool uniform, Arr out_lab, Arr out_conf, Arr out_steps,
              Arr out_cycles) {
        const Phase p = phase(idx, sims, k, indptr, src);
        const int64_t* lab = in<int64_t>(labels, "labels", {p.n});
        const int64_t* tg = in<int64_t>(targets, "targets", {kAny});
        const int64_t nt = targets.shape(0);
        in_range(tg, nt, p.n, "targets");
        int64_t* ol = out<int64_t>(out_lab, "out_lab", {nt});
        double* oc = out<double>(out_conf, "out_conf", {nt});
        int64_t* os = out<int64_t>(out_steps, "out_steps", {nt});
        int64_t* oy = out<int64_t>(out_cycles, "out_cycles", {nt});
        py::gil_scoped_release nogil;
        c::search(p.idx, p.sims, p.n, p.k, p.indptr, p.src, lab, tg, nt, max_visits, uniform,
                  ol, oc, os, oy);
      },
      a("idx"), a("sims"), py::arg("k"), a("indptr"), a("src"), a("labels"), a("targets"),
      py::arg("max_visits"), py::arg("uniform"), a("out_lab"), a("out_conf"), a("out_steps"),
      a("out_cycles"), "HDL phase B: bounded depth-first label search from each target.");

  m.def(
      "sk_prepare",
      [](Arr src, Arr q, double beta, Arr rowmax) {
        float* qq = out<float>(q, "q", {kAny, kAny});
        const int64_t n = q.shape(0), k = q.shape(1);
        const float* s = in<float>(src, "src", {n, k});
        double* rm = out<double>(rowmax, "rowmax", {n});
        py::gil_scoped_release nogil;
        c::sk_prepare(s, qq, n, k, beta, rm);
      },
      a("src"), a("q"), py::arg("beta"), a("rowmax"),
      "Sinkhorn kernel exp(beta (s - row max)) of the scores src into q; row maxima out.");
  m.def(
      "sk_prepare_power",
      [](Arr p, Arr q, int64_t power, Arr rowmax) {
        float* qq = out<float>(q, "q", {kAny, kAny});
        const int64_t n = q.shape(0), k = q.shape(1);
        double* rm = out<double>(rowmax, "rowmax", {n});
        if (power < 1) throw py::value_error("power must be >= 1, got " + std::to_string(power));
        if (py::isinstance<py::array_t<double>>(p)) {
          const double* pp = in<double>(p, "p", {n, k});
          py::gil_scoped_release nogil;
          c::sk_prepare_power(pp, qq, n, k, power, rm);
        } else {
          const float* pp = in<float>(p, "p", {n, k});  // else a TypeError naming p
          py::gil_scoped_release nogil;
          c::sk_prepare_power(pp, qq, n, k, power, rm);
        }
      },
      a("p"), a("q"), py::arg("power"), a("rowmax"),
      "Sinkhorn kernel (p / row max) ** power of the probabilities p (float32 or float64) "
      "into q; row maxima out.");
  m.def(
      "sk_colsum",
      [](Arr q, Arr u, Arr out_sum) {
        const float* qq = in<float>(q, "q", {kAny, kAny});
        const int64_t n = q.shape(0), k = q.shape(1);
        const double* uu = in<double>(u, "u", {n});
        double* o = out<double>(out_sum, "out", {k});
        py::gil_scoped_release nogil;
        c::sk_colsum(qq, n, k, uu, o);
      },
      a("q"), a("u"), a("out"), "Column sums of diag(u) q.");
  m.def(
      "sk_iterate",
      [](Arr q, Arr v, Arr r, Arr u, Arr out_sum) {
        const float* qq = in<float>(q, "q", {kAny, kAny});
        const int64_t n = q.shape(0), k = q.shape(1);
        const double* vv = in<double>(v, "v", {k});
        const double* rr = in<double>(r, "r", {n});
        double* uu = out<double>(u, "u", {n});
        double* o = out<double>(out_sum, "out", {k});
        py::gil_scoped_release nogil;
        c::sk_iterate(qq, n, k, vv, rr, uu, o);
      },
      a("q"), a("v"), a("r"), a("u"), a("out"),
      "One fused Sinkhorn pass: row scaling u, then the column sums with it.");
  m.def(
      "sk_finalize",
      [](Arr q, Arr v, Arr r, Arr labels, Arr out_sum) {
        float* qq = out<float>(q, "q", {kAny, kAny});
        const int64_t n = q.shape(0), k = q.shape(1);
        const double* vv = in<double>(v, "v", {k});
        const double* rr = in<double>(r, "r", {n});
        int64_t* lab = out<int64_t>(labels, "labels", {n});
        double* o = out<double>(out_sum, "out", {k});
        py::gil_scoped_release nogil;
        return c::sk_finalize(qq, n, k, vv, rr, lab, o);
      },
      a("q"), a("v"), a("r"), a("labels"), a("out"),
      "Rows of q diag(v) normalised to 1, row argmax labels, the plan's column sums.");
  m.def(
      "top2_update",
      [](Arr tile, Arr bias, int64_t col0, Arr best_s, Arr best_i, Arr second_s) {
        const float* t = in<float>(tile, "tile", {kAny, kAny});
        const int64_t rows = tile.shape(0), cols = tile.shape(1);
        const bool biased = bias.ndim() == 1 && bias.shape(0) > 0;
        const float* b = biased ? in<float>(bias, "bias", {cols}) : nullptr;
        if (!biased) in<float>(bias, "bias", {0});
        float* bs = out<float>(best_s, "best_s", {rows});
        int64_t* bi = out<int64_t>(best_i, "best_i", {rows});
        float* ss = out<float>(second_s, "second_s", {rows});
        py::gil_scoped_release nogil;
        c::top2_update(t, rows, cols, b, col0, bs, bi, ss);
      },
      a("tile"), a("bias"), py::arg("col0"), a("best_s"), a("best_i"), a("second_s"),
      "k-means assignment: each tile row's best column (tile + bias; bias empty: none), as "
      "candidate col0 + column, replaces (best_s, best_i) when strictly larger; second_s "
      "keeps the best score of the other candidates.");
  m.def(
      "set_bounds",
      [](Arr rows, Arr best_s, Arr best_i, Arr second_s, Arr sq_norms, Arr eps, double kappa,
         Arr labels, Arr upper, Arr lower) {
        const int64_t* rr = in<int64_t>(rows, "rows", {kAny});
        const int64_t m = rows.shape(0);
        const float* bs = in<float>(best_s, "best_s", {m});
        const int64_t* bi = in<int64_t>(best_i, "best_i", {m});
        const float* ss = in<float>(second_s, "second_s", {m});
        const double* sq = in<double>(sq_norms, "sq_norms", {kAny});
        const int64_t n = sq_norms.shape(0);
        in_range(rr, m, n, "rows");
        const double* ep = in<double>(eps, "eps", {n});
        int64_t* lab = out<int64_t>(labels, "labels", {n});
        double* up = out<double>(upper, "upper", {n});
        double* lo = out<double>(lower, "lower", {n});
        py::gil_scoped_release nogil;
        c::set_bounds(rr, m, bs, bi, ss, sq, ep, kappa, lab, up, lo);
      },
      a("rows"), a("best_s"), a("best_i"), a("second_s"), a("sq_norms"), a("eps"),
      py::arg("kappa"), a("labels"), a("upper"), a("lower"),
      "k-means: the scored rows' labels and Hamerly bounds from their best and second-best "
      "scores.");
  m.def(
      "bound_test",
      [](Arr labels, Arr delta, int64_t first, double first_max, double rest_max, Arr eps,
         Arr upper, Arr lower, Arr need) {
        const int64_t* lab = in<int64_t>(labels, "labels", {kAny});
        const int64_t rows = labels.shape(0);
        const double* dl = in<double>(delta, "delta", {kAny});
        in_range(lab, rows, delta.shape(0), "labels");
        const double* ep = in<double>(eps, "eps", {rows});
        double* up = out<double>(upper, "upper", {rows});
        double* lo = out<double>(lower, "lower", {rows});
        int64_t* nd = out<int64_t>(need, "need", {rows});
        py::gil_scoped_release nogil;
        return c::bound_test(rows, lab, dl, first, first_max, rest_max, ep, up, lo, nd);
      },
      a("labels"), a("delta"), py::arg("first"), py::arg("first_max"), py::arg("rest_max"),
      a("eps"), a("upper"), a("lower"), a("need"),
      "k-means: Hamerly's test on one chunk's rows after the centroids moved; writes the rows "
      "that need scoring to need, returns their count.");
  m.def(
      "chunk_sums",
      [](Arr x, Arr inv, Arr labels, Arr slot_of, Arr clusters, Arr psums, Arr pcounts) {
        const float* xx = in<float>(x, "x", {kAny, kAny});
        const int64_t rows = x.shape(0), d = x.shape(1);
        const bool weighted = inv.ndim() == 1 && inv.shape(0) > 0;
        const float* iv = weighted ? in<float>(inv, "inv", {rows}) : nullptr;
        if (!weighted) in<float>(inv, "inv", {0});
        const int64_t* lab = in<int64_t>(labels, "labels", {rows});
        int32_t* so = out<int32_t>(slot_of, "slot_of", {kAny});
        in_range(lab, rows, slot_of.shape(0), "labels");
        int64_t* cl = out<int64_t>(clusters, "clusters", {kAny});
        const int64_t cap = clusters.shape(0);
        if (cap < std::min<int64_t>(rows, slot_of.shape(0)))
          throw py::value_error("clusters has size " + std::to_string(cap) + ", fewer than the "
                                "chunk's possible distinct labels");
        double* ps = out<double>(psums, "psums", {cap, d});
        int64_t* pc = out<int64_t>(pcounts, "pcounts", {cap});
        py::gil_scoped_release nogil;
        return c::chunk_sums(xx, rows, d, iv, lab, so, cl, ps, pc);
      },
      a("x"), a("inv"), a("labels"), a("slot_of"), a("clusters"), a("psums"), a("pcounts"),
      "One chunk's rows x * inv (inv empty: weight 1) added in row order to the partial sums of "
      "their clusters' slots; returns the slots in use.");
  m.def(
      "chunk_sums_update",
      [](Arr x, Arr inv, Arr old_labels, Arr labels, Arr mark, Arr slot_of, Arr clusters,
         Arr psums, Arr pcounts, int64_t used) {
        const float* xx = in<float>(x, "x", {kAny, kAny});
        const int64_t rows = x.shape(0), d = x.shape(1);
        const bool weighted = inv.ndim() == 1 && inv.shape(0) > 0;
        const float* iv = weighted ? in<float>(inv, "inv", {rows}) : nullptr;
        if (!weighted) in<float>(inv, "inv", {0});
        const int64_t* old = in<int64_t>(old_labels, "old_labels", {rows});
        const int64_t* lab = in<int64_t>(labels, "labels", {rows});
        int32_t* so = out<int32_t>(slot_of, "slot_of", {kAny});
        const int64_t n_clusters = slot_of.shape(0);
        in_range(old, rows, n_clusters, "old_labels");
        in_range(lab, rows, n_clusters, "labels");
        int8_t* mk = out<int8_t>(mark, "mark", {n_clusters});
        int64_t* cl = out<int64_t>(clusters, "clusters", {kAny});
        const int64_t cap = clusters.shape(0);
        if (cap < std::min<int64_t>(rows, n_clusters))
          throw py::value_error("clusters has size " + std::to_string(cap) + ", fewer than the "
                                "chunk's possible distinct labels");
        if (used < 0 || used > cap) throw py::value_error("used out of range");
        in_range(cl, used, n_clusters, "clusters");
        double* ps = out<double>(psums, "psums", {cap, d});
        int64_t* pc = out<int64_t>(pcounts, "pcounts", {cap});
        py::gil_scoped_release nogil;
        return c::chunk_sums_update(xx, rows, d, iv, old, lab, mk, so, cl, ps, pc, used, cap);
      },
      a("x"), a("inv"), a("old_labels"), a("labels"), a("mark"), a("slot_of"), a("clusters"),
      a("psums"), a("pcounts"), py::arg("used"),
      "One chunk's partial sums, filled for old_labels, brought up to date for labels: only "
      "the clusters that lost or gained a row are summed again; returns the slots in use.");
  m.def(
      "fold_sums",
      [](Arr clusters, int64_t n_slots, Arr psums, Arr pcounts, Arr sums, Arr counts) {
        const int64_t* cl = in<int64_t>(clusters, "clusters", {kAny});
        const int64_t cap = clusters.shape(0);
        if (n_slots < 0 || n_slots > cap) throw py::value_error("n_slots out of range");
        double* sm = out<double>(sums, "sums", {kAny, kAny});
        const int64_t n_clusters = sums.shape(0), d = sums.shape(1);
        in_range(cl, n_slots, n_clusters, "clusters");
        const double* ps = in<double>(psums, "psums", {cap, d});
        const int64_t* pc = in<int64_t>(pcounts, "pcounts", {cap});
        int64_t* ct = out<int64_t>(counts, "counts", {n_clusters});
        py::gil_scoped_release nogil;
        c::fold_sums(cl, n_slots, ps, pc, d, sm, ct);
      },
      a("clusters"), py::arg("n_slots"), a("psums"), a("pcounts"), a("sums"), a("counts"),
      "Add one chunk's partial sums and counts (its first n_slots slots) to the totals.");
  m.def(
      "row_sq_dists",
      [](Arr x, Arr centroids, Arr labels, Arr out_d) {
        const float* xx = in<float>(x, "x", {kAny, kAny});
        const int64_t n = x.shape(0), d = x.shape(1);
        const double* cc = in<double>(centroids, "centroids", {kAny, d});
        const int64_t* lab = in<int64_t>(labels, "labels", {n});
        in_range(lab, n, centroids.shape(0), "labels");
        double* o = out<double>(out_d, "out", {n});
        py::gil_scoped_release nogil;
        c::row_sq_dists(xx, n, d, cc, lab, o);
      },
      a("x"), a("centroids"), a("labels"), a("out"),
      "Squared distance of every row to its centroid, in float64.");
  m.def(
      "pp_trials",
      [](Arr p, Arr pp, Arr cand, Arr d2, Arr out_d, Arr colsum) {
        const float* pv = in<float>(p, "p", {kAny, kAny});
        const int64_t s = p.shape(0), d = p.shape(1);
        const double* ppv = in<double>(pp, "pp", {s});
        const int64_t* cv = in<int64_t>(cand, "cand", {kAny});
        const int64_t n_cand = cand.shape(0);
        in_range(cv, n_cand, s, "cand");
        const double* dv = in<double>(d2, "d2", {s});
        double* o = out<double>(out_d, "out", {s, n_cand});
        double* cs = out<double>(colsum, "colsum", {n_cand});
        py::gil_scoped_release nogil;
        c::pp_trials(pv, s, d, ppv, cv, n_cand, dv, o, cs);
      },
      a("p"), a("pp"), a("cand"), a("d2"), a("out"), a("colsum"),
      "One k-means++ step: the sample's squared distances to each candidate, capped by d2, and "
      "their column sums.");
  m.def(
      "pair_dots",
      [](Arr a_rows, Arr b_rows, Arr ra, Arr rb, Arr out_dots) {
        const RowPairs<double> p(a_rows, b_rows, ra, rb);
        double* o = out<double>(out_dots, "out", {p.n});
        py::gil_scoped_release nogil;
        c::pair_dots(p.a, p.b, p.d, p.ra, p.rb, p.n, o);
      },
      a("a"), a("b"), a("ra"), a("rb"), a("out"),
      "Dot products a[ra[p]] . b[rb[p]] of indexed row pairs, in float64.");
  m.def(
      "mix_rows",
      [](Arr a_rows, Arr b_rows, Arr ra, Arr rb, Arr w, Arr out_rows) {
        const RowPairs<float> p(a_rows, b_rows, ra, rb);
        const float* ww = in<float>(w, "w", {p.n});
        float* o = out<float>(out_rows, "out", {p.n, p.d});
        py::gil_scoped_release nogil;
        c::mix_rows(p.a, p.b, p.d, p.ra, p.rb, ww, p.n, o);
      },
      a("a"), a("b"), a("ra"), a("rb"), a("w"), a("out"),
      "Unit-length mixtures a[ra[p]] w[p] + b[rb[p]] (1 - w[p]) of indexed row pairs.");
  m.def("num_threads", &c::num_threads, "Worker threads the kernels use.");
  m.def(
      "simd_level",
      []() -> std::string {
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && defined(__linux__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
        if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
        return "x86-64";
#else
        return "generic";
#endif
      },
      "The instruction-set level whose clones of the hot loops run here (csrc/cpu/clones.h): "
      "x86-64-v4 (AVX-512), x86-64-v3 (AVX2) or x86-64; generic off x86-64 Linux GCC.");
  m.def(
      "_raise_in_worker",
      [](bool bad_alloc) {
        py::gil_scoped_release nogil;
        c::parallel_for(4, 1, [bad_alloc](int64_t b, int64_t, int worker) {
          if (worker == 0) return;  // only the other threads' ranges throw
          if (b < 0) return;
          if (bad_alloc) throw std::bad_alloc();
          throw std::runtime_error("raised in a worker thread");
        });
      },
      py::arg("bad_alloc"),
      "Test hook: a worker thread of parallel_for throws; the exception must reach Python.");
}
