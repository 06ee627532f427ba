// Raft's rules (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm", and
// the dissertation's single-server changes and ReadIndex) as a pure state machine.
#include "cluster/raft_core.hpp"

#include <algorithm>
#include <cassert>
#include <set>
#include <sstream>

namespace af::cluster::raft {

std::string encode_voters(std::vector<std::string> voters) {
  std::sort(voters.begin(), voters.end());
  voters.erase(std::unique(voters.begin(), voters.end()), voters.end());
  std::string out;
  for (const auto& v : voters) {
    out += v;
    out += '\n';
  }
  return out;
}

std::vector<std::string> decode_voters(const std::string& data) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : data) {
    if (c == '\n') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::uint64_t snapshot_phase(const std::string& self, const std::vector<std::string>& voters,
                             std::uint64_t every) {
  auto sorted = voters;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  const auto it = std::find(sorted.begin(), sorted.end(), self);
  if (it == sorted.end() || every == 0) return 0;
  const auto rank = static_cast<std::uint64_t>(it - sorted.begin());
  return rank * every / sorted.size();
}

bool snapshot_due(std::uint64_t snapshot_index, std::uint64_t applied, std::uint64_t every,
                  std::uint64_t phase) {
  if (every == 0) return false;
  phase %= every;
  const auto earliest = snapshot_index + every / 2;
  auto at = phase;
  if (earliest > phase) at += (earliest - phase + every - 1) / every * every;
  return applied >= at && applied > snapshot_index;
}

std::string_view to_string(role r) noexcept {
  switch (r) {
  case role::follower:
    return "follower";
  case role::candidate:
    return "candidate";
  case role::leader:
    return "leader";
  }
  return "unknown";
}

raft_core::raft_core(core_options opts, std::uint64_t seed, time_point now)
    : opts_(std::move(opts)), rng_(seed), now_(now) {
  voters_ = decode_voters(encode_voters(opts_.voters));
  snap_.voters = voters_;
  reset_election_deadline();
}

status raft_core::restore(durable_state st, time_point now) {
  now_ = now;
  for (std::size_t i = 0; i < st.log.size(); ++i)
    if (st.log[i].index != st.snapshot.index + 1 + i)
      return validation_error("raft restore: log entry " + std::to_string(i) + " has index "
                              + std::to_string(st.log[i].index) + ", expected "
                              + std::to_string(st.snapshot.index + 1 + i));
  hard_ = std::move(st.hard);
  snap_ = std::move(st.snapshot);
  if (snap_.voters.empty()) snap_.voters = decode_voters(encode_voters(opts_.voters));
  snap_data_ = std::move(st.snapshot_data);
  log_.assign(std::make_move_iterator(st.log.begin()), std::make_move_iterator(st.log.end()));
  commit_ = applied_ = snap_.index;
  durable_ = last_index();
  recompute_config();
  role_ = role::follower;
  leader_.clear();
  reset_election_deadline();
  return {};
}

// --- log access ------------------------------------------------------------------------------

std::uint64_t raft_core::last_index() const {
  return log_.empty() ? snap_.index : log_.back().index;
}

std::uint64_t raft_core::last_term() const { return log_.empty() ? snap_.term : log_.back().term; }

std::optional<std::uint64_t> raft_core::term_at(std::uint64_t index) const {
  if (index == snap_.index) return snap_.term;
  if (index < snap_.index || index > last_index()) return std::nullopt;
  return log_[index - first_index()].term;
}

const entry* raft_core::at(std::uint64_t index) const {
  if (index < first_index() || index > last_index()) return nullptr;
  return &log_[index - first_index()];
}

bool raft_core::is_voter(const std::string& node) const {
  return std::binary_search(voters_.begin(), voters_.end(), node);
}

std::uint64_t raft_core::match_of(const std::string& peer) const {
  if (role_ != role::leader) return 0;
  if (peer == opts_.self) return durable_;
  auto it = peers_.find(peer);
  return it == peers_.end() ? 0 : it->second.match;
}

bool raft_core::leader_ready() const { return role_ == role::leader && commit_ >= term_start_; }

time_point raft_core::next_deadline() const {
  if (role_ == role::leader) return std::min(heartbeat_deadline_, quorum_check_);
  return election_deadline_;
}

void raft_core::append_local(entry e) {
  if (e.kind == entry_kind::config) {
    voters_ = decode_voters(e.data);
    config_index_ = e.index;
  }
  const bool config = e.kind == entry_kind::config;
  out_.entries.push_back(e);
  log_.push_back(std::move(e));
  // Only a config changes the voters (set_commit syncs when one commits).
  if (config && role_ == role::leader) sync_progress();
}

void raft_core::truncate(std::uint64_t from) {
  assert(from > commit_);
  while (!log_.empty() && log_.back().index >= from)
    log_.pop_back();
  out_.truncate_from = out_.truncate_from == 0 ? from : std::min(out_.truncate_from, from);
  std::erase_if(out_.entries, [from](const entry& e) { return e.index >= from; });
  durable_ = std::min(durable_, from - 1);
  if (config_index_ >= from) recompute_config();
}

void raft_core::recompute_config() {
  for (auto it = log_.rbegin(); it != log_.rend(); ++it)
    if (it->kind == entry_kind::config) {
      voters_ = decode_voters(it->data);
      config_index_ = it->index;
      return;
    }
  voters_ = snap_.voters;
  config_index_ = 0;
}

// --- roles -----------------------------------------------------------------------------------

void raft_core::reset_election_deadline() {
  const auto span = std::max<std::int64_t>((opts_.election_max - opts_.election_min).count(), 1);
  election_deadline_ =
      now_ + opts_.election_min
      + duration{static_cast<std::int64_t>(rng_.uniform(static_cast<std::uint64_t>(span)))};
}

void raft_core::set_term(std::uint64_t term) {
  if (term == hard_.term) return;
  hard_.term = term;
  hard_.vote.clear();
  hard_dirty_ = true;
  heard_leader_ = false;
}

void raft_core::become_follower(std::uint64_t term, std::string leader, const char* why) {
  const bool was_leader = role_ == role::leader;
  set_term(term);
  role_ = role::follower;
  leader_ = std::move(leader);
  votes_.clear();
  self_vote_pending_ = false;
  if (was_leader) {
    peers_.clear();
    drop_reads();
    out_.events.push_back({core_event::kind::stepped_down, hard_.term, commit_, why});
  }
  reset_election_deadline();
}

void raft_core::become_candidate() {
  const bool was_leader = role_ == role::leader;
  if (was_leader) {
    peers_.clear();
    drop_reads();
  }
  role_ = role::candidate;
  set_term(hard_.term + 1);
  hard_.vote = opts_.self;
  hard_dirty_ = true;
  leader_.clear();
  votes_.clear();
  self_vote_pending_ = true; // counted once the vote is durable (see persisted)
  self_vote_durable_ = false;
  self_vote_seq_ = 0;
  ++elections_;
  out_.events.push_back({core_event::kind::campaign, hard_.term, last_index(), {}});
  reset_election_deadline();
  vote_request r{hard_.term, last_index(), last_term()};
  for (const auto& v : voters_)
    if (v != opts_.self) emit({opts_.self, v, r}, true);
}

void raft_core::become_leader() {
  role_ = role::leader;
  leader_ = opts_.self;
  votes_.clear();
  peers_.clear();
  hb_seq_ = 0;
  sync_progress();
  quorum_check_ = now_ + opts_.election_max;
  heartbeat_deadline_ = now_ + opts_.heartbeat;
  out_.events.push_back({core_event::kind::became_leader, hard_.term, last_index(), {}});
  // The no-op of the term: commits the entries of earlier terms (a leader only counts
  // replicas of its own term's entries) and lets reads and config changes start.
  append_local({last_index() + 1, hard_.term, entry_kind::noop, {}});
  term_start_ = last_index();
  broadcast(false);
}

void raft_core::sync_progress() {
  for (const auto& v : voters_)
    if (v != opts_.self && !peers_.contains(v)) {
      progress p;
      // Probes from the last entry: a probe beyond the log would send nothing to refuse.
      p.next = std::max<std::uint64_t>(last_index(), 1);
      p.active = true;
      peers_.emplace(v, p);
    }
  // A removed voter still gets the entries up to the config that removed it (so it learns
  // of its removal); it is dropped once that config is committed.
  std::erase_if(peers_,
                [this](const auto& kv) { return !is_voter(kv.first) && commit_ >= config_index_; });
}

// --- inputs ----------------------------------------------------------------------------------

void raft_core::tick(time_point now) {
  now_ = std::max(now_, now);
  if (role_ == role::leader) {
    if (now_ >= quorum_check_) {
      quorum_check_ = now_ + opts_.election_max;
      std::size_t active = self_voter() ? 1 : 0;
      for (auto& [name, p] : peers_) {
        if (p.active && is_voter(name)) ++active;
        p.active = false;
      }
      if (opts_.check_quorum && active < quorum()) {
        become_follower(hard_.term, {}, "no majority heard within the election timeout");
        return;
      }
    }
    if (now_ >= heartbeat_deadline_) {
      heartbeat_deadline_ = now_ + opts_.heartbeat;
      for (auto& [name, p] : peers_) {
        // No answer for a whole heartbeat with appends outstanding: they may be lost. Fall back
        // to probing from the last known match.
        if (p.state == progress_state::replicate && !p.inflight.empty() && !p.responded) {
          p.state = progress_state::probe;
          p.inflight.clear();
          p.next = p.match + 1;
        }
        if (p.state == progress_state::snapshot && now_ - p.snapshot_sent >= opts_.election_max) {
          p.state = progress_state::probe;
          p.next = p.match + 1;
        }
        p.responded = false;
      }
      broadcast(true);
    }
    return;
  }
  if (now_ >= election_deadline_) {
    if (self_voter())
      become_candidate();
    else
      reset_election_deadline();
  }
}

void raft_core::campaign(time_point now) {
  now_ = std::max(now_, now);
  if (role_ != role::leader && self_voter()) become_candidate();
}

void raft_core::step(const message& m, time_point now) {
  now_ = std::max(now_, now);
  if (m.to != opts_.self || m.from == opts_.self) return;
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, vote_request>)
          on_vote_request(m, body);
        else if constexpr (std::is_same_v<T, vote_response>)
          on_vote_response(m, body);
        else if constexpr (std::is_same_v<T, append_request>)
          on_append_request(m, body);
        else if constexpr (std::is_same_v<T, append_response>)
          on_append_response(m, body);
        else if constexpr (std::is_same_v<T, snapshot_request>)
          on_snapshot_request(m, body);
        else
          on_snapshot_response(m, body);
      },
      m.body);
}

