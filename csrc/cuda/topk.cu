// Exact cosine kNN on CUDA.
//
// Small k (k <= kSmallKMax): one fused kernel. A CTA owns BQ query rows and streams over the
// database in tiles of kBD rows. Each tile of dot products is computed on chip (tensor cores via
// WMMA for fp16/bf16 and for fp32 with TF32 allowed; plain fp32 FMA otherwise), scaled by the
// inverse norms, and merged into a sorted top-k list per query row kept in shared memory.
// With few query rows the database is split among several CTAs per query tile and their
// lists are merged by a second kernel, so a single query still fills the GPU.
//
// Large k: (a) the nq x nd similarity block is written to the workspace with the same tile code
// (so both paths produce bit-identical similarities), in L2-sized groups of query tiles, (b) an
// exact per-row radix select finds the k-th largest key, reading the row about three times
// (the last digits are resolved on a copy of the few candidates in shared memory), (c) the k
// winners are compacted, (d) rows are sorted with CUB's segmented radix sort on a 64-bit
// composite key (similarity key, inverted index).
//
// Order everywhere: similarity descending, then database index ascending. Similarities are
// canonicalised first (NaN -> -inf, -0 -> +0), so comparing floats and comparing the
// order-preserving uint32 keys give the same total order.
#include "cuda/topk.cuh"
#include "cuda/common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace hdlfast {
namespace cuda {

namespace {

using detail::require;

// ---------------------------------------------------------------------------------------------
// Constants and shared-memory layout (shared by host and device code)
// ---------------------------------------------------------------------------------------------

constexpr int kThreads = 256;               // every kernel: 8 warps
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
constexpr int kBD = 64;                     // database rows per tile
constexpr int kLDS = kBD + 4;               // row stride (floats) of the similarity tile
constexpr int kBQLarge = 64;                // query rows per tile in the large-k path
constexpr int kSmallKMax = 256;
// Min CTAs per SM for the tile kernels: caps registers at 85 (no spills on sm_80 / sm_90; a
// bare __launch_bounds__(256) made ptxas spill a few bytes in the bf16 variants).
constexpr int kMinBlocks = 3;
constexpr int64_t kMaxRows = int64_t(INT_MAX) - 65536;  // int32 indices with headroom
// Largest d: the int column loops (k0 + BK, j + 32) must not overflow past d.
constexpr int64_t kMaxDim = int64_t(INT_MAX) - 127;  // 2^31 - 128

// Dot-product modes.
constexpr int kSimt = 0;   // fp32 FMA
constexpr int kTf32 = 1;   // fp32 inputs, TF32 tensor cores (WMMA m16n16k8)
constexpr int kMma16 = 2;  // fp16 / bf16 inputs, tensor cores (WMMA m16n16k16)

__host__ __device__ constexpr size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
__host__ __device__ constexpr size_t cmax(size_t a, size_t b) { return a > b ? a : b; }
// Depth (elements of d) of one shared-memory chunk.
__host__ __device__ constexpr int tile_bk(int elem) { return elem == 2 ? 64 : 32; }
// Row stride (elements) of the staged q / db chunks. WMMA needs a multiple of 16 bytes; the
// SIMT path uses an odd stride to avoid bank conflicts.
__host__ __device__ constexpr int tile_lda(int elem, int mode) {
  return mode == kSimt ? tile_bk(elem) + 1 : tile_bk(elem) + 16 / elem;
}
__host__ __device__ constexpr size_t a_bytes(int elem, int mode, int rows) {
  return round_up(size_t(rows) * tile_lda(elem, mode) * elem, 128);
}
__host__ __device__ constexpr size_t s_bytes(int bq) {
  return round_up(size_t(bq) * kLDS * sizeof(float), 128);
}
// Region 0 holds the q / db chunks during the dot products and then (aliased) the fp32 tile.
__host__ __device__ constexpr size_t region0_bytes(int elem, int mode, int bq) {
  return cmax(a_bytes(elem, mode, bq) + a_bytes(elem, mode, kBD), s_bytes(bq));
}
__host__ __device__ constexpr size_t list_bytes(int bq, int k) {
  return round_up(size_t(bq) * k * 4, 128);
}
// Dynamic shared memory of the small-k kernel: region 0 + sims list + index list.
__host__ __device__ constexpr size_t small_smem_bytes(int elem, int mode, int bq, int k) {
  return region0_bytes(elem, mode, bq) + 2 * list_bytes(bq, k);
}

// ---------------------------------------------------------------------------------------------
// Small device helpers
// ---------------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T zero_value();
template <>
__device__ __forceinline__ float zero_value<float>() { return 0.0f; }
template <>
__device__ __forceinline__ __half zero_value<__half>() { return __ushort_as_half(0); }
template <>
__device__ __forceinline__ __nv_bfloat16 zero_value<__nv_bfloat16>() {
  return __ushort_as_bfloat16(0);
}

// sim = dot * q_inv * db_inv, canonicalised: NaN -> -inf (ranks last), -0 -> +0.
__device__ __forceinline__ float scale_sim(float dot, float qs, float ds) {
  const float s = __fmul_rn(__fmul_rn(dot, qs), ds);
  if (isnan(s)) return -INFINITY;
  return s == 0.0f ? 0.0f : s;
}

// Total order of (sim, index) pairs: larger sim first, then smaller index.
__device__ __forceinline__ bool better(float s1, int i1, float s2, int i2) {
  return s1 > s2 || (s1 == s2 && i1 < i2);
}

// Order-preserving map float -> uint32 (larger float <=> larger key).
__device__ __forceinline__ uint32_t float_to_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_to_float(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}
// Marker for an excluded (self) entry in the large-k similarity block: key 0, below every real
// similarity (the smallest real key is that of -inf, 0x007fffff).
__device__ __forceinline__ float excluded_marker() { return __uint_as_float(0xffffffffu); }

// ---------------------------------------------------------------------------------------------
// Dot-product tile: S[r][c] = dot(q[q0 + r], db[d0 + c]) for r < BQ, c < kBD (fp32).
// ---------------------------------------------------------------------------------------------

// Stage rows [row0, row0 + ROWS) x columns [k0, k0 + BK) of src (nrows x d) into dst (stride
// LDA), zero padded outside the matrix. vec_ok: d is a multiple of 16 / sizeof(T) and src is
// 16-byte aligned, so 16-byte loads never straddle the end of a row.
template <typename T, int BK, int LDA, int ROWS>
__device__ __forceinline__ void load_rows(T* __restrict__ dst, const T* __restrict__ src,
                                          int64_t row0, int64_t nrows, int d, int k0,
                                          bool vec_ok) {
  if (vec_ok) {
    constexpr int VEC = 16 / sizeof(T);
    constexpr int VPR = BK / VEC;        // 16-byte vectors per staged row
    constexpr int RPI = kThreads / VPR;  // rows per iteration
    static_assert(BK % VEC == 0 && kThreads % VPR == 0, "bad staging split");
    const int c = (threadIdx.x % VPR) * VEC;
    const bool col_ok = k0 + c < d;  // whole vector in or out, as d % VEC == 0
#pragma unroll
    for (int r = threadIdx.x / VPR; r < ROWS; r += RPI) {
      const int64_t gr = row0 + r;
      uint4 val = make_uint4(0u, 0u, 0u, 0u);
      if (col_ok && gr < nrows) val = __ldg(reinterpret_cast<const uint4*>(src + gr * d + k0 + c));
      if constexpr ((LDA * sizeof(T)) % 16 == 0) {
        *reinterpret_cast<uint4*>(dst + r * LDA + c) = val;  // 16-byte aligned row slot
      } else {
        uint32_t* w = reinterpret_cast<uint32_t*>(dst + r * LDA + c);  // 4-byte T (SIMT)
        w[0] = val.x;
        w[1] = val.y;
        w[2] = val.z;
        w[3] = val.w;
      }
    }
  } else {
    constexpr int RPI = kThreads / BK;  // rows per iteration
    static_assert(kThreads % BK == 0, "bad staging split");
    const int c = threadIdx.x % BK;
    const bool col_ok = k0 + c < d;
#pragma unroll 4
    for (int r = threadIdx.x / BK; r < ROWS; r += RPI) {
      const int64_t gr = row0 + r;
      T val = zero_value<T>();
      if (col_ok && gr < nrows) val = src[gr * d + k0 + c];
      dst[r * LDA + c] = val;
    }
  }
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
template <typename T>
struct WmmaElem;
template <>
struct WmmaElem<float> {
  using type = nvcuda::wmma::precision::tf32;
  static constexpr int kK = 8;
};
template <>
struct WmmaElem<__half> {
  using type = __half;
  static constexpr int kK = 16;
};
template <>
struct WmmaElem<__nv_bfloat16> {
  using type = __nv_bfloat16;
  static constexpr int kK = 16;
};
#endif

// Computes the BQ x kBD dot-product tile into S (at smem), which aliases the staging buffers.
// Starts with __syncthreads() (so the caller may still be reading the previous S when it calls)
// and ends with __syncthreads() (S is complete and visible to all threads on return).
// Must be called by all threads of the CTA.
template <typename T, int MODE, int BQ>
__device__ __forceinline__ void dot_tile(const T* __restrict__ q, int64_t q0, int64_t nq,
                                         const T* __restrict__ db, int64_t d0, int64_t nd,
                                         int d, bool vec_ok, unsigned char* smem) {
  constexpr int kElem = sizeof(T);
  constexpr int BK = tile_bk(kElem);
  constexpr int LDA = tile_lda(kElem, MODE);
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = reinterpret_cast<T*>(smem + a_bytes(kElem, MODE, BQ));
  float* S = reinterpret_cast<float*>(smem);
  static_assert(BQ % 16 == 0 && BQ <= 64, "BQ must be 16, 32 or 64");

  if constexpr (MODE == kSimt) {
    static_assert(sizeof(T) == 4, "SIMT mode is for fp32 inputs");
    // Thread (ty, tx) computes rows ty + 16 i and columns tx + 16 j.
    constexpr int RM = BQ / 16;
    const int tx = threadIdx.x & 15;
    const int ty = threadIdx.x >> 4;
    float acc[RM][4];
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < d; k0 += BK) {
      __syncthreads();  // previous chunk (or previous S tile) fully consumed
      load_rows<T, BK, LDA, BQ>(As, q, q0, nq, d, k0, vec_ok);
      load_rows<T, BK, LDA, kBD>(Bs, db, d0, nd, d, k0, vec_ok);
      __syncthreads();
#pragma unroll 8
      for (int kk = 0; kk < BK; ++kk) {
        float a[RM], b[4];
#pragma unroll
        for (int i = 0; i < RM; ++i) a[i] = to_float(As[(ty + 16 * i) * LDA + kk]);
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = to_float(Bs[(tx + 16 * j) * LDA + kk]);
#pragma unroll
        for (int i = 0; i < RM; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();  // all reads of As / Bs done before S (aliased) is written
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) S[(ty + 16 * i) * kLDS + tx + 16 * j] = acc[i][j];
    __syncthreads();
  } else {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    using FT = typename WmmaElem<T>::type;
    constexpr int WK = WmmaElem<T>::kK;
    constexpr bool kIsTf32 = sizeof(T) == 4;
    static_assert(MODE == kTf32 || !kIsTf32, "fp32 tensor-core mode is TF32");
    // 16x16 output fragments: (BQ / 16) x (kBD / 16). Warp w owns FW consecutive fragments of
    // one fragment row (FW = 2 for BQ = 64, else 1; warps 4..7 idle for BQ = 16).
    constexpr int kColFrags = kBD / 16;
    constexpr int kFrags = (BQ / 16) * kColFrags;
    constexpr int FW = kFrags >= 2 * kWarps ? kFrags / kWarps : 1;
    static_assert(kColFrags % FW == 0 && FW * kWarps >= kFrags, "bad fragment split");
    const int warp = threadIdx.x >> 5;
    const bool active = warp * FW < kFrags;
    const int rb = (warp * FW) / kColFrags;
    const int cb0 = (warp * FW) % kColFrags;

    wmma::fragment<wmma::accumulator, 16, 16, WK, float> acc[FW];
#pragma unroll
    for (int f = 0; f < FW; ++f) wmma::fill_fragment(acc[f], 0.0f);

    for (int k0 = 0; k0 < d; k0 += BK) {
      __syncthreads();  // previous chunk (or previous S tile) fully consumed
      load_rows<T, BK, LDA, BQ>(As, q, q0, nq, d, k0, vec_ok);
      load_rows<T, BK, LDA, kBD>(Bs, db, d0, nd, d, k0, vec_ok);
      __syncthreads();
      if (active) {
#pragma unroll
        for (int kk = 0; kk < BK; kk += WK) {
          wmma::fragment<wmma::matrix_a, 16, 16, WK, FT, wmma::row_major> a;
          wmma::load_matrix_sync(a, As + rb * 16 * LDA + kk, LDA);
          if constexpr (kIsTf32) {
#pragma unroll
            for (int t = 0; t < a.num_elements; ++t) a.x[t] = wmma::__float_to_tf32(a.x[t]);
          }
#pragma unroll
          for (int f = 0; f < FW; ++f) {
            // db chunk is [kBD][BK] row-major = B (BK x kBD) column-major.
            wmma::fragment<wmma::matrix_b, 16, 16, WK, FT, wmma::col_major> b;
            wmma::load_matrix_sync(b, Bs + (cb0 + f) * 16 * LDA + kk, LDA);
            if constexpr (kIsTf32) {
#pragma unroll
              for (int t = 0; t < b.num_elements; ++t) b.x[t] = wmma::__float_to_tf32(b.x[t]);
            }
            wmma::mma_sync(acc[f], a, b, acc[f]);
          }
        }
      }
    }
    __syncthreads();  // all reads of As / Bs done before S (aliased) is written
    if (active) {
#pragma unroll
      for (int f = 0; f < FW; ++f)
        wmma::store_matrix_sync(S + rb * 16 * kLDS + (cb0 + f) * 16, acc[f], kLDS,
                                wmma::mem_row_major);
    }
    __syncthreads();
#else
    __trap();  // tensor-core paths need sm_80+
#endif
  }
}

// ---------------------------------------------------------------------------------------------
// Small-k fused kernel
// ---------------------------------------------------------------------------------------------

// Insert candidate (cs, ci) into the sorted list (ls, li) of length k. Called by a whole warp
// with warp-uniform arguments; the list is only ever touched by this warp.
__device__ __forceinline__ void warp_insert(float* ls, int* li, int k, float cs, int ci,
                                            int lane) {
  // The k-th entry may have improved since the candidate was filtered.
  if (!better(cs, ci, ls[k - 1], li[k - 1])) return;  // uniform: same smem words for all lanes
  // Position = number of entries better than the candidate (they form a prefix of the list).
  int pos = 0;
  for (int base = 0; base < k; base += 32) {
    const int e = base + lane;
    const unsigned m = __ballot_sync(kFull, e < k && better(ls[e], li[e], cs, ci));
    pos += __popc(m);
    if (m != kFull) break;
  }
  // pos < k here. Shift [pos, k - 2] to [pos + 1, k - 1], highest 32-entry chunk first: chunk
  // c writes entry (c + 1) * 32, which chunk c + 1 has already read.
  for (int base = ((k - 2) / 32) * 32; base >= (pos / 32) * 32; base -= 32) {
    const int e = base + lane;
    const bool mv = e >= pos && e <= k - 2;
    float vs = 0.0f;
    int vi = 0;
    if (mv) {
      vs = ls[e];
      vi = li[e];
    }
    __syncwarp();
    if (mv) {
      ls[e + 1] = vs;
      li[e + 1] = vi;
    }
    __syncwarp();
  }
  if (lane == 0) {
    ls[pos] = cs;
    li[pos] = ci;
  }
  __syncwarp();
}

template <typename T, int MODE, int BQ>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    knn_small_kernel(const T* __restrict__ q, int64_t nq, const T* __restrict__ db, int64_t nd,
                     int d, const float* __restrict__ q_inv, const float* __restrict__ db_inv,
                     int k, int64_t q_offset, bool exclude_self, bool vec_ok,
                     int64_t split_rows, float* __restrict__ out_sims,
                     int64_t* __restrict__ out_idx) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr size_t kRegion0 = region0_bytes(sizeof(T), MODE, BQ);
  // Database split blockIdx.y: rows [d_begin, d_end), its list written to slab blockIdx.y of
  // the outputs (one split: the outputs themselves).
  const int64_t d_begin = int64_t(blockIdx.y) * split_rows;
  const int64_t d_end = d_begin + split_rows < nd ? d_begin + split_rows : nd;
  out_sims += int64_t(blockIdx.y) * nq * k;
  out_idx += int64_t(blockIdx.y) * nq * k;
  const float* S = reinterpret_cast<const float*>(smem);
  float* list_s = reinterpret_cast<float*>(smem + kRegion0);
  int* list_i = reinterpret_cast<int*>(smem + kRegion0 + list_bytes(BQ, k));

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t q0 = int64_t(blockIdx.x) * BQ;

  // Sentinels: worse than any real candidate (real: sim >= -inf, index < INT_MAX).
  for (int e = threadIdx.x; e < BQ * k; e += kThreads) {
    list_s[e] = -INFINITY;
    list_i[e] = INT_MAX;
  }
  __syncthreads();

  for (int64_t d0 = d_begin; d0 < d_end; d0 += kBD) {
    dot_tile<T, MODE, BQ>(q, q0, nq, db, d0, d_end, d, vec_ok, smem);

    // Row r of the tile is merged by warp r % kWarps (the same warp for every tile).
    for (int r = warp; r < BQ; r += kWarps) {
      const int64_t qi = q0 + r;
      if (qi >= nq) break;  // warp-uniform
      float* ls = list_s + r * k;
      int* li = list_i + r * k;
      const float qs = q_inv[qi];
      const int64_t self = exclude_self ? q_offset + qi : int64_t(-1);
#pragma unroll
      for (int h = 0; h < kBD / 32; ++h) {
        const int c = h * 32 + lane;
        const int64_t j = d0 + c;
        const bool valid = j < d_end && j != self;
        const float s = valid ? scale_sim(S[r * kLDS + c], qs, db_inv[j]) : 0.0f;
        const int ji = static_cast<int>(j);
        unsigned cand = __ballot_sync(kFull, valid && better(s, ji, ls[k - 1], li[k - 1]));
        // Insert the survivors one at a time, in column order.
        while (cand) {
          const int src = __ffs(cand) - 1;
          cand &= cand - 1;
          const float cs = __shfl_sync(kFull, s, src);
          const int ci = __shfl_sync(kFull, ji, src);
          warp_insert(ls, li, k, cs, ci, lane);
        }
      }
    }
    // No barrier needed here: the next dot_tile starts with __syncthreads() before it
    // overwrites S, and the lists are only touched by their owning warp.
  }

  for (int r = warp; r < BQ; r += kWarps) {
    const int64_t qi = q0 + r;
    if (qi >= nq) break;
    const float* ls = list_s + r * k;
    const int* li = list_i + r * k;
    for (int e = lane; e < k; e += 32) {
      out_sims[qi * k + e] = ls[e];
      const int id = li[e];
      out_idx[qi * k + e] = id == INT_MAX ? int64_t(-1) : int64_t(id);  // -1: not enough rows
    }
  }
}

// Few query rows: the database is split among gridDim.y CTAs per query tile (so the GPU is
// full), each split writes its sorted list to a slab of parts (splits, nq, k), and this kernel
// merges the slabs. One warp per query row; lane l < splits holds the head of list l, and each
// step moves the best head (the same total order) to the output. Index -1 marks an empty slot
// (fewer rows than k in a split); it ranks after every real entry.
__global__ void __launch_bounds__(kThreads)
    merge_splits_kernel(const float* __restrict__ part_sims, const int64_t* __restrict__ part_idx,
                        int64_t nq, int k, int splits, float* __restrict__ out_sims,
                        int64_t* __restrict__ out_idx) {
  const int lane = threadIdx.x & 31;
  const int64_t qi = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (qi >= nq) return;  // warp-uniform
  const int64_t base = int64_t(lane) * nq * k + qi * k;
  int pos = 0;  // entries of this lane's list already taken
  float hs = -INFINITY;
  int hi = INT_MAX;
  auto load_head = [&]() {
    hs = -INFINITY;
    hi = INT_MAX;
    if (lane < splits && pos < k) {
      const int64_t id = part_idx[base + pos];
      if (id >= 0) {
        hs = part_sims[base + pos];
        hi = int(id);
      }
    }
  };
  load_head();
  for (int e = 0; e < k; ++e) {
    float bs = hs;
    int bi = hi;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float os = __shfl_xor_sync(kFull, bs, o);
      const int oi = __shfl_xor_sync(kFull, bi, o);
      if (better(os, oi, bs, bi)) {
        bs = os;
        bi = oi;
      }
    }
    // Every lane now holds the best head; real indices are distinct across lists, so exactly
    // one lane owns it (none when all lists are exhausted: bi == INT_MAX).
    if (lane == 0) {
      out_sims[qi * k + e] = bs;
      out_idx[qi * k + e] = bi == INT_MAX ? int64_t(-1) : int64_t(bi);
    }
    if (bi != INT_MAX && hi == bi) {
      ++pos;
      load_head();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Large-k path
// ---------------------------------------------------------------------------------------------

// (a) out[i * nd + j] = sim(i, j) for one 64 x 64 tile per CTA. 1-D grid in groups of
// `group` query tiles: within a group the query tiles vary fastest, so the CTAs running at
// one time share a few database tiles and the group's query rows (sized to stay in L2), and
// the database is read from memory once per group rather than once per query tile.
template <typename T, int MODE>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    sim_block_kernel(const T* __restrict__ q, int64_t nq, const T* __restrict__ db, int64_t nd,
                     int d, const float* __restrict__ q_inv, const float* __restrict__ db_inv,
                     int64_t q_offset, bool exclude_self, bool vec_ok, int64_t n_qtiles,
                     int64_t n_dtiles, int64_t group, float* __restrict__ out) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int64_t b = blockIdx.x;
  const int64_t g0 = b / (group * n_dtiles) * group;   // first query tile of this group
  const int64_t gsize = min(group, n_qtiles - g0);    // the last group may be smaller
  const int64_t within = b - g0 * n_dtiles;
  const int64_t tq = g0 + within % gsize;
  const int64_t td = within / gsize;
  const int64_t q0 = tq * kBQLarge;
  const int64_t d0 = td * kBD;
  dot_tile<T, MODE, kBQLarge>(q, q0, nq, db, d0, nd, d, vec_ok, smem);
  const float* S = reinterpret_cast<const float*>(smem);
  for (int e = threadIdx.x; e < kBQLarge * kBD; e += kThreads) {
    const int r = e / kBD;
    const int c = e % kBD;
    const int64_t qi = q0 + r;
    const int64_t j = d0 + c;
    if (qi < nq && j < nd) {
      const bool excl = exclude_self && j == q_offset + qi;
      out[qi * nd + j] = excl ? excluded_marker() : scale_sim(S[r * kLDS + c], q_inv[qi], db_inv[j]);
    }
  }
}

// (b) + (c) One CTA per row: exact radix select of the k-th largest key K, then compaction of
// every key > K and of the first (k - G) keys == K in index order, where G is the number of keys
// > K. Writes k composite keys (key << idx_bits | (mask - index)) per row, in no particular
// order (the segmented sort orders them).
//
// The digits are 11, 11 and 10 bits wide. Before each digit pass over the row, if at most
// kStash keys share the digits found so far (the "bucket"), one more read of the row writes the
// keys above the bucket straight out and copies the bucket to shared memory in index order; the
// remaining digits and the compaction then work there. So a row is read once when nd <= kStash
// and typically three times for large nd (two digit passes, the copy), where four 8-bit passes
// and a compaction read it five times; only a bucket of more than kStash equal keys after all
// three digits (heavy ties) is compacted from the row itself.
constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;
constexpr int kBinsPerThread = kBins / kThreads;
constexpr int kStash = 4096;
static_assert(kBins % kThreads == 0, "bins split evenly over the threads");
// Digit `pass` (0, 1, 2) of a key: bits [shift, shift + bits).
__device__ __forceinline__ int digit_shift(int pass) {
  return pass == 0 ? 32 - kDigitBits : pass == 1 ? 32 - 2 * kDigitBits : 0;
}
__device__ __forceinline__ int digit_bits(int pass) {
  return pass < 2 ? kDigitBits : 32 - 2 * kDigitBits;
}

using SelectScan = cub::BlockScan<int, kThreads>;

// Shared state of one row's select. The invariant between digit passes: the wanted key is the
// kk-th largest of the `count` keys whose bits under pmask equal prefix (1 <= kk <= count), and
// exactly k - kk keys lie above them.
struct SelectShared {
  SelectScan::TempStorage scan;
  int hist[kBins];
  uint32_t stash_key[kStash];
  int stash_idx[kStash];
  int digit, kk, count;
};

struct RowKeys {  // keys of the row in global memory
  const float* row;
  __device__ uint32_t operator()(int e) const { return float_to_key(row[e]); }
};
struct StashKeys {  // keys of the bucket copied to shared memory
  const uint32_t* key;
  __device__ uint32_t operator()(int e) const { return key[e]; }
};

// One digit pass (digit at `shift`, `bits` wide) over the n keys of `keys`: narrows prefix /
// pmask to the digit holding the kk-th largest key and updates kk and count. All threads call.
template <class Keys>
__device__ void digit_pass(Keys keys, int n, int shift, int bits, uint32_t& prefix,
                           uint32_t& pmask, int& kk, int& count, SelectShared& sh) {
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const uint32_t dmask = (1u << bits) - 1u;
  for (int b = tid; b < kBins; b += kThreads) sh.hist[b] = 0;
  __syncthreads();
  for (int base = 0; base < n; base += kThreads) {  // uniform trip count
    const int e = base + tid;
    int bin = -1;
    if (e < n) {
      const uint32_t key = keys(e);
      if ((key & pmask) == prefix) bin = int((key >> shift) & dmask);
    }
    // Warp-aggregated histogram update (one atomic per distinct bin per warp).
    const unsigned peers = __match_any_sync(kFull, bin);
    if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(&sh.hist[bin], __popc(peers));
  }
  __syncthreads();
  // Thread t holds the digits kBins-1-t*kBinsPerThread down to kBins-(t+1)*kBinsPerThread, so
  // the inclusive sum counts the keys whose digit is >= the thread's lowest digit.
  int cnt[kBinsPerThread];
  int sum = 0;
#pragma unroll
  for (int m = 0; m < kBinsPerThread; ++m) {
    cnt[m] = sh.hist[kBins - 1 - (tid * kBinsPerThread + m)];
    sum += cnt[m];
  }
  int incl;
  SelectScan(sh.scan).InclusiveSum(sum, incl);
  int above = incl - sum;  // keys with a larger digit than the thread's digits
  if (above < kk && incl >= kk) {  // exactly one thread: its digits hold the kk-th key
#pragma unroll
    for (int m = 0; m < kBinsPerThread; ++m) {
      if (above < kk && above + cnt[m] >= kk) {
        sh.digit = kBins - 1 - (tid * kBinsPerThread + m);
        sh.kk = kk - above;
        sh.count = cnt[m];
      }
      above += cnt[m];
    }
  }
  __syncthreads();
  prefix |= uint32_t(sh.digit) << shift;
  pmask |= dmask << shift;
  kk = sh.kk;
  count = sh.count;
  __syncthreads();  // hist / scan / digit are reused by the next pass
}

// The composite key of a winner: its key, then its inverted index (larger = smaller index).
__device__ __forceinline__ uint64_t composite(uint32_t key, int index, int idx_bits) {
  const uint64_t idx_mask = (uint64_t(1) << idx_bits) - 1;
  return (uint64_t(key) << idx_bits) | (idx_mask - uint64_t(index));
}

// In-order positions, within one chunk of kThreads entries, of two kinds of flagged entries:
// how many a-entries and b-entries come before this thread's, counting the earlier chunks
// (a_before / b_before, which get this chunk's totals added). All threads call; ends with
// __syncthreads() (the scan storage is reused by the next chunk).
struct Before {
  int a, b;
};
__device__ __forceinline__ Before scan_two(bool a, bool b, int& a_before, int& b_before,
                                           SelectShared& sh) {
  const int flag = (a ? 1 : 0) | (b ? (1 << 16) : 0);  // two counts, each <= kThreads
  int excl, agg;
  SelectScan(sh.scan).ExclusiveSum(flag, excl, agg);
  const Before at{a_before + (excl & 0xffff), b_before + (excl >> 16)};
  a_before += agg & 0xffff;
  b_before += agg >> 16;
  __syncthreads();
  return at;
}

// Writes out[0, g + kk), in index order of the n keys, every key > K (g of them) and the
// first kk keys == K; index_of(e) is the database index of key e. All threads call.
template <class Keys, class Index>
__device__ void compact(Keys keys, Index index_of, int n, uint32_t K, int kk, int g, int idx_bits,
                        uint64_t* __restrict__ out, SelectShared& sh) {
  int gt_before = 0, eq_before = 0;  // counts over the chunks already processed
  for (int base = 0; base < n; base += kThreads) {
    const int e = base + threadIdx.x;
    uint32_t key = 0;
    bool gt = false, eq = false;
    if (e < n) {
      key = keys(e);
      gt = key > K;
      eq = key == K;
    }
    const Before at = scan_two(gt, eq, gt_before, eq_before, sh);  // at.b: keys == K before e
    if (gt || (eq && at.b < kk)) out[at.a + min(at.b, kk)] = composite(key, index_of(e), idx_bits);
    if (gt_before == g && eq_before >= kk) break;  // uniform: all entries written
  }
}

struct Identity {
  __device__ int operator()(int e) const { return e; }
};
struct StashIndex {
  const int* idx;
  __device__ int operator()(int e) const { return idx[e]; }
};

__global__ void __launch_bounds__(kThreads)
    select_rows_kernel(const float* __restrict__ sims, int nd, int k, int idx_bits,
                       uint64_t* __restrict__ comp) {
  __shared__ SelectShared sh;
  const int tid = threadIdx.x;
  const RowKeys row{sims + size_t(blockIdx.x) * size_t(nd)};
  uint64_t* out = comp + size_t(blockIdx.x) * size_t(k);

  uint32_t prefix = 0, pmask = 0;
  int kk = k, count = nd, pass = 0;
  for (; pass < 3 && count > kStash; ++pass)
    digit_pass(row, nd, digit_shift(pass), digit_bits(pass), prefix, pmask, kk, count, sh);
  if (pass == 3) {  // K found on the row itself (more than kStash keys shared its top 21 bits)
    compact(row, Identity{}, nd, prefix, kk, k - kk, idx_bits, out, sh);
    return;
  }

  // The bucket (count <= kStash keys) to shared memory in index order; the k - kk keys above it
  // straight to out.
  const int above_total = k - kk;
  int above_before = 0, in_before = 0;
  for (int base = 0; base < nd; base += kThreads) {
    const int e = base + tid;
    uint32_t key = 0;
    bool above = false, in = false;
    if (e < nd) {
      key = row(e);
      above = (key & pmask) > prefix;
      in = (key & pmask) == prefix;
    }
    const Before at = scan_two(above, in, above_before, in_before, sh);
    if (above) out[at.a] = composite(key, e, idx_bits);
    if (in) {
      sh.stash_key[at.b] = key;
      sh.stash_idx[at.b] = e;
    }
    if (above_before == above_total && in_before == count) break;  // uniform
  }
  __syncthreads();  // the stash is complete
  const int n_stash = count;
  const StashKeys stash{sh.stash_key};
  for (; pass < 3; ++pass)
    digit_pass(stash, n_stash, digit_shift(pass), digit_bits(pass), prefix, pmask, kk, count, sh);
  // kk keys == prefix (= K) are taken; the stash holds the rest of the row's keys > K.
  compact(stash, StashIndex{sh.stash_idx}, n_stash, prefix, kk, k - kk - above_total, idx_bits,
          out + above_total, sh);
}

__global__ void fill_offsets_kernel(int* __restrict__ offs, int64_t n, int k) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) offs[i] = int(i * k);
}

__global__ void decode_kernel(const uint64_t* __restrict__ comp, int64_t n, int idx_bits,
                              float* __restrict__ out_sims, int64_t* __restrict__ out_idx) {
  const uint64_t idx_mask = (uint64_t(1) << idx_bits) - 1;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n;
       t += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t c = comp[t];
    out_sims[t] = key_to_float(uint32_t(c >> idx_bits));
    out_idx[t] = int64_t(idx_mask - (c & idx_mask));
  }
}

// Products computed elsewhere (cuBLAS) to the similarities of the large-k block, in place:
// p[i, j] = scale_sim(p[i, j], q_inv[i], db_inv[j]), the excluded marker for j == q_offset + i.
__global__ void __launch_bounds__(kThreads)
    scale_products_kernel(float* __restrict__ p, int64_t nq, int64_t nd,
                          const float* __restrict__ q_inv, const float* __restrict__ db_inv,
                          int64_t q_offset, bool exclude_self) {
  const int64_t i = blockIdx.y;  // one grid row per query row: no 64-bit division
  float* row = p + i * nd;
  const float qs = q_inv[i];
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < nd;
       j += int64_t(gridDim.x) * blockDim.x) {
    row[j] = (exclude_self && j == q_offset + i) ? excluded_marker()
                                                 : scale_sim(row[j], qs, db_inv[j]);
  }
}

