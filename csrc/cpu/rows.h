// Unit rows: the copy of the embeddings every CPU search multiplies (csrc/cpu/rows.cpp).
#pragma once
#include <cstdint>

namespace hdlfast {
namespace cpu {

// out[i] = x[i] / |x[i]| as float32 (or float64), computed in float64 and scale-safe: each row
// is first multiplied by the power of two 2^-e that brings its largest magnitude into
// [0.5, 1) (exact), then by the inverse norm of the result (squares summed by eight
// interleaved accumulators, summed pairwise, as dot8), so rows of any finite non-zero size
// work; -0 is written as +0. bad[0] / bad[1] receive the first row holding NaN or Inf /
// the first all-zero row (-1: none); those rows' outputs are unspecified. Parallel over rows.
template <typename In, typename Out>
void unit_rows(const In* x, int64_t n, int64_t d, Out* out, int64_t* bad);

// Whether every float32 row of x already has unit norm to float32 precision, so a search
// may read the rows as given: |sum_j x_j^2 - 1| <= unit_tolerance(d) (the squares summed in
// float64 by eight lanes, as unit_rows), and no entry is NaN, Inf or -0 (rows of equal values
// stay equal bytes). Stops at the first row that is not. Parallel over rows.
bool rows_are_unit(const float* x, int64_t n, int64_t d);

// 2 (d + 8) 2^-24: a float32 normalisation's worst rounding of the squared norm, twice over.
inline double unit_tolerance(int64_t d) { return 2.0 * static_cast<double>(d + 8) * 0x1p-24; }

// hashes[i] = sum_j words[i, j] * mult[j] modulo 2^64 (the row's bytes as 32-bit words): the
// candidate test for duplicate rows, exact duplicates being confirmed by comparison. Parallel.
void row_hashes(const uint32_t* words, int64_t n, int64_t d, const uint64_t* mult,
                uint64_t* hashes);

}  // namespace cpu
}  // namespace hdlfast
