// The Raft agent (af.cluster.raft): runs raft_core for one member of the metadata group, writes
// its term, vote and log through the node's journal (af.journal) before anything depending on
// them leaves the node, talks to the other members' agents, applies committed commands to the
// metadata store and answers the client protocol of meta.proto. Raft's rules live in
// raft_core, the store's in meta_store; this file is the I/O around them.
#include "af/agent.hpp"
#include "af/cluster/raft.hpp"
#include "af/hash.hpp"
#include "af/metrics.hpp"
#include "af/store/journal.hpp"
#include "af/v1/meta.pb.h"
#include "af/v1/raft.pb.h"
#include "af/v1/store.pb.h"
#include "cluster/meta_store.hpp"
#include "cluster/raft_core.hpp"

#include <algorithm>
#include <deque>
#include <functional>
#include <map>

namespace af::cluster {

namespace {

namespace rc = raft;

constexpr std::string_view k_write_type = "af.v1.RaftWrite";
constexpr std::string_view k_durable_type = "af.v1.RaftDurable";
constexpr std::uint32_t k_read_page = 1000;

// --- conversions between the core's structs and the wire -----------------------------------------

void to_proto(const rc::entry& e, v1::RaftEntry& out) {
  out.set_index(e.index);
  out.set_term(e.term);
  out.set_kind(static_cast<std::uint32_t>(e.kind));
  out.set_data(e.data);
}

/// For entries the caller owns (a ready's copies): the bytes move instead of being copied again.
void to_proto(rc::entry&& e, v1::RaftEntry& out) {
  out.set_index(e.index);
  out.set_term(e.term);
  out.set_kind(static_cast<std::uint32_t>(e.kind));
  out.set_data(std::move(e.data));
}

expected<rc::entry> from_proto(const v1::RaftEntry& e) {
  if (e.kind() > 2)
    return validation_error("raft entry " + std::to_string(e.index()) + " has kind "
                            + std::to_string(e.kind()) + "; expected 0, 1 or 2");
  if (e.index() == 0 || e.term() == 0) return validation_error("raft entry with index or term 0");
  return rc::entry{e.index(), e.term(), static_cast<rc::entry_kind>(e.kind()), e.data()};
}

void to_proto(const rc::snapshot_meta& m, v1::RaftSnapshotMeta& out) {
  out.set_index(m.index);
  out.set_term(m.term);
  for (const auto& v : m.voters)
    out.add_voters(v);
}

rc::snapshot_meta from_proto(const v1::RaftSnapshotMeta& m) {
  rc::snapshot_meta out;
  out.index = m.index();
  out.term = m.term();
  out.voters.assign(m.voters().begin(), m.voters().end());
  std::sort(out.voters.begin(), out.voters.end());
  return out;
}

/// Consumes `m`: entry and snapshot bytes move into the message instead of being copied.
v1::RaftMessage to_proto(rc::message&& m, const std::string& group) {
  v1::RaftMessage out;
  out.set_group(group);
  out.set_from(m.from);
  out.set_to(m.to);
  std::visit(
      [&](auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, rc::vote_request>) {
          auto* o = out.mutable_vote_request();
          o->set_term(b.term);
          o->set_last_index(b.last_index);
          o->set_last_term(b.last_term);
        } else if constexpr (std::is_same_v<T, rc::vote_response>) {
          auto* o = out.mutable_vote_response();
          o->set_term(b.term);
          o->set_granted(b.granted);
        } else if constexpr (std::is_same_v<T, rc::append_request>) {
          auto* o = out.mutable_append_request();
          o->set_term(b.term);
          o->set_prev_index(b.prev_index);
          o->set_prev_term(b.prev_term);
          o->set_commit(b.commit);
          o->set_seq(b.seq);
          o->mutable_entries()->Reserve(static_cast<int>(b.entries.size()));
          for (auto& e : b.entries)
            to_proto(std::move(e), *o->add_entries());
        } else if constexpr (std::is_same_v<T, rc::append_response>) {
          auto* o = out.mutable_append_response();
          o->set_term(b.term);
          o->set_success(b.success);
          o->set_index(b.index);
          o->set_hint(b.hint);
          o->set_seq(b.seq);
        } else if constexpr (std::is_same_v<T, rc::snapshot_request>) {
          auto* o = out.mutable_snapshot_request();
          o->set_term(b.term);
          to_proto(b.meta, *o->mutable_meta());
          o->set_data(std::move(b.data));
          o->set_seq(b.seq);
        } else {
          auto* o = out.mutable_snapshot_response();
          o->set_term(b.term);
          o->set_index(b.index);
          o->set_seq(b.seq);
        }
      },
      m.body);
  return out;
}

expected<rc::message> from_proto(const v1::RaftMessage& m) {
  rc::message out;
  out.from = m.from();
  out.to = m.to();
  switch (m.body_case()) {
  case v1::RaftMessage::kVoteRequest: {
    const auto& b = m.vote_request();
    out.body = rc::vote_request{b.term(), b.last_index(), b.last_term()};
    break;
  }
  case v1::RaftMessage::kVoteResponse:
    out.body = rc::vote_response{m.vote_response().term(), m.vote_response().granted()};
    break;
  case v1::RaftMessage::kAppendRequest: {
    const auto& b = m.append_request();
    rc::append_request r{b.term(), b.prev_index(), b.prev_term(), {}, b.commit(), b.seq()};
    r.entries.reserve(static_cast<std::size_t>(b.entries_size()));
    for (const auto& e : b.entries()) {
      auto x = from_proto(e);
      if (!x) return x.error();
      if (x->index != b.prev_index() + 1 + r.entries.size())
        return validation_error("RaftAppendRequest: entry index " + std::to_string(x->index)
                                + " does not follow prev_index " + std::to_string(b.prev_index())
                                + " contiguously");
      r.entries.push_back(std::move(*x));
    }
    out.body = std::move(r);
    break;
  }
  case v1::RaftMessage::kAppendResponse: {
    const auto& b = m.append_response();
    out.body = rc::append_response{b.term(), b.success(), b.index(), b.hint(), b.seq()};
    break;
  }
  case v1::RaftMessage::kSnapshotRequest: {
    const auto& b = m.snapshot_request();
    out.body = rc::snapshot_request{b.term(), from_proto(b.meta()), b.data(), b.seq()};
    break;
  }
  case v1::RaftMessage::kSnapshotResponse: {
    const auto& b = m.snapshot_response();
    out.body = rc::snapshot_response{b.term(), b.index(), b.seq()};
    break;
  }
  default:
    return validation_error("RaftMessage without a body");
  }
  return out;
}

std::string digest_of(const rc::entry& e) {
  std::string bytes;
  bytes.reserve(e.data.size() + 1);
  bytes.push_back(static_cast<char>(e.kind));
  bytes += e.data;
  return to_hex(sha256(bytes));
}

error error_of(const v1::Error& e) {
  errc code = errc::internal;
  if (!from_string(e.kind(), code)) code = errc::internal;
  return error{code, e.message()};
}

// --- the agent ---------------------------------------------------------------------------------

class raft_agent : public agent_base<raft_agent> {
public:
  explicit raft_agent(std::shared_ptr<const raft_options> opts) : opts_(std::move(opts)) {}

