// Labeling kernels on a kNN graph (docs §2-3): votes, reverse graph, HDL phase A
// (level-synchronous propagation) and phase B (bounded depth-first search with cycle detection).
// Graph: idx (n, k) int64 and sims (n, k) float32, row-major. Labels int64, -1 = unlabeled.
#pragma once
#include <cstdint>

#include "cpu/interrupt.h"

namespace hdlfast {
namespace cpu {

// Counting sort of the in-edges: indptr (n + 1) first, then src with t in idx[src, :] for the
// entries indptr[t]..indptr[t+1], sources ascending (int32: n < 2^31, checked in Python).
// Workers own ranges of targets.
void reverse_indptr(const int64_t* idx, int64_t rows, int64_t k, int64_t n, int64_t* indptr);
void reverse_fill(const int64_t* idx, int64_t rows, int64_t k, int64_t n, const int64_t* indptr,
                  int32_t* src);

// kNN-DV: row r votes over db_labels[nbr_idx[r, :]] weighted by nbr_sims[r, :].
void vote_rows(const int64_t* nbr_idx, const float* nbr_sims, int64_t rows, int64_t k,
               const int64_t* db_labels, bool uniform, int64_t* out_lab, double* out_conf);

// Phase A, schedule "levels", in place (provenance 1, level h). Returns the number of levels,
// or -1 when `stop` asked it to stop (between sub-levels; the outputs are then partial).
int64_t propagate_levels(const int64_t* idx, const float* sims, int64_t n, int64_t k,
                         const int64_t* indptr, const int32_t* src, int64_t* labels, double* conf,
                         int32_t* level, int8_t* prov, bool uniform, Interrupt& stop);

// Phase A, schedule "sequential": one point at a time, the unlabeled point with the most labeled
// neighbours (then vote purity, similarity sum, smaller index), updating after each; level =
// step. Returns the number of steps, or -1 when `stop` asked it to stop.
int64_t propagate_sequential(const int64_t* idx, const float* sims, int64_t n, int64_t k,
                             const int64_t* indptr, const int32_t* src, int64_t* labels,
                             double* conf, int32_t* level, int8_t* prov, bool uniform,
                             Interrupt& stop);

// Phase B from every target independently; out_lab -1 where the search failed.
void search(const int64_t* idx, const float* sims, int64_t n, int64_t k, const int64_t* indptr,
            const int32_t* src, const int64_t* labels, const int64_t* targets,
            int64_t n_targets, int64_t max_visits, bool uniform, int64_t* out_lab,
            double* out_conf, int64_t* out_steps, int64_t* out_cycles);

}  // namespace cpu
}  // namespace hdlfast
