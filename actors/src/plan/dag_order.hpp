// Ordering a DAG plan's steps: Kahn's algorithm with ties broken by declaration order, and, when
// the steps do not form a DAG, one cycle to name in the error.
#pragma once

#include <cstddef>
#include <vector>

namespace af::plan {

struct dag_order {
  /// Step indexes in execution order; every step when `cycle` is empty.
  std::vector<std::size_t> order;
  /// A cycle in flow order (each step runs after the one before it, the first after the last),
  /// starting at the earliest-declared step that lies on a cycle; empty for a DAG.
  std::vector<std::size_t> cycle;
};

/// `after[i]`: the steps step i runs after (indexes into the same vector; duplicates allowed).
[[nodiscard]] dag_order order_steps(const std::vector<std::vector<std::size_t>>& after);

} // namespace af::plan