  static void define(handlers<raft_agent>& h) {
    h.kind(std::string{k_raft_agent})
        .on(&raft_agent::on_message)
        .on(&raft_agent::on_tick)
        .on(&raft_agent::on_flush)
        .on(&raft_agent::on_get)
        .on(&raft_agent::on_list)
        .on(&raft_agent::on_put)
        .on(&raft_agent::on_cas)
        .on(&raft_agent::on_delete)
        .on(&raft_agent::on_acquire)
        .on(&raft_agent::on_release)
        .on(&raft_agent::on_lease_get)
        .on(&raft_agent::on_status)
        .on(&raft_agent::on_add_member)
        .on(&raft_agent::on_remove_member);
  }

  void on_start(context& ctx) override {
    self_ = ctx.self().node;
    stream_ = "raft/" + opts_->group + "/" + self_ + "/log";
    setup_metrics(ctx);
    auto j = ctx.lookup(store::k_journal_agent);
    if (!j) {
      ctx.log().error("raft_no_journal", "the Raft agent needs the node's journal (af.journal)",
                      {{"group", opts_->group}});
      ctx.fail(make_error(errc::internal, "af.cluster.raft: no journal agent on " + self_));
      return;
    }
    journal_ = *j;
    start_recovery(ctx);
  }

private:
  // --- recovery ----------------------------------------------------------------------------

  void start_recovery(context& ctx) {
    recovering_ = {};
    journal_version_ = 0;
    v1::LoadSnapshotRequest req;
    req.set_stream(stream_);
    ctx.ask<v1::SnapshotResult>(journal_, req, opts_->request_timeout,
                                [this, &ctx](expected<v1::SnapshotResult> r) {
                                  if (!r) return recovery_failed(ctx, "load snapshot", r.error());
                                  begin_replay(ctx, *r);
                                });
  }

  void begin_replay(context& ctx, const v1::SnapshotResult& snap) {
    if (snap.found()) {
      v1::RaftDurable d;
      if (snap.type() != k_durable_type || !d.ParseFromString(snap.payload()))
        return recovery_failed(
            ctx, "snapshot",
            make_error(errc::internal, "the snapshot of " + stream_ + " is not a RaftDurable"));
      recovering_.hard = {d.hard().term(), d.hard().vote()};
      recovering_.snapshot = from_proto(d.meta());
      recovering_.snapshot_data = d.data();
      for (const auto& e : d.log()) {
        auto x = from_proto(e);
        if (!x) return recovery_failed(ctx, "snapshot", x.error());
        recovering_.log.push_back(std::move(*x));
      }
      journal_version_ = snap.version();
    }
    read_page(ctx, journal_version_ + 1);
  }

  void read_page(context& ctx, std::uint64_t from) {
    v1::ReadRequest req;
    req.set_stream(stream_);
    req.set_from_version(from);
    req.set_max(k_read_page);
    ctx.ask<v1::ReadResult>(journal_, req, opts_->request_timeout,
                            [this, &ctx, from](expected<v1::ReadResult> r) {
                              if (!r) return recovery_failed(ctx, "read", r.error());
                              for (const auto& ev : r->events()) {
                                if (auto st = replay(ev); !st)
                                  return recovery_failed(ctx, "replay", st.error());
                                journal_version_ = ev.version();
                              }
                              if (r->events_size() > 0 && journal_version_ < r->stream_version())
                                return read_page(ctx, journal_version_ + 1);
                              (void)from;
                              finish_recovery(ctx);
                            });
  }

