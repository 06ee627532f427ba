// The membership agent (af.cluster.members) on a real node: the view query, subscribers and
// their events, PeerRoutes to the node's transport, refutation, refused malformed input (logged
// and counted) and a graceful leave. Multi-node behaviour is tested in the simulator
// (tests/sim/swim_test.cpp).
#include "af/cluster/membership.hpp"
#include "af/node.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/gossip.pb.h"
#include "step_test_support.hpp"

#include <catch2/catch.hpp>
#include <google/protobuf/empty.pb.h>

#include <chrono>
#include <mutex>
#include <thread>

using namespace af;
using namespace std::chrono_literals;

namespace {

/// What the recorder agents saw (read by the test thread).
struct seen {
  std::mutex mtx;
  std::vector<v1::MembershipEvent> events;
  std::vector<v1::Member> routes;
};

/// Stands for a subscriber, and for the node's transport (PeerRoutes).
class recorder : public agent_base<recorder> {
public:
  explicit recorder(std::shared_ptr<seen> s) : seen_(std::move(s)) {}
  static void define(handlers<recorder>& h) {
    h.kind("test.recorder").on(&recorder::on_event).on(&recorder::on_routes);
  }
  void on_event(context&, const v1::MembershipEvent& e) {
    std::lock_guard lock{seen_->mtx};
    seen_->events.push_back(e);
  }
  void on_routes(context&, const v1::PeerRoutes& r) {
    std::lock_guard lock{seen_->mtx};
    for (const auto& m : r.members())
      seen_->routes.push_back(m);
  }

private:
  std::shared_ptr<seen> seen_;
};

v1::Member member(const std::string& node, v1::MemberState s, std::uint64_t inc,
                  const std::string& endpoint = {}) {
  v1::Member m;
  m.set_node(node);
  m.set_state(s);
  m.set_incarnation(inc);
  m.set_endpoint(endpoint);
  return m;
}

template <class Pred>
bool eventually(const std::shared_ptr<seen>& s, Pred pred) {
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lock{s->mtx};
      if (pred(*s)) return true;
    }
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

const v1::Member* find(const v1::MembersReply& r, const std::string& node) {
  for (const auto& m : r.members())
    if (m.node() == node) return &m;
  return nullptr;
}

} // namespace

