// The `af demo` workload: a coordinator agent fans tasks out to N worker agents, each of which
// asks two peers before replying; the coordinator reduces the answers and checks them.
#pragma once

#include "af/error.hpp"
#include "af/node.hpp"

#include <cstdint>
#include <iosfwd>

namespace af::demo {

/// Spawns "demo.service": each af.v1.DemoRequest it is asked spawns a coordinator with its
/// workers, which answers with af.v1.DemoResult and then stops together with its workers.
expected<agent_ref> spawn_service(node& n);

/// Spawns "demo.progress", which prints the coordinators' progress to `out`.
expected<agent_ref> spawn_progress(node& n, std::ostream& out, bool tty);

/// Number of primes below `limit` by a sieve (the independent check of the demo's answer).
std::uint64_t count_primes_below(std::uint64_t limit);

/// Number of primes in [lo, hi) by trial division (the work the agents do).
std::uint64_t count_primes_in(std::uint64_t lo, std::uint64_t hi);

} // namespace af::demo
