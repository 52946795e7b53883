// hdlfast._cuda: CUDA kernels. Arrays cross the boundary as CUDA arrays (cupy, torch), each
// checked before any launch (csrc/cuda_args.h); shapes come from the arrays, row blocks are
// slices, the stream is the caller's (an integer handle). The GIL is released around every
// launch. Errors (bad arguments, CUDA errors with their cudaGetErrorString text) are raised as
// TypeError / ValueError / RuntimeError.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "cuda/hdl.cuh"
#include "cuda/kmeans.cuh"
#include "cuda/sinkhorn.cuh"
#include "cuda/topk.cuh"
#include "cuda_args.h"

namespace py = pybind11;
namespace hc = hdlfast::cuda;
using hdlfast::cuda_args::Args;
using hdlfast::cuda_args::dim;
using hdlfast::cuda_args::kAny;
using hdlfast::cuda_args::stream;
using Obj = const py::object&;

// The kNN graph (idx, sims (n, k)) and its reverse CSR (indptr (n + 1), src) of the labeling
// kernels.
struct Graph {
  Graph(Args& a, Obj idx_obj, Obj sims_obj, Obj indptr_obj, Obj src_obj)
      : n(dim(idx_obj, "idx", 0)), k(dim(idx_obj, "idx", 1)),
        idx(a.in<int64_t>(idx_obj, "idx", {n, k})), sims(a.in<float>(sims_obj, "sims", {n, k})),
        indptr(a.in<int64_t>(indptr_obj, "indptr", {n + 1})),
        src(a.in<int32_t>(src_obj, "src", {kAny})) {}
  const int64_t n, k;
  const int64_t* idx;
  const float* sims;
  const int64_t* indptr;
  const int32_t* src;
};

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "hdlfast CUDA kernels (exact cosine kNN, HDL labeling, Sinkhorn, k-means).";

  m.def(
      "device_count",
      []() {
        py::gil_scoped_release nogil;
        return hc::device_count();
      },
      "Number of visible CUDA devices; 0 on any error (no driver, no device). Never raises.");
  m.def(
      "device_error",
      []() {
        const char* err = hc::device_error();
        return std::string(err == nullptr ? "" : err);
      },
      "Why there is no usable device when it is not simply none: the CUDA error, else ''.");

  m.def(
      "row_inv_norms",
      [](Obj x, Obj out_inv, Obj out_bad, uintptr_t s) {
        Args a;
        const int64_t n = dim(x, "x", 0), d = dim(x, "x", 1);
        int dtype = 0;
        const void* xx = a.float_in(x, "x", {n, d}, &dtype);
        float* inv = a.out<float>(out_inv, "out_inv", {n});
        int32_t* bad = a.out<int32_t>(out_bad, "out_bad", {2});
        a.on_device();
        py::gil_scoped_release nogil;
        hc::row_inv_norms(xx, n, d, dtype, inv, bad, stream(s));
      },
      py::arg("x"), py::arg("out_inv"), py::arg("out_bad"), py::arg("stream"),
      "out_inv[i] = 1/||x[i]|| (float32[n], fp32 accumulation). out_bad (int32[2], preset to\n"
      "INT32_MAX) gets by atomicMin: [0] a row with NaN/Inf, [1] a row of norm 0 (out_inv = 0).\n"
      "Asynchronous on `stream`.");

  m.def("knn_small_k_max", &hc::knn_small_k_max,
        "Largest k served by the fused small-k kernel (no workspace).");

  m.def(
      "knn_workspace_bytes",
      [](int64_t nq, int64_t nd, int64_t d, int64_t k, int dtype) {
        return hc::knn_workspace_bytes(nq, nd, d, k, dtype);
      },
      py::arg("nq"), py::arg("nd"), py::arg("d"), py::arg("k"), py::arg("dtype"),
      "Device scratch bytes for one knn() call, and for any call with fewer query rows (dtype:\n"
      "0 float32, 1 float16, 2 bfloat16). k <= knn_small_k_max(): the database splits' partial\n"
      "lists (at most 12 * k * 32 * SMs bytes; 0 if nd < 8192); otherwise about 4*nq*nd +\n"
      "8*nq*k (+ max(0, 8*nq*k - 4*nq*nd)) + 4*nq + CUB temp storage (linear in nq*nd; the\n"
      "caller shrinks nq to fit). Needs a CUDA device.");

  m.def(
      "knn",
      [](Obj q, Obj db, Obj q_inv, Obj db_inv, int64_t q_offset, bool exclude_self,
         bool allow_tf32, Obj out_sims, Obj out_idx, Obj ws, uintptr_t s) {
        Args a;
        const int64_t nq = dim(q, "q", 0), d = dim(q, "q", 1), nd = dim(db, "db", 0);
        const int64_t k = dim(out_sims, "out_sims", 1);
        int dtype = 0, db_dtype = 0;
        const void* qq = a.float_in(q, "q", {nq, d}, &dtype);
        const void* dd = a.float_in(db, "db", {nd, d}, &db_dtype);
        if (db_dtype != dtype) throw py::type_error("q and db must have the same dtype");
        const float* qi = a.in<float>(q_inv, "q_inv", {nq});
        const float* di = a.in<float>(db_inv, "db_inv", {nd});
        float* sims = a.out<float>(out_sims, "out_sims", {nq, k});
        int64_t* idx = a.out<int64_t>(out_idx, "out_idx", {nq, k});
        size_t ws_bytes = 0;
        void* w = a.workspace(ws, &ws_bytes);
        a.on_device();
        py::gil_scoped_release nogil;
        hc::knn(qq, nq, dd, nd, d, dtype, qi, di, k, q_offset, exclude_self, allow_tf32, sims,
                idx, w, ws_bytes, stream(s));
      },
      py::arg("q"), py::arg("db"), py::arg("q_inv"), py::arg("db_inv"), py::arg("q_offset"),
      py::arg("exclude_self"), py::arg("allow_tf32"), py::arg("out_sims"), py::arg("out_idx"),
      py::arg("workspace"), py::arg("stream"),
      "Exact top-k (k = out_sims' columns) of sim = dot(q_i, db_j) * q_inv[i] * db_inv[j] per\n"
      "query row: out_sims float32 (nq, k) and out_idx int64 (nq, k), sim descending, ties by\n"
      "smaller index. q is a block of rows starting at row q_offset of the queries;\n"
      "exclude_self drops j == q_offset + i. allow_tf32 lets float32 inputs use TF32 tensor\n"
      "cores. Asynchronous on `stream`; workspace (uint8) as given by knn_workspace_bytes.");

  m.def(
      "knn_select_workspace_bytes",
      [](int64_t nq, int64_t nd, int64_t k) { return hc::knn_select_workspace_bytes(nq, nd, k); },
      py::arg("nq"), py::arg("nd"), py::arg("k"),
      "Device scratch bytes for one knn_select_products() call (about 16*nq*k + CUB temp).");

  m.def(
      "knn_select_products",
      [](Obj products, Obj q_inv, Obj db_inv, int64_t q_offset, bool exclude_self, Obj out_sims,
         Obj out_idx, Obj ws, uintptr_t s) {
        Args a;
        const int64_t nq = dim(products, "products", 0), nd = dim(products, "products", 1);
        const int64_t k = dim(out_sims, "out_sims", 1);
        float* p = a.out<float>(products, "products", {nq, nd});
        const float* qi = a.in<float>(q_inv, "q_inv", {nq});
        const float* di = a.in<float>(db_inv, "db_inv", {nd});
        float* sims = a.out<float>(out_sims, "out_sims", {nq, k});
        int64_t* idx = a.out<int64_t>(out_idx, "out_idx", {nq, k});
        size_t ws_bytes = 0;
        void* w = a.workspace(ws, &ws_bytes);
        a.on_device();
        py::gil_scoped_release nogil;
        hc::knn_select_products(p, nq, nd, qi, di, k, q_offset, exclude_self, sims, idx, w,
                                ws_bytes, stream(s));
      },
      py::arg("products"), py::arg("q_inv"), py::arg("db_inv"), py::arg("q_offset"),
      py::arg("exclude_self"), py::arg("out_sims"), py::arg("out_idx"), py::arg("workspace"),
      py::arg("stream"),
      "knn()'s selection on products float32 (nq, nd) = q_block @ db.T computed elsewhere\n"
      "(cuBLAS); products is overwritten with the similarities. Same outputs, order, ties and\n"
      "exclusion as knn(), any k. Asynchronous on `stream`.");

  // --- labeling (csrc/cuda/hdl.cuh): identical results to the CPU kernels -----------------
  m.def(
      "reverse_csr_workspace_bytes",
      [](int64_t rows, int64_t k, int64_t n) {
        return hc::reverse_csr_workspace_bytes(rows, k, n);
      },
      py::arg("rows"), py::arg("k"), py::arg("n"),
      "Device scratch bytes for reverse_csr (about 12 * rows * k + 8 * n + CUB temp storage).");

  m.def(
      "reverse_csr",
      [](Obj idx, Obj out_indptr, Obj out_src, Obj ws, uintptr_t s) {
        Args a;
        const int64_t rows = dim(idx, "idx", 0), k = dim(idx, "idx", 1);
        const int64_t n = dim(out_indptr, "indptr", 0) - 1;
        const int64_t* ii = a.in<int64_t>(idx, "idx", {rows, k});
        int64_t* indptr = a.out<int64_t>(out_indptr, "indptr", {n + 1});
        int32_t* src = a.out<int32_t>(out_src, "src", {rows * k});
        size_t ws_bytes = 0;
        void* w = a.workspace(ws, &ws_bytes);
        a.on_device();
        py::gil_scoped_release nogil;
        hc::reverse_csr(ii, rows, k, n, indptr, src, w, ws_bytes, stream(s));
      },
      py::arg("idx"), py::arg("indptr"), py::arg("src"), py::arg("workspace"),
      py::arg("stream"),
      "Reverse graph of idx (rows, k) int64 over n = len(indptr) - 1 points: indptr int64 and\n"
      "src (rows * k) int32, sources ascending per target. Asynchronous on `stream`.");

  m.def(
      "propagate_levels_workspace_bytes",
      [](int64_t n, int64_t k) { return hc::propagate_levels_workspace_bytes(n, k); },
      py::arg("n"), py::arg("k"),
      "Device scratch bytes for propagate_levels (about 40 * n + 4 * k + CUB temp storage).");

  m.def(
      "propagate_levels",
      [](Obj idx, Obj sims, Obj indptr, Obj src, Obj labels, Obj conf, Obj level, Obj prov,
         bool uniform, Obj ws, uintptr_t s) {
        Args a;
        const Graph g(a, idx, sims, indptr, src);
        const int64_t n = g.n, k = g.k;
        int64_t* lab = a.out<int64_t>(labels, "labels", {n});
        double* cf = a.out<double>(conf, "conf", {n});
        int32_t* lv = a.out<int32_t>(level, "level", {n});
        int8_t* pv = a.out<int8_t>(prov, "prov", {n});
        size_t ws_bytes = 0;
        void* w = a.workspace(ws, &ws_bytes);
        a.on_device();
        py::gil_scoped_release nogil;
        return hc::propagate_levels(g.idx, g.sims, n, k, g.indptr, g.src, lab, cf, lv, pv,
                                    uniform, w, ws_bytes, stream(s));
      },
      py::arg("idx"), py::arg("sims"), py::arg("indptr"), py::arg("src"), py::arg("labels"),
      py::arg("conf"), py::arg("level"), py::arg("prov"), py::arg("uniform"),
      py::arg("workspace"), py::arg("stream"),
      "HDL phase A (levels schedule) in place on device labels (int64), conf (float64), level\n"
      "(int32), prov (int8); returns the number of levels. Synchronises `stream` per level.");

  m.def(
      "search_workspace_bytes",
      [](int64_t n, int64_t k, int64_t nnz, int64_t chunk, int64_t max_visits) {
        return hc::search_workspace_bytes(n, k, nnz, chunk, max_visits);
      },
      py::arg("n"), py::arg("k"), py::arg("nnz"), py::arg("chunk"), py::arg("max_visits"),
      "Device scratch bytes for search with `chunk` targets per launch (about 24 * nnz + 8 * n\n"
      "+ CUB temp storage + 16 * chunk * min(max_visits, n)).");

  m.def(
      "search",
      [](Obj idx, Obj sims, Obj indptr, Obj src, int64_t nnz, Obj labels, Obj targets,
         int64_t max_visits, bool uniform, Obj out_lab, Obj out_conf, Obj out_steps,
         Obj out_cycles, int64_t chunk, Obj ws, uintptr_t s) {
        Args a;
        const Graph g(a, idx, sims, indptr, src);
        const int64_t n = g.n, k = g.k, n_targets = dim(targets, "targets", 0);
        if (nnz < 0 || nnz > dim(src, "src", 0))
          throw py::value_error("nnz = " + std::to_string(nnz) + " is outside [0, len(src)]");
        const int64_t* lab = a.in<int64_t>(labels, "labels", {n});
        const int64_t* tg = a.in<int64_t>(targets, "targets", {n_targets});
        int64_t* ol = a.out<int64_t>(out_lab, "out_lab", {n_targets});
        double* oc = a.out<double>(out_conf, "out_conf", {n_targets});
        int64_t* os = a.out<int64_t>(out_steps, "out_steps", {n_targets});
        int64_t* oy = a.out<int64_t>(out_cycles, "out_cycles", {n_targets});
        size_t ws_bytes = 0;
        void* w = a.workspace(ws, &ws_bytes);
        a.on_device();
        py::gil_scoped_release nogil;
        hc::search(g.idx, g.sims, n, k, g.indptr, g.src, nnz, lab, tg, n_targets, max_visits, uniform, ol, oc,
                   os, oy, chunk, w, ws_bytes, stream(s));
      },
      py::arg("idx"), py::arg("sims"), py::arg("indptr"), py::arg("src"), py::arg("nnz"),
      py::arg("labels"), py::arg("targets"), py::arg("max_visits"), py::arg("uniform"),
      py::arg("out_lab"),
      py::arg("out_conf"), py::arg("out_steps"), py::arg("out_cycles"), py::arg("chunk"),
      py::arg("workspace"), py::arg("stream"),
      "HDL phase B from every target (int64), `chunk` targets per launch, over the first nnz\n"
      "entries of src: out_lab (-1 = failed) and out_steps / out_cycles int64, out_conf\n"
      "float64. Asynchronous on `stream`.");

  m.def(
      "vote_rows",
      [](Obj nbr_idx, Obj nbr_sims, Obj db_labels, bool uniform, Obj out_lab, Obj out_conf,
         uintptr_t s) {
        Args a;
        const int64_t rows = dim(nbr_idx, "nbr_idx", 0), k = dim(nbr_idx, "nbr_idx", 1);
        const int64_t* ii = a.in<int64_t>(nbr_idx, "nbr_idx", {rows, k});
        const float* ss = a.in<float>(nbr_sims, "nbr_sims", {rows, k});
        const int64_t* dl = a.in<int64_t>(db_labels, "db_labels", {kAny});
        int64_t* ol = a.out<int64_t>(out_lab, "out_lab", {rows});
        double* oc = a.out<double>(out_conf, "out_conf", {rows});
        a.on_device();
        py::gil_scoped_release nogil;
        hc::vote_rows(ii, ss, rows, k, dl, uniform, ol, oc, stream(s));
      },
      py::arg("nbr_idx"), py::arg("nbr_sims"), py::arg("db_labels"), py::arg("uniform"),
      py::arg("out_lab"), py::arg("out_conf"), py::arg("stream"),
      "kNN-DV: row r votes over db_labels[nbr_idx[r, :]] with nbr_sims[r, :]; out_lab int64,\n"
      "out_conf float64. Asynchronous on `stream`.");

  // --- Sinkhorn-Knopp (csrc/cuda/sinkhorn.cuh): deterministic, no float atomics ----------
  m.def(
      "sk_prepare",
      [](Obj scores, double beta, Obj q_out, Obj rowmax_out, Obj bad_row, uintptr_t s) {
        Args a;
        const int64_t n = dim(scores, "scores", 0), k = dim(scores, "scores", 1);
        int dtype = 0;
        const void* sc = a.float_in(scores, "scores", {n, k}, &dtype);
        float* q = a.out<float>(q_out, "q", {n, k});
        double* rm = a.out<double>(rowmax_out, "rowmax", {n});
        int32_t* bad = a.out<int32_t>(bad_row, "bad_row", {1});
        a.on_device();
        py::gil_scoped_release nogil;
        hc::sk_prepare(sc, n, k, dtype, beta, q, rm, bad, stream(s));
      },
      py::arg("scores"), py::arg("beta"), py::arg("q"), py::arg("rowmax"), py::arg("bad_row"),
      py::arg("stream"),
      "q float32 (n, k) = exp(beta * (s - rowmax)) (double math), rowmax float64 (n).\n"
      "bad_row (int32[1], preset to INT32_MAX) gets by atomicMin a row with NaN/Inf.\n"
      "Asynchronous on `stream`.");

  m.def(
      "sk_workspace_bytes", [](int64_t n, int64_t k) { return hc::sk_workspace_bytes(n, k); },
      py::arg("n"), py::arg("k"),
      "Device scratch bytes for sk_colsum / sk_iterate (ceil(n / 256) * k * 8).");

  m.def(
      "sk_colsum",
      [](Obj q, Obj u, Obj ws, Obj out_colsum, uintptr_t s) {
        Args a;
        const int64_t n = dim(q, "q", 0), k = dim(q, "q", 1);
        const float* qq = a.in<float>(q, "q", {n, k});
        const double* uu = a.in<double>(u, "u", {n});
        double* cs = a.out<double>(out_colsum, "out_colsum", {k});
        size_t ws_bytes = 0;
        void* w = a.workspace(ws, &ws_bytes);
        a.on_device();
        py::gil_scoped_release nogil;
        hc::sk_colsum(qq, n, k, uu, w, ws_bytes, cs, stream(s));
      },
      py::arg("q"), py::arg("u"), py::arg("workspace"), py::arg("out_colsum"), py::arg("stream"),
      "out_colsum[j] = sum_i q[i, j] u[i] (float64). Asynchronous on `stream`.");

  m.def(
      "sk_iterate",
      [](Obj q, Obj v, Obj r, Obj u, Obj ws, Obj out_colsum, Obj u_bad, uintptr_t s) {
        Args a;
        const int64_t n = dim(q, "q", 0), k = dim(q, "q", 1);
        const float* qq = a.in<float>(q, "q", {n, k});
        const double* vv = a.in<double>(v, "v", {k});
        const double* rr = a.in<double>(r, "r", {n});
        double* uu = a.out<double>(u, "u", {n});
        double* cs = a.out<double>(out_colsum, "out_colsum", {k});
        int32_t* ub = a.out<int32_t>(u_bad, "u_bad", {1});
        size_t ws_bytes = 0;
        void* w = a.workspace(ws, &ws_bytes);
        a.on_device();
        py::gil_scoped_release nogil;
        hc::sk_iterate(qq, n, k, vv, rr, uu, w, ws_bytes, cs, ub, stream(s));
      },
      py::arg("q"), py::arg("v"), py::arg("r"), py::arg("u"), py::arg("workspace"),
      py::arg("out_colsum"), py::arg("u_bad"), py::arg("stream"),
      "u[i] = r[i] / sum_j q[i, j] v[j], then out_colsum[j] = sum_i q[i, j] u[i] (float64);\n"
      "u_bad (int32[1]) = 1 if some u[i] is not finite, else 0. Asynchronous on `stream`.");

  m.def(
      "sk_finalize",
      [](Obj q, Obj v, Obj labels, uintptr_t s) {
        Args a;
        const int64_t n = dim(q, "q", 0), k = dim(q, "q", 1);
        float* qq = a.out<float>(q, "q", {n, k});
        const double* vv = a.in<double>(v, "v", {k});
        int64_t* lab = a.out<int64_t>(labels, "labels", {n});
        a.on_device();
        py::gil_scoped_release nogil;
        hc::sk_finalize(qq, n, k, vv, lab, stream(s));
      },
      py::arg("q"), py::arg("v"), py::arg("labels"), py::arg("stream"),
      "In place: rows of q * v normalised to sum 1; labels int64 = row argmax of q * v\n"
      "(smaller index on ties). Asynchronous on `stream`.");

  m.def(
      "cluster_sums_workspace_bytes",
      [](int64_t n, int64_t n_clusters) { return hc::cluster_sums_workspace_bytes(n, n_clusters); },
      py::arg("n"), py::arg("n_clusters"), "Workspace bytes of cluster_sums for n rows.");

  m.def(
      "cluster_sums",
      [](Obj x, const py::object& inv, Obj labels, Obj sums, Obj counts, Obj ws, uintptr_t s) {
        Args a;
        const int64_t n = dim(x, "x", 0), d = dim(x, "x", 1);
        const int64_t n_clusters = dim(sums, "sums", 0);
        int dtype = 0;
        const void* xx = a.float_in(x, "x", {n, d}, &dtype);
        const float* iv = inv.is_none() ? nullptr : a.in<float>(inv, "inv", {n});
        const int64_t* lab = a.in<int64_t>(labels, "labels", {n});
        double* sm = a.out<double>(sums, "sums", {n_clusters, d});
        int64_t* ct = a.out<int64_t>(counts, "counts", {n_clusters});
        size_t ws_bytes = 0;
        void* w = a.workspace(ws, &ws_bytes);
        a.on_device();
        py::gil_scoped_release nogil;
        hc::cluster_sums(xx, n, d, dtype, iv, lab, n_clusters, sm, ct, w, ws_bytes, stream(s));
      },
      py::arg("x"), py::arg("inv").none(true), py::arg("labels"), py::arg("sums"),
      py::arg("counts"), py::arg("workspace"), py::arg("stream"),
      "k-means update: per-cluster float64 sums of rows x * inv (inv None: weight 1) and int64\n"
      "counts, members in row order (bit-identical to the CPU kernels). Asynchronous on `stream`.");
}
