// Arrays at the C++ boundary of hdlfast._cuda: CUDA arrays (cupy arrays, torch CUDA tensors:
// anything with __cuda_array_interface__), never raw addresses. Each argument is checked
// before any launch, in this order: that it is a CUDA array at all, its dtype, number of
// dimensions and shape, C-contiguity, writability for outputs; then, for all of a launch's
// arrays together, that their memory is device memory of the current device. A wrong one raises TypeError or ValueError naming it.
// Row blocks are passed as slices (contiguous views), so no address arithmetic is done in
// Python. torch's interface has no bfloat16 type string: bfloat16 arrays cross as their
// int16 bit view ("<i2"), which only the float inputs accept, as bfloat16.
#pragma once

#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace hdlfast {
namespace cuda_args {

namespace py = pybind11;

constexpr int64_t kAny = -1;  // a dimension of any size

// dtype codes of the float inputs (csrc/cuda/*.cuh)
constexpr int kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2;

struct View {
  void* data = nullptr;
  std::string typestr;
  std::vector<int64_t> shape;
  bool readonly = false;
  int64_t size = 1;
};

inline std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

// The interface of obj, its shape and C-contiguity checked (strides of extent-1 dimensions
// are ignored, as numpy does).
inline View view(py::handle obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw py::type_error(std::string(name) + " must be a CUDA array (cupy, or a torch tensor "
                         "on a CUDA device), got " + type_name(obj));
  const py::dict cai = obj.attr("__cuda_array_interface__");
  View v;
  const py::tuple data = cai["data"].cast<py::tuple>();
  v.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  v.readonly = data[1].cast<bool>();
  v.typestr = cai["typestr"].cast<std::string>();
  for (const auto s : cai["shape"].cast<py::tuple>()) v.shape.push_back(s.cast<int64_t>());
  for (const int64_t s : v.shape) v.size *= s;
  if (cai.contains("strides") && !cai["strides"].is_none() && v.size > 0) {
    const py::tuple strides = cai["strides"].cast<py::tuple>();
    int64_t expect = std::stoll(v.typestr.substr(2));  // the item size in bytes
    for (int64_t i = static_cast<int64_t>(v.shape.size()) - 1; i >= 0; --i) {
      if (v.shape[i] != 1 && strides[i].cast<int64_t>() != expect)
        throw py::value_error(std::string(name) + " must be C-contiguous (a strided view "
                              "reached the kernel boundary)");
      expect *= v.shape[i];
    }
  }
  return v;
}

// Its memory is device (or managed) memory of the current device. Without a usable driver
// this fails too, so no launch is ever attempted on an unchecked address.
inline void on_current_device(const View& v, const char* name) {
  if (v.size == 0) return;
  cudaPointerAttributes attr;
  const cudaError_t err = cudaPointerGetAttributes(&attr, v.data);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw py::value_error(std::string(name) + " is not CUDA device memory (" +
                          cudaGetErrorString(err) + ")");
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw py::value_error(std::string(name) + " is host memory, not memory of a CUDA device");
  int current = -1;
  cudaGetDevice(&current);
  if (attr.device != current)
    throw py::value_error(std::string(name) + " is on CUDA device " +
                          std::to_string(attr.device) + ", the current device is " +
                          std::to_string(current));
}

inline void check_shape(const View& v, const char* name, std::initializer_list<int64_t> shape) {
  if (v.shape.size() != shape.size())
    throw py::value_error(std::string(name) + " must have " + std::to_string(shape.size()) +
                          " dimension(s), got " + std::to_string(v.shape.size()));
  size_t i = 0;
  for (const int64_t s : shape) {
    if (s != kAny && v.shape[i] != s)
      throw py::value_error(std::string(name) + " has size " + std::to_string(v.shape[i]) +
                            " in dimension " + std::to_string(i) + ", expected " +
                            std::to_string(s));
    ++i;
  }
}

template <typename T>
const char* typestr() {
  if (std::is_same<T, float>::value) return "<f4";
  if (std::is_same<T, double>::value) return "<f8";
  if (std::is_same<T, int64_t>::value) return "<i8";
  if (std::is_same<T, int32_t>::value) return "<i4";
  if (std::is_same<T, int8_t>::value) return "|i1";
  if (std::is_same<T, uint8_t>::value) return "|u1";
  return "?";
}

// Rows of a 2-D array, or the length of a 1-D one, read before the full check (which the
// kernel's own argument does).
inline int64_t dim(py::handle obj, const char* name, size_t i) {
  const View v = view(obj, name);
  if (v.shape.size() <= i)
    throw py::value_error(std::string(name) + " must have at least " + std::to_string(i + 1) +
                          " dimension(s), got " + std::to_string(v.shape.size()));
  return v.shape[i];
}

// The arguments of one launch: each accessor checks an array's structure (dtype, shape,
// C-contiguity, writability) and returns its device data; on_device() then checks that every
// one of them lives on the current device, so that a structural mistake in any argument is
// reported as such, and no launch sees an address that was not checked.
class Args {
 public:
  template <typename T>
  const T* in(py::handle obj, const char* name, std::initializer_list<int64_t> shape) {
    return static_cast<const T*>(typed<T>(obj, name, shape, false));
  }

  template <typename T>
  T* out(py::handle obj, const char* name, std::initializer_list<int64_t> shape) {
    return static_cast<T*>(typed<T>(obj, name, shape, true));
  }

  // A float input of the kernels (float32, float16, or bfloat16 as its int16 bit view); its
  // dtype code into *dtype.
  const void* float_in(py::handle obj, const char* name, std::initializer_list<int64_t> shape,
                       int* dtype) {
    View v = view(obj, name);
    if (v.typestr == "<f4") {
      *dtype = kFloat32;
    } else if (v.typestr == "<f2") {
      *dtype = kFloat16;
    } else if (v.typestr == "<i2") {
      *dtype = kBFloat16;
    } else {
      throw py::type_error(std::string(name) + " must be a float32, float16 or bfloat16 CUDA "
                           "array, got type " + v.typestr);
    }
    check_shape(v, name, shape);
    return keep(std::move(v), name);
  }

  // A workspace (a 1-D uint8 CUDA array) and its size in bytes.
  void* workspace(py::handle obj, size_t* bytes) {
    uint8_t* p = out<uint8_t>(obj, "workspace", {kAny});
    *bytes = static_cast<size_t>(dim(obj, "workspace", 0));
    return p;
  }

  void on_device() const {
    for (const auto& [v, name] : seen_) on_current_device(v, name.c_str());
  }

 private:
  template <typename T>
  void* typed(py::handle obj, const char* name, std::initializer_list<int64_t> shape,
              bool out) {
    View v = view(obj, name);
    if (v.typestr != typestr<T>())
      throw py::type_error(std::string(name) + " must be a CUDA array of type " +
                           typestr<T>() + ", got " + v.typestr);
    check_shape(v, name, shape);
    if (out && v.readonly) throw py::value_error(std::string(name) + " must be writable");
    return keep(std::move(v), name);
  }

  void* keep(View v, const char* name) {
    void* p = v.data;
    seen_.emplace_back(std::move(v), name);
    return p;
  }

  std::vector<std::pair<View, std::string>> seen_;
};

inline cudaStream_t stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace cuda_args
}  // namespace hdlfast
