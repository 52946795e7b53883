// HDL labeling on CUDA; the CPU twin is csrc/cpu/hdl.cpp (and the numba one
// hdlfast/labeling/numba_kernels.py). Results are identical to the CPU's, bit for bit:
//
// - Votes: one thread evaluates one vote with the CPU's algorithm (per class, float64 sums of
//   max(sim, 0) and of sim in voter order; winner by vote, then raw sum, then smaller class;
//   confidence = vote / total). Only additions and one division: no contraction, IEEE rounding.
// - Reverse graph: atomic in-degree counts + CUB scan for indptr; a stable CUB radix sort of
//   (target, row) pairs in row-major edge order fills src with sources ascending per target.
// - Phase A: the host loops over levels (one stream synchronisation per level to read the
//   frontier size and its support histogram). A level's frontier is sorted by (k - support,
//   point), so its sub-levels are contiguous runs, most supported first; each sub-level is one
//   vote kernel (labels as at the start of the sub-level, results to scratch) and one commit
//   kernel. Supports are then pushed through the reverse graph with atomicAdd; points whose
//   count left 0 while unlabeled form the next frontier. Which points form each sub-level does
//   not depend on the (atomic) order, and votes only read the labels of earlier sub-levels.
// - Phase B: first, for every centre c, the in-neighbours that are not out-neighbours of c are
//   sorted once by (similarity of v -> c descending, v ascending) with one stable radix sort on
//   the key (c, ~key(sim)) over the reverse CSR (excluded entries get the largest key, so they
//   sort to the end of c's segment). The candidate list of c is then idx[c, :] followed by the
//   first n_in[c] entries of c's segment: exactly the CPU's list, with nothing to build per step.
//   Then one thread per target runs the CPU's depth-first search with its visited list, path and
//   scan positions in a global scratch region (contiguous per thread), in chunks of targets.
#include "cuda/hdl.cuh"
#include "cuda/common.cuh"

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <cub/util_type.cuh>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace hdlfast {
namespace cuda {

namespace {

using detail::require;

// ---------------------------------------------------------------------------------------------
// Constants and host helpers
// ---------------------------------------------------------------------------------------------

constexpr int kThreads = 256;        // every kernel but the search: 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kSearchThreads = 128;  // one target per thread; smaller CTAs spread the few targets
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops beyond this
constexpr int kStage = 32;           // votes of k <= kStage voters are staged in local memory
constexpr size_t kAlign = 256;

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Blocks for one item per thread (items_per_block = kThreads) or one item per warp (kWarps).
unsigned grid_for(int64_t items, int64_t items_per_block) {
  return unsigned(std::max<int64_t>(1, std::min(ceil_div(items, items_per_block), kMaxBlocks)));
}

// Bits needed to hold v (at least 1, so a radix sort always has a bit range).
int bit_width(uint64_t v) {
  int b = 1;
  while (b < 64 && (v >> b) != 0) ++b;
  return b;
}

// Workspace carving: every part 256-byte aligned relative to the (256-aligned) base.
struct Carver {
  size_t total = 0;
  size_t add(size_t bytes) {
    const size_t off = total;
    total += round_up(std::max<size_t>(bytes, 1), kAlign);
    return off;
  }
};

template <typename T>
T* at(void* base, size_t off) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + off);
}

void check_workspace(void* ws, size_t have, size_t need, const char* who) {
  require(ws != nullptr && have >= need, std::string(who) + ": workspace too small: need " +
                                             std::to_string(need) + " bytes, got " +
                                             std::to_string(have));
  require(reinterpret_cast<uintptr_t>(ws) % kAlign == 0,
          std::string(who) + ": workspace must be 256-byte aligned");
}

// CUB takes the item count's type as its offset type: 32-bit when it fits, 64-bit otherwise.
template <typename F>
cudaError_t with_count(int64_t count, F&& f) {
  if (count <= INT_MAX) return f(int(count));
#if CUB_VERSION >= 200200
  return f(count);
#else
  throw std::runtime_error("hdlfast._cuda: more than 2^31 - 1 graph edges need CUB >= 2.2");
#endif
}

// ---------------------------------------------------------------------------------------------
// Device helpers: keys and the vote
// ---------------------------------------------------------------------------------------------

// Order-preserving map float -> uint32 (larger float <=> larger key) and back.
__device__ __forceinline__ uint32_t float_to_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_to_float(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// Weight of a voter: max(sim, 0) as float64 exactly as std::max(double(sim), 0.0), or 1.
__device__ __forceinline__ double weight(float s, bool uniform) {
  const double d = static_cast<double>(s);
  return uniform ? 1.0 : (d < 0.0 ? 0.0 : d);
}

struct VoteOut {
  int64_t label;
  double conf;
};

// The CPU's vote over positions 0..n-1 of a voter source V: V.get(i, cls, sim) returns false
// where position i holds no voter. (-1, 0) when there is none.
template <class V>
__device__ VoteOut vote(const V& voters, int64_t n, bool uniform) {
  int64_t best_c = -1;
  double best_v = -1.0, best_r = 0.0, total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t c;
    float s;
    if (!voters.get(i, c, s)) continue;
    total += weight(s, uniform);
    bool seen = false;
    for (int64_t j = 0; j < i; ++j) {
      int64_t cj;
      float sj;
      if (voters.get(j, cj, sj) && cj == c) {
        seen = true;
        break;
      }
    }
    if (seen) continue;
    double v = 0.0, r = 0.0;
    for (int64_t j = i; j < n; ++j) {
      int64_t cj;
      float sj;
      if (!voters.get(j, cj, sj) || cj != c) continue;
      v += weight(sj, uniform);
      r += static_cast<double>(sj);
    }
    if (best_c < 0 || v > best_v || (v == best_v && (r > best_r || (r == best_r && c < best_c)))) {
      best_c = c;
      best_v = v;
      best_r = r;
    }
  }
  return {best_c, total > 0.0 ? best_v / total : 0.0};
}

// Voters staged in (thread-local) arrays; labels fit in int32 (< 2^31 - 1, checked in Python).
struct LocalVoters {
  const int32_t* cls;
  const float* sim;
  __device__ bool get(int64_t i, int64_t& c, float& s) const {
    c = cls[i];
    s = sim[i];
    return true;
  }
};

// Neighbours nbr[0..k) with similarities sim[0..k): every one votes (kNN-DV), or only the
// labeled ones (phase A).
template <bool LABELED_ONLY>
struct NeighbourVoters {
  const int64_t* nbr;
  const float* sim;
  const int64_t* labels;
  __device__ bool get(int64_t i, int64_t& c, float& s) const {
    c = labels[nbr[i]];
    if (LABELED_ONLY && c < 0) return false;
    s = sim[i];
    return true;
  }
};

// Phase-B candidates of a centre c: idx[c, 0..k) then the first n_in[c] entries of c's sorted
// in-segment (in_src, similarity decoded from the low 32 bits of in_key).
struct Candidates {
  const int64_t* idx;
  const float* sims;
  int64_t k;
  const int64_t* in_ptr;
  const int32_t* in_src;
  const uint64_t* in_key;
  __device__ int64_t node(int64_t c, int64_t t) const {
    return t < k ? idx[c * k + t] : int64_t(in_src[in_ptr[c] + (t - k)]);
  }
  __device__ float sim(int64_t c, int64_t t) const {
    return t < k ? sims[c * k + t]
                 : key_to_float(~uint32_t(in_key[in_ptr[c] + (t - k)] & 0xffffffffu));
  }
};

// Labeled candidates of c vote (phase B arrival check).
struct CandidateVoters {
  Candidates cand;
  int64_t c;
  const int64_t* labels;
  __device__ bool get(int64_t t, int64_t& cls, float& s) const {
    cls = labels[cand.node(c, t)];
    if (cls < 0) return false;
    s = cand.sim(c, t);
    return true;
  }
};

// ---------------------------------------------------------------------------------------------
// Reverse graph
// ---------------------------------------------------------------------------------------------

// In-degree counts, and (target, row) pairs in row-major edge order for the stable sort.
__global__ void __launch_bounds__(kThreads)
    edge_pairs_kernel(const int64_t* __restrict__ idx, int64_t nnz, int64_t k,
                      int64_t* __restrict__ deg, uint32_t* __restrict__ keys,
                      int32_t* __restrict__ rows) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < nnz; e += stride) {
    const int64_t t = idx[e];
    atomicAdd(reinterpret_cast<unsigned long long*>(deg + t), 1ull);
    keys[e] = uint32_t(t);
    rows[e] = int32_t(e / k);
  }
}

