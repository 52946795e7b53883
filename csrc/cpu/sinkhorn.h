// Sinkhorn-Knopp kernels (docs §5) on a row-major (n, k) float32 matrix q holding the kernel
// exp(beta (s - row max)) and finally the soft assignment. Scalings and sums are double.
// Column sums are reduced over fixed chunks of rows in chunk order: results do not depend on
// the number of threads. The numba twin is hdlfast/sinkhorn/numba_kernels.py.
#pragma once
#include <cstdint>

namespace hdlfast {
namespace cpu {

// q[i, j] = exp(beta (src[i, j] - m_i)), m_i = row max of src (written to rowmax; NaN for a
// row holding NaN or Inf, whose q row is then left as it was). src may be q.
void sk_prepare(const float* src, float* q, int64_t n, int64_t k, double beta, double* rowmax);
// SeLa's P ** power from probabilities p (float or double), shifted like sk_prepare:
// q[i, j] = (p[i, j] / m_i) ** power by binary powering in double, rounded once to float;
// m_i = row max of p, written to rowmax (NaN for a row holding NaN, Inf or a negative entry,
// or no positive one, whose q row is then left as it was).
template <typename T>
void sk_prepare_power(const T* p, float* q, int64_t n, int64_t k, int64_t power,
                      double* rowmax);
// out[j] = sum_i q[i, j] u[i].
void sk_colsum(const float* q, int64_t n, int64_t k, const double* u, double* out);
// One fused pass: u[i] = r[i] / sum_j q[i, j] v[j]; out_colsum[j] = sum_i q[i, j] u[i].
void sk_iterate(const float* q, int64_t n, int64_t k, const double* v, const double* r,
                double* u, double* out_colsum);
// In place: rows of q * v normalised to sum 1 (the last row scaling); labels = argmax of each
// output row (smaller index on ties); out_colsum[j] = sum_i r[i] q_out[i, j], the plan's column
// marginals (before the rounding to float). False when some row has no mass where v > 0 (its row is left unscaled).
bool sk_finalize(float* q, int64_t n, int64_t k, const double* v, const double* r,
                 int64_t* labels, double* out_colsum);

}  // namespace cpu
}  // namespace hdlfast
