// Sinkhorn-Knopp kernels on CUDA: launchers (plain C++ interface, usable from any C++ caller).
//
// All pointers are device pointers, arrays are row-major and contiguous, and every launcher is
// asynchronous on `stream` (0 = legacy default stream). Errors (bad arguments, CUDA errors) are
// reported by throwing std::runtime_error. Same semantics as csrc/cpu/sinkhorn.cpp; column sums
// are deterministic (fixed chunks of rows, per-chunk partial sums reduced in chunk order, no
// floating-point atomics), so repeated runs give bit-identical results on one device.
//
// dtype codes: 0 = float32, 1 = float16, 2 = bfloat16. Requires n <= INT32_MAX.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace hdlfast {
namespace cuda {

// q_out[i, j] = float(exp(beta * (s[i, j] - m_i))) computed in double, m_i = max_j s[i, j]
// (rowmax_out[i], double). bad_row (int32[1], initialised to INT32_MAX by the caller) receives by
// atomicMin the smallest index of a row holding NaN/Inf (q_out is then meaningless).
void sk_prepare(const void* scores, int64_t n, int64_t k, int dtype, double beta, float* q_out,
                double* rowmax_out, int32_t* bad_row, cudaStream_t stream);

// Device scratch bytes for sk_colsum / sk_iterate (the per-chunk partial column sums:
// ceil(n / 256) * k doubles).
size_t sk_workspace_bytes(int64_t n, int64_t k);

// out_colsum[j] = sum_i q[i, j] * u[i] (double).
void sk_colsum(const float* q, int64_t n, int64_t k, const double* u, void* workspace,
               size_t workspace_bytes, double* out_colsum, cudaStream_t stream);

// One fused Sinkhorn step: u[i] = r[i] / sum_j q[i, j] v[j], then
// out_colsum[j] = sum_i q[i, j] u[i] (double). u_bad (int32[1]) is set to 1 when some u[i] is
// not finite, else 0 (the launcher clears it first).
void sk_iterate(const float* q, int64_t n, int64_t k, const double* v, const double* r,
                double* u, void* workspace, size_t workspace_bytes, double* out_colsum,
                int32_t* u_bad, cudaStream_t stream);

// In place: q[i, :] = q[i, :] * v / sum_j q[i, j] v[j] (double, stored as float);
// labels[i] = argmax_j q[i, j] v[j] (int64, smaller index on ties).
void sk_finalize(float* q, int64_t n, int64_t k, const double* v, int64_t* labels,
                 cudaStream_t stream);

}  // namespace cuda
}  // namespace hdlfast
