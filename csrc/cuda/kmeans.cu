// k-means centroid update on CUDA (semantics of csrc/cpu/kmeans.cpp).
//
// The rows are grouped by cluster with CUB's radix sort of (label, row) pairs, which is stable,
// so each cluster's members come out in increasing row order; a segment-start kernel turns the
// sorted labels into per-cluster offsets. Then one CTA per (cluster, tile of kThreads columns)
// walks its own members only, each thread adding its column to a double accumulator. The
// additions are rounded one by one in the CPU's order (csrc/cpu/kmeans.h: a partial sum per
// chunk of kSumChunk rows in row order, partials added in chunk order; __dadd_rn, __dmul_rn: no
// FMA contraction), so the sums equal the CPU kernels'. The rows of x are read once in all.
#include "cuda/kmeans.cuh"
#include "cuda/common.cuh"

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

namespace hdlfast {
namespace cuda {

namespace {

using detail::require;

constexpr int kThreads = 256;
constexpr size_t kAlign = 256;
constexpr int kSumChunk = 4096;  // kSumChunk of csrc/cpu/kmeans.h: part of the sums' definition

size_t round_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// Bits that hold every sort key, [0, n_clusters] (n_clusters: a label out of range).
int label_bits(int64_t n_clusters) {
  int bits = 1;
  while ((int64_t(1) << bits) <= n_clusters) ++bits;
  return bits;
}

// Workspace layout (byte offsets): two label buffers and two row buffers for the sort's double
// buffer, the cluster offsets, CUB's temporary storage.
struct Layout {
  size_t keys_a, keys_b, rows_a, rows_b, offs, temp, temp_bytes, total;
};

Layout layout(int64_t n, int64_t n_clusters) {
  Layout L{};
  const size_t keys = round_up(size_t(n) * sizeof(int64_t));
  const size_t rows = round_up(size_t(n) * sizeof(int32_t));
  L.keys_a = 0;
  L.keys_b = L.keys_a + keys;
  L.rows_a = L.keys_b + keys;
  L.rows_b = L.rows_a + rows;
  L.offs = L.rows_b + rows;
  L.temp = L.offs + round_up(size_t(n_clusters + 1) * sizeof(int32_t));
  cub::DoubleBuffer<int64_t> k(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> v(nullptr, nullptr);
  HDLFAST_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, L.temp_bytes, k, v, int(n), 0,
                                                     label_bits(n_clusters), cudaStream_t(0)));
  L.total = L.temp + round_up(std::max<size_t>(L.temp_bytes, 16));
  return L;
}

// The sort's input: keys[i] = labels[i], or n_clusters for a label outside [0, n_clusters)
// (none from hdlfast's own assignment; such rows sort last and belong to no cluster), and
// rows[i] = i.
__global__ void sort_input_kernel(const int64_t* __restrict__ labels, int64_t n,
                                  int64_t n_clusters, int64_t* __restrict__ keys,
                                  int32_t* __restrict__ rows) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = labels[i];
    keys[i] = c >= 0 && c < n_clusters ? c : n_clusters;
    rows[i] = int32_t(i);
  }
}

// offs[c] = first position of the sorted labels with label >= c, for c in [0, n_clusters];
// position i writes the clusters between its predecessor's label and its own (each c once).
__global__ void segment_starts_kernel(const int64_t* __restrict__ sorted, int64_t n,
                                      int64_t n_clusters, int32_t* __restrict__ offs) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i > n) return;
  const int64_t prev = i == 0 ? -1 : sorted[i - 1];  // keys lie in [0, n_clusters]
  const int64_t cur = i == n ? n_clusters : sorted[i];
  for (int64_t c = prev + 1; c <= cur; ++c) offs[c] = int32_t(i);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cluster_sums_kernel(const T* __restrict__ x, int64_t d, const float* __restrict__ inv,
                        const int32_t* __restrict__ rows, const int32_t* __restrict__ offs,
                        double* __restrict__ sums, int64_t* __restrict__ counts) {
  const int64_t c = blockIdx.x;
  const int64_t j = int64_t(blockIdx.y) * kThreads + threadIdx.x;
  const int begin = offs[c], end = offs[c + 1];
  if (j < d) {
    double acc = 0.0, part = 0.0;
    int chunk = begin < end ? rows[begin] / kSumChunk : 0;
#pragma unroll 4
    for (int m = begin; m < end; ++m) {  // members in increasing row order
      const int64_t r = rows[m];
      if (r / kSumChunk != chunk) {  // the next chunk's first member: fold the partial
        acc = __dadd_rn(acc, part);
        part = 0.0;
        chunk = int(r / kSumChunk);
      }
      const double w = inv != nullptr ? static_cast<double>(inv[r]) : 1.0;
      part = __dadd_rn(part, __dmul_rn(static_cast<double>(to_float(x[r * d + j])), w));
    }
    sums[c * d + j] = begin < end ? __dadd_rn(acc, part) : 0.0;
  }
  if (blockIdx.y == 0 && threadIdx.x == 0) counts[c] = end - begin;
}

