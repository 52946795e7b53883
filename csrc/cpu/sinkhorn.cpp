// Sinkhorn-Knopp kernels: one pass over the matrix per iteration (row scaling fused with the
// column sums of the next step), the last row scaling fused with the output; rows split over
// worker threads by fixed chunks.
#include "cpu/sinkhorn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/clones.h"
#include "cpu/parallel.h"
#include "cpu/prefetch.h"

namespace hdlfast {
namespace cpu {
namespace {

constexpr int64_t kChunk = 2048;  // rows per partial column sum (matches the numba kernels)

// acc[j] += row[j] * w.
HDLFAST_CLONES
void accumulate(const float* row, double w, double* acc, int64_t k) {
  for (int64_t j = 0; j < k; ++j) acc[j] += static_cast<double>(row[j]) * w;
}

// acc[j] = (acc[j] + a[j] wa) + b[j] wb: two accumulate calls in one pass over acc.
HDLFAST_CLONES
void accumulate2(const float* a, double wa, const float* b, double wb, double* acc,
                 int64_t k) {
  for (int64_t j = 0; j < k; ++j)
    acc[j] = (acc[j] + static_cast<double>(a[j]) * wa) + static_cast<double>(b[j]) * wb;
}

constexpr int64_t kPrefetchBytes = 8192;  // how far ahead of a row it is prefetched

// Prefetch rows [i, i + m) of q from kPrefetchBytes past their start, not past row end.
template <typename T>
inline void prefetch_rows(const T* q, int64_t i, int64_t m, int64_t end, int64_t k) {
  const char* base = reinterpret_cast<const char*>(q + i * k) + kPrefetchBytes;
  const char* stop = reinterpret_cast<const char*>(q + end * k);
  prefetch_bytes(base, std::min<int64_t>(m * k * static_cast<int64_t>(sizeof(T)),
                                         stop - base));
}

constexpr int kRowBlock = 16;  // rows whose weights are computed before they are added

// Per-chunk partial column sums of the rows times their weights, reduced in chunk order into
// out. weights(i, m, w) fills w[0..m) for rows i..i+m-1 (m <= kRowBlock): a block's weights
// first, so that their per-row work (dot products, divisions) overlaps instead of waiting
// on the column sums; then its rows are added in order, two at a time.
template <typename RowWeights>
void chunked_colsum(const float* q, int64_t n, int64_t k, RowWeights weights, double* out) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks * k), 0.0);
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce, int) {
    for (int64_t c = cb; c < ce; ++c) {
      double* acc = part.data() + c * k;
      const int64_t end = std::min(n, (c + 1) * kChunk);
      double w[kRowBlock];
      for (int64_t i = c * kChunk; i < end; i += kRowBlock) {
        const int m = static_cast<int>(std::min<int64_t>(kRowBlock, end - i));
        prefetch_rows(q, i, m, end, k);
        weights(i, m, w);
        int l = 0;
        for (; l + 2 <= m; l += 2)
          accumulate2(q + (i + l) * k, w[l], q + (i + l + 1) * k, w[l + 1], acc, k);
        if (l < m) accumulate(q + (i + l) * k, w[l], acc, k);
      }
    }
  });
  std::fill(out, out + k, 0.0);
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t j = 0; j < k; ++j) out[j] += part[c * k + j];
  }
}

// sum_j row[j] w[j] in double with eight interleaved accumulators, summed pairwise (a fixed
// order, the same as the numba kernels): breaks the add-latency chain and fills a vector
// register of AVX-512 or two of AVX2. A block's dots are independent, so out-of-order
// execution overlaps consecutive rows (a hand-paired two-row version with 64-byte vector
// types was 2.3x slower under AVX2, where GCC spills such vectors on every step).
HDLFAST_CLONES
double dot8(const float* row, const double* w, int64_t k) {
  double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    for (int l = 0; l < 8; ++l) s[l] += static_cast<double>(row[j + l]) * w[j + l];
  }
  for (; j < k; ++j) s[0] += static_cast<double>(row[j]) * w[j];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// The largest entry of row; *finite: no NaN or Inf in it (exponent bits all ones). The max
