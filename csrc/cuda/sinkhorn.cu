// Sinkhorn-Knopp kernels on CUDA (semantics of csrc/cpu/sinkhorn.cpp).
//
// prepare / finalize / rowdot: one warp per row; the warp sums use an xor butterfly, so every
// lane holds the bit-identical total.
// colsum / iterate: a CTA owns a fixed chunk of kChunkRows rows and one tile of at most
// kColTile columns, accumulates its column sums in shared memory (each column owned by one
// thread, fixed row order) and writes them as one row of the partial workspace; a second kernel
// reduces the partials over chunks in chunk order. No floating-point atomics: results are
// deterministic. The iteration is fused (row scaling u, then the column sums weighted by u, in
// one pass over Q; the rows are re-read from L1/L2) when all columns fit one tile; wider
// matrices run a row-dot kernel first.
#include "cuda/sinkhorn.cuh"
#include "cuda/common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

namespace hdlfast {
namespace cuda {

namespace {

using detail::require;

constexpr int kThreads = 256;  // every kernel: 8 warps
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kChunkRows = 256;  // rows per partial column sum
constexpr int kColTile = 4096;       // columns per CTA (32 KiB of double accumulators)
constexpr int kRedSlices = 8;        // chunk slices per column in the reduction kernel

// Sum over the warp; every lane returns the same value (a + b == b + a in IEEE arithmetic).
__device__ __forceinline__ double warp_sum(double x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}

// sum_j row[j] * v[j] in double, lanes striding over j, then the butterfly.
__device__ __forceinline__ double warp_dot(const float* __restrict__ row,
                                           const double* __restrict__ v, int64_t k, int lane) {
  double d = 0.0;
#pragma unroll 4
  for (int64_t j = lane; j < k; j += 32) d += static_cast<double>(row[j]) * v[j];
  return warp_sum(d);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    prepare_kernel(const T* __restrict__ s, int64_t n, int64_t k, double beta,
                   float* __restrict__ q, double* __restrict__ rowmax,
                   int32_t* __restrict__ bad_row) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= n) return;  // warp-uniform
  const T* src = s + row * k;
  float m = -INFINITY;
  bool finite = true;
  for (int64_t j = lane; j < k; j += 32) {
    const float x = to_float(src[j]);
    finite = finite && isfinite(x);
    m = fmaxf(m, x);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(kFull, m, o));
  if (__any_sync(kFull, !finite)) {
    if (lane == 0) atomicMin(bad_row, static_cast<int32_t>(row));
    return;
  }
  if (lane == 0) rowmax[row] = static_cast<double>(m);
  const double md = m;
  float* dst = q + row * k;
  for (int64_t j = lane; j < k; j += 32)
    dst[j] = static_cast<float>(exp(beta * (static_cast<double>(to_float(src[j])) - md)));
}

// u[i] = r[i] / dot(q[i, :], v) for the wide case (columns over several tiles).
__global__ void __launch_bounds__(kThreads)
    rowdot_kernel(const float* __restrict__ q, int64_t n, int64_t k, const double* __restrict__ v,
                  const double* __restrict__ r, double* __restrict__ u,
                  int32_t* __restrict__ u_bad) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= n) return;
  const double ui = r[row] / warp_dot(q + row * k, v, k, lane);
  if (lane == 0) {
    u[row] = ui;
    if (!isfinite(ui)) atomicOr(u_bad, 1);
  }
}

