// Private: the one wall clock of the simulator, for the report's wall time and rate. Simulated
// code never sees it (tests/runtime/determinism_test.cpp allows only wall_clock.cpp).
#pragma once

#include <cstdint>

namespace af::sim::detail {

/// Seconds of real time since construction.
class stopwatch {
public:
  stopwatch();
  [[nodiscard]] double seconds() const;

private:
  std::int64_t start_ns_;
};

} // namespace af::sim::detail
