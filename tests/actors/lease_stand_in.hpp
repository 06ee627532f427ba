// Test support: a lease table standing in for the Raft agent's lease protocol (meta.proto
// LeaseAcquire / LeaseRelease / LeaseGet), shared by the nodes of one test process.
#pragma once

#include "af/agent.hpp"
#include "af/v1/meta.pb.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace af::test {

/// The lease table, shared by the test and every node's stand-in (like the replicated store
/// behind af.cluster.raft). Expiry is measured in the process's monotonic clock.
struct lease_table {
  std::mutex mu;
  bool available = true; ///< false: every request fails `transient` (no leader, no majority)
  struct lease {
    std::string owner;
    duration expires{};
    std::uint64_t epoch = 0;
  };
  std::map<std::string, lease> leases;
  std::vector<std::string> requests; ///< "acquire KEY OWNER", "release KEY OWNER", "get KEY"
  /// Granted acquires: "OWNER KEY HOW", HOW one of free, renewal, released, expired (what the
  /// lease was when it was granted).
  std::vector<std::string> grants;

  std::size_t count(const std::string& prefix) {
    std::lock_guard lk{mu};
    return static_cast<std::size_t>(std::count_if(
        requests.begin(), requests.end(), [&](const auto& r) { return r.starts_with(prefix); }));
  }
  void set_available(bool a) {
    std::lock_guard lk{mu};
    available = a;
  }
};

/// Registered as af.cluster.raft: answers the lease requests from the shared table.
class lease_stand_in : public agent_base<lease_stand_in> {
public:
  explicit lease_stand_in(std::shared_ptr<lease_table> t) : t_(std::move(t)) {}

  static void define(handlers<lease_stand_in>& h) {
    h.kind("test.lease_stand_in")
        .on(&lease_stand_in::on_acquire)
        .on(&lease_stand_in::on_release)
        .on(&lease_stand_in::on_get);
  }

  expected<v1::LeaseResult> on_acquire(context& ctx, const v1::LeaseAcquire& a) {
    std::lock_guard lk{t_->mu};
    t_->requests.push_back("acquire " + a.key() + " " + a.owner());
    if (!t_->available) return error{errc::transient, "no Raft leader"};
    const auto now = ctx.monotonic();
    auto& l = t_->leases[a.key()];
    v1::LeaseResult r;
    if (l.owner.empty() || l.expires <= now || l.owner == a.owner()) {
      const char* how = l.owner.empty()            ? "free"
                        : l.expires == duration{}  ? "released"
                        : l.expires <= now         ? "expired"
                                                   : "renewal";
      t_->grants.push_back(a.owner() + " " + a.key() + " " + how);
      if (l.owner != a.owner() || l.expires <= now) ++l.epoch;
      l.owner = a.owner();
      l.expires = now + std::chrono::milliseconds{a.ttl_ms()};
      r.set_granted(true);
    }
    fill(r, l, now);
    return r;
  }

  expected<v1::LeaseResult> on_release(context&, const v1::LeaseRelease& m) {
    std::lock_guard lk{t_->mu};
    t_->requests.push_back("release " + m.key() + " " + m.owner());
    if (!t_->available) return error{errc::transient, "no Raft leader"};
    auto it = t_->leases.find(m.key());
    if (it != t_->leases.end() && it->second.owner == m.owner()) it->second.expires = {};
    return v1::LeaseResult{};
  }

  expected<v1::LeaseResult> on_get(context& ctx, const v1::LeaseGet& g) {
    std::lock_guard lk{t_->mu};
    t_->requests.push_back("get " + g.key());
    if (!t_->available) return error{errc::transient, "no Raft leader"};
    const auto now = ctx.monotonic();
    v1::LeaseResult r;
    auto it = t_->leases.find(g.key());
    if (it == t_->leases.end()) return r;
    r.set_granted(it->second.expires > now);
    fill(r, it->second, now);
    return r;
  }

private:
  static void fill(v1::LeaseResult& r, const lease_table::lease& l, duration now) {
    r.set_owner(l.owner);
    r.set_epoch(l.epoch);
    r.set_ttl_left_ms(std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(l.expires - now).count()));
  }
  std::shared_ptr<lease_table> t_;
};

} // namespace af::test
