// k-means centroid update: a counting sort of the rows by label (members of each cluster in
// increasing row order), then clusters split over worker threads, each summed in double.
// The products x * w are exact in double (two floats), so only the order of the additions
// matters, and it is fixed.
#include "cpu/kmeans.h"

#include <algorithm>
#include <cassert>
#include <vector>

#include "cpu/clones.h"
#include "cpu/parallel.h"
#include "cpu/prefetch.h"

namespace hdlfast {
namespace cpu {
namespace {

// acc[j] += row[j] * w.
HDLFAST_CLONES
void add_row(const float* row, double w, double* acc, int64_t d) {
  for (int64_t j = 0; j < d; ++j) acc[j] += static_cast<double>(row[j]) * w;
}

constexpr int64_t kAhead = 8;  // members whose rows are prefetched ahead of the one added

}  // namespace

void cluster_sums(const float* x, int64_t n, int64_t d, const float* inv, const int64_t* labels,
                  int64_t n_clusters, double* sums, int64_t* counts) {
  std::vector<int64_t> start(static_cast<size_t>(n_clusters) + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    assert(labels[i] >= 0 && labels[i] < n_clusters);  // debug builds: a valid assignment
    ++start[labels[i] + 1];
  }
  for (int64_t c = 0; c < n_clusters; ++c) {
    counts[c] = start[c + 1];
    start[c + 1] += start[c];
  }
  std::vector<int64_t> members(static_cast<size_t>(n));
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < n; ++i) members[fill[labels[i]]++] = i;
  // a cluster costs its members' rows: about n d / n_clusters steps
  parallel_for(n_clusters, grain_for(n / std::max<int64_t>(n_clusters, 1) * d),
               [&](int64_t cb, int64_t ce, int) {
    for (int64_t c = cb; c < ce; ++c) {
      double* acc = sums + c * d;
      std::fill(acc, acc + d, 0.0);
      for (int64_t m = start[c]; m < start[c + 1]; ++m) {
        if (m + kAhead < start[c + 1])  // scattered rows: the hardware cannot foresee them
          prefetch_bytes(x + members[m + kAhead] * d, d * static_cast<int64_t>(sizeof(float)));
        const int64_t i = members[m];
        add_row(x + i * d, inv ? static_cast<double>(inv[i]) : 1.0, acc, d);
      }
    }
  });
}

}  // namespace cpu
}  // namespace hdlfast
