#include "af/services.hpp"

namespace af {

namespace {
std::uint64_t splitmix64(std::uint64_t& x) noexcept {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
__extension__ typedef unsigned __int128 u128;
constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
} // namespace

void rng::reseed(std::uint64_t seed) noexcept {
  for (auto& w : s_)
    w = splitmix64(seed);
}

std::uint64_t rng::next_u64() noexcept {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

std::uint64_t rng::uniform(std::uint64_t bound) noexcept {
  if (bound == 0) return 0;
  // Lemire's nearly divisionless method.
  u128 m = static_cast<u128>(next_u64()) * bound;
  auto low = static_cast<std::uint64_t>(m);
  if (low < bound) {
    const std::uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = static_cast<u128>(next_u64()) * bound;
      low = static_cast<std::uint64_t>(m);
    }
  }
  return static_cast<std::uint64_t>(m >> 64);
}

double rng::uniform01() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

std::uint64_t seeded_random_source::next_u64() {
  std::lock_guard<std::mutex> guard{mtx_};
  return rng_.next_u64();
}

id_generator::id_generator(std::shared_ptr<const clock> clk, std::uint64_t seed)
    : clock_(std::move(clk)), rng_(seed) {}

ulid id_generator::next() {
  const auto now_ms = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_->now().time_since_epoch())
          .count());
  std::lock_guard<std::mutex> guard{mtx_};
  if (now_ms > last_ms_) {
    last_ms_ = now_ms;
    hi_ = static_cast<std::uint16_t>(rng_.next_u64());
    // Keep headroom so increments within one millisecond never overflow in practice.
    lo_ = rng_.next_u64() >> 1;
  } else if (++lo_ == 0) {
    ++hi_;
  }
  return ulid::from_parts(last_ms_, hi_, lo_);
}

time_point manual_clock::now() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return now_;
}

duration manual_clock::monotonic() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return now_.time_since_epoch();
}

void manual_clock::advance(duration d) {
  std::lock_guard<std::mutex> guard{mtx_};
  now_ += d;
}

void manual_clock::set(time_point t) {
  std::lock_guard<std::mutex> guard{mtx_};
  now_ = t;
}

services services::real(std::uint64_t seed) {
  if (seed == 0) seed = entropy_seed();
  services s;
  s.seed = seed;
  s.clk = std::make_shared<real_clock>();
  s.random = std::make_shared<seeded_random_source>(seed);
  s.ids = std::make_shared<id_generator>(s.clk, seed ^ 0x5bd1e995u);
  return s;
}

} // namespace af
