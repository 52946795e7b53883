// k-means kernels: the fused assignment pass (best centroid per tile row, then the chunk's
// rows added to per-cluster partial sums while they are in cache), exact squared distances,
// and the k-means++ candidate step. Products of two floats are exact in double, so in the sums
// only the order of the additions matters, and kmeans.h fixes it.
#include "cpu/kmeans.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/clones.h"
#include "cpu/parallel.h"
#include "cpu/row_best.h"

namespace hdlfast {
namespace cpu {
namespace {

// acc[j] += row[j] * w (w == 1: the conversion alone, exact either way).
HDLFAST_CLONES
void add_row(const float* row, double w, double* acc, int64_t d) {
  for (int64_t j = 0; j < d; ++j) acc[j] += static_cast<double>(row[j]) * w;
}

HDLFAST_CLONES
void add_to(const double* part, double* acc, int64_t d) {
  for (int64_t j = 0; j < d; ++j) acc[j] += part[j];
}

HDLFAST_CLONES
double sq_dist(const float* x, const double* c, int64_t d) {
  double l[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
    for (int m = 0; m < 4; ++m) {
      const double e = static_cast<double>(x[j + m]) - c[j + m];
      l[m] += e * e;
    }
  }
  for (int m = 0; j < d; ++j, ++m) {
    const double e = static_cast<double>(x[j]) - c[j];
    l[m] += e * e;
  }
  return (l[0] + l[1]) + (l[2] + l[3]);
}

// out[u] = p . q_u for G candidate rows q_u at once, each in float32 by the eight-lane order
// of kmeans.h (G independent accumulators: the loads of p are shared and the additions do not
// wait on each other).
template <int G>
__attribute__((always_inline)) inline void dots8(const float* p, const float* const* q, int64_t d,
                                                 float* out) {
  typedef float f8 __attribute__((vector_size(32)));
  f8 acc[G];
  for (int u = 0; u < G; ++u) acc[u] = f8{0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    f8 a;
    std::memcpy(&a, p + j, sizeof a);
    for (int u = 0; u < G; ++u) {
      f8 b;
      std::memcpy(&b, q[u] + j, sizeof b);
      acc[u] += a * b;
    }
  }
  for (int u = 0; u < G; ++u) {
    const f8 l = acc[u];
    float s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    for (int64_t t = j; t < d; ++t) s += p[t] * q[u][t];
    out[u] = s;
  }
}

// The dot products of one sample row with every candidate, four candidates at a time.
__attribute__((always_inline)) inline void candidate_dots(const float* p, const float* const* q,
                                                          int64_t n_cand, int64_t d, float* out) {
  int64_t t = 0;
  for (; t + 4 <= n_cand; t += 4) dots8<4>(p, q + t, d, out + t);
  switch (n_cand - t) {
    case 3: dots8<3>(p, q + t, d, out + t); break;
    case 2: dots8<2>(p, q + t, d, out + t); break;
    case 1: dots8<1>(p, q + t, d, out + t); break;
    default: break;
  }
}

// pp_trials on the sample rows [i0, i1) (one block of kPPBlock rows): out, and the block's
// column sums in acc (n_cand), added in row order. dots: scratch of n_cand floats.
HDLFAST_CLONES
void pp_block(const float* p, int64_t d, const double* pp, const int64_t* cand,
              const float* const* rows, int64_t n_cand, const double* d2, int64_t i0,
              int64_t i1, double* out, double* acc, float* dots) {
  for (int64_t i = i0; i < i1; ++i) {
    candidate_dots(p + i * d, rows, n_cand, d, dots);
    for (int64_t t = 0; t < n_cand; ++t) {
      double v = -2.0 * static_cast<double>(dots[t]);
      v = (v + pp[i]) + pp[cand[t]];
      v = v > 0.0 ? v : 0.0;  // -0 and rounding below 0 are 0
      v = v < d2[i] ? v : d2[i];
      out[i * n_cand + t] = v;
      acc[t] += v;
    }
  }
}

}  // namespace

HDLFAST_CLONES
void top2_update(const float* tile, int64_t rows, int64_t cols, const float* bias, int64_t col0,
                 float* best_s, int64_t* best_i, float* second_s) {
  for (int64_t r = 0; r < rows; ++r) {
    const RowBest b = row_best(tile + r * cols, bias, cols);
    if (b.s > best_s[r]) {  // a later column block: only a strictly larger score takes the row
      second_s[r] = std::max(second_s[r], best_s[r]);
      second_s[r] = std::max(second_s[r], b.second);
      best_s[r] = b.s;
      best_i[r] = col0 + b.j;
    } else {
      second_s[r] = std::max(second_s[r], b.s);
    }
  }
}

void set_bounds(const int64_t* rows, int64_t m, const float* best_s, const int64_t* best_i,
                const float* second_s, const double* sq_norms, const double* eps, double kappa,
                int64_t* labels, double* upper, double* lower) {
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = rows[r];
    const double best = best_s[r], second = second_s[r];
    const double base = sq_norms[i] + kappa;
    const double e = 2.0 * eps[i] + 1e-15 * (base + 2.0 * std::fabs(best));
    const double hi = base - 2.0 * best + e;
    const double lo = base - 2.0 * second - e;
    labels[i] = best_i[r];
    upper[i] = std::sqrt(hi > 0.0 ? hi : 0.0) * (1.0 + 1e-9);
    lower[i] = std::sqrt(lo > 0.0 ? lo : 0.0) * (1.0 - 1e-9);
  }
}

int64_t bound_test(int64_t rows, const int64_t* labels, const double* delta, int64_t first,
                   double first_max, double rest_max, const double* eps, double* upper,
                   double* lower, int64_t* need) {
  int64_t count = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t c = labels[i];
    const double u = upper[i] + delta[c];
    const double l = lower[i] - (c == first ? rest_max : first_max);
    upper[i] = u;
    lower[i] = l;
    if (!(l > u && (l - u) * (l + u) > 4.0 * eps[i] * (1.0 + 1e-9))) need[count++] = i;
  }
  return count;
}

