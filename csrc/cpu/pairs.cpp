// Indexed row pairs: pairs split over worker threads in contiguous ranges; the rows of the
// pair kAhead places on are prefetched, since the hardware prefetcher cannot foresee
// scattered rows.
#include "cpu/pairs.h"

#include <algorithm>
#include <cmath>

#include "cpu/clones.h"
#include "cpu/parallel.h"
#include "cpu/prefetch.h"

namespace hdlfast {
namespace cpu {
namespace {

// sum_j x[j] y[j] with eight interleaved accumulators summed pairwise.
HDLFAST_CLONES
double dot8(const double* x, const double* y, int64_t d) {
  double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; ++l) s[l] += x[j + l] * y[j + l];
  }
  for (; j < d; ++j) s[0] += x[j] * y[j];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// out[j] = a[j] w + b[j] (1 - w) in float; returns sum_j out[j]^2 in double (eight
// interleaved accumulators, summed pairwise).
HDLFAST_CLONES
double mix(const float* a, const float* b, float w, int64_t d, float* out) {
  const float v = 1.0f - w;
  for (int64_t j = 0; j < d; ++j) out[j] = a[j] * w + b[j] * v;
  double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; ++l) {
      const double x = static_cast<double>(out[j + l]);
      s[l] += x * x;
    }
  }
  for (; j < d; ++j) s[0] += static_cast<double>(out[j]) * static_cast<double>(out[j]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// out[j] /= den.
HDLFAST_CLONES
void divide(float* out, float den, int64_t d) {
  for (int64_t j = 0; j < d; ++j) out[j] /= den;
}

constexpr int64_t kAhead = 4;  // pairs whose rows are prefetched ahead of the one worked on

// fn(p, a row ra[p], b row rb[p]) for every pair, over worker threads in contiguous ranges
// of at least `grain` pairs, the rows of the pair kAhead on prefetched.
template <typename T, typename Fn>
void for_each_pair(const T* a, const T* b, int64_t d, const int64_t* ra, const int64_t* rb,
                   int64_t n_pairs, int64_t grain, Fn fn) {
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(T));
  parallel_for(n_pairs, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t p = begin; p < end; ++p) {
      if (p + kAhead < end) {
        prefetch_bytes(a + ra[p + kAhead] * d, row_bytes);
        prefetch_bytes(b + rb[p + kAhead] * d, row_bytes);
      }
      fn(p, a + ra[p] * d, b + rb[p] * d);
    }
  });
}

}  // namespace

void pair_dots(const double* a, const double* b, int64_t d, const int64_t* ra,
               const int64_t* rb, int64_t n_pairs, double* out) {
  for_each_pair(a, b, d, ra, rb, n_pairs, 1024,
                [&](int64_t p, const double* x, const double* y) { out[p] = dot8(x, y, d); });
}

void mix_rows(const float* a, const float* b, int64_t d, const int64_t* ra, const int64_t* rb,
              const float* w, int64_t n_pairs, float* out) {
  for_each_pair(a, b, d, ra, rb, n_pairs, 256, [&](int64_t p, const float* x, const float* y) {
    float* row = out + p * d;
    const float norm = static_cast<float>(std::sqrt(mix(x, y, w[p], d, row)));
    divide(row, std::max(norm, 1e-12f), d);
  });
}

}  // namespace cpu
}  // namespace hdlfast