  status replay(const v1::StoredEvent& ev) {
    if (ev.type() != k_write_type)
      return make_error(errc::internal, "event " + std::to_string(ev.version()) + " of " + stream_
                                            + " has type '" + ev.type() + "'");
    v1::RaftWrite w;
    if (!w.ParseFromString(ev.payload()))
      return make_error(errc::internal, "event " + std::to_string(ev.version()) + " of " + stream_
                                            + " does not parse");
    auto& st = recovering_;
    if (w.has_hard()) st.hard = {w.hard().term(), w.hard().vote()};
    auto drop_from = [&](std::uint64_t from) {
      std::erase_if(st.log, [from](const rc::entry& e) { return e.index >= from; });
    };
    if (w.truncate_from() != 0) drop_from(w.truncate_from());
    for (const auto& pe : w.entries()) {
      auto e = from_proto(pe);
      if (!e) return e.error();
      if (e->index <= st.snapshot.index) continue; // covered by the snapshot
      drop_from(e->index);                         // replays over a newer image are idempotent
      const auto last = st.log.empty() ? st.snapshot.index : st.log.back().index;
      if (e->index != last + 1)
        return make_error(errc::internal, "event " + std::to_string(ev.version()) + " of " + stream_
                                              + " leaves a gap before entry "
                                              + std::to_string(e->index));
      st.log.push_back(std::move(*e));
    }
    return {};
  }

  void recovery_failed(context& ctx, const char* step, const error& e) {
    ctx.log().error("raft_recovery_failed", e.message(),
                    {{"group", opts_->group}, {"step", step}, {"stream", stream_}});
    if (retryable(e.code())) {
      // The journal is not open yet (or busy): try again shortly rather than burn the
      // supervisor's restart intensity.
      recovery_retry_ = true;
      ctx.schedule(opts_->heartbeat, v1::RaftTick{});
      return;
    }
    ctx.fail(
        make_error(e.code() == errc::internal ? errc::internal : errc::transient,
                   "af.cluster.raft: recovery (" + std::string{step} + ") failed: " + e.message()));
  }

  void finish_recovery(context& ctx) {
    rc::core_options co;
    co.self = self_;
    co.voters = opts_->members;
    co.election_min = opts_->election_timeout_min;
    co.election_max = opts_->election_timeout_max;
    co.heartbeat = opts_->heartbeat;
    co.max_batch = opts_->max_batch;
    co.max_inflight = opts_->max_inflight;
    co.check_quorum = opts_->check_quorum;
    co.unsafe_double_vote = opts_->unsafe_double_vote;
    core_ = std::make_unique<rc::raft_core>(co, ctx.rng().next_u64(), ctx.now());
    if (!recovering_.snapshot_data.empty()) {
      if (auto st = store_.restore(recovering_.snapshot_data); !st)
        return recovery_failed(ctx, "restore", st.error());
    }
    if (auto st = core_->restore(std::move(recovering_), ctx.now()); !st)
      return recovery_failed(ctx, "restore", st.error());
    recovering_ = {};
    ready_ = true;
    term_.set(static_cast<double>(core_->term()));
    ctx.log().info("raft_recovered", {},
                   {{"group", opts_->group},
                    {"term", core_->term()},
                    {"snapshot_index", core_->snapshot().index},
                    {"last_index", core_->last_index()},
                    {"voters", static_cast<std::int64_t>(core_->voters().size())}});
    if (opts_->observer) {
      opts_->observer->recovered(self_, core_->term(), core_->snapshot().index,
                                 core_->last_index());
      // The recovered log is durable: the observer's mirror of it starts again from here.
      for (auto i = core_->snapshot().index + 1; i <= core_->last_index(); ++i) {
        const auto* e = core_->at(i);
        opts_->observer->appended(self_, e->index, e->term, digest_of(*e));
      }
    }
    arm_timer(ctx);
  }

  // --- timers and the flush ------------------------------------------------------------------

  void arm_timer(context& ctx) {
    if (!core_) return;
    auto at = core_->next_deadline();
    const auto now = ctx.now();
    // Also wakes up for request deadlines.
    at = std::min(at, now + opts_->request_timeout);
    if (timer_armed_ && timer_at_ <= at) return;
    timer_armed_ = true;
    timer_at_ = at;
    v1::RaftTick t;
    t.set_seq(++timer_seq_);
    // Timers have microsecond resolution: round up, or the tick comes before the deadline.
    ctx.schedule(std::max(at - now, duration::zero()) + std::chrono::microseconds(1), t);
  }

  void on_tick(context& ctx, const v1::RaftTick& t) {
    if (!core_) {
      if (recovery_retry_) {
        recovery_retry_ = false;
        start_recovery(ctx);
      }
      return;
    }
    if (t.seq() == timer_seq_) timer_armed_ = false;
    core_->tick(ctx.now());
    expire_requests(ctx);
    process(ctx);
  }

  void want_flush(context& ctx) {
    if (flush_due_) return;
    flush_due_ = true;
    ctx.tell(ctx.self_ref(), v1::RaftFlush{});
  }

  void on_flush(context& ctx, const v1::RaftFlush&) {
    flush_due_ = false;
    process(ctx);
  }

  /// Everything the core has for us: events, sends, writes, applies, reads.
  void process(context& ctx) {
    while (core_) {
      auto r = core_->take_ready();
      if (r.empty()) break;
      handle(ctx, std::move(r));
    }
    if (!core_) return;
    term_.set(static_cast<double>(core_->term()));
    commit_gauge_.set(static_cast<double>(core_->commit_index()));
    leader_gauge_.set(core_->current_role() == rc::role::leader ? 1.0 : 0.0);
    arm_timer(ctx);
  }

