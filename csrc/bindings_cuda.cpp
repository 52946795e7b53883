// hdlfast._cuda: CUDA kernels. Pointers (device addresses), shapes and the stream cross the
// boundary as plain integers; the GIL is released around every launch. Errors (bad arguments,
// CUDA errors with their cudaGetErrorString text) are raised as RuntimeError.
#include <pybind11/pybind11.h>

#include <cstdint>

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
}