// ---------------------------------------------------------------------------------------------
// Phase A
// ---------------------------------------------------------------------------------------------

// Support pushed from the points w = members[i] (low 32 bits; members == nullptr: every labeled
// point of [0, m)) to the unlabeled points listing them, one warp per w. A point whose support
// leaves 0 is appended to `next` (count in meta[0]).
__global__ void __launch_bounds__(kThreads)
    push_support_kernel(const uint64_t* __restrict__ members, int64_t m,
                        const int64_t* __restrict__ indptr, const int32_t* __restrict__ src,
                        const int64_t* __restrict__ labels, int32_t* __restrict__ support,
                        int32_t* __restrict__ next, uint32_t* __restrict__ meta) {
  const int lane = threadIdx.x & 31;
  const int64_t n_warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; i < m; i += n_warps) {
    int64_t w;
    if (members != nullptr) {
      w = int64_t(uint32_t(members[i]));
    } else {
      w = i;
      if (labels[w] < 0) continue;
    }
    const int64_t end = indptr[w + 1];
    for (int64_t p = indptr[w] + lane; p < end; p += 32) {
      const int32_t s = src[p];
      if (labels[s] < 0 && atomicAdd(support + s, 1) == 0) next[atomicAdd(meta, 1u)] = s;
    }
  }
}

