// Private: the key-value client workload of a run (scenario `kv_clients:`). Each client is an
// agent (`sim.kv_client`) on a simulated node that asks the Raft members' af.cluster.raft to put,
// get and compare-and-set keys, one operation at a time; the book below is the run's record of
// what every client saw (the history), kept outside the nodes so crashes do not erase it.
#pragma once

#include "af/sim/kv_history.hpp"
#include "af/sim/kv_workload.hpp"
#include "af/sim/simulation.hpp"
#include "af/sup/spec.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace af::sim::detail {

struct kv_book {
  kv_clients_spec spec;
  std::vector<std::string> members; ///< the Raft members the clients ask
  duration stop_at{};               ///< no operation starts after this (the end of the workload)
  std::function<duration()> elapsed;
  /// Every operation issued, in call order; an operation without `ret` never returned.
  std::vector<kv_op> history;
  struct client {
    std::uint32_t issued = 0;
    std::uint64_t next_seq = 1;      ///< the Raft session's next sequence number
    std::optional<std::size_t> open; ///< the operation in progress (index into history)
    std::uint64_t seq = 0;           ///< its session seq (writes)
    std::uint32_t tries = 0;         ///< attempts made for it
    std::string target;              ///< the member asked last
    std::map<std::string, std::string> last_seen; ///< per key: the value it last read or wrote
  };
  std::vector<client> clients;
  kv_figures counts;
};

/// The client agents: (node, child spec) for each client.
[[nodiscard]] std::vector<std::pair<std::string, sup::child_spec>>
kv_client_children(kv_book& book, const std::vector<std::string>& all_nodes);

/// Closes the books at the end of the run (operations still open never returned) and checks the
/// history: the `linearizable` invariant.
[[nodiscard]] invariant_result finish_kv(kv_book& book, duration now);

/// Writes the history as JSON lines (kv_history.hpp); `validation` naming the file on failure.
[[nodiscard]] status write_kv_history(const kv_book& book, const std::string& file);

} // namespace af::sim::detail
