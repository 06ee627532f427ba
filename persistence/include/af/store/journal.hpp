// The node's journal agent (af.journal): event streams and snapshots over a storage backend,
// used by other agents through af.v1 requests (proto/af/v1/store.proto). It runs under
// af.sup.system on the scheduler (a blocking backend's calls run on a thread of their own) and
// group-commits concurrent appends: one transaction and one sync for every append waiting when
// the last commit ended, replies after the commit.
#pragma once

#include "af/config.hpp"
#include "af/store/backend.hpp"
#include "af/sup/retry.hpp"
#include "af/sup/spec.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace af::store {

/// The name the journal agent is registered under.
inline constexpr std::string_view k_journal_agent = "af.journal";

struct journal_options {
  /// Opens the backend; called on every (re)start of the agent. A failure is retried with
  /// backoff (requests meanwhile get `transient`), not fatal to the node.
  std::function<expected<std::unique_ptr<backend>>()> open;
  /// Appends taken into one transaction at most.
  std::size_t max_batch = 512;
  /// Group commit policy. Appenders usually append again soon after their reply (an execution
  /// journals its next step), so the appends of one commit come back while the next is being
  /// gathered: without waiting, they split into two cohorts that alternate, each paying a sync.
  /// When appends are waiting but streams replied to by the last commit have not appended again
  /// yet, the journal holds the commit until they have, for at most this fraction of the last
  /// commit's duration and at most `hold_max` (0 disables holding; holds under 50 µs are not
  /// started). A lone appender never waits: its own append is the one awaited. Nor does a
  /// commit for which at least half as many appends wait as streams are awaited: those make a
  /// batch worth its sync, and the store would otherwise idle while they wait.
  double hold_fraction = 0.5;
  duration hold_max = std::chrono::milliseconds(2);
  /// Appends whose commit failed with a transient error (SQLite busy past its timeout, a
  /// PostgreSQL connection lost before COMMIT was sent, ...) are retried after a backoff by this
  /// policy, but only those with an expected version: the version check makes a retry safe
  /// (an append that did commit after all gets `conflict`, never a duplicate). Appends with
  /// any_version get the error at once; so do reads, which the caller may retry.
  sup::retry_options retry{};
  /// Retention (docs/storage.md, "Retention"): zero keeps everything. Otherwise the agent
  /// compacts every `compact_interval`, `compact_batch` streams per transaction.
  duration retention{};
  duration compact_interval = std::chrono::seconds(60);
  std::size_t compact_batch = 500;
  /// The backend's calls block (SQLite, PostgreSQL): they run on a thread of their own, one at a
  /// time, while the agent stays on the scheduler and gathers the next appends. False for one
  /// that never blocks (memory:): the agent calls it directly.
  bool blocking = true;
};

/// Whether the backend of a store URL blocks (everything but memory:).
[[nodiscard]] bool url_blocks(const std::string& url);

/// The child spec to pass in node::options::system_services.
[[nodiscard]] sup::child_spec journal_child(journal_options opts);

/// The backend URL of a node's configuration: `store.url` when set, else sqlite under
/// node.data_dir (DATA_DIR/agentflow.db).
[[nodiscard]] std::string store_url(const config& cfg);

/// Journal options from a node's configuration: store.url (see store_url) and, for SQLite,
/// store.sqlite.synchronous.
[[nodiscard]] journal_options journal_options_from(const config& cfg);

} // namespace af::store
