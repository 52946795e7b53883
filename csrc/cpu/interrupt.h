// Cooperative interruption of long kernels (Ctrl-C). The kernels run without the GIL, so
// Python cannot deliver KeyboardInterrupt until they return; a kernel that may run for
// seconds calls `requested()` between units of work (a propagation sub-level, a few thousand
// sequential steps) and returns early when it says so. The callback itself (the binding's:
// take the GIL, run Python's signal handlers) is called at most every 20 ms.
#pragma once
#include <chrono>
#include <functional>
#include <utility>

namespace hdlfast {
namespace cpu {

class Interrupt {
 public:
  Interrupt() = default;  // never interrupted
  explicit Interrupt(std::function<bool()> poll) : poll_(std::move(poll)) {}

  bool requested() {
    if (stopped_ || !poll_) return stopped_;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(20)) return false;
    last_ = now;
    stopped_ = poll_();
    return stopped_;
  }

 private:
  std::function<bool()> poll_;
  std::chrono::steady_clock::time_point last_{};
  bool stopped_ = false;
};

}  // namespace cpu
}  // namespace hdlfast