TEST_CASE("membership agent: view, subscribers, transport routes, refutation, leave",
          "[swim][membership]") {
  auto to_sub = std::make_shared<seen>();
  auto to_transport = std::make_shared<seen>();
  cluster::swim_options o;
  o.period = 10s; // no probe round interferes with the test
  o.ping_timeout = 1s;
  o.advertise = "127.0.0.1:7101";
  node::options opt;
  auto lines = std::make_shared<std::vector<std::string>>();
  log_options lo;
  lo.format = "json";
  opt.log = make_memory_log_backend(lo, lines);
  opt.system_services.push_back(cluster::membership_child(o));
  sup::child_spec transport;
  transport.id = std::string{cluster::k_transport_agent};
  transport.system = true;
  transport.make_agent = [to_transport] { return std::make_unique<recorder>(to_transport); };
  opt.system_services.push_back(transport);
  auto started = node::start(std::move(opt));
  REQUIRE(started);
  auto& n = **started;
  REQUIRE(n.spawn<recorder>("test.sub", to_sub));
  const auto members = std::string{cluster::k_members_agent};

  auto view = n.ask<v1::MembersReply>(members, v1::MembersRequest{}, 5s);
  REQUIRE(view);
  const auto self = view->self();
  CHECK(self == n.name());
  REQUIRE(view->members_size() == 1);
  CHECK(view->members(0).state() == v1::MEMBER_ALIVE);
  CHECK(view->members(0).endpoint() == "127.0.0.1:7101");

  v1::MembershipSubscribe sub;
  sub.set_subscriber("test.sub");
  auto first = n.ask<v1::MembersReply>(members, sub, 5s);
  REQUIRE(first);
  CHECK(first->members_size() == 1);

  // Gossip from a member "x" (with an endpoint) that also says "y" is suspect.
  v1::SwimGossip g;
  *g.mutable_from() = member("x", v1::MEMBER_ALIVE, 0, "10.0.0.9:7000");
  *g.add_updates() = member("y", v1::MEMBER_SUSPECT, 2);
  n.tell(*n.lookup(members), g);
  REQUIRE(eventually(to_sub, [](const seen& s) { return s.events.size() >= 2; }));
  {
    std::lock_guard lock{to_sub->mtx};
    CHECK(to_sub->events[0].member().node() == "x");
    CHECK(to_sub->events[0].previous() == v1::MEMBER_UNKNOWN);
    CHECK(to_sub->events[1].member().node() == "y");
    CHECK(to_sub->events[1].member().state() == v1::MEMBER_SUSPECT);
    CHECK(to_sub->events[1].view_version() > to_sub->events[0].view_version());
  }
  REQUIRE(eventually(to_transport, [](const seen& s) { return !s.routes.empty(); }));
  {
    std::lock_guard lock{to_transport->mtx};
    CHECK(to_transport->routes[0].node() == "x");
    CHECK(to_transport->routes[0].endpoint() == "10.0.0.9:7000");
  }
  view = n.ask<v1::MembersReply>(members, v1::MembersRequest{}, 5s);
  REQUIRE(view);
  REQUIRE(view->members_size() == 3);
  // Sorted by node name; the node's own name may sort anywhere.
  for (int i = 1; i < view->members_size(); ++i)
    CHECK(view->members(i - 1).node() < view->members(i).node());
  REQUIRE(find(*view, "y"));
  CHECK(find(*view, "y")->incarnation() == 2);

  // Someone says this node is suspect: it refutes with a higher incarnation.
  v1::SwimGossip accuse;
  *accuse.mutable_from() = member("x", v1::MEMBER_ALIVE, 0);
  *accuse.add_updates() = member(self, v1::MEMBER_SUSPECT, 0);
  n.tell(*n.lookup(members), accuse);
  REQUIRE(eventually(to_sub, [&](const seen& s) {
    for (const auto& e : s.events)
      if (e.member().node() == self && e.member().incarnation() == 1) return true;
    return false;
  }));
  view = n.ask<v1::MembersReply>(members, v1::MembersRequest{}, 5s);
  REQUIRE(view);
  CHECK(find(*view, self)->state() == v1::MEMBER_ALIVE);
  CHECK(find(*view, self)->incarnation() == 1);

  // A ping answers with an ack carrying this node's entry first.
  v1::SwimPing ping;
  *ping.mutable_from() = member("x", v1::MEMBER_ALIVE, 0);
  ping.set_seq(7);
  auto ack = n.ask<v1::SwimAck>(members, ping, 5s);
  REQUIRE(ack);
  CHECK(ack->seq() == 7);
  CHECK(ack->from().node() == self);
  REQUIRE(ack->updates_size() >= 1);
  CHECK(ack->updates(0).node() == self);

  // Malformed input is refused (an error to the asker), logged and counted.
  v1::SwimPing bad;
  bad.mutable_from()->set_state(v1::MEMBER_ALIVE); // no node name
  auto refused = n.ask<v1::SwimAck>(members, bad, 5s);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == errc::validation);
  CHECK(refused.error().message().find("without a node name") != std::string::npos);
  v1::SwimGossip bad_update;
  *bad_update.mutable_from() = member("x", v1::MEMBER_ALIVE, 0);
  *bad_update.add_updates() = member("z", static_cast<v1::MemberState>(9), 0);
  n.tell(*n.lookup(members), bad_update);
  const auto text_has = [&](const std::string& needle) {
    for (int i = 0; i < 200; ++i) {
      if (n.metrics().serialize_text().find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  };
  CHECK(text_has("af_swim_rejected_total 2"));
  CHECK(text_has("af_cluster_members{state=\"suspect\"} 1"));

  // Unsubscribed: no more events. Then a graceful leave.
  v1::MembershipUnsubscribe unsub;
  unsub.set_subscriber("test.sub");
  REQUIRE(n.ask<google::protobuf::Empty>(members, unsub, 5s));
  std::size_t before = 0;
  {
    std::lock_guard lock{to_sub->mtx};
    before = to_sub->events.size();
  }
  auto left = n.ask<v1::MembersReply>(members, v1::SwimLeave{}, 5s);
  REQUIRE(left);
  CHECK(find(*left, self)->state() == v1::MEMBER_LEFT);
  std::this_thread::sleep_for(50ms);
  {
    std::lock_guard lock{to_sub->mtx};
    CHECK(to_sub->events.size() == before);
  }
  // The log lines are read once the node is quiet (the leave was its last work).
  std::size_t refusals = 0;
  for (const auto& l : *lines)
    if (l.find("\"event\":\"swim_message_refused\"") != std::string::npos) ++refusals;
  CHECK(refusals == 2);
  bool logged_change = false;
  for (const auto& l : *lines)
    if (l.find("\"event\":\"member_state_changed\"") != std::string::npos
        && l.find("\"to\":\"left\"") != std::string::npos)
      logged_change = true;
  CHECK(logged_change);
}