// meta[1 + s] = number of frontier points next[0..meta[0]) with support s (warp-aggregated).
__global__ void __launch_bounds__(kThreads)
    support_hist_kernel(const int32_t* __restrict__ next, const int32_t* __restrict__ support,
                        uint32_t* __restrict__ meta) {
  const int64_t m = meta[0];  // final: written by the previous kernel
  const int lane = threadIdx.x & 31;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i0 = int64_t(blockIdx.x) * blockDim.x + (threadIdx.x & ~31); i0 < m;
       i0 += stride) {  // i0 is warp-uniform, so every lane reaches the match
    const int64_t i = i0 + lane;
    const uint32_t s = i < m ? uint32_t(support[next[i]]) : 0xffffffffu;
    const unsigned peers = __match_any_sync(kFull, s);
    if (s != 0xffffffffu && lane == __ffs(peers) - 1) {
      atomicAdd(meta + 1 + s, unsigned(__popc(peers)));
    }
  }
}

// Sort keys of the frontier: (k - support) << 32 | point; ascending = support descending, then
// point ascending.
__global__ void __launch_bounds__(kThreads)
    frontier_keys_kernel(const int32_t* __restrict__ next, int64_t m,
                         const int32_t* __restrict__ support, int64_t k,
                         uint64_t* __restrict__ keys) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m; i += stride) {
    const int32_t u = next[i];
    keys[i] = (uint64_t(k - support[u]) << 32) | uint32_t(u);
  }
}

// Votes of one sub-level from the labels as they are now (labeled out-neighbours, column order).
template <bool STAGED>
__global__ void __launch_bounds__(kThreads)
    vote_members_kernel(const uint64_t* __restrict__ members, int64_t m,
                        const int64_t* __restrict__ idx, const float* __restrict__ sims,
                        int64_t k, const int64_t* __restrict__ labels, bool uniform,
                        int64_t* __restrict__ out_lab, double* __restrict__ out_conf) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m; i += stride) {
    const int64_t u = int64_t(uint32_t(members[i]));
    VoteOut r;
    if constexpr (STAGED) {
      int32_t cls[kStage];
      float sim[kStage];
      int64_t cnt = 0;
      for (int64_t c = 0; c < k; ++c) {
        const int64_t lab = labels[idx[u * k + c]];
        if (lab >= 0) {
          cls[cnt] = int32_t(lab);
          sim[cnt++] = sims[u * k + c];
        }
      }
      r = vote(LocalVoters{cls, sim}, cnt, uniform);
    } else {
      r = vote(NeighbourVoters<true>{idx + u * k, sims + u * k, labels}, k, uniform);
    }
    out_lab[i] = r.label;
    out_conf[i] = r.conf;
  }
}

