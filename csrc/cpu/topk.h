// Running top-k merge of similarity tiles (CPU). One heap of k (sim, index) pairs per row,
// the worst pair at the root; order = sim descending, then index ascending (docs: tie rules).
#pragma once
#include <cstdint>

namespace hdlfast {
namespace cpu {

// merge_rows and merge_cols are serial (the caller runs one per core on disjoint heaps);
// finalize is parallel over rows.

// Merge tile[r, c] (rows x cols, row stride ld) into the heaps of rows row0 + r, as candidate
// database index col0 + c. With exclude_self, the pair with col0 + c == row0 + r is skipped.
void merge_rows(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0,
                int64_t col0, float* heap_s, int64_t* heap_i, int64_t k, bool exclude_self);

// Merge the transposed tile: column c goes into the heap of row col0 + c with candidate
// index row0 + r (the second half of a symmetric self-graph tile).
void merge_cols(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0,
                int64_t col0, float* heap_s, int64_t* heap_i, int64_t k);

// Sort every heap into its final order (sim descending, index ascending).
void finalize(float* heap_s, int64_t* heap_i, int64_t n, int64_t k);

}  // namespace cpu
}  // namespace hdlfast
