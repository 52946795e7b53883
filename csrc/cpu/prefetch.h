// Software prefetch of a span of memory, one request per 64-byte line. On the machines
// measured (a 2-core EPYC virtual machine) the hardware prefetcher keeps too few loads in
// flight on a stream of rows and cannot foresee scattered rows at all: a column-sum pass over
// 40 MB ran 3.7x faster with it, the k-means update 4x.
#pragma once
#include <cstdint>

namespace hdlfast {
namespace cpu {

inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* b = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(b + off);
}

}  // namespace cpu
}  // namespace hdlfast
