// Kahn's algorithm over step indexes (dag_order.hpp). Among the steps that are ready, the one
// declared first runs first, so the order is a function of the plan text alone.
#include "plan/dag_order.hpp"

#include <algorithm>
#include <deque>
#include <functional>
#include <optional>
#include <queue>

namespace af::plan {

namespace {

using graph = std::vector<std::vector<std::size_t>>;

/// The shortest cycle through `start` among the steps left in `remaining`, or nullopt.
std::optional<std::vector<std::size_t>> cycle_through(std::size_t start, const graph& next,
                                                      const std::vector<bool>& remaining) {
  constexpr auto unseen = static_cast<std::size_t>(-1);
  std::vector<std::size_t> parent(next.size(), unseen);
  std::deque<std::size_t> queue{start};
  while (!queue.empty()) {
    auto u = queue.front();
    queue.pop_front();
    for (auto v : next[u]) {
      if (!remaining[v]) continue;
      if (v == start) {
        std::vector<std::size_t> cycle{u};
        while (cycle.back() != start)
          cycle.push_back(parent[cycle.back()]);
        std::reverse(cycle.begin(), cycle.end());
        return cycle;
      }
      if (parent[v] != unseen) continue;
      parent[v] = u;
      queue.push_back(v);
    }
  }
  return std::nullopt;
}

} // namespace

dag_order order_steps(const graph& after) {
  const auto n = after.size();
  graph next(n); // next[u]: the steps that run after u
  std::vector<std::size_t> waiting(n, 0);
  for (std::size_t v = 0; v < n; ++v) {
    auto deps = after[v];
    std::sort(deps.begin(), deps.end());
    deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
    waiting[v] = deps.size();
    for (auto u : deps)
      next[u].push_back(v);
  }
  std::priority_queue<std::size_t, std::vector<std::size_t>, std::greater<>> ready;
  for (std::size_t v = 0; v < n; ++v)
    if (waiting[v] == 0) ready.push(v);
  dag_order out;
  std::vector<bool> remaining(n, true);
  while (!ready.empty()) {
    auto u = ready.top();
    ready.pop();
    out.order.push_back(u);
    remaining[u] = false;
    for (auto v : next[u])
      if (--waiting[v] == 0) ready.push(v);
  }
  if (out.order.size() == n) return out;
  for (std::size_t s = 0; s < n && out.cycle.empty(); ++s)
    if (remaining[s])
      if (auto c = cycle_through(s, next, remaining)) out.cycle = std::move(*c);
  return out;
}

} // namespace af::plan
