// Indexed row pairs (docs §6, NCL's hard negatives): dot products of only the pairs a
// selection needs, and the unit-length mixtures of the pairs it keeps, read straight from the
// two row tables, never gathered into copies. Sums run in a fixed order (eight interleaved
// accumulators, summed pairwise), equal to the numba twin (hdlfast/neighbors/numba_kernels.py)
// for any thread count.
#pragma once
#include <cstdint>

namespace hdlfast {
namespace cpu {

// out[p] = sum_j a[ra[p], j] * b[rb[p], j] for p < n_pairs; a (na, d) and b (nb, d) row-major,
// ra in [0, na), rb in [0, nb).
void pair_dots(const double* a, const double* b, int64_t d, const int64_t* ra,
               const int64_t* rb, int64_t n_pairs, double* out);

// out[p, :] = m / max(|m|, 1e-12) for m = a[ra[p]] w[p] + b[rb[p]] (1 - w[p]), m in float
// (as torch mixes float rows), |m| summed in double and rounded to float; a and b (na, d),
// (nb, d) row-major float, out (n_pairs, d).
void mix_rows(const float* a, const float* b, int64_t d, const int64_t* ra, const int64_t* rb,
              const float* w, int64_t n_pairs, float* out);

}  // namespace cpu
}  // namespace hdlfast