  void handle(context& ctx, rc::ready r) {
    for (const auto& ev : r.events)
      on_event(ctx, ev);
    for (auto& m : r.send)
      send(ctx, std::move(m));
    if (r.snapshot) {
      if (auto st = store_.restore(r.snapshot_data); !st) {
        // The leader sent a snapshot this build cannot read: fail loudly (a restart reloads).
        ctx.log().error("raft_snapshot_unreadable", st.error().message(),
                        {{"index", r.snapshot->index}});
        ctx.fail(st.error());
        return;
      }
      snapshots_installed_.inc();
      ctx.log().info("raft_snapshot_installed", {},
                     {{"index", r.snapshot->index}, {"term", r.snapshot->term}});
    }
    if (r.needs_write()) {
      job j;
      j.seq = r.seq;
      if (r.snapshot) {
        j.image = true;
        j.installed = std::make_pair(r.snapshot->index, r.snapshot->term);
        // No entries left after the snapshot: the log beyond it was dropped (a conflict).
        if (r.entries.empty()) j.truncate_from = r.snapshot->index + 1;
      } else {
        if (r.hard) {
          auto* h = j.write.mutable_hard();
          h->set_term(r.hard->term);
          h->set_vote(r.hard->vote);
        }
        j.write.set_truncate_from(r.truncate_from);
        j.truncate_from = r.truncate_from;
        if (opts_->observer)
          for (const auto& e : r.entries)
            j.appended.push_back({e.index, e.term, digest_of(e)});
        j.write.mutable_entries()->Reserve(static_cast<int>(r.entries.size()));
        for (auto& e : r.entries)
          to_proto(std::move(e), *j.write.add_entries());
      }
      j.held = std::move(r.send_after_write);
      writes_.push_back(std::move(j));
      pump_writes(ctx);
    } else if (!r.send_after_write.empty()) {
      // They may depend on writes still under way (an append answered from an earlier batch):
      // they leave with the latest write, the one whose completion makes every earlier one
      // durable too (not when the queue drains: under steady load it never does).
      auto& after = !writes_.empty() ? writes_.back().held : held_after_;
      if (writes_.empty() && !write_in_flight_)
        for (auto& m : r.send_after_write)
          send(ctx, std::move(m));
      else
        after.insert(after.end(), std::make_move_iterator(r.send_after_write.begin()),
                     std::make_move_iterator(r.send_after_write.end()));
    }
    for (const auto& e : r.apply)
      apply(ctx, e);
    for (const auto& rd : r.reads)
      read_confirmed(ctx, rd);
    for (auto id : r.dropped_reads)
      finish_read(id, make_error(errc::transient, "raft: " + self_
                                                      + " lost the leadership before the read "
                                                        "was confirmed; retry"));
    serve_reads();
    maybe_compact(ctx);
  }

  void on_event(context& ctx, const rc::core_event& ev) {
    switch (ev.what) {
    case rc::core_event::kind::campaign:
      elections_.inc();
      ctx.log().info("raft_campaign", {}, {{"group", opts_->group}, {"term", ev.term}});
      break;
    case rc::core_event::kind::became_leader:
      note_office(ctx);
      last_stamp_ = std::max(last_stamp_, ctx.now().time_since_epoch().count());
      leaders_.inc();
      ctx.log().info("raft_became_leader", {},
                     {{"group", opts_->group}, {"term", ev.term}, {"last_index", ev.index}});
      if (opts_->observer) opts_->observer->became_leader(self_, ev.term);
      break;
    case rc::core_event::kind::stepped_down:
      ctx.log().info("raft_step_down", ev.detail,
                     {{"group", opts_->group}, {"term", ev.term}, {"commit_index", ev.index}});
      break;
    case rc::core_event::kind::committed:
      if (opts_->observer) opts_->observer->committed(self_, ev.term, ev.index);
      break;
    case rc::core_event::kind::removed:
      ctx.log().info("raft_removed", "this node is no longer a voter of the group",
                     {{"group", opts_->group}, {"index", ev.index}});
      break;
    }
  }

  void send(context& ctx, rc::message&& m) {
    auto ref = ctx.lookup(address{m.to, std::string{k_raft_agent}});
    if (!ref) return; // no route now: Raft retries (heartbeats, elections)
    sent_.inc();
    ctx.tell(*ref, to_proto(std::move(m), opts_->group));
  }

  // --- durable writes: one journal request at a time, batching what waits meanwhile -----------

  struct observed_entry {
    std::uint64_t index, term;
    std::string digest;
  };
  struct job {
    std::uint64_t seq = 0;
    bool image = false; ///< save the whole durable state as the journal's snapshot
    std::optional<std::pair<std::uint64_t, std::uint64_t>> installed;
    v1::RaftWrite write;
    std::uint64_t truncate_from = 0;
    std::vector<observed_entry> appended;
    std::vector<rc::message> held;
  };

  void pump_writes(context& ctx) {
    if (write_in_flight_ || writes_.empty()) return;
    if (writes_.front().image) return save_image(ctx);
    // Every plain write up to the next image goes in one append (one transaction).
    std::vector<job> batch;
    v1::AppendRequest req;
    req.set_stream(stream_);
    req.set_expected_version(journal_version_);
    std::size_t entries = 0;
    while (!writes_.empty() && !writes_.front().image) {
      auto& j = writes_.front();
      auto* ev = req.add_events();
      ev->set_type(std::string{k_write_type});
      j.write.SerializeToString(ev->mutable_payload());
      entries += static_cast<std::size_t>(j.write.entries_size());
      batch.push_back(std::move(j));
      writes_.pop_front();
    }
    write_in_flight_ = true;
    journal_writes_.inc();
    write_entries_.observe(static_cast<double>(entries));
    ctx.ask<v1::AppendResult>(
        journal_, std::move(req), opts_->request_timeout,
        [this, &ctx, batch = std::move(batch)](expected<v1::AppendResult> r) mutable {
          write_in_flight_ = false;
          if (!r) return write_failed(ctx, r.error());
          journal_version_ = r->last_version();
          for (auto& j : batch)
            written(ctx, j);
          after_writes(ctx);
        });
  }

