// The simulator's Raft bookkeeping (raft_book.hpp): a mirror of every member's durable log, the
// entries leaders committed and the entries members applied, checked at every change.
#include "raft_book.hpp"

#include "af/agent.hpp"
#include "af/cluster/names.hpp"
#include "af/v1/meta.pb.h"
#include "af/v1/raft.pb.h"
#include "world.hpp"

#include <algorithm>

namespace af::sim::detail {

namespace {

/// sim.raft_writer: puts to the local af.cluster.raft at a steady rate (a load that makes the
/// log grow, so replication, conflicts and snapshots get exercised). Outcomes are ignored: the
/// invariants judge the group, not the writer.
class raft_writer : public agent_base<raft_writer> {
public:
  raft_writer(duration every, std::uint32_t keys, std::shared_ptr<raft_write_counts> counts)
      : every_(every), keys_(keys), counts_(std::move(counts)) {}
  static void define(handlers<raft_writer>& h) {
    h.kind("sim.raft_writer").on(&raft_writer::on_tick);
  }
  void on_start(context& ctx) override {
    ctx.schedule(every_
                     + duration{static_cast<std::int64_t>(
                         ctx.rng().uniform(static_cast<std::uint64_t>(every_.count())))},
                 v1::RaftTick{});
  }
  void on_tick(context& ctx, const v1::RaftTick&) {
    ctx.schedule(every_, v1::RaftTick{});
    v1::MetaPut p;
    p.set_key("k" + std::to_string(ctx.rng().uniform(keys_)));
    p.set_value(ctx.self().node + "-" + std::to_string(++n_));
    ++counts_->sent;
    ctx.ask<v1::MetaResult>(
        std::string{cluster::k_raft_agent}, std::move(p), every_ * 20,
        [c = counts_](expected<v1::MetaResult> r) { ++(r ? c->acked : c->failed); });
  }

private:
  duration every_;
  std::uint32_t keys_;
  std::shared_ptr<raft_write_counts> counts_;
  std::uint64_t n_ = 0;
};

} // namespace

raft_book::raft_book(world& w, const scenario& sc) : world_(w), spec_(sc.raft) {
  for (const auto& m : spec_.options.members)
    nodes_[m];
}

bool raft_book::member(const std::string& node) const {
  return std::find(spec_.options.members.begin(), spec_.options.members.end(), node)
         != spec_.options.members.end();
}

sup::child_spec raft_book::service(const std::string&) {
  auto o = spec_.options;
  o.observer = shared_from_this();
  return cluster::raft_child(std::move(o));
}

std::optional<sup::child_spec> raft_book::writer(const std::string&) const {
  if (spec_.writes_per_second <= 0) return std::nullopt;
  const auto every = std::chrono::duration_cast<duration>(
      std::chrono::duration<double>(1.0 / spec_.writes_per_second));
  sup::child_spec c;
  c.id = "sim.raft_writer";
  c.restart = sup::restart_policy::permanent;
  c.make_agent = [every, keys = spec_.keys, counts = writes_] {
    return std::make_unique<raft_writer>(std::max(every, duration{1000}), keys, counts);
  };
  return c;
}

void raft_book::node_up(const std::string& name) {
  if (auto it = nodes_.find(name); it != nodes_.end()) it->second.up = true;
}

void raft_book::node_down(const std::string& name, bool crash) {
  auto it = nodes_.find(name);
  if (it == nodes_.end()) return;
  it->second.up = false;
  it->second.before_crash = it->second.log;
  if (crash && name == leader_ && leader_crashed_at_ < duration::zero()) {
    ++leader_crashes_;
    leader_crashed_at_ = world_.elapsed();
  }
}

void raft_book::violate(violation& v, std::string what) {
  if (v.count++ == 0) {
    v.first = std::move(what);
    v.at = world_.elapsed();
  }
}

std::string raft_book::slot_text(std::uint64_t index, const slot& s) const {
  return "(index " + std::to_string(index) + ", term " + std::to_string(s.term) + ", "
         + s.digest.substr(0, 12) + ")";
}

void raft_book::recovered(const std::string& self, std::uint64_t term, std::uint64_t snapshot_index,
                          std::uint64_t last_index) {
  auto& n = nodes_[self];
  ++recoveries_;
  max_term_ = std::max(max_term_, term);
  // What was observed durable must still be there: an entry beyond the recovered log means a
  // write was acknowledged (observed) before it was durable.
  if (!n.log.empty() && n.log.rbegin()->first > last_index
      && n.log.rbegin()->first > snapshot_index)
    violate(matching_, self + " lost durable log entries across a restart: it had "
                           + slot_text(n.log.rbegin()->first, n.log.rbegin()->second)
                           + ", recovered up to index " + std::to_string(last_index));
  n.before_crash = std::move(n.log);
  n.log.clear();
  n.snapshot_index = snapshot_index;
  n.committed_seen = 0;
}

void raft_book::became_leader(const std::string& self, std::uint64_t term) {
  ++leaders_;
  max_term_ = std::max(max_term_, term);
  auto [it, fresh] = leader_of_term_.emplace(term, self);
  if (!fresh && it->second != self)
    violate(election_,
            "two leaders in term " + std::to_string(term) + ": " + it->second + " and " + self);
  // Leader completeness: every entry committed so far is in the new leader's log (or under its
  // snapshot).
  const auto& n = nodes_[self];
  for (const auto& [i, c] : committed_) {
    if (i <= n.snapshot_index) continue;
    auto e = n.log.find(i);
    if (e == n.log.end() || !(e->second == c)) {
      violate(completeness_,
              self + " became leader of term " + std::to_string(term)
                  + " without the committed entry " + slot_text(i, c)
                  + (e == n.log.end() ? std::string{" (it has nothing there)"}
                                      : " (it has " + slot_text(i, e->second) + ")"));
      break;
    }
  }
  if (term >= max_term_) leader_ = self;
  if (leader_crashed_at_ >= duration::zero()) {
    elect_ms_.push_back(
        std::chrono::duration<double, std::milli>(world_.elapsed() - leader_crashed_at_).count());
    leader_crashed_at_ = duration{-1};
  }
}

void raft_book::appended(const std::string& self, std::uint64_t index, std::uint64_t term,
                         const std::string& digest) {
  auto& n = nodes_[self];
  const slot s{term, digest};
  // Log matching: one (index, term) names one command, always after the same previous term.
  std::uint64_t prev_term = 0;
  if (auto p = n.log.find(index - 1); p != n.log.end()) prev_term = p->second.term;
  auto [it, fresh] = seen_.emplace(std::make_pair(index, term), std::make_pair(digest, prev_term));
  if (!fresh) {
    if (it->second.first != digest)
      violate(matching_, "two different entries at index " + std::to_string(index) + " in term "
                             + std::to_string(term) + " (" + self + " holds " + digest.substr(0, 12)
                             + ", another member " + it->second.first.substr(0, 12) + ")");
    else if (prev_term != 0 && it->second.second != 0 && prev_term != it->second.second)
      violate(matching_, self + " holds " + slot_text(index, s) + " after an entry of term "
                             + std::to_string(prev_term) + ", another member after term "
                             + std::to_string(it->second.second));
    if (it->second.second == 0) it->second.second = prev_term;
  }
  // A restarted member's recovered entries must be what it held before the crash.
  if (auto b = n.before_crash.find(index); b != n.before_crash.end()) {
    if (!(b->second == s))
      violate(matching_, self + " recovered " + slot_text(index, s) + " but held "
                             + slot_text(index, b->second) + " before it went down");
    n.before_crash.erase(b);
  }
  n.log.erase(n.log.lower_bound(index), n.log.end());
  n.log[index] = s;
}

void raft_book::truncated(const std::string& self, std::uint64_t from_index) {
  auto& n = nodes_[self];
  for (auto it = n.log.lower_bound(from_index); it != n.log.end(); ++it)
    if (auto c = committed_.find(it->first); c != committed_.end() && c->second == it->second)
      violate(state_machine_,
              self + " dropped the committed entry " + slot_text(it->first, it->second));
  n.log.erase(n.log.lower_bound(from_index), n.log.end());
  n.before_crash.erase(n.before_crash.lower_bound(from_index), n.before_crash.end());
}

void raft_book::snapshot_installed(const std::string& self, std::uint64_t index, std::uint64_t) {
  auto& n = nodes_[self];
  ++snapshots_;
  n.snapshot_index = std::max(n.snapshot_index, index);
  n.log.erase(n.log.begin(), n.log.upper_bound(index));
}

void raft_book::committed(const std::string& self, std::uint64_t term, std::uint64_t index) {
  auto& n = nodes_[self];
  max_commit_ = std::max(max_commit_, index);
  const auto from = std::max(n.committed_seen, n.snapshot_index) + 1;
  for (auto i = from; i <= index; ++i) {
    // A leader may commit an entry that a majority of followers hold before its own write of
    // it is durable (observed): it is recorded at the next report.
    auto e = n.log.find(i);
    if (e == n.log.end()) break;
    auto [it, fresh] = committed_.emplace(i, e->second);
    if (!fresh && !(it->second == e->second))
      violate(state_machine_, self + " (leader of term " + std::to_string(term) + ") committed "
                                  + slot_text(i, e->second) + " where " + slot_text(i, it->second)
                                  + " was committed before");
    n.committed_seen = i;
  }
}

void raft_book::applied(const std::string& self, std::uint64_t index, std::uint64_t term,
                        const std::string& digest) {
  const slot s{term, digest};
  auto [it, fresh] = applied_.emplace(index, s);
  if (!fresh && !(it->second == s))
    violate(state_machine_, self + " applied " + slot_text(index, s)
                                + " where another member applied " + slot_text(index, it->second));
}

raft_figures raft_book::figures() const {
  raft_figures f;
  f.members = spec_.options.members.size();
  f.leaders_elected = leaders_;
  f.max_term = max_term_;
  f.commit_index = max_commit_;
  f.applied_entries = applied_.size();
  f.snapshots_installed = snapshots_;
  f.recoveries = recoveries_;
  f.leader_crashes = leader_crashes_;
  f.elect_after_crash_ms = elect_ms_;
  f.writes_sent = writes_->sent;
  f.writes_acked = writes_->acked;
  f.writes_failed = writes_->failed;
  return f;
}

std::vector<invariant_result> raft_book::invariants(duration now) const {
  auto one = [&](const char* name, const violation& v, std::string ok_detail) {
    invariant_result r{name, v.count == 0, {}, v.count == 0 ? now : v.at};
    r.detail = v.count == 0 ? std::move(ok_detail)
                            : std::to_string(v.count) + " violation(s); first: " + v.first;
    return r;
  };
  std::vector<invariant_result> out;
  out.push_back(one("raft_election_safety", election_,
                    std::to_string(leader_of_term_.size()) + " terms with a leader, one each"));
  out.push_back(one("raft_log_matching", matching_,
                    std::to_string(seen_.size()) + " (index, term) pairs, each one command"));
  out.push_back(one("raft_leader_completeness", completeness_,
                    std::to_string(leaders_) + " leaders held every entry committed before them"));
  out.push_back(one("raft_state_machine_safety", state_machine_,
                    std::to_string(applied_.size()) + " indices applied, one command each; "
                        + std::to_string(committed_.size()) + " committed entries never dropped"));
  return out;
}

} // namespace af::sim::detail