template <typename T>
void launch(const void* x, int64_t d, const float* inv, const int32_t* rows, const int32_t* offs,
            int64_t n_clusters, double* sums, int64_t* counts, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_clusters), static_cast<unsigned>(ceil_div(d, kThreads)));
  cluster_sums_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(x), d, inv, rows,
                                                         offs, sums, counts);
  HDLFAST_CUDA_CHECK_LAUNCH("cluster_sums_kernel");
}

void check_sizes(int64_t n, int64_t n_clusters) {
  require(n >= 1 && n <= INT_MAX, "cluster_sums: n must be in [1, 2^31 - 1]");
  require(n_clusters >= 1 && n_clusters < INT_MAX, "cluster_sums: n_clusters out of range");
}

}  // namespace

size_t cluster_sums_workspace_bytes(int64_t n, int64_t n_clusters) {
  check_sizes(n, n_clusters);
  return layout(n, n_clusters).total;
}

void cluster_sums(const void* x, int64_t n, int64_t d, int dtype, const float* inv,
                  const int64_t* labels, int64_t n_clusters, double* sums, int64_t* counts,
                  void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  check_sizes(n, n_clusters);
  require(d >= 1 && ceil_div(d, kThreads) <= 65535, "cluster_sums: d out of range");
  require(dtype >= 0 && dtype <= 2, "cluster_sums: dtype code must be 0, 1 or 2");
  const Layout L = layout(n, n_clusters);
  require(workspace != nullptr && workspace_bytes >= L.total,
          "cluster_sums: workspace too small: need " + std::to_string(L.total) + " bytes, got " +
              std::to_string(workspace_bytes));
  require(reinterpret_cast<uintptr_t>(workspace) % 16 == 0,
          "cluster_sums: workspace must be 16-byte aligned");
  char* ws = static_cast<char*>(workspace);
  int64_t* keys_a = reinterpret_cast<int64_t*>(ws + L.keys_a);
  int32_t* rows_a = reinterpret_cast<int32_t*>(ws + L.rows_a);
  int32_t* offs = reinterpret_cast<int32_t*>(ws + L.offs);

  // (label, row) pairs sorted by label; stable, so rows stay in increasing order per cluster
  const unsigned grid = unsigned(std::min<int64_t>(ceil_div(n, kThreads), 65536));
  sort_input_kernel<<<grid, kThreads, 0, stream>>>(labels, n, n_clusters, keys_a, rows_a);
  HDLFAST_CUDA_CHECK_LAUNCH("sort_input_kernel");
  cub::DoubleBuffer<int64_t> keys(keys_a, reinterpret_cast<int64_t*>(ws + L.keys_b));
  cub::DoubleBuffer<int32_t> rows(rows_a, reinterpret_cast<int32_t*>(ws + L.rows_b));
  size_t temp_bytes = L.temp_bytes;
  HDLFAST_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(ws + L.temp, temp_bytes, keys, rows, int(n),
                                                     0, label_bits(n_clusters), stream));
  segment_starts_kernel<<<unsigned(ceil_div(n + 1, kThreads)), kThreads, 0, stream>>>(
      keys.Current(), n, n_clusters, offs);
  HDLFAST_CUDA_CHECK_LAUNCH("segment_starts_kernel");

  switch (dtype) {
    case 0:
      return launch<float>(x, d, inv, rows.Current(), offs, n_clusters, sums, counts, stream);
    case 1:
      return launch<__half>(x, d, inv, rows.Current(), offs, n_clusters, sums, counts, stream);
    default:
      return launch<__nv_bfloat16>(x, d, inv, rows.Current(), offs, n_clusters, sums, counts,
                                   stream);
  }
}

}  // namespace cuda
}  // namespace hdlfast