void raft_core::on_vote_request(const message& m, const vote_request& r) {
  if (r.term > hard_.term) {
    // Leader stickiness: while a leader is heard, a candidate is a removed or partitioned
    // server; letting it raise the term would depose a healthy leader for nothing.
    if (opts_.check_quorum
        && (role_ == role::leader || (heard_leader_ && now_ - leader_heard_ < opts_.election_min)))
      return;
    become_follower(r.term, {}, "a candidate of a higher term");
  }
  const bool up_to_date =
      r.last_term > last_term() || (r.last_term == last_term() && r.last_index >= last_index());
  bool grant = r.term == hard_.term && up_to_date
               && (hard_.vote.empty() || hard_.vote == m.from || opts_.unsafe_double_vote);
  if (grant && role_ != role::follower && !opts_.unsafe_double_vote) grant = false;
  if (grant) {
    if (hard_.vote != m.from) {
      hard_.vote = m.from;
      hard_dirty_ = true;
    }
    reset_election_deadline();
  }
  emit({opts_.self, m.from, vote_response{hard_.term, grant}}, true);
}

void raft_core::on_vote_response(const message& m, const vote_response& r) {
  if (r.term > hard_.term) {
    become_follower(r.term, {}, "a voter of a higher term");
    return;
  }
  if (role_ != role::candidate || r.term != hard_.term || !is_voter(m.from)) return;
  votes_[m.from] = r.granted;
  count_votes();
}

