// Cluster singletons (af/cluster/singleton.hpp) on real nodes (threads), with a lease table
// standing in for the Raft agent: a singleton runs on exactly one of the nodes that register it,
// `singleton/<id>` reaches it, it stops on its node before its lease can expire at the leader
// when renewals fail, another node starts it once the lease expired, and a handover releases the
// lease so that another node takes it at its next tick.
#include "af/cluster/singleton.hpp"
#include "af/node.hpp"
#include "af/v1/placement.pb.h"
#include "lease_stand_in.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

using namespace af;
using namespace std::chrono_literals;
using af::test::lease_stand_in;
using af::test::lease_table;

namespace {

/// The singleton: counts the instances alive in the process and answers with its node.
struct census {
  std::atomic<int> alive{0};
  std::atomic<int> max_alive{0};
};

class leader_agent : public agent_base<leader_agent> {
public:
  explicit leader_agent(std::shared_ptr<census> c) : c_(std::move(c)) {}
  static void define(handlers<leader_agent>& h) {
    h.kind("test.singleton").on(&leader_agent::on_status);
  }
  void on_start(context&) override {
    const int now = ++c_->alive;
    int seen = c_->max_alive.load();
    while (now > seen && !c_->max_alive.compare_exchange_weak(seen, now)) {
    }
  }
  void on_stop(context&) override { --c_->alive; }
  expected<v1::SingletonState> on_status(context& ctx, const v1::SingletonStatusRequest&) {
    v1::SingletonState s;
    s.set_owner(ctx.self().node);
    s.set_name(ctx.name());
    return s;
  }

private:
  std::shared_ptr<census> c_;
};

struct singleton_node {
  std::unique_ptr<node> n;
  singleton_node(std::string name, std::shared_ptr<lease_table> table, std::shared_ptr<census> c) {
    node::options o;
    o.system_services.push_back(
        sup::agent_child<lease_stand_in>("af.cluster.raft", std::move(table)));
    cluster::singleton_options so;
    so.owner = std::move(name); // the lease owner: the nodes of one process share a node name
    so.singletons["leader"] = {[c] { return std::make_unique<leader_agent>(c); }, false};
    so.lease_ttl = 1000ms;
    so.margin = 200ms;
    so.renew_every = 200ms;
    so.ask_timeout = 250ms;
    REQUIRE(cluster::validate(so));
    o.system_services.push_back(cluster::singletons_child(std::move(so)));
    auto r = node::start(std::move(o));
    REQUIRE(r);
    n = std::move(r).value();
  }
  ~singleton_node() {
    if (n) n->shutdown();
  }
  expected<v1::SingletonStatus> status() {
    return n->ask<v1::SingletonStatus>(cluster::k_singletons_agent, v1::SingletonStatusRequest{},
                                       5s);
  }
  [[nodiscard]] bool runs() {
    auto st = status();
    return st && st->singletons_size() == 1 && st->singletons(0).running_here();
  }
};

template <class P>
bool until(P pred, duration limit = 10s) {
  for (auto waited = duration::zero(); waited < limit; waited += 10ms) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

} // namespace

TEST_CASE("singletons: one node runs it, the virtual name reaches it, renewals keep it there",
          "[cluster][singleton]") {
  auto table = std::make_shared<lease_table>();
  auto c = std::make_shared<census>();
  singleton_node a{"nodeA", table, c};
  singleton_node b{"nodeB", table, c};
  REQUIRE(until([&] { return a.runs() || b.runs(); }));
  std::this_thread::sleep_for(1500ms); // several renewal rounds and lease periods
  CHECK(a.runs() != b.runs());
  CHECK(c->alive == 1);
  CHECK(c->max_alive == 1);
  auto& holder = a.runs() ? a : b;
  const std::string holder_name = a.runs() ? "nodeA" : "nodeB";
  auto r = holder.n->ask<v1::SingletonState>("singleton/leader", v1::SingletonStatusRequest{}, 5s);
  REQUIRE(r);
  CHECK(r->name() == "singleton/leader"); // the singleton itself answered
  // The other node knows where it runs (its own takes were refused naming the holder).
  auto& other = a.runs() ? b : a;
  auto st = other.status();
  REQUIRE(st);
  REQUIRE(st->singletons_size() == 1);
  CHECK(st->singletons(0).name() == "singleton/leader");
  CHECK(st->singletons(0).owner() == holder_name);
  CHECK_FALSE(st->singletons(0).running_here());
  // An unknown singleton is refused with a clear error.
  auto unknown = holder.n->ask<v1::SingletonState>("singleton/nope", v1::SingletonStatusRequest{}, 5s);
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().code() == errc::not_found);
  CHECK_THAT(unknown.error().message(), Catch::Contains("registered: leader"));
}

TEST_CASE("singletons: without renewals it stops before its lease can expire - another node "
          "starts it once the lease expired",
          "[cluster][singleton]") {
  auto table = std::make_shared<lease_table>();
  auto c = std::make_shared<census>();
  {
    singleton_node a{"nodeA", table, c};
    REQUIRE(until([&] { return a.runs(); }));
    table->set_available(false); // no leader: renewals fail
    // Stopped at its local deadline (ttl - margin after the last granted renewal was sent), not
    // left running until the node stops.
    REQUIRE(until([&] { return !a.runs() && c->alive == 0; }, 3s));
    CHECK(a.n->metrics().serialize_text().find("af_singleton_lease_expirations_total 1")
          != std::string::npos);
  }
  table->set_available(true);
  singleton_node b{"nodeB", table, c};
  REQUIRE(until([&] { return b.runs(); }));
  CHECK(c->max_alive == 1);
  std::lock_guard lk{table->mu};
  CHECK(std::count(table->grants.begin(), table->grants.end(),
                   "nodeB singleton/leader expired")
        + std::count(table->grants.begin(), table->grants.end(), "nodeB singleton/leader free")
        == 1);
}

TEST_CASE("singletons: a handover stops it and releases the lease - the other node takes it at "
          "its next tick",
          "[cluster][singleton]") {
  auto table = std::make_shared<lease_table>();
  auto c = std::make_shared<census>();
  singleton_node a{"nodeA", table, c};
  REQUIRE(until([&] { return a.runs(); }));
  singleton_node b{"nodeB", table, c};
  std::this_thread::sleep_for(300ms);
  REQUIRE(a.runs());
  REQUIRE_FALSE(b.runs());
  auto h = a.n->ask<v1::SingletonHandoverResult>(cluster::k_singletons_agent,
                                                 v1::SingletonHandover{}, 5s);
  REQUIRE(h);
  CHECK(h->stopped() == 1);
  CHECK(h->released() == 1);
  CHECK_FALSE(a.runs());
  REQUIRE(until([&] { return b.runs(); }, 2s));
  CHECK(c->max_alive == 1);
  std::lock_guard lk{table->mu};
  CHECK(std::count(table->grants.begin(), table->grants.end(),
                   "nodeB singleton/leader released")
        == 1);
}