  void save_image(context& ctx) {
    auto j = std::move(writes_.front());
    writes_.pop_front();
    v1::RaftDurable d;
    d.mutable_hard()->set_term(core_->term());
    d.mutable_hard()->set_vote(core_->vote());
    to_proto(core_->snapshot(), *d.mutable_meta());
    d.set_data(core_->snapshot_data());
    for (auto i = core_->snapshot().index + 1; i <= core_->last_index(); ++i)
      to_proto(*core_->at(i), *d.add_log());
    v1::SaveSnapshotRequest req;
    req.set_stream(stream_);
    req.set_version(journal_version_);
    req.set_type(std::string{k_durable_type});
    d.SerializeToString(req.mutable_payload());
    write_in_flight_ = true;
    journal_writes_.inc();
    ctx.ask<v1::SnapshotResult>(
        journal_, std::move(req), opts_->request_timeout,
        [this, &ctx, j = std::move(j)](expected<v1::SnapshotResult> r) mutable {
          write_in_flight_ = false;
          if (!r) return write_failed(ctx, r.error());
          if (!j.installed) compact_queued_ = false;
          written(ctx, j);
          after_writes(ctx);
        });
  }

  void written(context& ctx, job& j) {
    if (opts_->observer) {
      if (j.truncate_from != 0) opts_->observer->truncated(self_, j.truncate_from);
      if (j.installed)
        opts_->observer->snapshot_installed(self_, j.installed->first, j.installed->second);
      for (const auto& e : j.appended)
        opts_->observer->appended(self_, e.index, e.term, e.digest);
    }
    if (j.seq != 0) core_->persisted(j.seq);
    for (auto& m : j.held)
      send(ctx, std::move(m));
    j.held.clear();
  }

  /// The write in flight is durable: what waited for it (held_after_) leaves, the next batch
  /// starts.
  void after_writes(context& ctx) {
    auto held = std::move(held_after_);
    held_after_.clear();
    for (auto& m : held)
      send(ctx, std::move(m));
    pump_writes(ctx);
    process(ctx);
  }

  void write_failed(context& ctx, const error& e) {
    // What is durable is unknown now: restart and recover from the journal (never answer as if
    // the write had happened).
    ctx.log().error("raft_journal_failed", e.message(),
                    {{"group", opts_->group}, {"stream", stream_}});
    ctx.fail(make_error(errc::internal, "af.cluster.raft: journal write failed: " + e.message()));
  }

  // --- applying ------------------------------------------------------------------------------

  void apply(context& ctx, const rc::entry& e) {
    meta_store::result_ptr result;
    if (e.kind == rc::entry_kind::command) {
      result = store_.apply_shared(e.data, e.index);
    } else {
      auto r = std::make_shared<v1::MetaCommandResult>();
      auto* m = r->mutable_meta();
      m->set_ok(true);
      m->set_index(e.index);
      result = std::move(r);
      if (e.kind == rc::entry_kind::config) {
        ctx.log().info("raft_membership_changed", {},
                       {{"group", opts_->group},
                        {"index", e.index},
                        {"voters", static_cast<std::int64_t>(rc::decode_voters(e.data).size())}});
      }
    }
    applied_index_ = e.index;
    applied_gauge_.set(static_cast<double>(e.index));
    if (opts_->observer) opts_->observer->applied(self_, e.index, e.term, digest_of(e));
    auto it = proposals_.find(e.index);
    if (it == proposals_.end()) return;
    auto p = std::move(it->second);
    proposals_.erase(it);
    if (p.term != e.term) {
      p.done(make_error(errc::transient, "raft: the command at index " + std::to_string(e.index)
                                             + " was replaced by another leader's entry; retry "
                                               "(with the same session seq)"));
      return;
    }
    p.done(std::move(result));
  }

  /// Every snapshot_every applied entries, at this member's phase of them (members take turns,
  /// see rc::snapshot_phase): snapshot the store, compact the log, and save the durable image as
  /// the journal's snapshot of the stream.
  void maybe_compact(context& ctx) {
    if (opts_->snapshot_every == 0 || compact_queued_) return;
    const auto applied = core_->applied_index();
    if (applied < core_->snapshot().index + opts_->snapshot_every / 2) return;
    const auto phase = rc::snapshot_phase(self_, core_->voters(), opts_->snapshot_every);
    if (!rc::snapshot_due(core_->snapshot().index, applied, opts_->snapshot_every, phase)) return;
    if (auto st = core_->compact(applied, store_.snapshot()); !st) {
      ctx.log().warn("raft_compact_failed", st.error().message(), {{"index", applied}});
      return;
    }
    snapshots_taken_.inc();
    ctx.log().info("raft_snapshot_taken", {},
                   {{"group", opts_->group},
                    {"index", applied},
                    {"bytes", static_cast<std::int64_t>(core_->snapshot_data().size())}});
    job j;
    j.image = true;
    compact_queued_ = true;
    writes_.push_back(std::move(j));
    pump_writes(ctx);
  }

