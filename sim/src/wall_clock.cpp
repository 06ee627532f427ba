#include "wall_clock.hpp"

#include <chrono>

namespace af::sim::detail {

namespace {
std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
} // namespace

stopwatch::stopwatch() : start_ns_(now_ns()) {}

double stopwatch::seconds() const { return static_cast<double>(now_ns() - start_ns_) * 1e-9; }

} // namespace af::sim::detail