__global__ void __launch_bounds__(kThreads)
    commit_kernel(const uint64_t* __restrict__ members, int64_t m,
                  const int64_t* __restrict__ vote_lab, const double* __restrict__ vote_conf,
                  int32_t h, int64_t* __restrict__ labels, double* __restrict__ conf,
                  int32_t* __restrict__ level, int8_t* __restrict__ prov) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m; i += stride) {
    const int64_t u = int64_t(uint32_t(members[i]));
    labels[u] = vote_lab[i];
    conf[u] = vote_conf[i];
    level[u] = h;
    prov[u] = 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Phase B
// ---------------------------------------------------------------------------------------------

// For every entry p of the reverse CSR (centre c, source v = src[p]), one warp per centre:
// key (c << 32 | ~key(sim of v -> c)) where sim is sims[v, first column listing c], or the
// largest low word when v is an out-neighbour of c (then v is not an in-candidate). n_in[c] =
// number of in-candidates of c.
__global__ void __launch_bounds__(kThreads)
    in_candidates_kernel(const int64_t* __restrict__ idx, const float* __restrict__ sims,
                         int64_t n, int64_t k, const int64_t* __restrict__ indptr,
                         const int32_t* __restrict__ src, uint64_t* __restrict__ keys,
                         int32_t* __restrict__ vals, int64_t* __restrict__ n_in) {
  const int lane = threadIdx.x & 31;
  const int64_t n_warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; c < n; c += n_warps) {
    const int64_t b = indptr[c], e = indptr[c + 1];
    const int64_t* row_c = idx + c * k;
    int64_t cnt = 0;
    for (int64_t base = b; base < e; base += 32) {  // warp-uniform bounds
      const int64_t p = base + lane;
      bool kept = false;
      if (p < e) {
        const int64_t v = src[p];
        bool dup = false;
        for (int64_t j = 0; j < k && !dup; ++j) dup = row_c[j] == v;
        uint32_t low = 0xffffffffu;
        if (!dup) {
          const int64_t* row_v = idx + v * k;
          int64_t col = 0;
          while (col < k && row_v[col] != c) ++col;
          // col < k for a consistent CSR.
          uint32_t key = float_to_key(col < k ? sims[v * k + col] : 0.0f);
          if (key == 0x7fffffffu) key = 0x80000000u;  // -0 -> +0: equal sims, equal keys
          low = ~key;  // finite sims: low <= 0xff800000, below the exclusion mark
          kept = true;
        }
        keys[p] = (uint64_t(c) << 32) | low;
        vals[p] = int32_t(v);
      }
      cnt += __popc(__ballot_sync(kFull, kept));
    }
    if (lane == 0) n_in[c] = cnt;
  }
}

// The CPU's search_one from targets[i], one thread per target. Scratch per target i (cap =
// min(max_visits, n) entries each, contiguous): visited, path, scan positions.
__global__ void __launch_bounds__(kSearchThreads)
    search_kernel(Candidates cand, const int64_t* __restrict__ n_in,
                  const int64_t* __restrict__ labels, const int64_t* __restrict__ targets,
                  int64_t count, int64_t max_visits, int64_t cap, bool uniform,
                  int32_t* __restrict__ vis_ws, int32_t* __restrict__ path_ws,
                  int64_t* __restrict__ scan_ws, int64_t* __restrict__ out_lab,
                  double* __restrict__ out_conf, int64_t* __restrict__ out_steps,
                  int64_t* __restrict__ out_cycles) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    int32_t* visited = vis_ws + i * cap;
    int32_t* path = path_ws + i * cap;
    int64_t* scan = scan_ws + i * cap;
    const int64_t u = targets[i];
    int64_t n_vis = 1, depth = 1, cycles = 0;
    visited[0] = int32_t(u);
    path[0] = int32_t(u);
    scan[0] = 0;
    bool arrived = true;
    int64_t res_lab = -1, res_steps = -1;
    double res_conf = 0.0;
    while (depth > 0) {
      const int64_t c = path[depth - 1];
      const int64_t n_cand = cand.k + n_in[c];
      if (arrived) {
        // A vote over >= 1 labeled candidate always names a class >= 0.
        const VoteOut v = vote(CandidateVoters{cand, c, labels}, n_cand, uniform);
        if (v.label >= 0) {
          res_lab = v.label;
          res_conf = v.conf;
          res_steps = n_vis - 1;
          break;
        }
      }
      arrived = false;
      int64_t t = scan[depth - 1];
      bool moved = false, full = false;
      while (t < n_cand) {
        const int64_t v = cand.node(c, t++);
        bool seen = false;
        for (int64_t q = 0; q < n_vis; ++q) {
          if (visited[q] == v) {
            seen = true;
            break;
          }
        }
        if (seen) {
          ++cycles;
          continue;
        }
        scan[depth - 1] = t;
        if (n_vis == max_visits) {
          full = true;
          break;
        }
        // n_vis < max_visits and v is a new point (so n_vis < n): index n_vis < cap; depth
        // never exceeds n_vis.
        visited[n_vis++] = int32_t(v);
        path[depth] = int32_t(v);
        scan[depth] = 0;
        ++depth;
        moved = arrived = true;
        break;
      }
      if (full) {
        res_steps = n_vis;  // = max_visits
        break;
      }
      if (!moved) --depth;
    }
    if (res_steps < 0) res_steps = n_vis;  // path exhausted
    out_lab[i] = res_lab;
    out_conf[i] = res_lab >= 0 ? res_conf : 0.0;
    out_steps[i] = res_steps;
    out_cycles[i] = cycles;
  }
}