// Partial column sums of q[i, j] * u[i] over the rows of chunk blockIdx.x and the columns of
// tile blockIdx.y, written to part[blockIdx.x, tile columns]. kFused: u[i] is computed here
// first (u[i] = r[i] / dot(q[i, :], v); requires a single column tile).
template <bool kFused>
__global__ void __launch_bounds__(kThreads)
    colsum_kernel(const float* __restrict__ q, int64_t n, int64_t k, const double* __restrict__ v,
                  const double* __restrict__ r, double* __restrict__ u, double* __restrict__ part,
                  int32_t* __restrict__ u_bad) {
  extern __shared__ double smem[];
  double* us = smem;            // [kWarps]: the weights of the current row group
  double* acc = smem + kWarps;  // [tile width]: acc[t] touched only by thread t % kThreads
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t j0 = int64_t(blockIdx.y) * kColTile;
  const int tw = static_cast<int>(min(int64_t(kColTile), k - j0));
  const int64_t rb = int64_t(blockIdx.x) * kChunkRows;
  const int64_t re = min(n, rb + kChunkRows);
  for (int t = threadIdx.x; t < tw; t += kThreads) acc[t] = 0.0;
  for (int64_t g = rb; g < re; g += kWarps) {  // block-uniform bounds: the barriers are safe
    const int64_t row = g + warp;
    if (row < re) {
      double ui;
      if (kFused) {
        ui = r[row] / warp_dot(q + row * k, v, k, lane);
        if (lane == 0) {
          u[row] = ui;
          if (!isfinite(ui)) atomicOr(u_bad, 1);
        }
      } else {
        ui = u[row];
      }
      if (lane == 0) us[warp] = ui;
    }
    __syncthreads();
    const int rows = static_cast<int>(min(int64_t(kWarps), re - g));
    const float* base = q + g * k + j0;
    if (rows == kWarps) {
      for (int t = threadIdx.x; t < tw; t += kThreads) {
        float x[kWarps];
#pragma unroll
        for (int rr = 0; rr < kWarps; ++rr) x[rr] = base[rr * k + t];
        double s = 0.0;
#pragma unroll
        for (int rr = 0; rr < kWarps; ++rr) s += static_cast<double>(x[rr]) * us[rr];
        acc[t] += s;
      }
    } else {
      for (int t = threadIdx.x; t < tw; t += kThreads) {
        double s = 0.0;
        for (int rr = 0; rr < rows; ++rr) s += static_cast<double>(base[rr * k + t]) * us[rr];
        acc[t] += s;
      }
    }
    __syncthreads();  // us is rewritten by the next group
  }
  double* out = part + int64_t(blockIdx.x) * k + j0;
  for (int t = threadIdx.x; t < tw; t += kThreads) out[t] = acc[t];
}

// out[j] = sum over chunks c (in order) of part[c, j]. Block: 32 columns x kRedSlices slices;
// slice y sums chunks y, y + kRedSlices, ...; the slices are then added in order.
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(const double* __restrict__ part, int64_t chunks, int64_t k,
                  double* __restrict__ out) {
  __shared__ double red[kRedSlices][33];
  const int tx = threadIdx.x & 31;
  const int ty = threadIdx.x >> 5;
  const int64_t j = int64_t(blockIdx.x) * 32 + tx;
  double s = 0.0;
  if (j < k) {
#pragma unroll 4
    for (int64_t c = ty; c < chunks; c += kRedSlices) s += part[c * k + j];
  }
  red[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && j < k) {
    double t = red[0][tx];
#pragma unroll
    for (int y = 1; y < kRedSlices; ++y) t += red[y][tx];
    out[j] = t;
  }
}

__global__ void __launch_bounds__(kThreads)
    finalize_kernel(float* __restrict__ q, int64_t n, int64_t k, const double* __restrict__ v,
                    int64_t* __restrict__ labels) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= n) return;
  float* p = q + row * k;
  double s = 0.0;
  double top = -1.0;  // as the CPU kernel: t > top, t >= 0 unless NaN
  int64_t best = 0;
  for (int64_t j = lane; j < k; j += 32) {
    const double t = static_cast<double>(p[j]) * v[j];
    s += t;
    if (t > top) {  // first maximum of this lane's (ascending) columns
      top = t;
      best = j;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_xor_sync(kFull, s, o);
    const double ot = __shfl_xor_sync(kFull, top, o);
    const int64_t ob = __shfl_xor_sync(kFull, best, o);
    // total order on (top, -best), never NaN: both partners keep the same pair
    if (ot > top || (ot == top && ob < best)) {
      top = ot;
      best = ob;
    }
  }
  for (int64_t j = lane; j < k; j += 32)
    p[j] = static_cast<float>(static_cast<double>(p[j]) * v[j] / s);
  if (lane == 0) labels[row] = best;
}

void check_sizes(int64_t n, int64_t k) {
  require(n >= 0 && k >= 0, "negative size");
  require(n <= int64_t(INT_MAX), "sinkhorn: n must be <= 2^31 - 1");
  require(ceil_div(k, kColTile) <= 65535, "sinkhorn: k too large");
}

unsigned grid_rows(int64_t n) { return static_cast<unsigned>(ceil_div(n, kWarps)); }