// ---------------------------------------------------------------------------------------------
// row_inv_norms
// ---------------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads)
    row_inv_norms_kernel(const T* __restrict__ x, int64_t n, int d, float* __restrict__ out_inv,
                         int* __restrict__ out_bad) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= n) return;  // warp-uniform
  const T* xr = x + row * d;
  float ss = 0.0f;
  bool bad = false;
  for (int j = lane; j < d; j += 32) {
    const float v = to_float(xr[j]);
    bad |= !isfinite(v);
    ss = fmaf(v, v, ss);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(kFull, ss, o);
  bad = __any_sync(kFull, bad);
  if (lane == 0) {
    if (bad) atomicMin(out_bad, int(row));
    if (ss == 0.0f) {
      out_inv[row] = 0.0f;
      atomicMin(out_bad + 1, int(row));
    } else {
      out_inv[row] = 1.0f / sqrtf(ss);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host helpers
// ---------------------------------------------------------------------------------------------

int elem_size(int dtype) {
  switch (dtype) {
    case kFloat32: return 4;
    case kFloat16: return 2;
    case kBFloat16: return 2;
    default: throw std::runtime_error("hdlfast._cuda: dtype code must be 0 (float32), 1 (float16) or 2 (bfloat16), got " + std::to_string(dtype));
  }
}

struct KnnArgs {
  const void* q;
  int64_t nq;
  const void* db;
  int64_t nd;
  int d;
  const float* q_inv;
  const float* db_inv;
  int k;
  int64_t q_offset;
  bool exclude_self;
  bool vec_ok;
  float* out_sims;
  int64_t* out_idx;
};

// Database splits of the small-k kernel. Few query tiles would leave most SMs idle (one query
// row: one CTA streaming the whole database), so the database is split in kBD-aligned ranges
// of at least kMinSplitRows rows until about kCtasPerSm CTAs per SM run; the splits' lists are
// merged by merge_splits_kernel. The plan depends only on the sizes and the device (not on the
// dtype or TF32), so knn_workspace_bytes and knn agree on it.
constexpr int kMaxSplits = 32;           // one merge lane per split
constexpr int64_t kMinSplitRows = 4096;  // 64 tiles: amortises a split's list init and output
constexpr int kCtasPerSm = 2;

struct SmallSplit {
  int splits = 1;
  int64_t split_rows = 0;
};

SmallSplit small_split(int64_t nq, int64_t nd, int sms) {
  SmallSplit p;
  p.split_rows = nd;
  const int64_t q_tiles = ceil_div(nq, 16);  // the smallest query tile: the most CTAs
  const int64_t target = int64_t(kCtasPerSm) * sms;
  const int64_t by_rows = std::max<int64_t>(nd / kMinSplitRows, 1);
  const int64_t want = std::min<int64_t>({target / q_tiles, by_rows, kMaxSplits});
  if (want <= 1) return p;
  p.split_rows = int64_t(round_up(size_t(ceil_div(nd, want)), kBD));
  p.splits = int(ceil_div(nd, p.split_rows));
  return p;
}

// Partial lists of `lists` (= splits * nq) rows of k: float[lists * k] from byte 0, then
// int64[lists * k] from byte parts_idx_offset.
size_t parts_idx_offset(int64_t lists, int64_t k) {
  return round_up(size_t(lists) * size_t(k) * sizeof(float), 256);
}
size_t parts_bytes(int64_t lists, int64_t k) {
  return parts_idx_offset(lists, k) + size_t(lists) * size_t(k) * sizeof(int64_t);
}
// Workspace of the small-k path for every nq: splits > 1 only while splits * ceil(nq / 16) <=
// kCtasPerSm * sms, so splits * nq <= 16 * kCtasPerSm * sms and one workspace serves every
// block of queries of a call, the smaller last block included.
size_t small_workspace_bound(int64_t nd, int64_t k, int sms) {
  if (nd / kMinSplitRows < 2) return 0;  // never split
  return parts_bytes(int64_t(kCtasPerSm) * sms * 16, k);
}

template <typename T, int MODE, int BQ>
void launch_small_bq(const KnnArgs& a, const SmallSplit& p, float* sims, int64_t* idx,
                     cudaStream_t stream) {
  const size_t smem = small_smem_bytes(sizeof(T), MODE, BQ, a.k);
  auto kernel = knn_small_kernel<T, MODE, BQ>;
  reserve_dynamic_smem(kernel, smem);
  const int64_t grid = ceil_div(a.nq, BQ);
  require(grid <= INT_MAX, "too many query rows for one call");
  kernel<<<dim3(unsigned(grid), unsigned(p.splits)), kThreads, smem, stream>>>(
      static_cast<const T*>(a.q), a.nq, static_cast<const T*>(a.db), a.nd, a.d, a.q_inv,
      a.db_inv, a.k, a.q_offset, a.exclude_self, a.vec_ok, p.split_rows, sims, idx);
  HDLFAST_CUDA_CHECK_LAUNCH("knn_small_kernel");
}

template <typename T, int MODE>
void launch_small(const KnnArgs& a, void* workspace, size_t workspace_bytes,
                  cudaStream_t stream) {
  const int max_smem = device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  const int sms = device_attr(cudaDevAttrMultiProcessorCount);
  int bq = 0;
  for (int cand : {64, 32, 16}) {
    if (small_smem_bytes(sizeof(T), MODE, cand, a.k) <= size_t(max_smem)) {
      bq = cand;
      break;
    }
  }
  require(bq != 0, "k = " + std::to_string(a.k) + " does not fit in shared memory");
  const SmallSplit p = small_split(a.nq, a.nd, sms);
  // Few query rows: smaller CTAs (less shared memory, so they fit too) to fill the GPU; with
  // database splits, the smallest.
  while (bq > 16 && (p.splits > 1 || ceil_div(a.nq, bq) < sms)) bq /= 2;
  float* sims = a.out_sims;
  int64_t* idx = a.out_idx;
  if (p.splits > 1) {
    const int64_t lists = int64_t(p.splits) * a.nq;
    const size_t need = parts_bytes(lists, a.k);
    require(workspace != nullptr && workspace_bytes >= need,
            "workspace too small for the database splits: need " + std::to_string(need) +
                " bytes, got " + std::to_string(workspace_bytes));
    require(reinterpret_cast<uintptr_t>(workspace) % 16 == 0,
            "workspace must be 16-byte aligned");
    sims = static_cast<float*>(workspace);
    idx = reinterpret_cast<int64_t*>(static_cast<char*>(workspace) +
                                     parts_idx_offset(lists, a.k));
  }
  switch (bq) {
    case 64: launch_small_bq<T, MODE, 64>(a, p, sims, idx, stream); break;
    case 32: launch_small_bq<T, MODE, 32>(a, p, sims, idx, stream); break;
    default: launch_small_bq<T, MODE, 16>(a, p, sims, idx, stream); break;
  }
  if (p.splits > 1) {
    merge_splits_kernel<<<unsigned(ceil_div(a.nq, kWarps)), kThreads, 0, stream>>>(
        sims, idx, a.nq, a.k, p.splits, a.out_sims, a.out_idx);
    HDLFAST_CUDA_CHECK_LAUNCH("merge_splits_kernel");
  }
}

// Workspace layout of the large-k path (offsets in bytes from the workspace start).
struct LargeLayout {
  size_t off_sims = 0;    // float[nq * nd]; reused as the sort's second buffer (uint64[nq * k])
  size_t off_comp = 0;    // uint64[nq * k]
  size_t off_offs = 0;    // int[rows_chunk + 1] segment offsets
  size_t off_temp = 0;    // CUB temp storage
  size_t temp_bytes = 0;
  size_t total = 0;
  int64_t rows_chunk = 0;  // rows per CUB call (rows_chunk * k <= INT_MAX)
  int idx_bits = 1;        // bits of the inverted index in the composite key
  int end_bit = 33;
};

size_t sort_temp_bytes(int64_t rows, int64_t k, int end_bit) {
  size_t bytes = 0;
  cub::DoubleBuffer<uint64_t> buf(nullptr, nullptr);
  HDLFAST_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(
      nullptr, bytes, buf, int(rows * k), int(rows), static_cast<int*>(nullptr),
      static_cast<int*>(nullptr), 0, end_bit, cudaStream_t(0)));
  return bytes;
}

// external_sims: the similarity block lives outside the workspace (knn_select_products), so
// the first region only serves as the sort's second buffer.
LargeLayout large_layout(int64_t nq, int64_t nd, int64_t k, bool external_sims = false) {
  constexpr size_t kAlign = 256;
  LargeLayout L;
  while ((int64_t(1) << L.idx_bits) < nd) ++L.idx_bits;  // every index < nd fits
  L.end_bit = 32 + L.idx_bits;
  L.rows_chunk = std::min<int64_t>(nq, INT_MAX / k);
  const size_t comp = size_t(nq) * size_t(k) * sizeof(uint64_t);
  const size_t sims = external_sims ? comp : size_t(nq) * size_t(nd) * sizeof(float);
  L.off_sims = 0;
  L.off_comp = round_up(std::max(sims, comp), kAlign);
  L.off_offs = L.off_comp + round_up(comp, kAlign);
  L.off_temp = L.off_offs + round_up(size_t(L.rows_chunk + 1) * sizeof(int), kAlign);
  L.temp_bytes = sort_temp_bytes(L.rows_chunk, k, L.end_bit);
  const int64_t rem = nq % L.rows_chunk;
  if (rem != 0) L.temp_bytes = std::max(L.temp_bytes, sort_temp_bytes(rem, k, L.end_bit));
  L.temp_bytes = std::max<size_t>(L.temp_bytes, 16);
  L.total = L.off_temp + round_up(L.temp_bytes, kAlign);
  return L;
}

// (b)-(d) of the large-k path on the similarity block sims (nq, nd): per-row exact select,
// segmented sort of the k composite keys, decode into out_sims / out_idx. ws is the
// workspace of layout L (its first region is the sort's second buffer).
void select_sorted(const float* sims, int64_t nq, int64_t nd, int k, const LargeLayout& L,
                   char* ws, float* out_sims, int64_t* out_idx, cudaStream_t stream) {
  uint64_t* comp_b = reinterpret_cast<uint64_t*>(ws + L.off_sims);  // after (b, c) only
  uint64_t* comp_a = reinterpret_cast<uint64_t*>(ws + L.off_comp);
  int* offs = reinterpret_cast<int*>(ws + L.off_offs);
  void* temp = ws + L.off_temp;
  require(nq <= INT_MAX, "too many query rows for one call");
  // (b, c) per-row select + compaction
  select_rows_kernel<<<unsigned(nq), kThreads, 0, stream>>>(sims, int(nd), k, L.idx_bits,
                                                              comp_a);
  HDLFAST_CUDA_CHECK_LAUNCH("select_rows_kernel");

  // (d) segmented sort, in chunks of rows_chunk rows (CUB takes int sizes)
  const int64_t n_offs = L.rows_chunk + 1;
  fill_offsets_kernel<<<unsigned(ceil_div(n_offs, kThreads)), kThreads, 0, stream>>>(offs, n_offs,
                                                                                    k);
  HDLFAST_CUDA_CHECK_LAUNCH("fill_offsets_kernel");
  for (int64_t r0 = 0; r0 < nq; r0 += L.rows_chunk) {
    const int64_t rows = std::min(L.rows_chunk, nq - r0);
    const int64_t items = rows * k;
    cub::DoubleBuffer<uint64_t> buf(comp_a + r0 * k, comp_b + r0 * k);
    size_t temp_bytes = L.temp_bytes;
    HDLFAST_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(
        temp, temp_bytes, buf, int(items), int(rows), offs, offs + 1, 0, L.end_bit, stream));
    const int64_t blocks = std::min<int64_t>(ceil_div(items, kThreads), 65536);
    decode_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(
        buf.Current(), items, L.idx_bits, out_sims + r0 * k, out_idx + r0 * k);
    HDLFAST_CUDA_CHECK_LAUNCH("decode_kernel");
  }
}


template <typename T, int MODE>
void launch_large(const KnnArgs& a, void* workspace, size_t workspace_bytes,
                  cudaStream_t stream) {
  const LargeLayout L = large_layout(a.nq, a.nd, a.k);
  require(workspace != nullptr && workspace_bytes >= L.total,
          "workspace too small for k = " + std::to_string(a.k) + ": need " +
              std::to_string(L.total) + " bytes, got " + std::to_string(workspace_bytes));
  require(reinterpret_cast<uintptr_t>(workspace) % 16 == 0, "workspace must be 16-byte aligned");
  char* ws = static_cast<char*>(workspace);
  float* sims = reinterpret_cast<float*>(ws + L.off_sims);

  require(a.nq <= INT_MAX, "too many query rows for one call");  // select grid; before any launch
  // (a) similarity block
  const int64_t n_qtiles = ceil_div(a.nq, kBQLarge);
  const int64_t n_dtiles = ceil_div(a.nd, kBD);
  require(n_qtiles * n_dtiles <= INT_MAX, "similarity block too large for one call");
  const size_t smem = region0_bytes(sizeof(T), MODE, kBQLarge);
  auto sim_kernel = sim_block_kernel<T, MODE>;
  reserve_dynamic_smem(sim_kernel, smem);
  // Query tiles per group: the group's query rows take at most a quarter of L2.
  const int64_t tile_bytes = int64_t(kBQLarge) * a.d * int64_t(sizeof(T));
  const int64_t l2 = device_attr(cudaDevAttrL2CacheSize);
  const int64_t group = std::min(n_qtiles, std::max<int64_t>(l2 / 4 / tile_bytes, 1));
  sim_kernel<<<unsigned(n_qtiles * n_dtiles), kThreads, smem, stream>>>(
      static_cast<const T*>(a.q), a.nq, static_cast<const T*>(a.db), a.nd, a.d, a.q_inv,
      a.db_inv, a.q_offset, a.exclude_self, a.vec_ok, n_qtiles, n_dtiles, group, sims);
  HDLFAST_CUDA_CHECK_LAUNCH("sim_block_kernel");

  select_sorted(sims, a.nq, a.nd, a.k, L, ws, a.out_sims, a.out_idx, stream);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public launchers
// ---------------------------------------------------------------------------------------------

int device_count() noexcept {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

const char* device_error() noexcept {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaSuccess || err == cudaErrorNoDevice) return nullptr;
  cudaGetLastError();
  return cudaGetErrorString(err);  // e.g. a driver older than this build's CUDA runtime
}

int knn_small_k_max() noexcept { return kSmallKMax; }

void row_inv_norms(const void* x, int64_t n, int64_t d, int dtype, float* out_inv,
                   int32_t* out_bad, cudaStream_t stream) {
  elem_size(dtype);  // validates dtype
  require(n >= 0 && n <= INT_MAX, "row_inv_norms: n must be in [0, 2^31)");
  require(d >= 1 && d <= kMaxDim, "row_inv_norms: d must be in [1, 2^31 - 128]");
  if (n == 0) return;
  require(x != nullptr && out_inv != nullptr && out_bad != nullptr, "row_inv_norms: null pointer");
  const unsigned grid = unsigned(ceil_div(n, kWarps));
  switch (dtype) {
    case kFloat32:
      row_inv_norms_kernel<float><<<grid, kThreads, 0, stream>>>(
          static_cast<const float*>(x), n, int(d), out_inv, out_bad);
      break;
    case kFloat16:
      row_inv_norms_kernel<__half><<<grid, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), n, int(d), out_inv, out_bad);
      break;
    default:
      row_inv_norms_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), n, int(d), out_inv, out_bad);
      break;
  }
  HDLFAST_CUDA_CHECK_LAUNCH("row_inv_norms_kernel");
}