// ---------------------------------------------------------------------------------------------
// kNN-DV
// ---------------------------------------------------------------------------------------------

template <bool STAGED>
__global__ void __launch_bounds__(kThreads)
    vote_rows_kernel(const int64_t* __restrict__ nbr_idx, const float* __restrict__ nbr_sims,
                     int64_t rows, int64_t k, const int64_t* __restrict__ db_labels,
                     bool uniform, int64_t* __restrict__ out_lab,
                     double* __restrict__ out_conf) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += stride) {
    VoteOut v;
    if constexpr (STAGED) {
      int32_t cls[kStage];
      float sim[kStage];
      for (int64_t c = 0; c < k; ++c) {
        cls[c] = int32_t(db_labels[nbr_idx[r * k + c]]);
        sim[c] = nbr_sims[r * k + c];
      }
      v = vote(LocalVoters{cls, sim}, k, uniform);
    } else {
      v = vote(NeighbourVoters<false>{nbr_idx + r * k, nbr_sims + r * k, db_labels}, k, uniform);
    }
    out_lab[r] = v.label;
    out_conf[r] = v.conf;
  }
}

// ---------------------------------------------------------------------------------------------
// Workspace layouts
// ---------------------------------------------------------------------------------------------

struct CsrLayout {
  size_t deg = 0, keys_a = 0, keys_b = 0, rows = 0, temp = 0, temp_bytes = 0, total = 0;
  int end_bit = 1;
};

CsrLayout csr_layout(int64_t rows, int64_t k, int64_t n) {
  const int64_t nnz = rows * k;
  CsrLayout L;
  L.end_bit = bit_width(uint64_t(n - 1));
  size_t scan_bytes = 0, sort_bytes = 0;
  HDLFAST_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, static_cast<int64_t*>(nullptr),
                                               static_cast<int64_t*>(nullptr), int(n),
                                               cudaStream_t(0)));
  cub::DoubleBuffer<uint32_t> kb(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> vb(nullptr, nullptr);
  HDLFAST_CUDA_CHECK(with_count(nnz, [&](auto count) {
    return cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, kb, vb, count, 0, L.end_bit,
                                           cudaStream_t(0));
  }));
  L.temp_bytes = std::max(scan_bytes, sort_bytes);
  Carver c;
  L.deg = c.add(size_t(n) * sizeof(int64_t));
  L.keys_a = c.add(size_t(nnz) * sizeof(uint32_t));
  L.keys_b = c.add(size_t(nnz) * sizeof(uint32_t));
  L.rows = c.add(size_t(nnz) * sizeof(int32_t));
  L.temp = c.add(L.temp_bytes);
  L.total = c.total;
  return L;
}

struct PropLayout {
  size_t support = 0, next = 0, keys_a = 0, keys_b = 0, vote_lab = 0, vote_conf = 0, meta = 0,
         temp = 0, temp_bytes = 0, total = 0;
  int end_bit = 33;
};

PropLayout prop_layout(int64_t n, int64_t k) {
  PropLayout L;
  L.end_bit = 32 + bit_width(uint64_t(k - 1));  // key high word k - support is in [0, k)
  cub::DoubleBuffer<uint64_t> kb(nullptr, nullptr);
  HDLFAST_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, L.temp_bytes, kb, int(n), 0, L.end_bit,
                                                cudaStream_t(0)));
  Carver c;
  L.support = c.add(size_t(n) * sizeof(int32_t));
  L.next = c.add(size_t(n) * sizeof(int32_t));
  L.keys_a = c.add(size_t(n) * sizeof(uint64_t));
  L.keys_b = c.add(size_t(n) * sizeof(uint64_t));
  L.vote_lab = c.add(size_t(n) * sizeof(int64_t));
  L.vote_conf = c.add(size_t(n) * sizeof(double));
  L.meta = c.add(size_t(k + 2) * sizeof(uint32_t));
  L.temp = c.add(L.temp_bytes);
  L.total = c.total;
  return L;
}

struct SearchLayout {
  size_t keys_a = 0, keys_b = 0, vals_a = 0, vals_b = 0, n_in = 0, temp = 0, temp_bytes = 0,
         vis = 0, path = 0, scan = 0, total = 0;
  int64_t cap = 1;
  int end_bit = 33;
};