// Partial column sums (fused or with the given u) and their reduction into out_colsum.
void colsum_launch(bool fused, const float* q, int64_t n, int64_t k, const double* v,
                   const double* r, double* u, void* workspace, size_t workspace_bytes,
                   double* out_colsum, int32_t* u_bad, cudaStream_t stream) {
  const int64_t chunks = ceil_div(n, kChunkRows);
  const int64_t tiles = ceil_div(k, kColTile);
  require(workspace != nullptr && workspace_bytes >= sk_workspace_bytes(n, k),
          "sinkhorn: workspace too small");
  auto* part = static_cast<double*>(workspace);
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(tiles));
  const size_t smem = (kWarps + std::min<int64_t>(k, kColTile)) * sizeof(double);
  if (fused) {
    colsum_kernel<true><<<grid, kThreads, smem, stream>>>(q, n, k, v, r, u, part, u_bad);
  } else {
    colsum_kernel<false><<<grid, kThreads, smem, stream>>>(q, n, k, v, r, u, part, u_bad);
  }
  HDLFAST_CUDA_CHECK_LAUNCH("sinkhorn colsum_kernel");
  reduce_kernel<<<static_cast<unsigned>(ceil_div(k, 32)), kThreads, 0, stream>>>(part, chunks, k,
                                                                                 out_colsum);
  HDLFAST_CUDA_CHECK_LAUNCH("sinkhorn reduce_kernel");
}

}  // namespace

void sk_prepare(const void* scores, int64_t n, int64_t k, int dtype, double beta, float* q_out,
                double* rowmax_out, int32_t* bad_row, cudaStream_t stream) {
  check_sizes(n, k);
  require(dtype >= 0 && dtype <= 2, "sk_prepare: dtype must be 0, 1 or 2");
  if (n == 0 || k == 0) return;
  const unsigned grid = grid_rows(n);
  switch (dtype) {
    case 0:  // float32
      prepare_kernel<float><<<grid, kThreads, 0, stream>>>(static_cast<const float*>(scores), n,
                                                           k, beta, q_out, rowmax_out, bad_row);
      break;
    case 1:  // float16
      prepare_kernel<__half><<<grid, kThreads, 0, stream>>>(static_cast<const __half*>(scores),
                                                            n, k, beta, q_out, rowmax_out,
                                                            bad_row);
      break;
    default:
      prepare_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(scores), n, k, beta, q_out, rowmax_out, bad_row);
      break;
  }
  HDLFAST_CUDA_CHECK_LAUNCH("sk_prepare");
}

size_t sk_workspace_bytes(int64_t n, int64_t k) {
  if (n <= 0 || k <= 0) return 0;
  return static_cast<size_t>(ceil_div(n, kChunkRows)) * static_cast<size_t>(k) * sizeof(double);
}

void sk_colsum(const float* q, int64_t n, int64_t k, const double* u, void* workspace,
               size_t workspace_bytes, double* out_colsum, cudaStream_t stream) {
  check_sizes(n, k);
  if (k == 0) return;
  if (n == 0) {
    HDLFAST_CUDA_CHECK(cudaMemsetAsync(out_colsum, 0, k * sizeof(double), stream));
    return;
  }
  colsum_launch(false, q, n, k, nullptr, nullptr, const_cast<double*>(u), workspace,
                workspace_bytes, out_colsum, nullptr, stream);
}

void sk_iterate(const float* q, int64_t n, int64_t k, const double* v, const double* r,
                double* u, void* workspace, size_t workspace_bytes, double* out_colsum,
                int32_t* u_bad, cudaStream_t stream) {
  check_sizes(n, k);
  HDLFAST_CUDA_CHECK(cudaMemsetAsync(u_bad, 0, sizeof(int32_t), stream));
  if (k == 0) return;
  if (n == 0) {
    HDLFAST_CUDA_CHECK(cudaMemsetAsync(out_colsum, 0, k * sizeof(double), stream));
    return;
  }
  const bool fused = k <= kColTile;
  if (!fused) {
    rowdot_kernel<<<grid_rows(n), kThreads, 0, stream>>>(q, n, k, v, r, u, u_bad);
    HDLFAST_CUDA_CHECK_LAUNCH("sinkhorn rowdot_kernel");
  }
  colsum_launch(fused, q, n, k, v, r, u, workspace, workspace_bytes, out_colsum, u_bad, stream);
}

void sk_finalize(float* q, int64_t n, int64_t k, const double* v, int64_t* labels,
                 cudaStream_t stream) {
  check_sizes(n, k);
  if (n == 0) return;
  if (k == 0) {
    HDLFAST_CUDA_CHECK(cudaMemsetAsync(labels, 0, n * sizeof(int64_t), stream));
    return;
  }
  finalize_kernel<<<grid_rows(n), kThreads, 0, stream>>>(q, n, k, v, labels);
  HDLFAST_CUDA_CHECK_LAUNCH("sk_finalize");
}

}  // namespace cuda
}  // namespace hdlfast
