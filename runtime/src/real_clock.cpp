// The only place in the runtime that reads the machine's clocks and OS entropy (the determinism
// check in tests/runtime/determinism_test.cpp allows this file).
#include "af/services.hpp"

#include <random>

namespace af {

time_point real_clock::now() const {
  return std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
}

duration real_clock::monotonic() const {
  return std::chrono::duration_cast<duration>(std::chrono::steady_clock::now().time_since_epoch());
}

std::uint64_t entropy_seed() {
  std::random_device rd;
  std::uint64_t seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return seed == 0 ? 1 : seed;
}

} // namespace af
