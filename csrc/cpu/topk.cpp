// CPU top-k merge kernels: a vectorisable threshold test rejects almost every tile value; the
// few survivors replace the root of the row's heap. The merges are serial: the Python driver
// (hdlfast/knn/host.py) runs one tile product + merge per core on tiles whose heaps are disjoint,
// so each core merges the tile it just multiplied while it is still in its cache.
#include "cpu/topk.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include "cpu/clones.h"
#include "cpu/parallel.h"


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

HDLFAST_CLONES
void merge_row(const float* t, int64_t cols, int64_t col0, int64_t skip, float* hs, int64_t* hi,
               int64_t k) {
  float thr = hs[0];
  int64_t c = 0;
  for (; c + kChunk <= cols; c += kChunk) {
    bool any = false;
    for (int64_t j = 0; j < kChunk; ++j) any |= t[c + j] >= thr;
    if (!any) continue;
    for (int64_t j = c; j < c + kChunk; ++j) {
      if (t[j] >= thr && col0 + j != skip && offer(hs, hi, k, t[j], col0 + j)) thr = hs[0];
    }
  }
  for (; c < cols; ++c) {
    if (t[c] >= thr && col0 + c != skip && offer(hs, hi, k, t[c], col0 + c)) thr = hs[0];
  }
}

// k = 1 (the k-means assignment): the row maximum by a lane-wise max (maxps), then the first
// column holding it (the smaller index on ties), offered once; 2-3x less work than the
// threshold scan, which for k = 1 keeps finding new maxima early in each row.
HDLFAST_CLONES
void merge_row_top1(const float* t, int64_t cols, int64_t col0, float* hs, int64_t* hi) {
  float lane[kChunk];
  for (int64_t j = 0; j < kChunk; ++j) lane[j] = -std::numeric_limits<float>::infinity();
  int64_t c = 0;
  for (; c + kChunk <= cols; c += kChunk) {
    for (int64_t j = 0; j < kChunk; ++j) lane[j] = t[c + j] > lane[j] ? t[c + j] : lane[j];
  }
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < kChunk; ++j) m = lane[j] > m ? lane[j] : m;
  for (; c < cols; ++c) m = t[c] > m ? t[c] : m;
  if (m < hs[0]) return;
  int64_t j = 0;
  while (t[j] != m) ++j;
  offer(hs, hi, 1, m, col0 + j);
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

}  // namespace

void merge_rows(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0,
                int64_t col0, float* heap_s, int64_t* heap_i, int64_t k, bool exclude_self) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = row0 + r;
    const int64_t skip = exclude_self ? row : -1;
    if (k == 1 && (skip < col0 || skip >= col0 + cols)) {
      merge_row_top1(tile + r * ld, cols, col0, heap_s + row, heap_i + row);
      continue;
    }
    merge_row(tile + r * ld, cols, col0, skip, heap_s + row * k, heap_i + row * k, k);
  }
}

void merge_cols(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0,
                int64_t col0, float* heap_s, int64_t* heap_i, int64_t k) {
  merge_col_range(tile, rows, ld, row0, col0, 0, cols, heap_s, heap_i, k);
}

void finalize(float* heap_s, int64_t* heap_i, int64_t n, int64_t k) {
  parallel_for(n, 1, [&](int64_t b, int64_t e, int) {
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