size_t knn_workspace_bytes(int64_t nq, int64_t nd, int64_t d, int64_t k, int dtype) {
  elem_size(dtype);
  require(nq >= 1 && nd >= 1 && d >= 1 && k >= 1 && k <= nd,
          "knn_workspace_bytes: need nq, nd, d >= 1 and 1 <= k <= nd");
  require(nd <= kMaxRows, "knn_workspace_bytes: nd too large");
  if (k <= kSmallKMax) {
    return small_workspace_bound(nd, k, device_attr(cudaDevAttrMultiProcessorCount));
  }
  return large_layout(nq, nd, k).total;
}

void knn(const void* q, int64_t nq, const void* db, int64_t nd, int64_t d, int dtype,
         const float* q_inv, const float* db_inv, int64_t k, int64_t q_offset, bool exclude_self,
         bool allow_tf32, float* out_sims, int64_t* out_idx, void* workspace,
         size_t workspace_bytes, cudaStream_t stream) {
  const int elem = elem_size(dtype);
  require(nq >= 1, "knn: nq must be >= 1");
  require(nd >= 1 && nd <= kMaxRows, "knn: nd must be in [1, 2^31 - 2^16]");
  require(d >= 1 && d <= kMaxDim, "knn: d must be in [1, 2^31 - 128]");
  require(k >= 1 && k <= nd, "knn: k must be in [1, nd]");
  // Rows whose own index lies in [0, nd) have only nd - 1 candidates.
  const bool self_in_range = exclude_self && q_offset < nd && q_offset + nq > 0;
  require(!self_in_range || k <= nd - 1, "knn: k must be <= nd - 1 when excluding self");
  require(q && db && q_inv && db_inv && out_sims && out_idx, "knn: null pointer");

  KnnArgs a;
  a.q = q;
  a.nq = nq;
  a.db = db;
  a.nd = nd;
  a.d = int(d);
  a.q_inv = q_inv;
  a.db_inv = db_inv;
  a.k = int(k);
  a.q_offset = q_offset;
  a.exclude_self = exclude_self;
  const int vec = 16 / elem;
  a.vec_ok = d % vec == 0 && reinterpret_cast<uintptr_t>(q) % 16 == 0 &&
             reinterpret_cast<uintptr_t>(db) % 16 == 0;
  a.out_sims = out_sims;
  a.out_idx = out_idx;

  if (k <= kSmallKMax) {
    switch (dtype) {
      case kFloat32:
        if (allow_tf32)
          launch_small<float, kTf32>(a, workspace, workspace_bytes, stream);
        else
          launch_small<float, kSimt>(a, workspace, workspace_bytes, stream);
        break;
      case kFloat16: launch_small<__half, kMma16>(a, workspace, workspace_bytes, stream); break;
      default:
        launch_small<__nv_bfloat16, kMma16>(a, workspace, workspace_bytes, stream);
        break;
    }
  } else {
    switch (dtype) {
      case kFloat32:
        if (allow_tf32)
          launch_large<float, kTf32>(a, workspace, workspace_bytes, stream);
        else
          launch_large<float, kSimt>(a, workspace, workspace_bytes, stream);
        break;
      case kFloat16: launch_large<__half, kMma16>(a, workspace, workspace_bytes, stream); break;
      default: launch_large<__nv_bfloat16, kMma16>(a, workspace, workspace_bytes, stream); break;
    }
  }
}