void raft_core::count_votes() {
  if (role_ != role::candidate) return;
  std::size_t yes = self_vote_durable_ && self_voter() ? 1 : 0;
  for (const auto& [n, g] : votes_)
    if (g && is_voter(n)) ++yes;
  if (yes >= quorum()) become_leader();
}

void raft_core::on_append_request(const message& m, const append_request& r) {
  if (r.term < hard_.term) {
    emit({opts_.self, m.from, append_response{hard_.term, false, r.prev_index, 0, r.seq}}, true);
    return;
  }
  if (r.term > hard_.term || role_ != role::follower || leader_ != m.from)
    become_follower(r.term, m.from, "a leader of this or a higher term");
  heard_leader_ = true;
  leader_heard_ = now_;
  reset_election_deadline();

  std::uint64_t prev = r.prev_index;
  std::uint64_t prev_term = r.prev_term;
  std::size_t skip = 0;
  if (prev < snap_.index) {
    // The prefix up to the snapshot is committed, hence equal to the leader's: skip it.
    while (skip < r.entries.size() && r.entries[skip].index <= snap_.index)
      ++skip;
    prev = snap_.index;
    prev_term = snap_.term;
  }
  if (prev > last_index()) {
    emit({opts_.self, m.from,
          append_response{hard_.term, false, r.prev_index, last_index() + 1, r.seq}},
         true);
    return;
  }
  if (auto t = term_at(prev); !t || *t != prev_term) {
    // Hint: the first index of the conflicting term (skips a whole term per round trip).
    std::uint64_t hint = prev;
    while (hint > commit_ + 1 && hint > first_index() && term_at(hint - 1) == t)
      --hint;
    hint = std::max(hint, commit_ + 1);
    emit({opts_.self, m.from, append_response{hard_.term, false, r.prev_index, hint, r.seq}}, true);
    return;
  }
  for (std::size_t i = skip; i < r.entries.size(); ++i) {
    const auto& e = r.entries[i];
    if (auto t = term_at(e.index)) {
      if (*t == e.term) continue;
      truncate(e.index);
    }
    append_local(e);
  }
  const std::uint64_t matched = r.entries.empty() ? prev : std::max(prev, r.entries.back().index);
  if (r.commit > commit_) set_commit(std::min(r.commit, matched));
  emit({opts_.self, m.from, append_response{hard_.term, true, matched, 0, r.seq}}, true);
}