namespace {

// Cluster c's slot among the first `used`, or -1 (slot_of is a sparse set: any stale value
// is safe).
inline int64_t slot_of_cluster(int64_t c, const int32_t* slot_of, const int64_t* clusters,
                               int64_t used) {
  const int64_t s = slot_of[c];
  return s >= 0 && s < used && clusters[s] == c ? s : -1;
}

inline void empty_slot(int64_t s, int64_t d, double* psums, int64_t* pcounts) {
  pcounts[s] = 0;
  std::fill(psums + s * d, psums + (s + 1) * d, 0.0);
}

// Row i of x, times inv[i] (inv null: 1), added to slot s.
inline void add_to_slot(const float* x, int64_t i, int64_t d, const float* inv, int64_t s,
                        double* psums, int64_t* pcounts) {
  ++pcounts[s];
  add_row(x + i * d, inv ? static_cast<double>(inv[i]) : 1.0, psums + s * d, d);
}

}  // namespace

int64_t chunk_sums(const float* x, int64_t rows, int64_t d, const float* inv,
                   const int64_t* labels, int32_t* slot_of, int64_t* clusters, double* psums,
                   int64_t* pcounts) {
  int64_t used = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t c = labels[i];
    int64_t s = slot_of_cluster(c, slot_of, clusters, used);
    if (s < 0) {  // slots are taken in order of first appearance
      s = used++;
      slot_of[c] = static_cast<int32_t>(s);
      clusters[s] = c;
      empty_slot(s, d, psums, pcounts);
    }
    add_to_slot(x, i, d, inv, s, psums, pcounts);
  }
  return used;
}

int64_t chunk_sums_update(const float* x, int64_t rows, int64_t d, const float* inv,
                          const int64_t* old_labels, const int64_t* labels, int8_t* mark,
                          int32_t* slot_of, int64_t* clusters, double* psums, int64_t* pcounts,
                          int64_t used, int64_t cap) {
  std::vector<int64_t> touched;  // the clusters that lost or gained a row, marked in mark
  for (int64_t i = 0; i < rows; ++i) {
    if (old_labels[i] == labels[i]) continue;
    for (const int64_t c : {old_labels[i], labels[i]}) {
      if (!mark[c]) {
        mark[c] = 1;
        touched.push_back(c);
      }
    }
  }
  bool fits = true;
  for (const int64_t c : touched) {
    int64_t s = slot_of_cluster(c, slot_of, clusters, used);
    if (s < 0) {  // a cluster new to the chunk
      if (used == cap) {
        fits = false;
        break;
      }
      s = used++;
      slot_of[c] = static_cast<int32_t>(s);
      clusters[s] = c;
    }
    empty_slot(s, d, psums, pcounts);
  }
  if (fits) {
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t c = labels[i];
      const int64_t s = mark[c] ? slot_of_cluster(c, slot_of, clusters, used) : -1;
      if (s >= 0) add_to_slot(x, i, d, inv, s, psums, pcounts);  // (-1: marked before entry)
    }
  }
  for (const int64_t c : touched) mark[c] = 0;
  // every slot in use once: start the chunk afresh (then at most cap distinct labels)
  return fits ? used : chunk_sums(x, rows, d, inv, labels, slot_of, clusters, psums, pcounts);
}

void fold_sums(const int64_t* clusters, int64_t n_slots, const double* psums,
               const int64_t* pcounts, int64_t d, double* sums, int64_t* counts) {
  for (int64_t s = 0; s < n_slots; ++s) {
    const int64_t c = clusters[s];
    add_to(psums + s * d, sums + c * d, d);
    counts[c] += pcounts[s];
  }
}

void row_sq_dists(const float* x, int64_t n, int64_t d, const double* centroids,
                  const int64_t* labels, double* out) {
  parallel_for(n, grain_for(d), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) out[i] = sq_dist(x + i * d, centroids + labels[i] * d, d);
  });
}

void pp_trials(const float* p, int64_t s, int64_t d, const double* pp, const int64_t* cand,
               int64_t n_cand, const double* d2, double* out, double* colsum) {
  const int64_t blocks = (s + kPPBlock - 1) / kPPBlock;
  std::vector<double> part(static_cast<size_t>(blocks * n_cand), 0.0);
  std::vector<const float*> rows(static_cast<size_t>(n_cand));
  for (int64_t t = 0; t < n_cand; ++t) rows[t] = p + cand[t] * d;
  parallel_for(blocks, grain_for(kPPBlock * n_cand * d), [&](int64_t bb, int64_t be, int) {
    std::vector<float> dots(static_cast<size_t>(n_cand));
    std::vector<double> acc(static_cast<size_t>(n_cand));
    for (int64_t blk = bb; blk < be; ++blk) {
      std::fill(acc.begin(), acc.end(), 0.0);
      pp_block(p, d, pp, cand, rows.data(), n_cand, d2, blk * kPPBlock,
               std::min(s, (blk + 1) * kPPBlock), out, acc.data(), dots.data());
      std::copy(acc.begin(), acc.end(), part.begin() + blk * n_cand);
    }
  });
  for (int64_t t = 0; t < n_cand; ++t) colsum[t] = 0.0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for (int64_t t = 0; t < n_cand; ++t) colsum[t] += part[blk * n_cand + t];
  }
}

}  // namespace cpu
}  // namespace hdlfast
