// Private: the replicated metadata store (af::cluster::meta) as a pure state machine: keys and
// values with versions, compare-and-set, leases with fencing epochs, client sessions for
// exactly-once retries, and snapshots. Every replica applies the same commands in log order and
// reaches the same state: nothing here reads a clock (time comes stamped in the commands).
//
// Leases. A command carries the proposing leader's clock (leader_time) and the time that leader
// took office (leader_since), both in its own clock. The store's time is the largest leader_time
// seen (it never goes back, whatever the skew between leaders). A lease is held until
// expires = grant time + ttl. Another owner may take it when it has expired in the store's time
// AND, if it was granted or last renewed by an earlier term's leader, the current leader has
// been in office for at least the lease's ttl in its own clock: a renewal committed by the old
// leader happened before the new leader took office, so after ttl of the new leader's clock the
// holder's lease (which the holder counts from when it sent the request) has run out in real
// time, with no assumption on clock offsets between nodes (only on their rates). The holder must
// stop working under a lease ttl after it SENT the acquire/renew that granted it (its own clock).
//
// Sessions. A command with MetaSession{client_id, seq} is applied once: a retry (same client_id
// and seq) gets the first outcome back. Each client keeps the outcomes of its last
// `session_window` seqs; an older seq is refused (`conflict`). Sessions idle for `session_idle`
// in the store's time are forgotten, and at most `max_sessions` are kept (the least recently
// active goes first): a client that comes back after that starts a new session.
#pragma once

#include "af/error.hpp"
#include "af/services.hpp"
#include "af/v1/raft.pb.h"

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

namespace af::cluster {

struct meta_store_options {
  std::size_t max_sessions = 10000;
  std::size_t session_window = 64;
  duration session_idle = std::chrono::hours(1);
  std::size_t max_key_bytes = 1024;
  std::size_t max_value_bytes = 1 << 20;
};

/// The stamp a leader puts on every command (see the lease rules above).
struct command_stamp {
  std::int64_t leader_time_ns = 0;
  std::int64_t leader_since_ns = 0;
  std::uint64_t term = 0;
};

/// A serialized MetaCommand carrying `op` (a MetaPut, MetaCas, MetaDelete, LeaseAcquire or
/// LeaseRelease), byte for byte what MetaCommand::SerializeAsString gives, written straight from
/// the client's request: the leader's hot path does not copy the request into a MetaCommand
/// first. Protobuf writes known fields in field-number order: the stamp (1-3), then the op.
template <class Op>
[[nodiscard]] std::string encode_command(const command_stamp& s, const Op& op);

class meta_store {
public:
  explicit meta_store(meta_store_options opts = {}) : opts_(opts) {}

  /// An outcome, shared with the session that remembers it for retries (never modified after
  /// apply: one object per command instead of a copy for the session and one for the caller).
  using result_ptr = std::shared_ptr<const v1::MetaCommandResult>;

  /// Applies the command logged at `index` (a serialized MetaCommand). Never throws; bad input
  /// becomes an error result (the same on every replica).
  result_ptr apply_shared(const std::string& command, std::uint64_t index);
  result_ptr apply_shared(const v1::MetaCommand& cmd, std::uint64_t index);
  /// The same, returning a copy of the outcome.
  v1::MetaCommandResult apply(const std::string& command, std::uint64_t index) {
    return *apply_shared(command, index);
  }
  v1::MetaCommandResult apply(const v1::MetaCommand& cmd, std::uint64_t index) {
    return *apply_shared(cmd, index);
  }

  [[nodiscard]] v1::MetaEntry get(const std::string& key) const;
  [[nodiscard]] v1::MetaEntries list(const std::string& prefix, std::uint32_t limit) const;
  /// The lease as seen at `now` (the reading leader's clock, not earlier than the store's).
  [[nodiscard]] v1::LeaseResult lease(const std::string& key, time_point now) const;

  [[nodiscard]] std::string snapshot() const;
  status restore(const std::string& bytes);

  [[nodiscard]] std::size_t keys() const { return kv_.size(); }
  [[nodiscard]] std::size_t leases_held(time_point now) const;
  [[nodiscard]] std::size_t sessions() const { return sessions_.size(); }
  [[nodiscard]] std::uint64_t applied() const { return applied_; }
  /// The store's time: the largest leader time applied.
  [[nodiscard]] std::int64_t time_ns() const { return last_time_ns_; }

private:
  struct kv {
    std::string value;
    std::uint64_t version = 0;
  };
  struct lease_rec {
    std::string owner;
    std::int64_t expires_ns = 0;
    std::uint32_t ttl_ms = 0;
    std::uint64_t epoch = 0;
    std::uint64_t granted_term = 0;
    std::uint64_t version = 0;
  };
  struct session {
    std::int64_t last_active_ns = 0;
    /// The outcomes of the last `session_window` seqs, sorted by seq. A deque rather than a map:
    /// seqs mostly arrive in order (push at the back, pop at the front) and a lookup is a binary
    /// search over a few contiguous blocks instead of a chase through 64 tree nodes per apply.
    std::deque<std::pair<std::uint64_t, result_ptr>> results;
    [[nodiscard]] const result_ptr* find(std::uint64_t seq) const;
    void insert(std::uint64_t seq, result_ptr r);
  };

  v1::MetaCommandResult execute(const v1::MetaCommand& cmd, std::uint64_t index);
  v1::LeaseResult lease_result(const std::string& key, const lease_rec& l, std::int64_t now_ns,
                               std::uint64_t index) const;
  void expire_sessions();

  meta_store_options opts_;
  std::map<std::string, kv> kv_;
  std::map<std::string, lease_rec> leases_;
  std::map<std::string, session> sessions_;
  std::int64_t last_time_ns_ = 0;
  std::uint64_t applied_ = 0;
};

} // namespace af::cluster