  // --- client requests ----------------------------------------------------------------------

  struct proposal {
    std::uint64_t term = 0;
    time_point deadline{};
    std::function<void(expected<meta_store::result_ptr>)> done;
  };
  struct pending_read {
    time_point deadline{};
    std::uint64_t index = 0;
    bool confirmed = false;
    std::function<void(status)> serve;
  };

  /// Not ready, not the leader: forwards the request to the known leader (once: a request
  /// forwarded by another member is not forwarded again), or fails `transient`.
  template <class Reply, class Msg>
  bool forward_if_needed(context& ctx, const Msg& msg, responder<Reply>& reply) {
    if (!core_) {
      reply.fail(make_error(errc::transient, "raft: " + self_ + " is still recovering"));
      return true;
    }
    if (core_->current_role() == rc::role::leader) return false;
    const auto& leader = core_->leader();
    const auto* cur = ctx.current();
    const bool forwarded =
        cur != nullptr && cur->sender().name == k_raft_agent && cur->sender().node != self_;
    if (leader.empty() || forwarded) {
      reply.fail(make_error(errc::transient, leader.empty()
                                                 ? "raft: no leader known to " + self_ + " (group "
                                                       + opts_->group + "); retry"
                                                 : "raft: " + self_
                                                       + " is not the leader; the leader "
                                                         "is "
                                                       + leader));
      return true;
    }
    auto ref = ctx.lookup(address{leader, std::string{k_raft_agent}});
    if (!ref) {
      reply.fail(make_error(errc::transient, "raft: no route to the leader " + leader));
      return true;
    }
    forwarded_.inc();
    ctx.ask<Reply>(*ref, msg, opts_->request_timeout, [reply](expected<Reply> r) mutable {
      if (r)
        reply.reply(std::move(*r));
      else
        reply.fail(r.error());
    });
    return true;
  }

  template <class Reply, class Msg, class Take>
  void write(context& ctx, const Msg& msg, responder<Reply> reply, Take take) {
    if (forward_if_needed(ctx, msg, reply)) return;
    note_office(ctx);
    last_stamp_ = std::max(last_stamp_, ctx.now().time_since_epoch().count());
    const command_stamp stamp{last_stamp_, leader_since_.time_since_epoch().count(), core_->term()};
    // The log entry is the serialized MetaCommand, written straight from the request.
    auto idx = core_->propose(encode_command(stamp, msg), ctx.now());
    if (!idx) return reply.fail(idx.error());
    proposals_total_.inc();
    proposals_[*idx] = {core_->term(), ctx.now() + opts_->request_timeout,
                        [reply, take](expected<meta_store::result_ptr> r) mutable {
                          if (!r) return reply.fail(r.error());
                          const auto& res = **r;
                          if (res.has_error()) return reply.fail(error_of(res.error()));
                          auto out = take(res);
                          if (!out) return reply.fail(out.error());
                          reply.reply(std::move(*out));
                        }};
    want_flush(ctx);
  }

  /// When this leader took office (its clock), for the new-leader lease wait (meta_store.hpp).
  /// Stamped at the first of the became_leader event and the term's first proposal: never
  /// earlier than the real moment, so the wait is never shorter than the lease's ttl.
  void note_office(context& ctx) {
    if (leader_since_term_ == core_->term()) return;
    leader_since_term_ = core_->term();
    leader_since_ = ctx.now();
  }

  static expected<v1::MetaResult> take_meta(const v1::MetaCommandResult& r) {
    if (!r.has_meta()) return make_error(errc::internal, "raft: unexpected command result");
    return r.meta();
  }
  static expected<v1::LeaseResult> take_lease(const v1::MetaCommandResult& r) {
    if (!r.has_lease()) return make_error(errc::internal, "raft: unexpected command result");
    return r.lease();
  }

  void on_put(context& ctx, const v1::MetaPut& m, responder<v1::MetaResult> reply) {
    write(ctx, m, std::move(reply), take_meta);
  }
  void on_cas(context& ctx, const v1::MetaCas& m, responder<v1::MetaResult> reply) {
    write(ctx, m, std::move(reply), take_meta);
  }
  void on_delete(context& ctx, const v1::MetaDelete& m, responder<v1::MetaResult> reply) {
    write(ctx, m, std::move(reply), take_meta);
  }
  void on_acquire(context& ctx, const v1::LeaseAcquire& m, responder<v1::LeaseResult> reply) {
    write(ctx, m, std::move(reply), take_lease);
  }
  void on_release(context& ctx, const v1::LeaseRelease& m, responder<v1::LeaseResult> reply) {
    write(ctx, m, std::move(reply), take_lease);
  }

  /// A linearizable read through ReadIndex at the leader, then `serve` once applied.
  template <class Reply, class Msg, class Serve>
  void read(context& ctx, const Msg& msg, responder<Reply> reply, Serve serve) {
    if (forward_if_needed(ctx, msg, reply)) return;
    const auto id = ++read_seq_;
    pending_read p;
    p.deadline = ctx.now() + opts_->request_timeout;
    p.serve = [this, reply, serve, &ctx](status st) mutable {
      if (!st) return reply.fail(st.error());
      reply.reply(serve(ctx));
    };
    reads_[id] = std::move(p);
    if (auto st = core_->read_index(id, ctx.now()); !st) return finish_read(id, st.error());
    reads_total_.inc();
    want_flush(ctx);
  }

