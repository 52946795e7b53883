// CPU top-k merge kernels: a vectorisable threshold test rejects almost every tile value; the
// few survivors replace the root of the row's heap. The merges are serial: the Python driver
// (hdlfast/knn/host.py) runs one tile product + merge per core on tiles whose heaps are disjoint,
// so each core merges the tile it just multiplied while it is still in its cache.
#include "cpu/topk.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <vector>

#include "cpu/clones.h"
#include "cpu/parallel.h"
#include "cpu/row_best.h"

namespace hdlfast {
namespace cpu {
namespace {

constexpr int64_t kChunk = 16;

// a is worse than b: smaller sim, or equal sim and larger index.
inline bool worse(float as, int64_t ai, float bs, int64_t bi) {
  return as < bs || (as == bs && ai > bi);
}

// Replace the root (the worst pair) by (s, i) and restore the heap.
inline void replace_root(float* hs, int64_t* hi, int64_t k, float s, int64_t i) {
  int64_t pos = 0;
  for (;;) {
    int64_t child = 2 * pos + 1;
    if (child >= k) break;
    if (child + 1 < k && worse(hs[child + 1], hi[child + 1], hs[child], hi[child])) ++child;
    if (!worse(hs[child], hi[child], s, i)) break;
    hs[pos] = hs[child];
    hi[pos] = hi[child];
    pos = child;
  }
  hs[pos] = s;
  hi[pos] = i;
}

// Offer (s, i) to the heap; true if it was taken.
inline bool offer(float* hs, int64_t* hi, int64_t k, float s, int64_t i) {
  if (!worse(hs[0], hi[0], s, i)) return false;
  replace_root(hs, hi, k, s, i);
  return true;
}

// Candidate j of a tile row is database index ids[j], or col0 + j when ids is null (a
// contiguous tile); only the few survivors of the threshold test look their index up.
HDLFAST_CLONES
void merge_row(const float* t, int64_t cols, int64_t col0, const int64_t* ids, int64_t skip,
               float* hs, int64_t* hi, int64_t k) {
  float thr = hs[0];
  auto take = [&](int64_t j) {
    const int64_t i = ids ? ids[j] : col0 + j;
    if (i != skip && offer(hs, hi, k, t[j], i)) thr = hs[0];
  };
  int64_t c = 0;
  for (; c + kChunk <= cols; c += kChunk) {
    bool any = false;
    for (int64_t j = 0; j < kChunk; ++j) any |= t[c + j] >= thr;
    if (!any) continue;
    for (int64_t j = c; j < c + kChunk; ++j) {
      if (t[j] >= thr) take(j);
    }
  }
  for (; c < cols; ++c) {
    if (t[c] >= thr) take(c);
  }
}

// k = 1: the row's best column (cpu/row_best.h), offered once; 2-3x less work than the threshold
// scan, which for k = 1 keeps finding new maxima early in each row.
HDLFAST_CLONES
void merge_row_top1(const float* t, int64_t cols, int64_t col0, float* hs, int64_t* hi) {
  const RowBest b = row_best(t, nullptr, cols);
  offer(hs, hi, 1, b.s, col0 + b.j);
}

HDLFAST_CLONES
void merge_col_range(const float* tile, int64_t rows, int64_t ld, int64_t row0, int64_t col0,
                     int64_t c_begin, int64_t c_end, float* heap_s, int64_t* heap_i, int64_t k) {
  const int64_t width = c_end - c_begin;
  std::vector<float> thr(static_cast<size_t>(width));
  for (int64_t c = 0; c < width; ++c) thr[c] = heap_s[(col0 + c_begin + c) * k];
  for (int64_t r = 0; r < rows; ++r) {
    const float* t = tile + r * ld + c_begin;
    int64_t c = 0;
    for (; c < width; c += kChunk) {
      const int64_t n = std::min(kChunk, width - c);
      bool any = false;
      if (n == kChunk) {
        for (int64_t j = 0; j < kChunk; ++j) any |= t[c + j] >= thr[c + j];
      } else {
        any = true;
      }
      if (!any) continue;
      for (int64_t j = c; j < c + n; ++j) {
        if (t[j] < thr[j]) continue;
        const int64_t row = col0 + c_begin + j;
        float* hs = heap_s + row * k;
        int64_t* hi = heap_i + row * k;
        if (offer(hs, hi, k, t[j], row0 + r)) thr[j] = hs[0];
      }
    }
  }
}

// Order-preserving float bits (larger float <=> larger key); -0 is canonicalised to +0 first,
// so the two zeros tie as they do in the heap's float comparisons.
inline uint32_t float_key(float f) {
  uint32_t b;
  f += 0.0f;
  std::memcpy(&b, &f, sizeof b);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
inline float key_float(uint32_t key) {
  const uint32_t b = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
inline uint64_t pair_key(float s, int64_t i) {
  return (uint64_t(float_key(s)) << 32) | (0xffffffffull - uint64_t(i));
}
inline float threshold_sim(uint64_t thr) {
  return thr == 0 ? -std::numeric_limits<float>::infinity() : key_float(uint32_t(thr >> 32));
}

// Keep the best k of buf[0 .. n) in buf[0 .. k) (any order); return the k-th best key.
inline uint64_t keep_best(uint64_t* buf, int64_t n, int64_t k) {
  std::nth_element(buf, buf + (k - 1), buf + n, std::greater<uint64_t>());
  return buf[k - 1];
}

HDLFAST_CLONES
void reservoir_row(const float* t, int64_t cols, int64_t col0, int64_t skip, uint64_t* buf,
                   int64_t cap, int64_t& count, uint64_t& thr, int64_t k) {
  float thr_s = threshold_sim(thr);
  int64_t n = count;
  for (int64_t c = 0; c < cols; c += kChunk) {
    const int64_t m = std::min(kChunk, cols - c);
    if (m == kChunk) {
      bool any = false;
      for (int64_t j = 0; j < kChunk; ++j) any |= t[c + j] >= thr_s;
      if (!any) continue;
    }
    for (int64_t j = c; j < c + m; ++j) {
      if (t[j] < thr_s || col0 + j == skip) continue;
      const uint64_t key = pair_key(t[j], col0 + j);
      if (key <= thr) continue;
      buf[n++] = key;
      if (n == cap) {
        thr = keep_best(buf, n, k);
        thr_s = threshold_sim(thr);
        n = k;
      }
    }
  }
  count = n;
}

}  // namespace

void reservoir_merge(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0,
                     int64_t col0, uint64_t* keys, int64_t cap, int64_t* count, uint64_t* thr,
                     int64_t k, bool exclude_self) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t skip = exclude_self ? row0 + r : -1;
    reservoir_row(tile + r * ld, cols, col0, skip, keys + r * cap, cap, count[r], thr[r], k);
  }
}

void reservoir_finish(uint64_t* keys, int64_t rows, int64_t cap, const int64_t* count,
                      int64_t k, float* out_s, int64_t* out_i) {
  {
    for (int64_t r = 0; r < rows; ++r) {
      uint64_t* buf = keys + r * cap;
      const int64_t n = count[r];
      const int64_t m = std::min(n, k);
      if (n > k) keep_best(buf, n, k);
      std::sort(buf, buf + m, std::greater<uint64_t>());
      for (int64_t j = 0; j < k; ++j) {
        const bool real = j < m;
        out_s[r * k + j] = real ? key_float(uint32_t(buf[j] >> 32))
                                : -std::numeric_limits<float>::infinity();
        out_i[r * k + j] = real ? int64_t(0xffffffffull - (buf[j] & 0xffffffffull))
                                : std::numeric_limits<int64_t>::max();
      }
    }
  }
}

void merge_rows(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0,
                int64_t col0, float* heap_s, int64_t* heap_i, int64_t k, bool exclude_self) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = row0 + r;
    const int64_t skip = exclude_self ? row : -1;
    if (k == 1 && (skip < col0 || skip >= col0 + cols)) {
      merge_row_top1(tile + r * ld, cols, col0, heap_s + row, heap_i + row);
      continue;
    }
    merge_row(tile + r * ld, cols, col0, nullptr, skip, heap_s + row * k, heap_i + row * k, k);
  }
}