// runs in integer lanes on an order-preserving image of the float bits (flip the magnitude
// bits of negative values), which vectorises without fast-math.
HDLFAST_CLONES
double row_max(const float* row, int64_t k, bool* finite) {
  int32_t top = INT32_MIN, special = 0;
  for (int64_t j = 0; j < k; ++j) {
    int32_t b;
    std::memcpy(&b, row + j, sizeof b);
    special |= static_cast<int32_t>((b & 0x7f800000) == 0x7f800000);
    top = std::max(top, b ^ ((b >> 31) & 0x7fffffff));
  }
  *finite = special == 0;
  const int32_t b = top ^ ((top >> 31) & 0x7fffffff);
  float m;
  std::memcpy(&m, &b, sizeof m);
  return m;
}

// row[j] = exp(beta (src[j] - m)) rounded to float (src may be row), for arguments <= 0, by
// Cody-Waite reduction t = n ln2 + r (|r| <= ln2 / 2), a degree-10 Taylor polynomial (error
// below 3e-13, far under float's rounding) and an exact scaling by 2^n built from the
// exponent bits. Plain double multiplies and adds in a fixed order (no contraction), so the
// numba twin, which scales with ldexp, gives the same bits; the loop vectorises.
HDLFAST_CLONES
void exp_shifted(const float* src, float* row, int64_t k, double beta, double m) {
  constexpr double kLog2e = 1.4426950408889634, kShift = 6755399441055744.0;  // 1.5 * 2^52
  constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
  for (int64_t j = 0; j < k; ++j) {
    double t = beta * (static_cast<double>(src[j]) - m);
    t = t < -110.0 ? -110.0 : t;  // exp(-110) is far below float's smallest subnormal
    const double kd = t * kLog2e + kShift;  // round(t log2 e) in the low mantissa bits
    const double nd = kd - kShift;
    const double r = (t - nd * kLn2Hi) - nd * kLn2Lo;
    double p = 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t bits;
    std::memcpy(&bits, &kd, sizeof bits);
    bits = (bits + 1023) << 52;  // 2^n: n + 1023 in the exponent field
    double scale;
    std::memcpy(&scale, &bits, sizeof scale);
    row[j] = static_cast<float>(p * scale);
  }
}

// out[j] = base[j] ** e rounded to float, by binary powering from the lowest bit (acc *= base
// at a set bit, then base *= base while bits remain: the numba twin multiplies in the same
// order, so both give the same bits). base and acc are scratch rows of k doubles; a few
// passes over L1-resident rows, each of which vectorises.
HDLFAST_CLONES
void power_row(double* base, double* acc, float* out, int64_t k, int64_t e) {
  for (int64_t j = 0; j < k; ++j) acc[j] = 1.0;
  for (; e > 0; e >>= 1) {
    if (e & 1)
      for (int64_t j = 0; j < k; ++j) acc[j] *= base[j];
    if (e > 1)
      for (int64_t j = 0; j < k; ++j) base[j] *= base[j];
  }
  for (int64_t j = 0; j < k; ++j) out[j] = static_cast<float>(acc[j]);
}

// The first index of the largest entry of a row of non-negative floats (their bits order
// like the values, so the max runs in integer lanes).
HDLFAST_CLONES
int64_t argmax_nonnegative(const float* row, int64_t k) {
  int32_t top = INT32_MIN;
  for (int64_t j = 0; j < k; ++j) {
    int32_t b;
    std::memcpy(&b, row + j, sizeof b);
    top = std::max(top, b);
  }
  for (int64_t j = 0; j < k; ++j) {
    int32_t b;
    std::memcpy(&b, row + j, sizeof b);
    if (b == top) return j;
  }
  return 0;
}

// In place: row[j] = row[j] v[j] / s, as times 1 / s (one division per row), and
// acc[j] += w row[j] v[j] / s before the rounding to float.
HDLFAST_CLONES
void scale_row(float* row, const double* v, double inv_s, double w, double* acc, int64_t k) {
  for (int64_t j = 0; j < k; ++j) {
    const double t = static_cast<double>(row[j]) * v[j] * inv_s;
    row[j] = static_cast<float>(t);
    acc[j] += t * w;
  }
}