  void on_get(context& ctx, const v1::MetaGet& m, responder<v1::MetaEntry> reply) {
    if (m.stale_ok() && core_) return reply.reply(store_.get(m.key()));
    read(ctx, m, std::move(reply), [this, key = m.key()](context&) { return store_.get(key); });
  }
  void on_list(context& ctx, const v1::MetaList& m, responder<v1::MetaEntries> reply) {
    if (m.stale_ok() && core_) return reply.reply(store_.list(m.prefix(), m.limit()));
    read(ctx, m, std::move(reply),
         [this, p = m.prefix(), l = m.limit()](context&) { return store_.list(p, l); });
  }
  void on_lease_get(context& ctx, const v1::LeaseGet& m, responder<v1::LeaseResult> reply) {
    if (m.key().empty()) return reply.fail(validation_error("LeaseGet: the key is empty"));
    read(ctx, m, std::move(reply),
         [this, key = m.key()](context& c) { return store_.lease(key, c.now()); });
  }

  void read_confirmed(context&, const rc::read_state& rd) {
    auto it = reads_.find(rd.id);
    if (it == reads_.end()) return;
    it->second.confirmed = true;
    it->second.index = rd.index;
  }

  void serve_reads() {
    for (auto it = reads_.begin(); it != reads_.end();) {
      if (it->second.confirmed && store_applied() >= it->second.index) {
        auto p = std::move(it->second);
        it = reads_.erase(it);
        p.serve({});
      } else {
        ++it;
      }
    }
  }

  std::uint64_t store_applied() const { return core_ ? core_->applied_index() : 0; }

  void finish_read(std::uint64_t id, error e) {
    auto it = reads_.find(id);
    if (it == reads_.end()) return;
    auto p = std::move(it->second);
    reads_.erase(it);
    p.serve(std::move(e));
  }

  void expire_requests(context& ctx) {
    const auto now = ctx.now();
    for (auto it = proposals_.begin(); it != proposals_.end();) {
      if (it->second.deadline <= now) {
        auto p = std::move(it->second);
        it = proposals_.erase(it);
        p.done(make_error(errc::timeout,
                          "raft: the command was not committed within "
                              + std::to_string(opts_->request_timeout.count() / 1'000'000)
                              + " ms (its outcome is unknown; retry with the "
                                "same session seq)"));
      } else {
        ++it;
      }
    }
    for (auto it = reads_.begin(); it != reads_.end();) {
      if (it->second.deadline <= now) {
        auto p = std::move(it->second);
        it = reads_.erase(it);
        p.serve(make_error(errc::timeout, "raft: the read was not confirmed in time"));
      } else {
        ++it;
      }
    }
  }

  // --- membership and status ------------------------------------------------------------------

  void change(context& ctx, const std::string& node, bool add, responder<v1::MetaResult> reply,
              const google::protobuf::Message& original) {
    (void)original;
    auto idx = add ? core_->add_voter(node, ctx.now()) : core_->remove_voter(node, ctx.now());
    if (!idx) return reply.fail(idx.error());
    ctx.log().info("raft_membership_change", {},
                   {{"group", opts_->group},
                    {"node", node},
                    {"change", add ? "add" : "remove"},
                    {"index", *idx}});
    proposals_[*idx] = {core_->term(), ctx.now() + opts_->request_timeout,
                        [reply](expected<meta_store::result_ptr> r) mutable {
                          if (!r) return reply.fail(r.error());
                          reply.reply((*r)->meta());
                        }};
    want_flush(ctx);
  }

  void on_add_member(context& ctx, const v1::RaftAddMember& m, responder<v1::MetaResult> reply) {
    if (forward_if_needed(ctx, m, reply)) return;
    change(ctx, m.node(), true, std::move(reply), m);
  }
  void on_remove_member(context& ctx, const v1::RaftRemoveMember& m,
                        responder<v1::MetaResult> reply) {
    if (forward_if_needed(ctx, m, reply)) return;
    change(ctx, m.node(), false, std::move(reply), m);
  }

  expected<v1::RaftStatus> on_status(context& ctx, const v1::RaftStatusRequest&) {
    v1::RaftStatus s;
    s.set_node(self_);
    s.set_group(opts_->group);
    if (!core_) {
      s.set_role("recovering");
      return s;
    }
    s.set_term(core_->term());
    s.set_role(std::string{rc::to_string(core_->current_role())});
    s.set_leader(core_->leader());
    s.set_commit_index(core_->commit_index());
    s.set_applied_index(core_->applied_index());
    s.set_last_index(core_->last_index());
    s.set_snapshot_index(core_->snapshot().index);
    auto voters = core_->voters();
    if (!core_->is_voter(self_)) voters.push_back(self_);
    std::sort(voters.begin(), voters.end());
    for (const auto& v : voters) {
      auto* p = s.add_members();
      p->set_node(v);
      p->set_voter(core_->is_voter(v));
      p->set_match_index(core_->match_of(v));
      p->set_self(v == self_);
    }
    s.set_keys(store_.keys());
    s.set_leases(store_.leases_held(ctx.now()));
    return s;
  }

  // --- peers ------------------------------------------------------------------------------

  void on_message(context& ctx, const v1::RaftMessage& m) {
    if (!core_) return; // recovering: Raft copes with the loss
    if (m.group() != opts_->group || m.to() != self_ || m.from().empty() || m.from() == self_)
      return refuse(ctx, "group '" + m.group() + "', from '" + m.from() + "' to '" + m.to()
                             + "' is not for this member (" + self_ + ", group " + opts_->group
                             + ")");
    if (const auto* cur = ctx.current();
        cur != nullptr && !cur->sender().node.empty() && cur->sender().node != m.from())
      return refuse(ctx, "RaftMessage claims to come from '" + m.from() + "' but was sent by '"
                             + cur->sender().node + "'");
    auto msg = from_proto(m);
    if (!msg) return refuse(ctx, msg.error().message());
    core_->step(*msg, ctx.now());
    want_flush(ctx);
  }