void raft_core::on_append_response(const message& m, const append_response& r) {
  if (r.term > hard_.term) {
    become_follower(r.term, {}, "a follower of a higher term");
    return;
  }
  if (role_ != role::leader || r.term != hard_.term) return;
  auto it = peers_.find(m.from);
  if (it == peers_.end()) return;
  auto& p = it->second;
  p.active = p.responded = true;
  p.acked_seq = std::max(p.acked_seq, r.seq);
  if (r.success) {
    if (r.index > p.match) p.match = r.index;
    p.next = std::max(p.next, p.match + 1);
    while (!p.inflight.empty() && p.inflight.front() <= r.index)
      p.inflight.pop_front();
    // A probe matched (not a mere heartbeat from the known match): stream from here on.
    if (p.state == progress_state::probe && r.index + 1 >= p.next) {
      p.state = progress_state::replicate;
      p.inflight.clear();
    }
    maybe_commit();
  } else if (r.index >= p.match) {
    // A refusal of something beyond what is known to match: go back and probe (take_ready
    // sends the next probe).
    p.next = std::max(p.match + 1, std::min(r.hint, r.index));
    p.state = progress_state::probe;
    p.inflight.clear();
  }
  check_reads();
}

void raft_core::on_snapshot_request(const message& m, const snapshot_request& r) {
  if (r.term < hard_.term) {
    emit({opts_.self, m.from, snapshot_response{hard_.term, 0, r.seq}}, true);
    return;
  }
  if (r.term > hard_.term || role_ != role::follower || leader_ != m.from)
    become_follower(r.term, m.from, "a leader of this or a higher term");
  heard_leader_ = true;
  leader_heard_ = now_;
  reset_election_deadline();
  const auto& meta = r.meta;
  if (meta.index <= commit_) {
    emit({opts_.self, m.from, snapshot_response{hard_.term, commit_, r.seq}}, true);
    return;
  }
  if (auto t = term_at(meta.index); t && *t == meta.term) {
    // Keeps the suffix after the snapshot: it matches the leader's log.
    while (!log_.empty() && log_.front().index <= meta.index)
      log_.pop_front();
  } else {
    log_.clear();
  }
  snap_ = meta;
  snap_data_ = r.data;
  commit_ = applied_ = meta.index;
  durable_ = std::min(durable_, meta.index);
  recompute_config();
  out_.apply.clear(); // superseded by the snapshot
  out_.snapshot = snap_;
  out_.snapshot_data = snap_data_;
  out_.entries.assign(log_.begin(), log_.end());
  out_.truncate_from = meta.index + 1;
  emit({opts_.self, m.from, snapshot_response{hard_.term, meta.index, r.seq}}, true);
}

