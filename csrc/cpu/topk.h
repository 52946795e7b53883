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

// Merge a gathered tile: tile[r, c] goes into the heap of row row_ids[r] as candidate database
// index col_ids[c] (the inverted-file search multiplies the queries probing a list by the
// list's rows, neither contiguous). With exclude_self, col_ids[c] == self_ids[r] (the query's
// own index, which is its heap row unless a subset of queries is searched) is skipped.
void merge_listed(const float* tile, int64_t rows, int64_t cols, int64_t ld,
                  const int64_t* row_ids, const int64_t* self_ids, const int64_t* col_ids,
                  float* heap_s, int64_t* heap_i, int64_t k, bool exclude_self);

// Sort every heap into its final order (sim descending, index ascending).
void finalize(float* heap_s, int64_t* heap_i, int64_t n, int64_t k);

// Large k: a reservoir per row instead of a heap (the structure faiss uses for large k).
// Candidates are 64-bit keys, (order-preserving bits of sim) << 32 | (2^32 - 1 - index), so
// a larger key is a better pair in the tie rule's order and a key names its pair. Row r's
// reservoir is keys[r * cap ..], count[r] keys long; a candidate enters when its key beats
// thr[r] (0 at the start), and a full reservoir keeps its best k by selection and raises
// thr[r] to the k-th key: O(1) per surviving candidate instead of the heap's O(log k).
// Indices must be < 2^32. cap >= k + 1.
void reservoir_merge(const float* tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0,
                     int64_t col0, uint64_t* keys, int64_t cap, int64_t* count, uint64_t* thr,
                     int64_t k, bool exclude_self);

// The best k of each reservoir, sorted (sim descending, index ascending), decoded into
// out_s / out_i (rows x k). Serial (the caller runs one block of rows per core); the
// reservoirs are reordered.
void reservoir_finish(uint64_t* keys, int64_t rows, int64_t cap, const int64_t* count,
                      int64_t k, float* out_s, int64_t* out_i);

}  // namespace cpu
}  // namespace hdlfast
