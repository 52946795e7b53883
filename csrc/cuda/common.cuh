// Shared by the CUDA sources: error checks that throw std::runtime_error (turned into Python
// RuntimeError by the bindings), argument checks, and small helpers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

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

namespace hdlfast {
namespace cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// An attribute of the current device (SM count, L2 size, shared-memory limit).
inline int device_attr(cudaDeviceAttr attr) {
  int device = 0, v = 0;
  HDLFAST_CUDA_CHECK(cudaGetDevice(&device));
  HDLFAST_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, device));
  return v;
}

// Let `kernel` launch with `bytes` of dynamic shared memory on the current device. The limit
// is a per-function, per-device attribute that another host thread may be launching under, so
// it is only ever raised (under a lock), never set lower: a concurrent launch that needs less
// keeps working. Call before each launch; after the first it costs a lock and a map lookup.
template <typename Kernel>
void reserve_dynamic_smem(Kernel* kernel, size_t bytes) {
  static std::mutex mu;
  static std::map<std::pair<int, const void*>, size_t> limits;
  int device = 0;
  HDLFAST_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  size_t& have = limits[{device, reinterpret_cast<const void*>(kernel)}];
  if (bytes > have) {
    HDLFAST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            int(bytes)));
    have = bytes;
  }
}

// Element loads of the three input dtypes (float32, float16, bfloat16) as float.
template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

}  // namespace cuda
}  // namespace hdlfast