void raft_core::on_snapshot_response(const message& m, const snapshot_response& r) {
  if (r.term > hard_.term) {
    become_follower(r.term, {}, "a follower of a higher term");
    return;
  }
  if (role_ != role::leader || r.term != hard_.term) return;
  auto it = peers_.find(m.from);
  if (it == peers_.end()) return;
  auto& p = it->second;
  p.active = p.responded = true;
  p.acked_seq = std::max(p.acked_seq, r.seq);
  p.match = std::max(p.match, r.index);
  p.next = p.match + 1;
  p.state = progress_state::probe;
  p.inflight.clear();
  maybe_commit();
  check_reads();
}

expected<std::uint64_t> raft_core::propose(std::string data, time_point now) {
  now_ = std::max(now_, now);
  if (role_ != role::leader)
    return make_error(errc::transient, leader_.empty()
                                           ? "raft: no leader known to " + opts_.self
                                           : "raft: not the leader; the leader is " + leader_);
  append_local({last_index() + 1, hard_.term, entry_kind::command, std::move(data)});
  return last_index();
}

expected<std::uint64_t> raft_core::add_voter(const std::string& node, time_point now) {
  return change_voters(node, true, now);
}

expected<std::uint64_t> raft_core::remove_voter(const std::string& node, time_point now) {
  return change_voters(node, false, now);
}

expected<std::uint64_t> raft_core::change_voters(const std::string& node, bool add,
                                                 time_point now) {
  now_ = std::max(now_, now);
  if (node.empty() || node.find('\n') != std::string::npos)
    return validation_error("raft membership change: bad node name '" + node + "'");
  if (role_ != role::leader)
    return make_error(errc::transient, leader_.empty()
                                           ? "raft: no leader known to " + opts_.self
                                           : "raft: not the leader; the leader is " + leader_);
  // One change at a time, and not before this term's no-op commits (the single-server change
  // bug: an uncommitted config of an older term could otherwise overlap with a new one).
  if (!leader_ready())
    return make_error(errc::transient, "raft: the leader has not committed its first entry yet");
  if (config_index_ > commit_)
    return make_error(errc::conflict, "raft: a membership change (index "
                                          + std::to_string(config_index_)
                                          + ") is still in progress");
  auto v = voters_;
  if (add) {
    if (is_voter(node)) return make_error(errc::conflict, "raft: " + node + " is a voter already");
    v.push_back(node);
  } else {
    if (!is_voter(node)) return make_error(errc::not_found, "raft: " + node + " is not a voter");
    if (v.size() == 1) return validation_error("raft: cannot remove the last voter");
    std::erase(v, node);
  }
  append_local({last_index() + 1, hard_.term, entry_kind::config, encode_voters(std::move(v))});
  return last_index();
}

status raft_core::read_index(std::uint64_t id, time_point now) {
  now_ = std::max(now_, now);
  if (role_ != role::leader)
    return make_error(errc::transient, leader_.empty()
                                           ? "raft: no leader known to " + opts_.self
                                           : "raft: not the leader; the leader is " + leader_);
  if (!leader_ready()) {
    reads_waiting_.push_back(id);
    return {};
  }
  reads_.push_back({id, commit_, hb_seq_ + 1});
  read_round_due_ = true;
  return {};
}

