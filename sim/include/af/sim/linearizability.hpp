// Linearizability of a key-value history (kv_history.hpp) against a register with
// compare-and-set, key by key: is there one order of the operations, each placed between its
// call and its return, in which every read sees the latest write and every cas's outcome is
// right? The search is Wing & Gong's, with Lowe's memoization of (operations placed, value).
#pragma once

#include "af/sim/kv_history.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace af::sim {

struct linearizability_options {
  /// Search states (memoized configurations) one key may visit before the check gives up
  /// undecided: a bound on time and memory for pathological histories.
  std::uint64_t max_states_per_key = 2'000'000;
};

/// The verdict on one key.
struct key_verdict {
  std::string key;
  bool ok = true;           ///< a valid order exists (false also when undecided)
  bool decided = true;      ///< false: the search hit max_states_per_key
  std::size_t ops = 0;      ///< operations of the key in the history
  std::size_t unknown = 0;  ///< of them without a return (outcome unknown)
  std::uint64_t states = 0; ///< configurations the search visited
  /// Why no order exists: the longest valid prefix found, the value then, and the operation
  /// that could not take effect before it returned.
  std::string explanation;
  /// Virtual time (ns) of the violation: the return of the operation named last in the
  /// explanation (-1 when the key is linearizable or the search was undecided).
  std::int64_t at = -1;
};

struct linearizability_result {
  bool ok = true;
  std::vector<key_verdict> keys; ///< sorted by key
  std::size_t ops = 0, unknown = 0;
  std::uint64_t states = 0;

  /// The first key that failed, or nullptr.
  [[nodiscard]] const key_verdict* first_failure() const;
  /// "linearizable: 3 keys, 500 ops (4 unknown), 1203 states" or "key k1: ...".
  [[nodiscard]] std::string summary() const;
};

/// Checks every key separately (linearizability is compositional per object). Semantics: a
/// missing key reads ""; put(v) sets v; cas(e, v) sets v iff the value is e (ok) and otherwise
/// changes nothing (!ok); a get changes nothing. An operation without `ret` may take effect at
/// any time after its call, or never. Operations whose intervals touch (a return and a call at
/// the same virtual instant) count as concurrent.
[[nodiscard]] linearizability_result check_linearizable(const std::vector<kv_op>& history,
                                                        const linearizability_options& opts = {});

} // namespace af::sim