size_t knn_select_workspace_bytes(int64_t nq, int64_t nd, int64_t k) {
  require(nq >= 1 && nd >= 1 && k >= 1 && k <= nd,
          "knn_select_workspace_bytes: need nq, nd >= 1 and 1 <= k <= nd");
  require(nd <= kMaxRows, "knn_select_workspace_bytes: nd too large");
  return large_layout(nq, nd, k, /*external_sims=*/true).total;
}

void knn_select_products(float* products, int64_t nq, int64_t nd, const float* q_inv,
                         const float* db_inv, int64_t k, int64_t q_offset, bool exclude_self,
                         float* out_sims, int64_t* out_idx, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream) {
  require(nq >= 1 && nq <= 65535, "knn_select_products: nq must be in [1, 65535]");
  require(nd >= 1 && nd <= kMaxRows, "knn_select_products: nd must be in [1, 2^31 - 2^16]");
  require(k >= 1 && k <= nd, "knn_select_products: k must be in [1, nd]");
  const bool self_in_range = exclude_self && q_offset < nd && q_offset + nq > 0;
  require(!self_in_range || k <= nd - 1,
          "knn_select_products: k must be <= nd - 1 when excluding self");
  require(products && q_inv && db_inv && out_sims && out_idx, "knn_select_products: null pointer");
  const LargeLayout L = large_layout(nq, nd, k, /*external_sims=*/true);
  require(workspace != nullptr && workspace_bytes >= L.total,
          "knn_select_products: workspace too small: need " + std::to_string(L.total) +
              " bytes, got " + std::to_string(workspace_bytes));
  require(reinterpret_cast<uintptr_t>(workspace) % 16 == 0,
          "knn_select_products: workspace must be 16-byte aligned");
  const dim3 grid(unsigned(std::min<int64_t>(ceil_div(nd, kThreads), 64)), unsigned(nq));
  scale_products_kernel<<<grid, kThreads, 0, stream>>>(products, nq, nd, q_inv, db_inv, q_offset,
                                                       exclude_self);
  HDLFAST_CUDA_CHECK_LAUNCH("scale_products_kernel");
  select_sorted(products, nq, nd, int(k), L, static_cast<char*>(workspace), out_sims, out_idx,
                stream);
}

}  // namespace cuda
}  // namespace hdlfast
