// HDL labeling on CUDA (docs §2-3): reverse graph, phase A (levels schedule), phase B
// (bounded depth-first label search) and kNN-DV votes. The CPU twin is csrc/cpu/hdl.cpp and both
// give identical results: votes are float64 sums per class in voter order, winner = largest
// vote, then largest raw similarity sum, then smallest class id; confidence = vote / total.
//
// Plain C++ interface. All pointers are device pointers to row-major contiguous arrays; the
// graph is idx (n, k) int64 and sims (n, k) float32 with indices in [0, n) and finite
// similarities (validated by the caller); labels are int64, -1 = unlabeled, < 2^31 - 1; n < 2^31.
// Every launcher is asynchronous on `stream` except propagate_levels, which synchronises it
// once per level. Scratch memory comes from a caller-provided workspace (256-byte aligned) of
// the size the matching *_workspace_bytes function returns; those query the current device
// (CUB), so they need a working CUDA device. Errors throw std::runtime_error.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace hdlfast {
namespace cuda {

// Reverse graph as CSR: indptr (n + 1, int64) and src (rows * k, int32) with the sources r that
// list t (t in idx[r, :], once per occurrence) in src[indptr[t]:indptr[t + 1]], ascending.
size_t reverse_csr_workspace_bytes(int64_t rows, int64_t k, int64_t n);
void reverse_csr(const int64_t* idx, int64_t rows, int64_t k, int64_t n, int64_t* indptr,
                 int32_t* src, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Phase A, schedule "levels", in place on labels / conf / level / prov (provenance 1, level h).
// Returns the number of levels. Synchronises `stream` once per level (frontier size).
size_t propagate_levels_workspace_bytes(int64_t n, int64_t k);
int64_t propagate_levels(const int64_t* idx, const float* sims, int64_t n, int64_t k,
                         const int64_t* indptr, const int32_t* src, int64_t* labels, double* conf,
                         int32_t* level, int8_t* prov, bool uniform, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream);

// Phase B from every target independently (one thread per target), out_lab -1 where the
// search failed. nnz = indptr[n]. Targets are processed in chunks of `chunk` (the per-target
// scratch, 16 * min(max_visits, n) bytes each, is sized for one chunk); chunk = 0 gives the
// fixed part of the workspace only.
size_t search_workspace_bytes(int64_t n, int64_t k, int64_t nnz, int64_t chunk,
                              int64_t max_visits);
void search(const int64_t* idx, const float* sims, int64_t n, int64_t k, const int64_t* indptr,
            const int32_t* src, int64_t nnz, const int64_t* labels, const int64_t* targets,
            int64_t n_targets, int64_t max_visits, bool uniform, int64_t* out_lab,
            double* out_conf, int64_t* out_steps, int64_t* out_cycles, int64_t chunk,
            void* workspace, size_t workspace_bytes, cudaStream_t stream);

// kNN-DV: row r votes over db_labels[nbr_idx[r, :]] weighted by nbr_sims[r, :] (rows, k).
void vote_rows(const int64_t* nbr_idx, const float* nbr_sims, int64_t rows, int64_t k,
               const int64_t* db_labels, bool uniform, int64_t* out_lab, double* out_conf,
               cudaStream_t stream);

}  // namespace cuda
}  // namespace hdlfast
