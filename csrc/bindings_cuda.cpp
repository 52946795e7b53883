// hdlfast._cuda: CUDA kernels. Pointers (device addresses), shapes and the stream cross the
// boundary as plain integers; the GIL is released around every launch. Errors (bad arguments,
// CUDA errors with their cudaGetErrorString text) are raised as RuntimeError.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "cuda/hdl.cuh"
#include "cuda/kmeans.cuh"
#include "cuda/sinkhorn.cuh"
#include "cuda/topk.cuh"

namespace py = pybind11;
namespace hc = hdlfast::cuda;

template <typename T>
static T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

static cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "hdlfast CUDA kernels (exact cosine kNN). dtype codes: 0=float32, 1=float16, 2=bfloat16.";

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
      [](uintptr_t x, int64_t n, int64_t d, int dtype, uintptr_t out_inv, uintptr_t out_bad,
         uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::row_inv_norms(ptr<const void>(x), n, d, dtype, ptr<float>(out_inv),
                          ptr<int32_t>(out_bad), as_stream(stream));
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("dtype"), py::arg("out_inv"),
      py::arg("out_bad"), py::arg("stream"),
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
      "Device scratch bytes for one knn() call. 0 if k <= knn_small_k_max(); otherwise about\n"
      "4*nq*nd + 8*nq*k (+ max(0, 8*nq*k - 4*nq*nd)) + 4*nq + CUB temp storage (linear in\n"
      "nq*nd; the caller shrinks nq to fit). Needs a CUDA device in the large-k case.");

  m.def(
      "knn",
      [](uintptr_t q, int64_t nq, uintptr_t db, int64_t nd, int64_t d, int dtype, uintptr_t q_inv,
         uintptr_t db_inv, int64_t k, int64_t q_offset, bool exclude_self, bool allow_tf32,
         uintptr_t out_sims, uintptr_t out_idx, uintptr_t workspace, size_t workspace_bytes,
         uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::knn(ptr<const void>(q), nq, ptr<const void>(db), nd, d, dtype,
                ptr<const float>(q_inv), ptr<const float>(db_inv), k, q_offset, exclude_self,
                allow_tf32, ptr<float>(out_sims), ptr<int64_t>(out_idx), ptr<void>(workspace),
                workspace_bytes, as_stream(stream));
      },
      py::arg("q"), py::arg("nq"), py::arg("db"), py::arg("nd"), py::arg("d"), py::arg("dtype"),
      py::arg("q_inv"), py::arg("db_inv"), py::arg("k"), py::arg("q_offset"),
      py::arg("exclude_self"), py::arg("allow_tf32"), py::arg("out_sims"), py::arg("out_idx"),
      py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
      "Exact top-k of sim = dot(q_i, db_j) * q_inv[i] * db_inv[j] per query row: out_sims\n"
      "float32 (nq, k) and out_idx int64 (nq, k), sim descending, ties by smaller index.\n"
      "exclude_self drops j == q_offset + i. allow_tf32 lets float32 inputs use TF32 tensor\n"
      "cores. Asynchronous on `stream`; workspace as given by knn_workspace_bytes.");

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
      [](uintptr_t idx, int64_t rows, int64_t k, int64_t n, uintptr_t indptr, uintptr_t src,
         uintptr_t workspace, size_t workspace_bytes, uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::reverse_csr(ptr<const int64_t>(idx), rows, k, n, ptr<int64_t>(indptr),
                        ptr<int32_t>(src), ptr<void>(workspace), workspace_bytes,
                        as_stream(stream));
      },
      py::arg("idx"), py::arg("rows"), py::arg("k"), py::arg("n"), py::arg("indptr"),
      py::arg("src"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
      "Reverse graph of idx (rows, k) int64: indptr (n + 1) int64 and src (rows * k) int32,\n"
      "sources ascending per target. Asynchronous on `stream`.");

  m.def(
      "propagate_levels_workspace_bytes",
      [](int64_t n, int64_t k) { return hc::propagate_levels_workspace_bytes(n, k); },
      py::arg("n"), py::arg("k"),
      "Device scratch bytes for propagate_levels (about 40 * n + 4 * k + CUB temp storage).");

  m.def(
      "propagate_levels",
      [](uintptr_t idx, uintptr_t sims, int64_t n, int64_t k, uintptr_t indptr, uintptr_t src,
         uintptr_t labels, uintptr_t conf, uintptr_t level, uintptr_t prov, bool uniform,
         uintptr_t workspace, size_t workspace_bytes, uintptr_t stream) {
        py::gil_scoped_release nogil;
        return hc::propagate_levels(ptr<const int64_t>(idx), ptr<const float>(sims), n, k,
                                    ptr<const int64_t>(indptr), ptr<const int32_t>(src),
                                    ptr<int64_t>(labels), ptr<double>(conf), ptr<int32_t>(level),
                                    ptr<int8_t>(prov), uniform, ptr<void>(workspace),
                                    workspace_bytes, as_stream(stream));
      },
      py::arg("idx"), py::arg("sims"), py::arg("n"), py::arg("k"), py::arg("indptr"),
      py::arg("src"), py::arg("labels"), py::arg("conf"), py::arg("level"), py::arg("prov"),
      py::arg("uniform"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
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
      [](uintptr_t idx, uintptr_t sims, int64_t n, int64_t k, uintptr_t indptr, uintptr_t src,
         int64_t nnz, uintptr_t labels, uintptr_t targets, int64_t n_targets, int64_t max_visits,
         bool uniform, uintptr_t out_lab, uintptr_t out_conf, uintptr_t out_steps,
         uintptr_t out_cycles, int64_t chunk, uintptr_t workspace, size_t workspace_bytes,
         uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::search(ptr<const int64_t>(idx), ptr<const float>(sims), n, k,
                   ptr<const int64_t>(indptr), ptr<const int32_t>(src), nnz,
                   ptr<const int64_t>(labels), ptr<const int64_t>(targets), n_targets,
                   max_visits, uniform, ptr<int64_t>(out_lab), ptr<double>(out_conf),
                   ptr<int64_t>(out_steps), ptr<int64_t>(out_cycles), chunk, ptr<void>(workspace),
                   workspace_bytes, as_stream(stream));
      },
      py::arg("idx"), py::arg("sims"), py::arg("n"), py::arg("k"), py::arg("indptr"),
      py::arg("src"), py::arg("nnz"), py::arg("labels"), py::arg("targets"),
      py::arg("n_targets"), py::arg("max_visits"), py::arg("uniform"), py::arg("out_lab"),
      py::arg("out_conf"), py::arg("out_steps"), py::arg("out_cycles"), py::arg("chunk"),
      py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
      "HDL phase B from every target (int64): out_lab (-1 = failed) and out_steps / out_cycles\n"
      "int64, out_conf float64. Asynchronous on `stream`.");

  m.def(
      "vote_rows",
      [](uintptr_t nbr_idx, uintptr_t nbr_sims, int64_t rows, int64_t k, uintptr_t db_labels,
         bool uniform, uintptr_t out_lab, uintptr_t out_conf, uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::vote_rows(ptr<const int64_t>(nbr_idx), ptr<const float>(nbr_sims), rows, k,
                      ptr<const int64_t>(db_labels), uniform, ptr<int64_t>(out_lab),
                      ptr<double>(out_conf), as_stream(stream));
      },
      py::arg("nbr_idx"), py::arg("nbr_sims"), py::arg("rows"), py::arg("k"),
      py::arg("db_labels"), py::arg("uniform"), py::arg("out_lab"), py::arg("out_conf"),
      py::arg("stream"),
      "kNN-DV: row r votes over db_labels[nbr_idx[r, :]] with nbr_sims[r, :]; out_lab int64,\n"
      "out_conf float64. Asynchronous on `stream`.");

  // --- Sinkhorn-Knopp (csrc/cuda/sinkhorn.cuh): deterministic, no float atomics ----------
  m.def(
      "sk_prepare",
      [](uintptr_t scores, int64_t n, int64_t k, int dtype, double beta, uintptr_t q_out,
         uintptr_t rowmax_out, uintptr_t bad_row, uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::sk_prepare(ptr<const void>(scores), n, k, dtype, beta, ptr<float>(q_out),
                       ptr<double>(rowmax_out), ptr<int32_t>(bad_row), as_stream(stream));
      },
      py::arg("scores"), py::arg("n"), py::arg("k"), py::arg("dtype"), py::arg("beta"),
      py::arg("q_out"), py::arg("rowmax_out"), py::arg("bad_row"), py::arg("stream"),
      "q_out float32 (n, k) = exp(beta * (s - rowmax)) (double math), rowmax_out float64 (n).\n"
      "bad_row (int32[1], preset to INT32_MAX) gets by atomicMin a row with NaN/Inf.\n"
      "Asynchronous on `stream`.");

  m.def(
      "sk_workspace_bytes", [](int64_t n, int64_t k) { return hc::sk_workspace_bytes(n, k); },
      py::arg("n"), py::arg("k"),
      "Device scratch bytes for sk_colsum / sk_iterate (ceil(n / 256) * k * 8).");

  m.def(
      "sk_colsum",
      [](uintptr_t q, int64_t n, int64_t k, uintptr_t u, uintptr_t workspace,
         size_t workspace_bytes, uintptr_t out_colsum, uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::sk_colsum(ptr<const float>(q), n, k, ptr<const double>(u), ptr<void>(workspace),
                      workspace_bytes, ptr<double>(out_colsum), as_stream(stream));
      },
      py::arg("q"), py::arg("n"), py::arg("k"), py::arg("u"), py::arg("workspace"),
      py::arg("workspace_bytes"), py::arg("out_colsum"), py::arg("stream"),
      "out_colsum[j] = sum_i q[i, j] u[i] (float64). Asynchronous on `stream`.");

  m.def(
      "sk_iterate",
      [](uintptr_t q, int64_t n, int64_t k, uintptr_t v, uintptr_t r, uintptr_t u,
         uintptr_t workspace, size_t workspace_bytes, uintptr_t out_colsum, uintptr_t u_bad,
         uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::sk_iterate(ptr<const float>(q), n, k, ptr<const double>(v), ptr<const double>(r),
                       ptr<double>(u), ptr<void>(workspace), workspace_bytes,
                       ptr<double>(out_colsum), ptr<int32_t>(u_bad), as_stream(stream));
      },
      py::arg("q"), py::arg("n"), py::arg("k"), py::arg("v"), py::arg("r"), py::arg("u"),
      py::arg("workspace"), py::arg("workspace_bytes"), py::arg("out_colsum"), py::arg("u_bad"),
      py::arg("stream"),
      "u[i] = r[i] / sum_j q[i, j] v[j], then out_colsum[j] = sum_i q[i, j] u[i] (float64);\n"
      "u_bad (int32[1]) = 1 if some u[i] is not finite, else 0. Asynchronous on `stream`.");

  m.def(
      "sk_finalize",
      [](uintptr_t q, int64_t n, int64_t k, uintptr_t v, uintptr_t labels, uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::sk_finalize(ptr<float>(q), n, k, ptr<const double>(v), ptr<int64_t>(labels),
                        as_stream(stream));
      },
      py::arg("q"), py::arg("n"), py::arg("k"), py::arg("v"), py::arg("labels"),
      py::arg("stream"),
      "In place: rows of q * v normalised to sum 1; labels int64 = row argmax of q * v\n"
      "(smaller index on ties). Asynchronous on `stream`.");
  m.def(
      "cluster_sums",
      [](uintptr_t x, int64_t n, int64_t d, int dtype, uintptr_t inv, uintptr_t labels,
         int64_t n_clusters, uintptr_t sums, uintptr_t counts, uintptr_t stream) {
        py::gil_scoped_release nogil;
        hc::cluster_sums(ptr<const void>(x), n, d, dtype, ptr<const float>(inv),
                         ptr<const int64_t>(labels), n_clusters, ptr<double>(sums),
                         ptr<int64_t>(counts), as_stream(stream));
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("dtype"), py::arg("inv"),
      py::arg("labels"), py::arg("n_clusters"), py::arg("sums"), py::arg("counts"),
      py::arg("stream"),
      "k-means update: per-cluster float64 sums of rows x * inv (inv 0: weight 1) and int64\n"
      "counts, members in row order (bit-identical to the CPU kernels). Asynchronous on `stream`.");
}
