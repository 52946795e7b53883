// Exact cosine kNN on CUDA: launchers (plain C++ interface, usable from any C++ caller).
//
// All pointers are device pointers, all arrays are row-major and contiguous, and every launcher
// is asynchronous on `stream` (0 = legacy default stream). Errors (bad arguments, CUDA errors)
// are reported by throwing std::runtime_error.
//
// dtype codes: 0 = float32, 1 = float16, 2 = bfloat16.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace hdlfast {
namespace cuda {

enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Number of visible CUDA devices; 0 on any error (no driver, no device). Never throws.
int device_count() noexcept;
// Why device_count() is 0 when it is not simply "no device" (no driver, a driver older than
// the runtime, ...): the CUDA error string, else nullptr. Never throws.
const char* device_error() noexcept;

// out_inv[i] = 1 / sqrt(sum_j x[i, j]^2) (fp32 accumulation). out_bad (int32[2], initialised
// to INT32_MAX by the caller) receives, by atomicMin, in out_bad[0] the smallest index of a row
// containing NaN/Inf and in out_bad[1] the smallest index of a row with squared norm 0 (whose
// out_inv is set to 0). Requires n <= INT32_MAX.
void row_inv_norms(const void* x, int64_t n, int64_t d, int dtype, float* out_inv,
                   int32_t* out_bad, cudaStream_t stream);

// Largest k served by the fused small-k kernel.
int knn_small_k_max() noexcept;

// Device scratch bytes needed by one knn() call with these sizes, and by every call with fewer
// query rows (so one workspace serves a call's smaller last block). k <= knn_small_k_max():
// the partial lists of the database splits used when few query rows would leave SMs idle,
// 12 * k * (32 * SMs) bytes at most, 0 when nd < 8192. Larger k: about 4*nq*nd + 8*nq*k
// (+ max(0, 8*nq*k - 4*nq*nd)) + 4*nq + CUB temp storage. Queries the current device.
size_t knn_workspace_bytes(int64_t nq, int64_t nd, int64_t d, int64_t k, int dtype);

// For every query row i (0 <= i < nq) the k database rows j with the largest
//   sim(i, j) = dot(q_i, db_j) * q_inv[i] * db_inv[j]   (fp32 accumulation),
// sorted by sim descending, ties by smaller j first. out_sims float32 (nq, k), out_idx int64
// (nq, k). With exclude_self, j == q_offset + i is never a neighbour of row i. NaN
// similarities rank as -inf. Requires 1 <= k <= nd (k <= nd - 1 when excluding self),
// nq >= 1, nd < 2^31 - 2^16. workspace must hold knn_workspace_bytes(nq, nd, d, k, dtype)
// bytes (16-byte aligned); it may be null when that is 0.
void knn(const void* q, int64_t nq, const void* db, int64_t nd, int64_t d, int dtype,
         const float* q_inv, const float* db_inv, int64_t k, int64_t q_offset, bool exclude_self,
         bool allow_tf32, float* out_sims, int64_t* out_idx, void* workspace,
         size_t workspace_bytes, cudaStream_t stream);

// Device scratch bytes of one knn_select_products() call: 16*nq*k + 4*nq + CUB temp storage.
// Queries the current device (CUB).
size_t knn_select_workspace_bytes(int64_t nq, int64_t nd, int64_t k);

// The selection of knn() on dot products computed elsewhere (the "tiles" path: cuBLAS products
// of a query block against the whole database): products float32 (nq, nd) holds
// dot(q_i, db_j) and is overwritten with the similarities; outputs, order, tie rule and
// exclusion as knn() for any k. 1 <= nq <= 65535. workspace: knn_select_workspace_bytes bytes.
void knn_select_products(float* products, int64_t nq, int64_t nd, const float* q_inv,
                         const float* db_inv, int64_t k, int64_t q_offset, bool exclude_self,
                         float* out_sims, int64_t* out_idx, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace hdlfast
