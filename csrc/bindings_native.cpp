// hdlfast._native: CPU kernels. Plain integers cross the boundary (pointers, shapes); the GIL
// is released around every kernel so several Python worker threads can run them at once.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cpu/parallel.h"
#include "cpu/topk.h"


namespace py = pybind11;
using hdlfast::cpu::finalize;
using hdlfast::cpu::merge_cols;
using hdlfast::cpu::merge_rows;

template <typename T>
static T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

PYBIND11_MODULE(_native, m) {
  m.doc() = "hdlfast CPU kernels (C++, std::thread workers)";
  m.def(
      "merge_rows",
      [](uintptr_t tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0, int64_t col0,
         uintptr_t heap_s, uintptr_t heap_i, int64_t k, bool exclude_self) {
        py::gil_scoped_release nogil;
        merge_rows(ptr<const float>(tile), rows, cols, ld, row0, col0, ptr<float>(heap_s),
                   ptr<int64_t>(heap_i), k, exclude_self);
      },
      "Merge tile rows into the running top-k heaps of rows row0.. (candidates col0..).");
  m.def(
      "merge_cols",
      [](uintptr_t tile, int64_t rows, int64_t cols, int64_t ld, int64_t row0, int64_t col0,
         uintptr_t heap_s, uintptr_t heap_i, int64_t k) {
        py::gil_scoped_release nogil;
        merge_cols(ptr<const float>(tile), rows, cols, ld, row0, col0, ptr<float>(heap_s),
                   ptr<int64_t>(heap_i), k);
      },
      "Merge tile columns into the heaps of rows col0.. (candidates row0..).");
  m.def(
      "finalize",
      [](uintptr_t heap_s, uintptr_t heap_i, int64_t n, int64_t k) {
        py::gil_scoped_release nogil;
        finalize(ptr<float>(heap_s), ptr<int64_t>(heap_i), n, k);
      },
      "Sort every heap: similarity descending, index ascending.");
  m.def("num_threads", &hdlfast::cpu::num_threads, "Worker threads the kernels use.");
}
