// k-means centroid update on CUDA: launchers (plain C++ interface).
//
// Device pointers, row-major contiguous arrays, asynchronous on `stream`; errors are thrown as
// std::runtime_error. Same result as csrc/cpu/kmeans.cpp, bit for bit: each cluster sums its
// members in double in the CPU's order (per chunk of 4,096 rows in increasing row order, the
// chunks' partials in chunk order), without FMA contraction and without atomics.
//
// dtype codes: 0 = float32, 1 = float16, 2 = bfloat16. Requires n <= INT32_MAX.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace hdlfast {
namespace cuda {

// Device scratch bytes of one cluster_sums() call: about 24 * n + 4 * n_clusters + CUB's
// temporary storage. Queries the current device (CUB).
size_t cluster_sums_workspace_bytes(int64_t n, int64_t n_clusters);

// sums[c, :] = sum over rows i with labels[i] == c of x[i, :] * w_i (w_i = inv[i], or 1 when
// inv is null; double), counts[c] = number of such rows; rows whose label lies outside
// [0, n_clusters) are in no cluster (hdlfast's assignment never gives one). workspace
// (16-byte aligned) must hold cluster_sums_workspace_bytes(n, n_clusters) bytes.
void cluster_sums(const void* x, int64_t n, int64_t d, int dtype, const float* inv,
                  const int64_t* labels, int64_t n_clusters, double* sums, int64_t* counts,
                  void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace hdlfast
