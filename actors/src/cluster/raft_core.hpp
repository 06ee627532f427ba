// Private: Raft as a pure, deterministic state machine (no actors, no I/O): elections with
// randomized timeouts, pipelined and batched log replication, commitment by majority, snapshots
// and InstallSnapshot, single-server membership changes and ReadIndex. The caller persists,
// sends and applies what take_ready() hands out (raft_agent.cpp; tests/actors/raft_core_test.cpp).
#pragma once

#include "af/error.hpp"
#include "af/services.hpp"

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace af::cluster::raft {

enum class entry_kind : std::uint8_t { command = 0, noop = 1, config = 2 };

/// One log entry. `data` is opaque for commands; for config entries it is encode_voters().
struct entry {
  std::uint64_t index = 0;
  std::uint64_t term = 0;
  entry_kind kind = entry_kind::command;
  std::string data;
  friend bool operator==(const entry&, const entry&) = default;
};

/// The voters of a config entry, sorted and deduplicated, one per line.
[[nodiscard]] std::string encode_voters(std::vector<std::string> voters);
[[nodiscard]] std::vector<std::string> decode_voters(const std::string& data);

/// Where in every `every` log indices this member takes its snapshots: its rank among the sorted
/// `voters` times every / voters (0 when it is not among them). Members at different phases
/// never write their snapshot images at the same time: an image write stalls the member's log
/// writes, and with every member stalled at once no majority could commit meanwhile.
[[nodiscard]] std::uint64_t snapshot_phase(const std::string& self,
                                           const std::vector<std::string>& voters,
                                           std::uint64_t every);
/// Whether a member whose snapshot covers `snapshot_index` and that applied up to `applied`
/// takes a snapshot now: at the first index `phase + k * every` at least every / 2 beyond its
/// snapshot (so snapshots are every / 2 to 3 * every / 2 apart, every apart in steady state).
/// Never with `every` 0.
[[nodiscard]] bool snapshot_due(std::uint64_t snapshot_index, std::uint64_t applied,
                                std::uint64_t every, std::uint64_t phase);

enum class role : std::uint8_t { follower, candidate, leader };
[[nodiscard]] std::string_view to_string(role r) noexcept;

/// What must be durable before a vote or an append is answered.
struct hard_state {
  std::uint64_t term = 0;
  std::string vote; ///< the candidate voted for in `term` (empty: none)
  friend bool operator==(const hard_state&, const hard_state&) = default;
};

/// The log prefix a snapshot replaces: the last index and term it covers and the voters then.
struct snapshot_meta {
  std::uint64_t index = 0;
  std::uint64_t term = 0;
  std::vector<std::string> voters;
};

// --- the RPCs -------------------------------------------------------------------------------

struct vote_request {
  std::uint64_t term = 0;
  std::uint64_t last_index = 0;
  std::uint64_t last_term = 0;
};
struct vote_response {
  std::uint64_t term = 0;
  bool granted = false;
};
struct append_request {
  std::uint64_t term = 0;
  std::uint64_t prev_index = 0;
  std::uint64_t prev_term = 0;
  std::vector<entry> entries;
  std::uint64_t commit = 0;
  std::uint64_t seq = 0; ///< the leader's heartbeat round (ReadIndex), echoed back
};
struct append_response {
  std::uint64_t term = 0;
  bool success = false;
  /// Success: the follower's log matches the leader's up to here. Refusal: the prev_index that
  /// did not match.
  std::uint64_t index = 0;
  std::uint64_t hint = 0; ///< refusal: where the leader should try next
  std::uint64_t seq = 0;
};
struct snapshot_request {
  std::uint64_t term = 0;
  snapshot_meta meta;
  std::string data; ///< the state machine's snapshot bytes
  std::uint64_t seq = 0;
};
struct snapshot_response {
  std::uint64_t term = 0;
  std::uint64_t index = 0; ///< the follower's log matches the leader's up to here
  std::uint64_t seq = 0;
};

using payload = std::variant<vote_request, vote_response, append_request, append_response,
                             snapshot_request, snapshot_response>;

struct message {
  std::string from;
  std::string to;
  payload body;
};

/// A confirmed ReadIndex: the read `id` may be served once `index` is applied.
struct read_state {
  std::uint64_t id = 0;
  std::uint64_t index = 0;
};

/// Something worth logging, counting or observing.
struct core_event {
  enum class kind : std::uint8_t {
    campaign,      ///< became candidate of `term`
    became_leader, ///< of `term`
    stepped_down,  ///< left the leader role (term is the new term; detail says why)
    committed,     ///< as leader, the commit index moved to `index`
    removed,       ///< this node left the voters (config committed at `index`)
  };
  kind what;
  std::uint64_t term = 0;
  std::uint64_t index = 0;
  std::string detail;
};

/// What the caller does after feeding the core: write (durably, in this order: hard state, drop
/// the log from truncate_from, append entries, install the snapshot), then call persisted(seq);
/// send `send` at once and `send_after_write` only after the write is durable; apply `apply`
/// in order; serve the reads; fail the dropped reads.
struct ready {
  std::uint64_t seq = 0; ///< nonzero when there is something to write
  std::optional<hard_state> hard;
  std::uint64_t truncate_from = 0; ///< 0: nothing to drop
  std::vector<entry> entries;
  std::optional<snapshot_meta> snapshot; ///< installed from the leader (restore the SM)
  std::string snapshot_data;
  std::vector<message> send;
  std::vector<message> send_after_write;
  std::vector<entry> apply;
  std::vector<read_state> reads;
  std::vector<std::uint64_t> dropped_reads; ///< leadership lost before they were confirmed
  std::vector<core_event> events;

  [[nodiscard]] bool needs_write() const {
    return hard || truncate_from != 0 || !entries.empty() || snapshot;
  }
  [[nodiscard]] bool empty() const {
    return !needs_write() && send.empty() && send_after_write.empty() && apply.empty()
           && reads.empty() && dropped_reads.empty() && events.empty();
  }
};

struct core_options {
  std::string self;
  std::vector<std::string> voters; ///< used when neither the log nor a snapshot has a config
  duration election_min = std::chrono::milliseconds(150);
  duration election_max = std::chrono::milliseconds(300);
  duration heartbeat = std::chrono::milliseconds(50);
  std::uint32_t max_batch = 256;
  std::uint32_t max_inflight = 8;
  /// A leader that heard from no majority for election_max steps down (its leases and reads
  /// must not outlive its authority); followers ignore vote requests while they hear a leader
  /// (disruption by removed or partitioned servers).
  bool check_quorum = true;
  /// Test only: grants every vote request of the current term (a planted election-safety bug).
  bool unsafe_double_vote = false;
};

/// The durable state a restarted member resumes from.
struct durable_state {
  hard_state hard;
  snapshot_meta snapshot;
  std::string snapshot_data;
  std::vector<entry> log; ///< entries after snapshot.index, contiguous
};

class raft_core {
public:
  raft_core(core_options opts, std::uint64_t seed, time_point now);

  /// Resumes from durable state (before any other call). Validates contiguity.
  status restore(durable_state st, time_point now);

  // --- inputs ------------------------------------------------------------------------------
  /// Time passed: elections, heartbeats, quorum checks.
  void tick(time_point now);
  /// An election timeout now (tests; leadership transfer).
  void campaign(time_point now);
  void step(const message& m, time_point now);
  /// Appends a command as leader: its index, or `transient` naming the known leader.
  expected<std::uint64_t> propose(std::string data, time_point now);
  /// Single-server membership changes, as leader, one at a time once the leader's no-op is
  /// committed: the index of the config entry.
  expected<std::uint64_t> add_voter(const std::string& node, time_point now);
  expected<std::uint64_t> remove_voter(const std::string& node, time_point now);
  /// A linearizable read: confirmed in a later ready (reads) or dropped (dropped_reads).
  status read_index(std::uint64_t id, time_point now);
  /// The write of ready `seq` (and every earlier one) is durable.
  void persisted(std::uint64_t seq);
  /// The state machine's snapshot at `index` (applied already): the log up to it is dropped.
  status compact(std::uint64_t index, std::string data);
  ready take_ready();

  // --- introspection -------------------------------------------------------------------------
  [[nodiscard]] const std::string& self() const { return opts_.self; }
  [[nodiscard]] role current_role() const { return role_; }
  [[nodiscard]] std::uint64_t term() const { return hard_.term; }
  [[nodiscard]] const std::string& vote() const { return hard_.vote; }
  [[nodiscard]] const std::string& leader() const { return leader_; }
  [[nodiscard]] std::uint64_t commit_index() const { return commit_; }
  [[nodiscard]] std::uint64_t applied_index() const { return applied_; }
  [[nodiscard]] std::uint64_t last_index() const;
  [[nodiscard]] std::uint64_t last_term() const;
  [[nodiscard]] std::uint64_t durable_index() const { return durable_; }
  [[nodiscard]] const snapshot_meta& snapshot() const { return snap_; }
  [[nodiscard]] const std::string& snapshot_data() const { return snap_data_; }
  [[nodiscard]] const std::vector<std::string>& voters() const { return voters_; }
  [[nodiscard]] bool is_voter(const std::string& node) const;
  /// The term of the entry at `index` (snapshot index included), nullopt when not held.
  [[nodiscard]] std::optional<std::uint64_t> term_at(std::uint64_t index) const;
  [[nodiscard]] const entry* at(std::uint64_t index) const;
  /// As leader: how far `peer`'s log is known to match (0 otherwise).
  [[nodiscard]] std::uint64_t match_of(const std::string& peer) const;
  /// As leader: an entry of the current term is committed (reads and config changes allowed).
  [[nodiscard]] bool leader_ready() const;
  /// The next time tick() has work (an election or a heartbeat).
  [[nodiscard]] time_point next_deadline() const;
  [[nodiscard]] std::uint64_t elections() const { return elections_; }

private:
  enum class progress_state : std::uint8_t { probe, replicate, snapshot };
  struct progress {
    std::uint64_t match = 0;
    std::uint64_t next = 1;
    progress_state state = progress_state::probe;
    std::deque<std::uint64_t> inflight; ///< last indices of appends not yet acknowledged
    std::uint64_t acked_seq = 0;
    bool active = false;    ///< answered since the last quorum check
    bool responded = false; ///< answered since the last heartbeat
    time_point snapshot_sent{};
  };
  struct pending_read {
    std::uint64_t id;
    std::uint64_t index;
    std::uint64_t seq;
  };
  struct pending_write {
    std::uint64_t seq;
    std::uint64_t last_index;
    std::uint64_t truncate_from;
  };

  void become_follower(std::uint64_t term, std::string leader, const char* why);
  void become_candidate();
  void become_leader();
  void set_term(std::uint64_t term);
  void reset_election_deadline();
  void on_vote_request(const message& m, const vote_request& r);
  void on_vote_response(const message& m, const vote_response& r);
  void on_append_request(const message& m, const append_request& r);
  void on_append_response(const message& m, const append_response& r);
  void on_snapshot_request(const message& m, const snapshot_request& r);
  void on_snapshot_response(const message& m, const snapshot_response& r);
  void count_votes();
  void append_local(entry e);
  void truncate(std::uint64_t from);
  void recompute_config();
  void sync_progress();
  void send_append(const std::string& peer, progress& p, bool heartbeat);
  void send_snapshot(const std::string& peer, progress& p);
  void broadcast(bool heartbeat);
  void replicate_pending();
  void maybe_commit();
  void set_commit(std::uint64_t c);
  void check_reads();
  void drop_reads();
  void emit(message m, bool after_write);
  [[nodiscard]] std::size_t quorum() const { return voters_.size() / 2 + 1; }
  [[nodiscard]] bool self_voter() const { return is_voter(opts_.self); }
  [[nodiscard]] std::uint64_t first_index() const { return snap_.index + 1; }
  expected<std::uint64_t> change_voters(const std::string& node, bool add, time_point now);

  core_options opts_;
  rng rng_;
  time_point now_;
  role role_ = role::follower;
  hard_state hard_;
  bool hard_dirty_ = false;
  std::string leader_;
  std::deque<entry> log_;
  snapshot_meta snap_;
  std::string snap_data_;
  std::vector<std::string> voters_;
  std::uint64_t config_index_ = 0; ///< the index of the config entry in force (0: none/snapshot)
  std::uint64_t commit_ = 0;
  std::uint64_t applied_ = 0; ///< handed out for applying
  std::uint64_t durable_ = 0;
  std::uint64_t term_start_ = 0; ///< as leader: the index of this term's no-op
  time_point election_deadline_{};
  time_point heartbeat_deadline_{};
  time_point quorum_check_{};
  time_point leader_heard_{}; ///< when a leader of the current term was last heard
  bool heard_leader_ = false;
  std::map<std::string, bool> votes_;
  bool self_vote_durable_ = false;
  std::uint64_t self_vote_seq_ = 0;
  bool self_vote_pending_ = false;
  std::map<std::string, progress> peers_;
  std::uint64_t hb_seq_ = 0;
  bool read_round_due_ = false;
  std::vector<pending_read> reads_;
  std::vector<std::uint64_t> reads_waiting_; ///< before this term's no-op is committed
  std::uint64_t next_seq_ = 1;
  std::deque<pending_write> writes_;
  std::uint64_t elections_ = 0;
  // The ready being assembled.
  ready out_;
  std::uint64_t trunc_pending_ = 0;
  std::vector<entry> append_pending_;
};

} // namespace af::cluster::raft