void raft_core::persisted(std::uint64_t seq) {
  while (!writes_.empty() && writes_.front().seq <= seq) {
    auto w = writes_.front();
    writes_.pop_front();
    std::uint64_t d = w.last_index;
    // A later write that drops part of the log makes that part not durable.
    for (const auto& later : writes_)
      if (later.truncate_from != 0) d = std::min(d, later.truncate_from - 1);
    durable_ = std::min(d, last_index());
  }
  if (self_vote_pending_ && seq >= self_vote_seq_ && self_vote_seq_ != 0
      && role_ == role::candidate) {
    self_vote_durable_ = true;
    self_vote_pending_ = false;
    count_votes();
  }
  if (role_ == role::leader) maybe_commit();
}

status raft_core::compact(std::uint64_t index, std::string data) {
  if (index > applied_)
    return validation_error("raft compact: index " + std::to_string(index)
                            + " is beyond the applied index " + std::to_string(applied_));
  if (index <= snap_.index) return {};
  const auto t = term_at(index);
  if (!t) return internal_error("raft compact: no entry at index " + std::to_string(index));
  snapshot_meta meta;
  meta.index = index;
  meta.term = *t;
  // The voters in force at `index`: the last config entry at or below it.
  meta.voters = snap_.voters;
  for (std::uint64_t i = index; i >= first_index(); --i) {
    const auto* e = at(i);
    if (e->kind == entry_kind::config) {
      meta.voters = decode_voters(e->data);
      break;
    }
  }
  while (!log_.empty() && log_.front().index <= index)
    log_.pop_front();
  snap_ = std::move(meta);
  snap_data_ = std::move(data);
  return {};
}

// --- replication -----------------------------------------------------------------------------

void raft_core::emit(message m, bool after_write) {
  (after_write ? out_.send_after_write : out_.send).push_back(std::move(m));
}

void raft_core::send_snapshot(const std::string& peer, progress& p) {
  p.state = progress_state::snapshot;
  p.snapshot_sent = now_;
  p.inflight.clear();
  emit({opts_.self, peer, snapshot_request{hard_.term, snap_, snap_data_, hb_seq_}}, false);
}

void raft_core::send_append(const std::string& peer, progress& p, bool heartbeat) {
  if (p.state == progress_state::snapshot) {
    // Keeps the follower from campaigning while the snapshot travels.
    if (heartbeat)
      emit({opts_.self, peer, append_request{hard_.term, 0, 0, {}, 0, hb_seq_}}, false);
    return;
  }
  if (p.next <= snap_.index) {
    send_snapshot(peer, p);
    return;
  }
  const bool has_entries = p.next <= last_index();
  const bool may_send = p.state == progress_state::probe ? (heartbeat || p.inflight.empty())
                                                         : p.inflight.size() < opts_.max_inflight;
  if (!has_entries || !may_send) {
    if (!heartbeat) return;
    // A pure heartbeat from the last known match: consistent on the follower whatever is in
    // flight (reordered appends do not make it fail).
    const auto prev = p.match >= snap_.index ? p.match : 0;
    emit({opts_.self, peer,
          append_request{hard_.term, prev, prev == 0 ? 0 : *term_at(prev), {}, commit_, hb_seq_}},
         false);
    return;
  }
  append_request r;
  r.term = hard_.term;
  r.prev_index = p.next - 1;
  r.prev_term = *term_at(r.prev_index);
  r.commit = commit_;
  r.seq = hb_seq_;
  const auto last = std::min(last_index(), p.next + opts_.max_batch - 1);
  r.entries.reserve(static_cast<std::size_t>(last - p.next + 1));
  for (auto i = p.next; i <= last; ++i)
    r.entries.push_back(*at(i));
  p.inflight.push_back(last);
  if (p.state == progress_state::replicate) p.next = last + 1;
  emit({opts_.self, peer, std::move(r)}, false);
}