SearchLayout search_layout(int64_t n, int64_t k, int64_t nnz, int64_t chunk, int64_t max_visits) {
  SearchLayout L;
  L.cap = std::min(max_visits, n);
  L.end_bit = 32 + bit_width(uint64_t(n - 1));
  cub::DoubleBuffer<uint64_t> kb(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> vb(nullptr, nullptr);
  if (nnz > 0) {
    HDLFAST_CUDA_CHECK(with_count(nnz, [&](auto count) {
      return cub::DeviceRadixSort::SortPairs(nullptr, L.temp_bytes, kb, vb, count, 0, L.end_bit,
                                             cudaStream_t(0));
    }));
  }
  (void)k;
  Carver c;
  L.keys_a = c.add(size_t(nnz) * sizeof(uint64_t));
  L.keys_b = c.add(size_t(nnz) * sizeof(uint64_t));
  L.vals_a = c.add(size_t(nnz) * sizeof(int32_t));
  L.vals_b = c.add(size_t(nnz) * sizeof(int32_t));
  L.n_in = c.add(size_t(n) * sizeof(int64_t));
  L.temp = c.add(L.temp_bytes);
  const size_t slots = size_t(chunk) * size_t(L.cap);
  L.vis = c.add(slots * sizeof(int32_t));
  L.path = c.add(slots * sizeof(int32_t));
  L.scan = c.add(slots * sizeof(int64_t));
  L.total = c.total;
  return L;
}

void check_graph_sizes(int64_t n, int64_t k, const char* who) {
  require(n >= 1 && n <= INT_MAX, std::string(who) + ": n must be in [1, 2^31)");
  require(k >= 1 && k <= INT_MAX, std::string(who) + ": k must be in [1, 2^31)");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public launchers
// ---------------------------------------------------------------------------------------------

size_t reverse_csr_workspace_bytes(int64_t rows, int64_t k, int64_t n) {
  check_graph_sizes(n, k, "reverse_csr_workspace_bytes");
  require(rows >= 1 && rows <= INT_MAX, "reverse_csr_workspace_bytes: rows must be in [1, 2^31)");
  return csr_layout(rows, k, n).total;
}

void reverse_csr(const int64_t* idx, int64_t rows, int64_t k, int64_t n, int64_t* indptr,
                 int32_t* src, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  check_graph_sizes(n, k, "reverse_csr");
  require(rows >= 1 && rows <= INT_MAX, "reverse_csr: rows must be in [1, 2^31)");
  require(idx && indptr && src, "reverse_csr: null pointer");
  const CsrLayout L = csr_layout(rows, k, n);
  check_workspace(workspace, workspace_bytes, L.total, "reverse_csr");
  const int64_t nnz = rows * k;
  int64_t* deg = at<int64_t>(workspace, L.deg);
  uint32_t* keys_a = at<uint32_t>(workspace, L.keys_a);
  uint32_t* keys_b = at<uint32_t>(workspace, L.keys_b);
  int32_t* row_ids = at<int32_t>(workspace, L.rows);
  void* temp = at<void>(workspace, L.temp);

  HDLFAST_CUDA_CHECK(cudaMemsetAsync(deg, 0, size_t(n) * sizeof(int64_t), stream));
  HDLFAST_CUDA_CHECK(cudaMemsetAsync(indptr, 0, sizeof(int64_t), stream));
  edge_pairs_kernel<<<grid_for(nnz, kThreads), kThreads, 0, stream>>>(idx, nnz, k, deg, keys_a,
                                                                       row_ids);
  HDLFAST_CUDA_CHECK_LAUNCH("edge_pairs_kernel");
  size_t temp_bytes = L.temp_bytes;
  HDLFAST_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp, temp_bytes, deg, indptr + 1, int(n), stream));
  // Stable: equal targets keep row-major edge order, so sources come out ascending.
  cub::DoubleBuffer<uint32_t> kb(keys_a, keys_b);
  cub::DoubleBuffer<int32_t> vb(row_ids, src);
  temp_bytes = L.temp_bytes;
  HDLFAST_CUDA_CHECK(with_count(nnz, [&](auto count) {
    return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, kb, vb, count, 0, L.end_bit, stream);
  }));
  if (vb.Current() != src) {
    HDLFAST_CUDA_CHECK(cudaMemcpyAsync(src, vb.Current(), size_t(nnz) * sizeof(int32_t),
                                   cudaMemcpyDeviceToDevice, stream));
  }
}

size_t propagate_levels_workspace_bytes(int64_t n, int64_t k) {
  check_graph_sizes(n, k, "propagate_levels_workspace_bytes");
  return prop_layout(n, k).total;
}

