// The simulator's membership bookkeeping (cluster_book.hpp): every view of every node, kept up to
// date incrementally (1,000 members means a million view entries), so that convergence and
// detection are timed at the exact virtual moment they happen.
#include "cluster_book.hpp"

#include "af/v1/cluster.pb.h"
#include "world.hpp"

#include <algorithm>
#include <cmath>

namespace af::sim::detail {

namespace {

constexpr std::uint8_t k_alive = 1, k_suspect = 2, k_dead = 3;

bool live(std::uint8_t s) { return s == 1 || s == 2; }

double periods(duration d, duration period) {
  return static_cast<double>(d.count()) / static_cast<double>(period.count());
}

} // namespace

cluster_book::cluster_book(world& w, const scenario& sc)
    : world_(w), spec_(sc.cluster), names_(sc.nodes) {
  const auto n = names_.size();
  for (std::size_t i = 0; i < n; ++i)
    index_.emplace(names_[i], i);
  join_at_.assign(n, duration::zero());
  seeds_.assign(n, {});
  std::vector<bool> planned(n, false);
  for (const auto& j : spec_.joins)
    for (std::size_t k = 0; k < j.nodes.size(); ++k) {
      const auto i = index(j.nodes[k]);
      planned[i] = true;
      join_at_[i] = j.at + j.every * static_cast<std::int64_t>(k);
      seeds_[i] = j.seeds;
      last_join_ = std::max(last_join_, join_at_[i]);
    }
  for (std::size_t i = 0; i < n; ++i)
    if (planned[i] && join_at_[i] == last_join_) last_joiners_.push_back(i);
  // Nodes no entry names join at 0 through the first node.
  for (std::size_t i = 0; i < n; ++i)
    if (!planned[i] && i != 0) seeds_[i] = {names_[0]};
  // A declaration within this time of a start or a partition change may be a correct one (the
  // suspicion began while the member was unreachable): the cluster's suspicion timeout plus
  // two periods.
  const auto& o = spec_.swim;
  const auto periods_n = o.suspicion_mult * std::log10(static_cast<double>(n) + 1.0);
  const auto timeout =
      std::clamp(std::chrono::duration_cast<duration>(std::chrono::duration<double, std::nano>(
                     periods_n * static_cast<double>(o.period.count()))),
                 o.suspicion_min, std::max(o.suspicion_min, o.suspicion_max));
  fp_window_ = timeout + 2 * o.period;
  views_.assign(n, std::vector<std::uint8_t>(n, 0));
  up_.assign(n, false);
  active_.assign(n, false);
  up_since_.assign(n, duration::zero());
  live_up_.assign(n, 0);
  live_down_.assign(n, 0);
  seen_live_by_.assign(n, 0);
  open_crash_.assign(n, -1);
}

std::size_t cluster_book::index(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? names_.size() : it->second;
}

sup::child_spec cluster_book::service(const std::string& name) {
  auto o = spec_.swim;
  const auto i = index(name);
  o.seeds = seeds_[i];
  const auto now = world_.elapsed();
  o.join_delay = join_at_[i] > now ? join_at_[i] - now : duration::zero();
  // A restarted node without seeds of its own (the cluster's first node) joins back through
  // the first other node: its old incarnation is dead in the others' views, and it must learn
  // the whole view again.
  if (o.seeds.empty() && now > join_at_[i])
    for (const auto& other : names_)
      if (other != name) {
        o.seeds = {other};
        break;
      }
  o.observer = shared_from_this();
  return cluster::membership_child(std::move(o));
}

// --- the incremental views
// -------------------------------------------------------------------------

bool cluster_book::good(std::size_t v) const {
  return active_[v] && live_up_[v] == n_up_ && live_down_[v] == 0;
}

void cluster_book::refresh_good(std::size_t v, bool before) {
  const bool after = good(v);
  if (before != after) {
    if (after)
      ++n_good_;
    else
      --n_good_;
  }
}

void cluster_book::check_converged() {
  const bool now_converged = n_up_ > 0 && n_active_ == n_up_ && n_good_ == n_active_;
  if (now_converged == converged_) return;
  converged_ = now_converged;
  const auto t = world_.elapsed();
  converged_since_ = converged_ ? t : duration{-1};
}

void cluster_book::check_joined(duration now) {
  if (join_converged_ >= duration::zero() || now < last_join_ || last_joiners_.empty()) return;
  // The last joiners are alive in every live view (their own views are whole from the start:
  // the seed's answer; requiring them to stay whole would time background false suspicions).
  for (auto j : last_joiners_)
    if (!up_[j] || !active_[j] || seen_live_by_[j] != n_active_) return;
  join_converged_ = now;
}

void cluster_book::set_state(std::size_t v, std::size_t m, std::uint8_t s) {
  auto& cur = views_[v][m];
  if (cur == s) return;
  const bool before = good(v);
  if (live(cur)) {
    (up_[m] ? live_up_[v] : live_down_[v])--;
    if (active_[v]) --seen_live_by_[m];
  }
  cur = s;
  if (live(cur)) {
    (up_[m] ? live_up_[v] : live_down_[v])++;
    if (active_[v]) ++seen_live_by_[m];
  }
  refresh_good(v, before);
}

void cluster_book::deactivate(std::size_t v) {
  if (!active_[v]) return;
  // set_state keeps seen_live_by_ and n_good_ while the viewer is still active.
  for (std::size_t m = 0; m < names_.size(); ++m)
    set_state(v, m, 0);
  if (good(v)) --n_good_;
  active_[v] = false;
  --n_active_;
}

void cluster_book::view_reset(const std::string& self) {
  const auto v = index(self);
  if (v >= names_.size()) return;
  deactivate(v);
  active_[v] = true;
  ++n_active_;
  refresh_good(v, false);
  check_converged();
}

void cluster_book::changed(const std::string& self, const v1::Member& member, int previous) {
  const auto v = index(self);
  const auto m = index(member.node());
  if (v >= names_.size() || m >= names_.size() || !active_[v]) return;
  ++state_changes_;
  const auto s = static_cast<std::uint8_t>(member.state());
  const auto now = world_.elapsed();
  set_state(v, m, s);
  // A crashed member: the first suspicion anywhere, and the moment no view has it live.
  if (const auto c = open_crash_[m]; c >= 0 && !up_[m]) {
    auto& rec = crashes_[static_cast<std::size_t>(c)];
    if (!live(s) || s == k_suspect)
      if (rec.first_detect < duration::zero()) rec.first_detect = now - rec.at;
    if (seen_live_by_[m] == 0 && rec.all_dead < duration::zero()) rec.all_dead = now - rec.at;
  }
  // A live member that this viewer can reach, declared failed.
  const bool was_live = previous == k_alive || previous == k_suspect;
  if ((s == k_dead && was_live) || (s == k_suspect && previous == k_alive)) {
    const auto& window = fp_window_;
    const bool settled =
        up_[m] && up_[v] && now - up_since_[m] > window && !partitioned_
        && (last_partition_change_ < duration::zero() || now - last_partition_change_ > window)
        && !world_.net().cut(names_[v], names_[m]) && !world_.net().cut(names_[m], names_[v]);
    if (settled) {
      ++(s == k_dead ? false_dead_views_ : false_suspect_views_);
      (s == k_dead ? false_dead_ : false_suspect_).insert({m, member.incarnation()});
    }
  }
  check_converged();
  check_joined(now);
}

void cluster_book::node_up(const std::string& name) {
  const auto m = index(name);
  if (m >= names_.size() || up_[m]) return;
  for (std::size_t v = 0; v < names_.size(); ++v)
    if (live(views_[v][m])) {
      --live_down_[v];
      ++live_up_[v];
    }
  up_[m] = true;
  ++n_up_;
  up_since_[m] = world_.elapsed();
  // Every viewer's good() depends on n_up_.
  n_good_ = 0;
  for (std::size_t v = 0; v < names_.size(); ++v)
    if (good(v)) ++n_good_;
  if (const auto c = open_crash_[m]; c >= 0) {
    auto& rec = crashes_[static_cast<std::size_t>(c)];
    if (rec.all_dead < duration::zero()) rec.restarted = true;
    open_crash_[m] = -1;
  }
  check_converged();
}

void cluster_book::node_down(const std::string& name, bool crash) {
  const auto m = index(name);
  if (m >= names_.size() || !up_[m]) return;
  deactivate(m);
  for (std::size_t v = 0; v < names_.size(); ++v)
    if (live(views_[v][m])) {
      --live_up_[v];
      ++live_down_[v];
    }
  up_[m] = false;
  --n_up_;
  n_good_ = 0;
  for (std::size_t v = 0; v < names_.size(); ++v)
    if (good(v)) ++n_good_;
  if (crash) {
    crash_record rec;
    rec.node = m;
    rec.at = world_.elapsed();
    if (seen_live_by_[m] == 0) rec.all_dead = rec.first_detect = duration::zero();
    open_crash_[m] = static_cast<std::int64_t>(crashes_.size());
    crashes_.push_back(rec);
  }
  check_converged();
}

void cluster_book::partition_changed(bool active) {
  partitioned_ = active;
  last_partition_change_ = world_.elapsed();
}

// --- results -------------------------------------------------------------------------------

membership_figures cluster_book::figures() const {
  membership_figures f;
  const auto period = spec_.swim.period;
  f.members = names_.size();
  f.period_seconds = std::chrono::duration<double>(period).count();
  if (join_converged_ >= duration::zero())
    f.join_converge_periods = periods(join_converged_ - last_join_, period);
  f.converged_at_end = converged_;
  for (const auto& c : crashes_) {
    crash_detection d;
    d.node = names_[c.node];
    d.at = c.at;
    if (c.first_detect >= duration::zero())
      d.first_detect_periods = periods(c.first_detect, period);
    if (c.all_dead >= duration::zero()) d.all_dead_periods = periods(c.all_dead, period);
    d.restarted = c.restarted;
    f.crashes.push_back(std::move(d));
  }
  f.false_dead = false_dead_.size();
  f.false_suspect = false_suspect_.size();
  f.false_dead_views = false_dead_views_;
  f.false_suspect_views = false_suspect_views_;
  f.member_periods = periods_;
  f.messages = messages_;
  f.state_changes = state_changes_;
  return f;
}

invariant_result cluster_book::members_agree(duration now) const {
  invariant_result r{"members_agree", true, {}, now};
  std::size_t bad = 0;
  std::string first;
  for (std::size_t v = 0; v < names_.size(); ++v) {
    if (!up_[v]) continue;
    if (!active_[v]) {
      ++bad;
      if (first.empty()) first = names_[v] + " runs no membership agent";
      continue;
    }
    if (good(v)) continue;
    ++bad;
    if (first.empty())
      for (std::size_t m = 0; m < names_.size(); ++m)
        if (live(views_[v][m]) != up_[m]) {
          first = names_[v] + " sees " + names_[m] + (up_[m] ? " not alive" : " alive") + " (it is "
                  + (up_[m] ? "up" : "down") + ")";
          break;
        }
  }
  r.ok = bad == 0;
  r.detail = r.ok ? std::to_string(n_up_) + " live members agree on the " + std::to_string(n_up_)
                        + " alive"
                  : std::to_string(bad) + " of " + std::to_string(n_up_)
                        + " live members disagree; first: " + first;
  return r;
}

void cluster_book::drain_begins(duration now) { dead_at_drain_ = crashed_members_dead(now); }

invariant_result cluster_book::crashed_members_dead(duration now) const {
  // Judged when the drain began: the drain restarts every crashed node.
  if (dead_at_drain_) return *dead_at_drain_;
  invariant_result r{"crashed_members_dead", true, {}, now};
  std::size_t bad = 0, down = 0;
  std::string first;
  for (std::size_t m = 0; m < names_.size(); ++m) {
    if (up_[m]) continue;
    ++down;
    for (std::size_t v = 0; v < names_.size(); ++v)
      if (up_[v] && active_[v] && live(views_[v][m])) {
        ++bad;
        if (first.empty()) first = names_[v] + " still sees " + names_[m] + " alive";
      }
  }
  r.ok = bad == 0;
  r.detail =
      r.ok ? std::to_string(down)
                 + " down nodes dead (or forgotten) in every live view when the drain began"
           : std::to_string(bad) + " live views still list a down node alive; first: " + first;
  return r;
}

} // namespace af::sim::detail
