// k-means centroid update on CUDA (semantics of csrc/cpu/kmeans.cpp).
//
// One CTA per (cluster, tile of kThreads columns). The CTA scans the labels in chunks of
// kThreads rows; the matching rows of a chunk are compacted in shared memory in row order
// (warp ballots plus a prefix over the warps), then each thread adds its column of those rows
// to a double accumulator. Rows are visited in increasing order and the additions are rounded
// one by one (__dadd_rn, __dmul_rn: no FMA contraction), so the sums equal the CPU kernels'.
// Each CTA re-reads the labels (n int64, L2-resident for n up to a few million); the rows of x
// are read once in all.
#include "cuda/kmeans.cuh"
#include "cuda/common.cuh"

#include <climits>
#include <cstdint>

namespace hdlfast {
namespace cuda {

namespace {

using detail::require;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cluster_sums_kernel(const T* __restrict__ x, int64_t n, int64_t d,
                        const float* __restrict__ inv, const int64_t* __restrict__ labels,
                        double* __restrict__ sums, int64_t* __restrict__ counts) {
  __shared__ int32_t rows[kThreads];
  __shared__ int warp_hits[kWarps];
  const int64_t c = blockIdx.x;
  const int64_t j = int64_t(blockIdx.y) * kThreads + threadIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double acc = 0.0;
  int64_t count = 0;
  for (int64_t base = 0; base < n; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    const bool hit = i < n && labels[i] == c;
    const unsigned ballot = __ballot_sync(kFull, hit);
    if (lane == 0) warp_hits[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      before += w < warp ? warp_hits[w] : 0;
      total += warp_hits[w];
    }
    if (hit) rows[before + __popc(ballot & ((1u << lane) - 1u))] = static_cast<int32_t>(i);
    __syncthreads();
    if (j < d) {
      for (int m = 0; m < total; ++m) {
        const int64_t r = rows[m];
        const double w = inv != nullptr ? static_cast<double>(inv[r]) : 1.0;
        acc = __dadd_rn(acc, __dmul_rn(static_cast<double>(to_float(x[r * d + j])), w));
      }
    }
    count += total;
    __syncthreads();  // rows and warp_hits are rewritten by the next chunk
  }
  if (j < d) sums[c * d + j] = acc;
  if (blockIdx.y == 0 && threadIdx.x == 0) counts[c] = count;
}

template <typename T>
void launch(const void* x, int64_t n, int64_t d, const float* inv, const int64_t* labels,
            int64_t n_clusters, double* sums, int64_t* counts, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_clusters), static_cast<unsigned>(ceil_div(d, kThreads)));
  cluster_sums_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(x), n, d, inv,
                                                         labels, sums, counts);
  HDLFAST_CUDA_CHECK_LAUNCH("cluster_sums_kernel");
}

}  // namespace

void cluster_sums(const void* x, int64_t n, int64_t d, int dtype, const float* inv,
                  const int64_t* labels, int64_t n_clusters, double* sums, int64_t* counts,
                  cudaStream_t stream) {
  require(n >= 1 && n <= INT_MAX, "cluster_sums: n must be in [1, 2^31 - 1]");
  require(d >= 1 && ceil_div(d, kThreads) <= 65535, "cluster_sums: d out of range");
  require(n_clusters >= 1 && n_clusters <= INT_MAX, "cluster_sums: n_clusters out of range");
  switch (dtype) {
    case 0: return launch<float>(x, n, d, inv, labels, n_clusters, sums, counts, stream);
    case 1: return launch<__half>(x, n, d, inv, labels, n_clusters, sums, counts, stream);
    case 2:
      return launch<__nv_bfloat16>(x, n, d, inv, labels, n_clusters, sums, counts, stream);
    default: require(false, "cluster_sums: dtype code must be 0, 1 or 2");
  }
}

}  // namespace cuda
}  // namespace hdlfast
