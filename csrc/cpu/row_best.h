// The best and second-best scores of one similarity row: the largest t[j] (+ bias[j]; bias
// null: + 0), the smallest j among equal maxima (the tie rule), and the largest score of every
// other column (equal to the best when it is tied; -inf for a single column). The k = 1 kNN
// merge (cpu/topk.cpp) and the k-means assignment (cpu/kmeans.cpp) share it.
//
// GCC vector extensions, not intrinsics: inlined into a HDLFAST_CLONES function they compile
// for that clone's instruction set (8 float lanes on AVX2). GCC does not vectorise a plain
// float max loop without -ffinite-math-only; this lane-wise form keeps each lane's first
// maximum and second value and merges the lanes by (value, index): ~6x faster than the scalar
// loop on 100 columns (about 21 vs 120 ns).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

namespace hdlfast {
namespace cpu {

struct RowBest {
  float s;       // the best score
  int64_t j;     // its column
  float second;  // the best score of the other columns
};

__attribute__((always_inline)) inline RowBest row_best(const float* t, const float* bias,
                                                       int64_t cols) {
  typedef float f8 __attribute__((vector_size(32)));
  typedef int32_t i8 __attribute__((vector_size(32)));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  f8 m1 = {kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf};
  f8 m2 = m1;
  i8 at = {0, 0, 0, 0, 0, 0, 0, 0};
  i8 idx = {0, 1, 2, 3, 4, 5, 6, 7};
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {  // cols < 2^31: one similarity row
    f8 v;
    std::memcpy(&v, t + c, sizeof v);
    if (bias) {
      f8 b;
      std::memcpy(&b, bias + c, sizeof b);
      v += b;
    }
    const i8 gt = v > m1;  // strict: a lane keeps its first maximum
    const i8 gt2 = v > m2;
    m2 = gt ? m1 : (gt2 ? v : m2);
    m1 = gt ? v : m1;
    at = gt ? idx : at;
    idx += 8;
  }
  RowBest r{kNegInf, 0, kNegInf};
  bool any = false;
  for (int l = 0; l < 8 && c > 0; ++l) {  // merge the lanes: (value, smaller column) order
    if (!any || m1[l] > r.s || (m1[l] == r.s && at[l] < r.j)) {
      if (any) r.second = std::max(r.second, r.s);
      r.s = m1[l];
      r.j = at[l];
      any = true;
    } else {
      r.second = std::max(r.second, m1[l]);
    }
    r.second = std::max(r.second, m2[l]);
  }
  for (; c < cols; ++c) {  // the tail: later columns win only by a larger value
    const float v = bias ? t[c] + bias[c] : t[c];
    if (!any || v > r.s) {
      if (any) r.second = std::max(r.second, r.s);
      r.s = v;
      r.j = c;
      any = true;
    } else {
      r.second = std::max(r.second, v);
    }
  }
  return r;
}

}  // namespace cpu
}  // namespace hdlfast
