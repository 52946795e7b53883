// k-means kernels (docs §6). The assignment pass runs per worker on row chunks: top2_update on
// each similarity tile, then chunk_sums adds the chunk's rows to its clusters' partial sums,
// and fold_sums adds a chunk's partials to the totals, chunk after chunk in row order. So a
// cluster's sum is, in float64, the sum over chunks of kSumChunk rows in increasing order of
// the chunk's partial sum of its members in increasing row order: bit-identical for any
// thread count, on the numba twins (hdlfast/kmeans/numba_kernels.py) and on the CUDA kernel.
// A later pass may keep a chunk's partials and bring them up to date (chunk_sums_update),
// which re-adds only the clusters whose members changed, in the same order: the same bits.
// top2_update, chunk_sums(_update) and fold_sums are serial (one per worker); the others
// parallel.
#pragma once
#include <cstdint>

namespace hdlfast {
namespace cpu {

constexpr int64_t kSumChunk = 4096;  // rows per partial sum (part of the sums' definition)
constexpr int64_t kPPBlock = 1024;   // rows per partial column sum of pp_trials (likewise)

// For each of the rows x cols tile rows r: the best column (largest tile[r, c] + bias[c],
// bias null: + 0; the smaller column on ties), offered as candidate col0 + c to (best_s[r],
// best_i[r]), which it replaces only when strictly larger (over column blocks visited in
// increasing col0 the smallest index among equal scores wins); second_s[r] becomes the largest
// score of every other candidate seen (equal to best_s[r] when the best is tied). Start from
// best_s = second_s = -inf.
void top2_update(const float* tile, int64_t rows, int64_t cols, const float* bias, int64_t col0,
                 float* best_s, int64_t* best_i, float* second_s);

// For the m scored rows rows[r]: labels[rows[r]] = best_i[r] and Hamerly's bounds from the
// float32 best and second-best scores, each off by at most eps[i] from the exact score:
// with base = sq_norms[i] + kappa and e = 2 eps[i] + 1e-15 (base + 2 |best|) (float64's own
// rounding), upper[i] = sqrt(max(base - 2 best + e, 0)) (1 + 1e-9) and lower[i] =
// sqrt(max(base - 2 second - e, 0)) (1 - 1e-9) (+inf when there is no second centroid).
void set_bounds(const int64_t* rows, int64_t m, const float* best_s, const int64_t* best_i,
                const float* second_s, const double* sq_norms, const double* eps, double kappa,
                int64_t* labels, double* upper, double* lower);

// Hamerly's test on the rows of one chunk after the centroids moved by delta[c] (already
// rounded up; first: the centroid that moved most, first_max its move, rest_max the largest
// move of the others): upper[i] += delta[labels[i]], lower[i] -= rest_max when labels[i] ==
// first, else first_max. A row keeps its label when lower > upper and lower^2 - upper^2 >
// 4 eps[i] (1 + 1e-9) (the float32 argmax picks its centroid again); the others are written
// to need (local row numbers, in order). Returns how many need scoring.
int64_t bound_test(int64_t rows, const int64_t* labels, const double* delta, int64_t first,
                   double first_max, double rest_max, const double* eps, double* upper,
                   double* lower, int64_t* need);

// Add rows x[i, :] * w_i (w_i = inv[i], or 1 when inv is null) of one chunk, in row order, to
// the partial sums of their clusters labels[i] in [0, n_clusters). Slots are taken in order of
// first appearance: clusters[s] is the cluster of slot s, psums (cap, d) and pcounts (cap) its
// sum and count, cap >= the chunk's distinct labels. slot_of (n_clusters) is scratch of any
// contents: slot_of[c] names c's slot only if it is below the slots in use and clusters[] says
// c there (a sparse set), so nothing needs clearing between chunks. Returns the slots in use.
int64_t chunk_sums(const float* x, int64_t rows, int64_t d, const float* inv,
                   const int64_t* labels, int32_t* slot_of, int64_t* clusters, double* psums,
                   int64_t* pcounts);

// The partials of one chunk (the `used` slots filled by chunk_sums or by this function for
// old_labels) brought up to date for its new labels: the slots of every cluster that lost or
// gained a row are reset and refilled from the chunk's rows in row order, the others kept, so
// each cluster's partial is bit for bit what chunk_sums gives for labels (a cluster left with
// no row keeps a slot of count 0 and sum 0, which adds nothing). A cluster new to the chunk
// takes the next slot; when all cap are taken the chunk is summed afresh by chunk_sums. mark
// (n_clusters) is zero on entry and on exit. Returns the slots in use.
int64_t chunk_sums_update(const float* x, int64_t rows, int64_t d, const float* inv,
                          const int64_t* old_labels, const int64_t* labels, int8_t* mark,
                          int32_t* slot_of, int64_t* clusters, double* psums, int64_t* pcounts,
                          int64_t used, int64_t cap);

// sums[c] += psums[s], counts[c] += pcounts[s] for the n_slots slots of one chunk.
void fold_sums(const int64_t* clusters, int64_t n_slots, const double* psums,
               const int64_t* pcounts, int64_t d, double* sums, int64_t* counts);

// out[i] = |x[i] - centroids[labels[i]]|^2 in float64: four lanes (lane l sums the columns
// j = l mod 4 in order), added as (l0 + l1) + (l2 + l3).
void row_sq_dists(const float* x, int64_t n, int64_t d, const double* centroids,
                  const int64_t* labels, double* out);

// One k-means++ step over the sample rows p (s, d) with squared norms pp and current squared
// distances d2 to the chosen centres: out[i, t] = min(d2[i], max(0, -2 p_i . p_{cand[t]} +
// pp[i] + pp[cand[t]])) for the n_cand candidates, the dot products in float32 over eight lanes
// (lane l sums the columns j = l mod 8 of the full blocks of 8 in order, then the tail), the
// rest in float64; colsum[t] = the sum over i of out[i, t], in blocks of kPPBlock rows summed
// in block order.
void pp_trials(const float* p, int64_t s, int64_t d, const double* pp, const int64_t* cand,
               int64_t n_cand, const double* d2, double* out, double* colsum);

}  // namespace cpu
}  // namespace hdlfast
