// Sinkhorn-Knopp kernels: one pass over the matrix per iteration (row scaling fused with the
// column sums of the next step), rows split over worker threads by fixed chunks.
#include "cpu/sinkhorn.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/clones.h"
#include "cpu/parallel.h"

namespace hdlfast {
namespace cpu {
namespace {

constexpr int64_t kChunk = 2048;  // rows per partial column sum (matches the numba kernels)

// acc[j] += row[j] * w.
HDLFAST_CLONES
void accumulate(const float* row, double w, double* acc, int64_t k) {
  for (int64_t j = 0; j < k; ++j) acc[j] += static_cast<double>(row[j]) * w;
}

// Per-chunk partial column sums of weight(row) rows, reduced in chunk order into out.
template <typename RowWeight>
void chunked_colsum(const float* q, int64_t n, int64_t k, RowWeight weight, double* out) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks * k), 0.0);
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce, int) {
    for (int64_t c = cb; c < ce; ++c) {
      double* acc = part.data() + c * k;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        accumulate(q + i * k, weight(i), acc, k);
      }
    }
  });
  std::fill(out, out + k, 0.0);
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t j = 0; j < k; ++j) out[j] += part[c * k + j];
  }
}

// sum_j row[j] w[j] in double with four interleaved accumulators (a fixed order, the same
// as the numba kernels): breaks the add-latency chain of one running sum.
HDLFAST_CLONES
double dot4(const float* row, const double* w, int64_t k) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int64_t j = 0;
  for (; j + 4 <= k; j += 4) {
    s0 += static_cast<double>(row[j]) * w[j];
    s1 += static_cast<double>(row[j + 1]) * w[j + 1];
    s2 += static_cast<double>(row[j + 2]) * w[j + 2];
    s3 += static_cast<double>(row[j + 3]) * w[j + 3];
  }
  for (; j < k; ++j) s0 += static_cast<double>(row[j]) * w[j];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

void sk_prepare(float* q, int64_t n, int64_t k, double beta, double* rowmax) {
  parallel_for(n, 256, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      float* row = q + i * k;
      const double m = *std::max_element(row, row + k);
      rowmax[i] = m;
      for (int64_t j = 0; j < k; ++j)
        row[j] = static_cast<float>(std::exp(beta * (static_cast<double>(row[j]) - m)));
    }
  });
}

void sk_colsum(const float* q, int64_t n, int64_t k, const double* u, double* out) {
  chunked_colsum(q, n, k, [&](int64_t i) { return u[i]; }, out);
}

void sk_iterate(const float* q, int64_t n, int64_t k, const double* v, const double* r,
                double* u, double* out_colsum) {
  chunked_colsum(
      q, n, k,
      [&](int64_t i) {  // the row is read here and again right after, while in cache
        return u[i] = r[i] / dot4(q + i * k, v, k);
      },
      out_colsum);
}

void sk_finalize(float* q, int64_t n, int64_t k, const double* v, int64_t* labels) {
  parallel_for(n, 256, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      float* row = q + i * k;
      const double s = dot4(row, v, k);
      double top = -1.0;
      int64_t best = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double t = static_cast<double>(row[j]) * v[j];
        if (t > top) {
          top = t;
          best = j;
        }
      }
      for (int64_t j = 0; j < k; ++j)
        row[j] = static_cast<float>(static_cast<double>(row[j]) * v[j] / s);
      labels[i] = best;
    }
  });
}

}  // namespace cpu
}  // namespace hdlfast
