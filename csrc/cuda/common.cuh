// Shared by the CUDA sources: error checks that throw std::runtime_error (turned into Python
// RuntimeError by the bindings) and argument checks.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace hdlfast {
namespace cuda {
namespace detail {

inline void check_cuda(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so later calls start clean
    throw std::runtime_error(std::string("hdlfast CUDA error: ") + cudaGetErrorString(err) +
                             " (" + what + ", " + file + ":" + std::to_string(line) + ")");
  }
}

inline void require(bool ok, const std::string& msg) {
  if (!ok) throw std::runtime_error("hdlfast._cuda: " + msg);
}

}  // namespace detail
}  // namespace cuda
}  // namespace hdlfast

#define HDLFAST_CUDA_CHECK(expr) \
  ::hdlfast::cuda::detail::check_cuda((expr), #expr, __FILE__, __LINE__)
#define HDLFAST_CUDA_CHECK_LAUNCH(name) \
  ::hdlfast::cuda::detail::check_cuda(cudaGetLastError(), "launch " name, __FILE__, __LINE__)
