// k-means centroid update (docs §6): per-cluster sums of the member rows, in double, each
// cluster summing its members in increasing row order, so the result is bit-identical for any
// thread count and equal to the numba twin (hdlfast/kmeans/numba_kernels.py) and the CUDA kernel.
#pragma once
#include <cstdint>

namespace hdlfast {
namespace cpu {

// sums[c, :] = sum over rows i with labels[i] == c of x[i, :] * w_i (w_i = inv[i], or 1 when
// inv is null), counts[c] = number of such rows. labels in [0, n_clusters); x row-major (n, d).
void cluster_sums(const float* x, int64_t n, int64_t d, const float* inv, const int64_t* labels,
                  int64_t n_clusters, double* sums, int64_t* counts);

}  // namespace cpu
}  // namespace hdlfast
