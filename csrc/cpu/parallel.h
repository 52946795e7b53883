// parallel_for over [0, n) in contiguous ranges, one per worker thread.
//
// Plain std::thread with a blocking join, not OpenMP: hdlfast alternates its kernels with BLAS
// calls (numpy matmul), and OpenMP worker threads that spin-wait after a parallel region steal
// the cores BLAS needs (measured on 2 cores: tile products 105 -> 160 GFLOP/s without them).
// Threads that block cost one thread start per call, negligible next to the work.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace hdlfast {
namespace cpu {

// Worker count: HDLFAST_NUM_THREADS, else OMP_NUM_THREADS (read at every call: they may
// change between calls), else the hardware's (read once: on Linux each query reads sysfs, a
// few microseconds that phase A, with one small parallel loop per sub-level, would pay a
// million times on a long propagation).
inline int num_threads() {
  for (const char* var : {"HDLFAST_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  static const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return hardware;
}

// The grain (items per worker) at which items costing `cost` elementary steps each give every
// worker at least 2^18 steps: below that, starting a thread (tens of microseconds) costs more
// than the work it takes over, so small calls run on the calling thread.
inline int64_t grain_for(int64_t cost, int64_t at_least = 1) {
  return std::max<int64_t>(at_least, (int64_t{1} << 18) / std::max<int64_t>(cost, 1));
}

// fn(begin, end, worker) on contiguous ranges; ranges are multiples of `grain` except the last.
// An exception in any range (std::bad_alloc, ...) is rethrown here once every worker has
// joined, so it reaches Python as an exception instead of terminating the process; the
// first one wins. A thread that cannot be started runs its range on the calling thread.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn fn) {
  const int64_t chunks = (n + grain - 1) / grain;
  const int64_t workers = chunks <= 1 ? chunks : std::min<int64_t>(num_threads(), chunks);
  if (workers <= 1) {
    if (n > 0) fn(int64_t{0}, n, 0);
    return;
  }
  const int64_t per = (chunks + workers - 1) / workers;
  std::mutex guard;
  std::exception_ptr first;
  auto run = [&](int64_t b, int64_t e, int w) {
    try {
      fn(b, e, w);
    } catch (...) {
      std::lock_guard<std::mutex> lock(guard);
      if (!first) first = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int64_t w = 1; w < workers; ++w) {
    const int64_t b = std::min(n, w * per * grain), e = std::min(n, (w + 1) * per * grain);
    if (b >= e) continue;
    try {
      pool.emplace_back([=, &run] { run(b, e, static_cast<int>(w)); });
    } catch (const std::system_error&) {
      run(b, e, static_cast<int>(w));
    }
  }
  run(int64_t{0}, std::min(n, per * grain), 0);
  for (auto& t : pool) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace cpu
}  // namespace hdlfast