void merge_listed(const float* tile, int64_t rows, int64_t cols, int64_t ld,
                  const int64_t* row_ids, const int64_t* self_ids, const int64_t* col_ids,
                  float* heap_s, int64_t* heap_i, int64_t k, bool exclude_self) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = row_ids[r];
    merge_row(tile + r * ld, cols, 0, col_ids, exclude_self ? self_ids[r] : -1,
              heap_s + row * k, heap_i + row * k, k);
  }
}

void merge_cols(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0,
                int64_t col0, float* heap_s, int64_t* heap_i, int64_t k) {
  merge_col_range(tile, rows, ld, row0, col0, 0, cols, heap_s, heap_i, k);
}

void finalize(float* heap_s, int64_t* heap_i, int64_t n, int64_t k) {
  parallel_for(n, grain_for(16 * k), [&](int64_t b, int64_t e, int) {  // a sort of k pairs
    std::vector<int64_t> order(static_cast<size_t>(k));
    std::vector<float> s(static_cast<size_t>(k));
    std::vector<int64_t> i(static_cast<size_t>(k));
    for (int64_t r = b; r < e; ++r) {
      float* hs = heap_s + r * k;
      int64_t* hi = heap_i + r * k;
      std::iota(order.begin(), order.end(), int64_t{0});
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return worse(hs[b], hi[b], hs[a], hi[a]);
      });
      for (int64_t j = 0; j < k; ++j) {
        s[j] = hs[order[j]];
        i[j] = hi[order[j]];
      }
      std::copy(s.begin(), s.end(), hs);
      std::copy(i.begin(), i.end(), hi);
    }
  });
}

}  // namespace cpu
}  // namespace hdlfast