void raft_core::broadcast(bool heartbeat) {
  if (heartbeat) ++hb_seq_;
  for (auto& [name, p] : peers_)
    send_append(name, p, heartbeat);
}

void raft_core::replicate_pending() {
  for (auto& [name, p] : peers_) {
    if (p.state == progress_state::probe && p.inflight.empty()) {
      send_append(name, p, false);
      continue;
    }
    // Streams while the window allows; stops as soon as a send makes no progress (the peer
    // switched to a snapshot, or nothing is left).
    while (p.state == progress_state::replicate && p.next <= last_index()
           && p.inflight.size() < opts_.max_inflight) {
      const auto before = p.next;
      send_append(name, p, false);
      if (p.next == before) break;
    }
  }
}

void raft_core::maybe_commit() {
  if (role_ != role::leader) return;
  std::vector<std::uint64_t> matches;
  for (const auto& v : voters_)
    matches.push_back(v == opts_.self ? durable_ : match_of(v));
  if (matches.empty()) return;
  std::sort(matches.begin(), matches.end(), std::greater<>{});
  const auto n = matches[quorum() - 1];
  // Figure 8: only an entry of the leader's own term is committed by counting replicas.
  if (n > commit_ && term_at(n) == hard_.term) {
    set_commit(n);
    out_.events.push_back({core_event::kind::committed, hard_.term, n, {}});
  }
}

void raft_core::set_commit(std::uint64_t c) {
  c = std::min(c, last_index());
  if (c <= commit_) return;
  commit_ = c;
  if (role_ == role::leader) {
    if (!reads_waiting_.empty() && leader_ready()) {
      for (auto id : reads_waiting_)
        reads_.push_back({id, commit_, hb_seq_ + 1});
      reads_waiting_.clear();
      read_round_due_ = true;
    }
    if (config_index_ != 0 && commit_ >= config_index_) {
      sync_progress();
      if (!self_voter()) {
        out_.events.push_back({core_event::kind::removed, hard_.term, config_index_, {}});
        become_follower(hard_.term, {}, "removed from the voters");
      }
    }
  }
}

void raft_core::check_reads() {
  if (role_ != role::leader || reads_.empty()) return;
  std::size_t done = 0;
  for (const auto& rd : reads_) {
    std::size_t acks = self_voter() ? 1 : 0;
    for (const auto& [name, p] : peers_)
      if (is_voter(name) && p.acked_seq >= rd.seq) ++acks;
    if (acks < quorum()) break; // later reads have higher seqs
    out_.reads.push_back({rd.id, rd.index});
    ++done;
  }
  reads_.erase(reads_.begin(), reads_.begin() + static_cast<std::ptrdiff_t>(done));
}

void raft_core::drop_reads() {
  for (const auto& r : reads_)
    out_.dropped_reads.push_back(r.id);
  for (auto id : reads_waiting_)
    out_.dropped_reads.push_back(id);
  reads_.clear();
  reads_waiting_.clear();
  read_round_due_ = false;
}

ready raft_core::take_ready() {
  if (role_ == role::leader) {
    if (read_round_due_) {
      read_round_due_ = false;
      broadcast(true);
    }
    replicate_pending();
    maybe_commit();
    check_reads();
  }
  if (hard_dirty_) {
    out_.hard = hard_;
    hard_dirty_ = false;
  }
  // Committed entries go out for applying (bounded per ready so a long catch-up interleaves).
  const auto upto = std::min(commit_, applied_ + std::uint64_t{4096});
  if (upto > applied_) out_.apply.reserve(out_.apply.size() + (upto - applied_));
  for (auto i = applied_ + 1; i <= upto; ++i)
    if (const auto* e = at(i)) out_.apply.push_back(*e);
  applied_ = std::max(applied_, upto);
  ready r = std::move(out_);
  out_ = ready{};
  if (r.needs_write()) {
    r.seq = next_seq_++;
    writes_.push_back({r.seq, last_index(), r.truncate_from});
    if (self_vote_pending_ && r.hard && r.hard->vote == opts_.self) self_vote_seq_ = r.seq;
  }
  return r;
}

} // namespace af::cluster::raft
