// Arrays at the C++ boundary of hdlfast._native: numpy arrays, never raw pointers. Each
// argument is checked before any work (dtype, number of dimensions, shape, C-contiguity,
// writability for outputs) and a wrong one raises TypeError or ValueError naming it, so a
// wrong dtype or a strided view can no longer reach a kernel as a bare address. Index
// values are range-checked where that costs no more than the kernel's pass (a whole graph's
// indices are checked once, by the Python caller, not on every chunked call).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

namespace hdlfast {
namespace args {

namespace py = pybind11;

constexpr int64_t kAny = -1;  // a dimension of any size

template <typename T>
const char* dtype_name() {
  if (std::is_same<T, float>::value) return "float32";
  if (std::is_same<T, double>::value) return "float64";
  if (std::is_same<T, int64_t>::value) return "int64";
  if (std::is_same<T, uint64_t>::value) return "uint64";
  if (std::is_same<T, int32_t>::value) return "int32";
  if (std::is_same<T, uint32_t>::value) return "uint32";
  if (std::is_same<T, int8_t>::value) return "int8";
  return "?";
}

// The data of a C-contiguous array of T with the given shape (kAny: any size); throws
// TypeError / ValueError naming `name`. `out`: the kernel writes it, so it must be writable.
template <typename T>
T* data(const py::array& a, const char* name, std::initializer_list<int64_t> shape,
        bool out = false) {
  if (!py::isinstance<py::array_t<T>>(a))
    throw py::type_error(std::string(name) + " must be a " + dtype_name<T>() +
                         " array, got dtype " + py::str(a.dtype()).cast<std::string>());
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
    throw py::value_error(std::string(name) + " must have " + std::to_string(shape.size()) +
                          " dimension(s), got " + std::to_string(a.ndim()));
  py::ssize_t i = 0;
  for (const int64_t s : shape) {
    if (s != kAny && a.shape(i) != s)
      throw py::value_error(std::string(name) + " has size " + std::to_string(a.shape(i)) +
                            " in dimension " + std::to_string(i) + ", expected " +
                            std::to_string(s));
    ++i;
  }
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous (a strided view reached "
                          "the kernel boundary)");
  if (out && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

template <typename T>
const T* in(const py::array& a, const char* name, std::initializer_list<int64_t> shape) {
  return data<T>(a, name, shape, false);
}

template <typename T>
T* out(const py::array& a, const char* name, std::initializer_list<int64_t> shape) {
  return data<T>(a, name, shape, true);
}

// Every one of the `count` indices at p is in [0, n): for indices a kernel dereferences whose
// scan costs no more than the kernel's own pass over them. Throws ValueError naming `name`.
inline void in_range(const int64_t* p, int64_t count, int64_t n, const char* name) {
  for (int64_t i = 0; i < count; ++i) {
    if (p[i] < 0 || p[i] >= n)
      throw py::value_error(std::string(name) + " holds " + std::to_string(p[i]) +
                            " at position " + std::to_string(i) + ", outside [0, " +
                            std::to_string(n) + ")");
  }
}

}  // namespace args
}  // namespace hdlfast
