// The node's deterministic services: clock, random source and id generator. Actor code takes time,
// randomness and ids only from these (ARCHITECTURE.md invariant 1); the simulator swaps them.
#pragma once

#include "af/ulid.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>

namespace af {

/// Nanoseconds since the Unix epoch, on the node's clock (real or virtual).
using time_point = std::chrono::sys_time<std::chrono::nanoseconds>;
using duration = std::chrono::nanoseconds;

class clock {
public:
  virtual ~clock() = default;
  /// Wall time as the node sees it (virtual under the simulator).
  [[nodiscard]] virtual time_point now() const = 0;
  /// A monotonic reading for measuring intervals (virtual under the simulator).
  [[nodiscard]] virtual duration monotonic() const = 0;
};

/// A source of 64-bit random words; the node's root of randomness.
class random_source {
public:
  virtual ~random_source() = default;
  [[nodiscard]] virtual std::uint64_t next_u64() = 0;
};

/// A small, fast, seedable generator (xoshiro256**): each agent owns one, seeded from the node's
/// random source when it is spawned, so an agent's draws depend only on the seed and spawn order.
class rng {
public:
  explicit rng(std::uint64_t seed = 0) noexcept { reseed(seed); }
  void reseed(std::uint64_t seed) noexcept;
  [[nodiscard]] std::uint64_t next_u64() noexcept;
  /// Uniform integer in [0, bound) without modulo bias; bound 0 returns 0.
  [[nodiscard]] std::uint64_t uniform(std::uint64_t bound) noexcept;
  /// Uniform double in [0, 1).
  [[nodiscard]] double uniform01() noexcept;

  // UniformRandomBitGenerator, so <random> distributions work with it.
  using result_type = std::uint64_t;
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return ~result_type{0}; }
  result_type operator()() noexcept { return next_u64(); }

private:
  std::uint64_t s_[4]{};
};

/// Generates ULIDs that are strictly increasing within one generator (monotonic within a node):
/// inside the same millisecond, or if the clock steps back, the random part is incremented.
class id_generator {
public:
  id_generator(std::shared_ptr<const clock> clk, std::uint64_t seed);
  [[nodiscard]] ulid next();

private:
  std::shared_ptr<const clock> clock_;
  std::mutex mtx_;
  rng rng_;
  std::uint64_t last_ms_ = 0;
  std::uint16_t hi_ = 0;
  std::uint64_t lo_ = 0;
};

/// A random source that is thread-safe (the node's root: agents seed their own `rng` from it).
class seeded_random_source final : public random_source {
public:
  explicit seeded_random_source(std::uint64_t seed) : rng_(seed) {}
  std::uint64_t next_u64() override;

private:
  std::mutex mtx_;
  rng rng_;
};

/// The real wall clock and monotonic clock of the machine.
class real_clock final : public clock {
public:
  [[nodiscard]] time_point now() const override;
  [[nodiscard]] duration monotonic() const override;
};

/// A clock that only moves when told to: for tests and the simulator.
class manual_clock final : public clock {
public:
  explicit manual_clock(time_point start = time_point{}) : now_(start) {}
  [[nodiscard]] time_point now() const override;
  [[nodiscard]] duration monotonic() const override;
  void advance(duration d);
  void set(time_point t);

private:
  mutable std::mutex mtx_;
  time_point now_;
};

/// 64 bits of OS entropy, for seeding when the configuration gives no seed (rng.seed = 0).
[[nodiscard]] std::uint64_t entropy_seed();

/// The services a node hands to its actors.
struct services {
  std::shared_ptr<const clock> clk;
  std::shared_ptr<random_source> random;
  std::shared_ptr<id_generator> ids;
  std::uint64_t seed = 0;

  /// Real clock, random source and ids seeded with `seed` (0: from OS entropy).
  static services real(std::uint64_t seed);
};

} // namespace af