  void refuse(context& ctx, const std::string& why) {
    refused_.inc();
    ctx.log().warn("raft_message_refused", why, {{"group", opts_->group}});
  }

  // --- metrics ------------------------------------------------------------------------------

  void setup_metrics(context& ctx) {
    auto& m = ctx.metrics();
    const metric_labels g{{"group", opts_->group}};
    auto counter = [&](const char* name, const char* help, metric_labels l = {}) {
      for (const auto& x : g)
        l.insert(x);
      auto c = m.counter(name, help, l);
      return c ? *c : counter_handle{};
    };
    auto gauge = [&](const char* name, const char* help) {
      auto x = m.gauge(name, help, g);
      return x ? *x : gauge_handle{};
    };
    term_ = gauge("af_raft_term", "The current Raft term of this member");
    commit_gauge_ = gauge("af_raft_commit_index", "The highest log index known committed");
    applied_gauge_ = gauge("af_raft_applied_index", "The highest log index applied to the store");
    leader_gauge_ = gauge("af_raft_is_leader", "1 while this member is the leader");
    elections_ = counter("af_raft_elections_total", "Elections this member started");
    leaders_ = counter("af_raft_leader_terms_total", "Terms this member won");
    proposals_total_ = counter("af_raft_proposals_total", "Client commands proposed as leader");
    reads_total_ = counter("af_raft_reads_total", "Linearizable reads started as leader");
    forwarded_ = counter("af_raft_forwarded_total", "Client requests forwarded to the leader");
    refused_ = counter("af_raft_refused_total", "Raft messages refused as malformed or misrouted");
    sent_ = counter("af_raft_messages_sent_total", "Raft RPC messages sent to other members");
    journal_writes_ = counter("af_raft_journal_writes_total",
                              "Journal requests (one transaction each) for the Raft log");
    snapshots_taken_ =
        counter("af_raft_snapshots_total", "Snapshots taken or installed", {{"kind", "taken"}});
    snapshots_installed_ =
        counter("af_raft_snapshots_total", "Snapshots taken or installed", {{"kind", "installed"}});
    if (auto h = m.histogram("af_raft_write_entries", "Log entries per journal write", g,
                             metrics::exponential_buckets(1, 2, 12)))
      write_entries_ = *h;
  }

  std::shared_ptr<const raft_options> opts_;
  std::string self_;
  std::string stream_;
  agent_ref journal_;
  std::uint64_t journal_version_ = 0;
  rc::durable_state recovering_;
  bool ready_ = false;
  bool recovery_retry_ = false;
  std::uint64_t leader_since_term_ = 0;
  std::unique_ptr<rc::raft_core> core_;
  meta_store store_;
  std::uint64_t applied_index_ = 0;
  bool flush_due_ = false;
  bool timer_armed_ = false;
  time_point timer_at_{};
  std::uint64_t timer_seq_ = 0;
  std::deque<job> writes_;
  bool write_in_flight_ = false;
  bool compact_queued_ = false;
  std::vector<rc::message> held_after_;
  std::map<std::uint64_t, proposal> proposals_;
  std::map<std::uint64_t, pending_read> reads_;
  std::uint64_t read_seq_ = 0;
  time_point leader_since_{};
  std::int64_t last_stamp_ = 0;
  gauge_handle term_, commit_gauge_, applied_gauge_, leader_gauge_;
  counter_handle elections_, leaders_, proposals_total_, reads_total_, forwarded_, refused_, sent_,
      journal_writes_, snapshots_taken_, snapshots_installed_;
  histogram_handle write_entries_;
};

} // namespace

status validate(const raft_options& o) {
  auto bad = [](const std::string& what) { return status{validation_error("raft." + what)}; };
  if (o.group.empty() || o.group.find('/') != std::string::npos)
    return bad("group: must be non-empty and without '/'");
  if (o.members.empty()) return bad("members: at least one voter (this node included)");
  for (const auto& m : o.members)
    if (m.empty() || m.find('\n') != std::string::npos)
      return bad("members: empty or malformed node name '" + m + "'");
  if (o.election_timeout_min <= duration::zero()) return bad("election_timeout_min: must be > 0");
  if (o.election_timeout_max <= o.election_timeout_min)
    return bad("election_timeout_max: must be > election_timeout_min");
  if (o.heartbeat <= duration::zero() || o.heartbeat >= o.election_timeout_min)
    return bad("heartbeat: must be > 0 and below election_timeout_min");
  if (o.max_batch == 0) return bad("max_batch: must be >= 1");
  if (o.max_inflight == 0) return bad("max_inflight: must be >= 1");
  if (o.request_timeout <= duration::zero()) return bad("request_timeout: must be > 0");
  return {};
}

sup::child_spec raft_child(raft_options opts) {
  auto shared = std::make_shared<const raft_options>(std::move(opts));
  sup::child_spec spec;
  spec.id = std::string{k_raft_agent};
  spec.restart = sup::restart_policy::permanent;
  spec.system = true;
  spec.make_agent = [shared] { return std::make_unique<raft_agent>(shared); };
  return spec;
}

} // namespace af::cluster