int64_t propagate_levels(const int64_t* idx, const float* sims, int64_t n, int64_t k,
                         const int64_t* indptr, const int32_t* src, int64_t* labels, double* conf,
                         int32_t* level, int8_t* prov, bool uniform, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream) {
  check_graph_sizes(n, k, "propagate_levels");
  require(idx && sims && indptr && src && labels && conf && level && prov,
          "propagate_levels: null pointer");
  const PropLayout L = prop_layout(n, k);
  check_workspace(workspace, workspace_bytes, L.total, "propagate_levels");
  int32_t* support = at<int32_t>(workspace, L.support);
  int32_t* next = at<int32_t>(workspace, L.next);
  uint64_t* keys_a = at<uint64_t>(workspace, L.keys_a);
  uint64_t* keys_b = at<uint64_t>(workspace, L.keys_b);
  int64_t* vote_lab = at<int64_t>(workspace, L.vote_lab);
  double* vote_conf = at<double>(workspace, L.vote_conf);
  uint32_t* meta = at<uint32_t>(workspace, L.meta);  // [0] frontier size, [1 + s] histogram
  void* temp = at<void>(workspace, L.temp);
  const size_t meta_bytes = size_t(k + 2) * sizeof(uint32_t);
  std::vector<uint32_t> host(size_t(k + 2));
  // The frontier's size is only known on the device, so the histogram is a grid-stride loop
  // over a grid sized to the GPU (a few CTAs per SM), not to all n points.
  const int sms = device_attr(cudaDevAttrMultiProcessorCount);
  const unsigned hist_grid = std::min(grid_for(n, kThreads), unsigned(4 * std::max(sms, 1)));

  // Pushes support from `members` (nullptr: every labeled point) and reads the next frontier's
  // size and support histogram back to the host.
  auto push_and_read = [&](const uint64_t* members, int64_t m) {
    HDLFAST_CUDA_CHECK(cudaMemsetAsync(meta, 0, meta_bytes, stream));
    push_support_kernel<<<grid_for(m, kWarps), kThreads, 0, stream>>>(
        members, m, indptr, src, labels, support, next, meta);
    HDLFAST_CUDA_CHECK_LAUNCH("push_support_kernel");
    support_hist_kernel<<<hist_grid, kThreads, 0, stream>>>(next, support, meta);
    HDLFAST_CUDA_CHECK_LAUNCH("support_hist_kernel");
    HDLFAST_CUDA_CHECK(
        cudaMemcpyAsync(host.data(), meta, meta_bytes, cudaMemcpyDeviceToHost, stream));
    HDLFAST_CUDA_CHECK(cudaStreamSynchronize(stream));
  };

  HDLFAST_CUDA_CHECK(cudaMemsetAsync(support, 0, size_t(n) * sizeof(int32_t), stream));
  push_and_read(nullptr, n);
  int64_t h = 0;
  while (host[0] > 0) {
    const int64_t m = host[0];
    require(m <= n && host[1] == 0, "propagate_levels: inconsistent frontier (internal error)");
    ++h;
    frontier_keys_kernel<<<grid_for(m, kThreads), kThreads, 0, stream>>>(next, m, support, k,
                                                                         keys_a);
    HDLFAST_CUDA_CHECK_LAUNCH("frontier_keys_kernel");
    cub::DoubleBuffer<uint64_t> kb(keys_a, keys_b);
    size_t temp_bytes = L.temp_bytes;
    HDLFAST_CUDA_CHECK(
        cub::DeviceRadixSort::SortKeys(temp, temp_bytes, kb, int(m), 0, L.end_bit, stream));
    const uint64_t* members = kb.Current();
    int64_t off = 0;
    for (int64_t s = k; s >= 1; --s) {  // sub-levels, most supported first
      const int64_t cnt = host[size_t(1 + s)];
      if (cnt == 0) continue;
      const uint64_t* sub = members + off;
      if (k <= kStage) {
        vote_members_kernel<true><<<grid_for(cnt, kThreads), kThreads, 0, stream>>>(
            sub, cnt, idx, sims, k, labels, uniform, vote_lab, vote_conf);
      } else {
        vote_members_kernel<false><<<grid_for(cnt, kThreads), kThreads, 0, stream>>>(
            sub, cnt, idx, sims, k, labels, uniform, vote_lab, vote_conf);
      }
      HDLFAST_CUDA_CHECK_LAUNCH("vote_members_kernel");
      commit_kernel<<<grid_for(cnt, kThreads), kThreads, 0, stream>>>(
          sub, cnt, vote_lab, vote_conf, int32_t(h), labels, conf, level, prov);
      HDLFAST_CUDA_CHECK_LAUNCH("commit_kernel");
      off += cnt;
    }
    require(off == m, "propagate_levels: support histogram does not add up (internal error)");
    push_and_read(members, m);
  }
  return h;
}