// base[j] = row[j] / m for m the row max of probabilities, and m into base[k]; false (base
// untouched) for a row holding NaN, Inf or a negative entry, or no positive one. One body for
// both input types, inlined into each cloned overload so that it vectorises per target.
// The scan runs in integer lanes on the bits (a non-negative finite value's bits order like
// the value and lie in [0, bits of the largest finite]; -0 is the signed minimum), which
// vectorises without fast-math.
template <typename T, typename I>
inline __attribute__((always_inline)) bool scaled_probs(const T* row, int64_t k,
                                                        double* base) {
  constexpr I kMinusZero = std::numeric_limits<I>::min();
  I finite_max;
  const T largest = std::numeric_limits<T>::max();
  std::memcpy(&finite_max, &largest, sizeof finite_max);
  I top = kMinusZero, bad = 0;
  for (int64_t j = 0; j < k; ++j) {
    I b;
    std::memcpy(&b, row + j, sizeof b);
    bad |= static_cast<I>((b > finite_max) | ((b < 0) & (b != kMinusZero)));
    top = std::max(top, b);
  }
  T mt;
  std::memcpy(&mt, &top, sizeof mt);
  const double m = static_cast<double>(mt);
  if (bad || !(m > 0.0)) return false;
  for (int64_t j = 0; j < k; ++j) base[j] = static_cast<double>(row[j]) / m;
  base[k] = m;
  return true;
}

HDLFAST_CLONES
bool scaled_probs_row(const float* row, int64_t k, double* base) {
  return scaled_probs<float, int32_t>(row, k, base);
}

HDLFAST_CLONES
bool scaled_probs_row(const double* row, int64_t k, double* base) {
  return scaled_probs<double, int64_t>(row, k, base);
}

}  // namespace

void sk_prepare(const float* src, float* q, int64_t n, int64_t k, double beta,
                double* rowmax) {
  parallel_for(n, grain_for(4 * k, 16), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      prefetch_rows(src, i, 1, e, k);
      bool finite = false;
      const double m = row_max(src + i * k, k, &finite);
      rowmax[i] = finite ? m : std::nan("");
      if (finite) exp_shifted(src + i * k, q + i * k, k, beta, m);
    }
  });
}

template <typename T>
void sk_prepare_power(const T* p, float* q, int64_t n, int64_t k, int64_t power,
                      double* rowmax) {
  parallel_for(n, grain_for(4 * k, 16), [&](int64_t b, int64_t e, int) {
    // base: the scaled row, then its max in base[k]; acc: the power being built
    std::vector<double> base(static_cast<size_t>(k + 1)), acc(static_cast<size_t>(k));
    for (int64_t i = b; i < e; ++i) {
      prefetch_rows(p, i, 1, e, k);
      if (!scaled_probs_row(p + i * k, k, base.data())) {
        rowmax[i] = std::nan("");
        continue;
      }
      rowmax[i] = base[k];
      power_row(base.data(), acc.data(), q + i * k, k, power);
    }
  });
}
template void sk_prepare_power<float>(const float*, float*, int64_t, int64_t, int64_t,
                                      double*);
template void sk_prepare_power<double>(const double*, float*, int64_t, int64_t, int64_t,
                                       double*);

void sk_colsum(const float* q, int64_t n, int64_t k, const double* u, double* out) {
  chunked_colsum(
      q, n, k, [&](int64_t i, int m, double* w) { std::copy(u + i, u + i + m, w); }, out);
}

void sk_iterate(const float* q, int64_t n, int64_t k, const double* v, const double* r,
                double* u, double* out_colsum) {
  chunked_colsum(
      q, n, k,
      [&](int64_t i, int m, double* w) {  // rows read here and again right after, in cache
        for (int l = 0; l < m; ++l) w[l] = dot8(q + (i + l) * k, v, k);
        for (int l = 0; l < m; ++l) w[l] = u[i + l] = r[i + l] / w[l];
      },
      out_colsum);
}

bool sk_finalize(float* q, int64_t n, int64_t k, const double* v, const double* r,
                 int64_t* labels, double* out_colsum) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks * k), 0.0);
  std::vector<char> ok(static_cast<size_t>(chunks), 1);
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce, int) {
    for (int64_t c = cb; c < ce; ++c) {
      double* acc = part.data() + c * k;
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) {
        prefetch_rows(q, i, 1, end, k);
        float* row = q + i * k;
        const double inv_s = 1.0 / dot8(row, v, k);
        if (!(inv_s > 0.0 && inv_s < INFINITY)) {
          ok[c] = 0;  // the row's mass sits where v is 0: the caller falls back
          continue;
        }
        scale_row(row, v, inv_s, r[i], acc, k);
        labels[i] = argmax_nonnegative(row, k);
      }
    }
  });
  std::fill(out_colsum, out_colsum + k, 0.0);
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t j = 0; j < k; ++j) out_colsum[j] += part[c * k + j];
  }
  return std::all_of(ok.begin(), ok.end(), [](char x) { return x != 0; });
}

}  // namespace cpu
}  // namespace hdlfast
