// Unit rows, the numba twin is hdlfast/_numba.py (unit_rows): the same float64 operations in
// the same order, so both write the same bits.
#include "cpu/rows.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/clones.h"
#include "cpu/parallel.h"

namespace hdlfast {
namespace cpu {
namespace {

// First (smallest) index wins across threads.
void record_min(std::atomic<int64_t>& slot, int64_t row) {
  int64_t cur = slot.load();
  while ((cur < 0 || row < cur) && !slot.compare_exchange_weak(cur, row)) {
  }
}

template <typename In, typename Out>
__attribute__((always_inline)) inline void unit_row(const In* x, int64_t d, Out* out,
                                                    std::atomic<int64_t>* bad, int64_t row) {
  // The peak in eight lanes (max is exact, so any order gives the numba twin's serial value);
  // v <= DBL_MAX is false for NaN and Inf. Independent lanes let the loop vectorise.
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  bool finite = true;
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; ++l) {
      const double v = std::fabs(static_cast<double>(x[j + l]));
      finite &= v <= std::numeric_limits<double>::max();
      lane[l] = v > lane[l] ? v : lane[l];
    }
  }
  for (; j < d; ++j) {
    const double v = std::fabs(static_cast<double>(x[j]));
    finite &= v <= std::numeric_limits<double>::max();
    lane[0] = v > lane[0] ? v : lane[0];
  }
  double peak = lane[0];
  for (int l = 1; l < 8; ++l) peak = lane[l] > peak ? lane[l] : peak;
  if (!finite) return record_min(bad[0], row);
  if (peak == 0.0) return record_min(bad[1], row);
  int e = 0;
  std::frexp(peak, &e);
  const double scale = std::ldexp(1.0, -e);  // a power of two: x * scale is exact
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; ++l) {
      const double v = static_cast<double>(x[j + l]) * scale;
      s[l] += v * v;
    }
  }
  for (; j < d; ++j) {
    const double v = static_cast<double>(x[j]) * scale;
    s[0] += v * v;
  }
  const double inv =
      1.0 / std::sqrt(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
  for (j = 0; j < d; ++j) {
    out[j] = static_cast<Out>(static_cast<double>(x[j]) * scale * inv) + Out(0);
  }
}

// Rows [b, e), compiled for AVX-512, AVX2 and baseline x86-64 (one clone set per type pair;
// the same operations in each, so the same bits).
#define HDLFAST_UNIT_BLOCK(In, Out)                                                          \
  HDLFAST_CLONES void unit_block(const In* x, int64_t b, int64_t e, int64_t d, Out* out,    \
                                 std::atomic<int64_t>* bad) {                               \
    for (int64_t i = b; i < e; ++i) unit_row(x + i * d, d, out + i * d, bad, i);             \
  }
HDLFAST_UNIT_BLOCK(float, float)
HDLFAST_UNIT_BLOCK(double, float)
HDLFAST_UNIT_BLOCK(float, double)
HDLFAST_UNIT_BLOCK(double, double)
#undef HDLFAST_UNIT_BLOCK

// Whether the float32 row is unit to float32 precision (see rows.h).
HDLFAST_CLONES bool unit_row_as_given(const float* x, int64_t d) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t neg_zero = 0, exp_max = 0;
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; ++l) {
      uint32_t b;
      std::memcpy(&b, x + j + l, sizeof b);
      neg_zero |= b == 0x80000000u;
      exp_max |= (b & 0x7f800000u) == 0x7f800000u;  // NaN or Inf
      const double v = static_cast<double>(x[j + l]);
      s[l] += v * v;
    }
  }
  for (; j < d; ++j) {
    uint32_t b;
    std::memcpy(&b, x + j, sizeof b);
    neg_zero |= b == 0x80000000u;
    exp_max |= (b & 0x7f800000u) == 0x7f800000u;
    const double v = static_cast<double>(x[j]);
    s[0] += v * v;
  }
  const double sq = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  return !neg_zero && !exp_max && std::fabs(sq - 1.0) <= unit_tolerance(d);
}

}  // namespace

bool rows_are_unit(const float* x, int64_t n, int64_t d) {
  std::atomic<bool> off{false};
  parallel_for(n, grain_for(d), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      if (off.load(std::memory_order_relaxed)) return;
      if (!unit_row_as_given(x + i * d, d)) {
        off = true;
        return;
      }
    }
  });
  return !off.load();
}

template <typename In, typename Out>
void unit_rows(const In* x, int64_t n, int64_t d, Out* out, int64_t* bad) {
  std::atomic<int64_t> first[2];
  first[0] = -1;
  first[1] = -1;
  parallel_for(n, grain_for(3 * d), [&](int64_t b, int64_t e, int) {
    unit_block(x, b, e, d, out, first);
  });
  bad[0] = first[0];
  bad[1] = first[1];
}

void row_hashes(const uint32_t* words, int64_t n, int64_t d, const uint64_t* mult,
                uint64_t* hashes) {
  parallel_for(n, grain_for(d), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const uint32_t* w = words + i * d;
      uint64_t h = 0;
      for (int64_t j = 0; j < d; ++j) h += uint64_t(w[j]) * mult[j];
      hashes[i] = h;
    }
  });
}

template void unit_rows<float, float>(const float*, int64_t, int64_t, float*, int64_t*);
template void unit_rows<double, float>(const double*, int64_t, int64_t, float*, int64_t*);
template void unit_rows<float, double>(const float*, int64_t, int64_t, double*, int64_t*);
template void unit_rows<double, double>(const double*, int64_t, int64_t, double*, int64_t*);

}  // namespace cpu
}  // namespace hdlfast