size_t search_workspace_bytes(int64_t n, int64_t k, int64_t nnz, int64_t chunk,
                              int64_t max_visits) {
  check_graph_sizes(n, k, "search_workspace_bytes");
  require(nnz >= 0 && chunk >= 0 && max_visits >= 1,
          "search_workspace_bytes: need nnz >= 0, chunk >= 0, max_visits >= 1");
  return search_layout(n, k, nnz, chunk, max_visits).total;
}

void search(const int64_t* idx, const float* sims, int64_t n, int64_t k, const int64_t* indptr,
            const int32_t* src, int64_t nnz, const int64_t* labels, const int64_t* targets,
            int64_t n_targets, int64_t max_visits, bool uniform, int64_t* out_lab,
            double* out_conf, int64_t* out_steps, int64_t* out_cycles, int64_t chunk,
            void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  check_graph_sizes(n, k, "search");
  require(nnz >= 0 && n_targets >= 0 && max_visits >= 1,
          "search: need nnz >= 0, n_targets >= 0, max_visits >= 1");
  if (n_targets == 0) return;
  require(chunk >= 1, "search: chunk must be >= 1");
  require(idx && sims && indptr && (src || nnz == 0) && labels && targets && out_lab &&
              out_conf && out_steps && out_cycles,
          "search: null pointer");
  const SearchLayout L = search_layout(n, k, nnz, chunk, max_visits);
  check_workspace(workspace, workspace_bytes, L.total, "search");
  uint64_t* keys_a = at<uint64_t>(workspace, L.keys_a);
  uint64_t* keys_b = at<uint64_t>(workspace, L.keys_b);
  int32_t* vals_a = at<int32_t>(workspace, L.vals_a);
  int32_t* vals_b = at<int32_t>(workspace, L.vals_b);
  int64_t* n_in = at<int64_t>(workspace, L.n_in);
  void* temp = at<void>(workspace, L.temp);
  int32_t* vis = at<int32_t>(workspace, L.vis);
  int32_t* path = at<int32_t>(workspace, L.path);
  int64_t* scan = at<int64_t>(workspace, L.scan);

  // In-candidates of every centre, sorted once.
  in_candidates_kernel<<<grid_for(n, kWarps), kThreads, 0, stream>>>(idx, sims, n, k, indptr, src,
                                                                      keys_a, vals_a, n_in);
  HDLFAST_CUDA_CHECK_LAUNCH("in_candidates_kernel");
  cub::DoubleBuffer<uint64_t> kb(keys_a, keys_b);
  cub::DoubleBuffer<int32_t> vb(vals_a, vals_b);
  if (nnz > 0) {
    size_t temp_bytes = L.temp_bytes;
    HDLFAST_CUDA_CHECK(with_count(nnz, [&](auto count) {
      return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, kb, vb, count, 0, L.end_bit,
                                             stream);
    }));
  }
  const Candidates cand{idx, sims, k, indptr, vb.Current(), kb.Current()};
  for (int64_t t0 = 0; t0 < n_targets; t0 += chunk) {
    const int64_t cnt = std::min(chunk, n_targets - t0);
    search_kernel<<<grid_for(cnt, kSearchThreads), kSearchThreads, 0, stream>>>(
        cand, n_in, labels, targets + t0, cnt, max_visits, L.cap, uniform, vis, path, scan,
        out_lab + t0, out_conf + t0, out_steps + t0, out_cycles + t0);
    HDLFAST_CUDA_CHECK_LAUNCH("search_kernel");
  }
}

void vote_rows(const int64_t* nbr_idx, const float* nbr_sims, int64_t rows, int64_t k,
               const int64_t* db_labels, bool uniform, int64_t* out_lab, double* out_conf,
               cudaStream_t stream) {
  require(rows >= 0 && k >= 1, "vote_rows: need rows >= 0 and k >= 1");
  if (rows == 0) return;
  require(nbr_idx && nbr_sims && db_labels && out_lab && out_conf, "vote_rows: null pointer");
  if (k <= kStage) {
    vote_rows_kernel<true><<<grid_for(rows, kThreads), kThreads, 0, stream>>>(
        nbr_idx, nbr_sims, rows, k, db_labels, uniform, out_lab, out_conf);
  } else {
    vote_rows_kernel<false><<<grid_for(rows, kThreads), kThreads, 0, stream>>>(
        nbr_idx, nbr_sims, rows, k, db_labels, uniform, out_lab, out_conf);
  }
  HDLFAST_CUDA_CHECK_LAUNCH("vote_rows_kernel");
}

}  // namespace cuda
}  // namespace hdlfast
