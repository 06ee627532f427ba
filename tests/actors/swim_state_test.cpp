// SWIM's bookkeeping without actors (actors/src/cluster/swim_state.hpp): precedence of updates,
// refutation, suspicion timeouts scaled with the cluster size, bounded retransmissions, and
// forgetting dead members.
#include "cluster/swim_state.hpp"

#include <catch2/catch.hpp>

#include <map>

namespace {

using namespace std::chrono_literals;
using af::cluster::member_entry;
using af::cluster::member_state;
using af::cluster::swim_options;
using af::cluster::swim_state;

const af::time_point t0{std::chrono::seconds{1000}};

member_entry entry(std::string node, member_state s, std::uint64_t inc) {
  member_entry e;
  e.node = std::move(node);
  e.state = s;
  e.incarnation = inc;
  return e;
}

swim_options opts() {
  swim_options o;
  o.period = 1s;
  o.suspicion_mult = 3;
  o.suspicion_min = 2s;
  o.suspicion_max = 60s;
  o.retransmit_mult = 4;
  o.dead_retention = 30s;
  return o;
}

} // namespace

TEST_CASE("swim: precedence follows incarnation, then alive < suspect < dead < left", "[swim]") {
  using af::cluster::supersedes;
  const auto a1 = entry("x", member_state::alive, 1);
  const auto s1 = entry("x", member_state::suspect, 1);
  const auto d1 = entry("x", member_state::dead, 1);
  const auto a2 = entry("x", member_state::alive, 2);
  const auto s0 = entry("x", member_state::suspect, 0);
  CHECK(supersedes(s1, a1));       // suspect i overrides alive j when i >= j
  CHECK_FALSE(supersedes(a1, s1)); // alive i overrides suspect j only when i > j
  CHECK(supersedes(a2, s1));
  CHECK_FALSE(supersedes(s0, a1));
  CHECK(supersedes(d1, s1));
  CHECK(supersedes(d1, a1));
  CHECK_FALSE(supersedes(a1, d1));
  CHECK(supersedes(a2, d1)); // a restarted member out-bids its dead incarnation
  CHECK(supersedes(entry("x", member_state::left, 1), d1));
  CHECK_FALSE(supersedes(a1, a1));

  swim_state st{"me", "", opts(), t0};
  REQUIRE(st.apply(a1, t0));
  CHECK_FALSE(st.apply(a1, t0)); // a repeat is no change
  auto c = st.apply(s1, t0);
  REQUIRE(c);
  CHECK(c->previous == member_state::alive);
  CHECK(c->now.state == member_state::suspect);
  CHECK_FALSE(st.apply(a1, t0)); // stale alive ignored
  CHECK(st.find("x")->state == member_state::suspect);
  REQUIRE(st.apply(a2, t0));
  CHECK(st.find("x")->state == member_state::alive);
  CHECK(st.find("x")->incarnation == 2);
  CHECK(st.live_count() == 2);
  REQUIRE(st.apply(entry("x", member_state::dead, 2), t0));
  CHECK(st.live_count() == 1);
  CHECK(st.dead_members() == std::vector<std::string>{"x"});
}

TEST_CASE("swim: a member refutes a suspicion or death by raising its incarnation", "[swim]") {
  swim_state st{"me", "10.0.0.1:7000", opts(), t0};
  CHECK(st.self().incarnation == 0);
  auto c = st.apply(entry("me", member_state::suspect, 0), t0);
  REQUIRE(c);
  CHECK(c->now.state == member_state::alive);
  CHECK(c->now.incarnation == 1);
  CHECK(c->now.endpoint == "10.0.0.1:7000");
  // The refutation is queued for gossip.
  auto g = st.take_gossip(10);
  REQUIRE(g.size() == 1);
  CHECK(g[0].node == "me");
  CHECK(g[0].incarnation == 1);
  // An older suspicion is already refuted.
  CHECK_FALSE(st.apply(entry("me", member_state::suspect, 0), t0));
  // Declared dead at a later incarnation (a restarted node that learns its old death).
  c = st.apply(entry("me", member_state::dead, 7), t0);
  REQUIRE(c);
  CHECK(c->now.incarnation == 8);
  CHECK(st.self().state == member_state::alive);
  // An alive entry of an older instance with a higher incarnation is out-bid too.
  c = st.apply(entry("me", member_state::alive, 20), t0);
  REQUIRE(c);
  CHECK(c->now.incarnation == 21);
  // After leaving, nothing is refuted.
  REQUIRE(st.leave(t0));
  CHECK(st.left());
  CHECK_FALSE(st.apply(entry("me", member_state::dead, 30), t0));
}

TEST_CASE("swim: suspect, then dead only if the suspicion is not refuted", "[swim]") {
  swim_state st{"me", "", opts(), t0};
  REQUIRE(st.apply(entry("a", member_state::alive, 3), t0));
  REQUIRE(st.apply(entry("b", member_state::alive, 0), t0));
  auto c = st.suspect("a", t0);
  REQUIRE(c);
  CHECK(c->now.incarnation == 3);
  CHECK_FALSE(st.suspect("a", t0)); // already suspect
  CHECK_FALSE(st.suspect("me", t0));
  CHECK_FALSE(st.suspect("nobody", t0));
  // A stale timer (older incarnation) does nothing.
  CHECK_FALSE(st.confirm_dead("a", 2, t0));
  REQUIRE(st.confirm_dead("a", 3, t0 + 5s));
  CHECK(st.find("a")->state == member_state::dead);
  // b refutes before its timer runs out: the timer finds it alive.
  REQUIRE(st.suspect("b", t0));
  REQUIRE(st.apply(entry("b", member_state::alive, 1), t0 + 1s));
  CHECK_FALSE(st.confirm_dead("b", 0, t0 + 5s));
  CHECK_FALSE(st.confirm_dead("b", 1, t0 + 5s)); // alive, not suspect
  CHECK(st.find("b")->state == member_state::alive);
}

TEST_CASE("swim: the suspicion timeout scales with log10 of the cluster size, bounded", "[swim]") {
  auto o = opts();
  swim_state st{"me", "", o, t0};
  // 1 member: 3 * log10(2) * 1s = 0.9s, below the 2s floor.
  CHECK(st.suspicion_timeout() == 2s);
  for (int i = 0; i < 99; ++i)
    st.apply(entry("n" + std::to_string(i), member_state::alive, 0), t0);
  REQUIRE(st.live_count() == 100);
  // 3 * log10(101) = 6.013 periods.
  CHECK(st.suspicion_timeout() > 6000ms);
  CHECK(st.suspicion_timeout() < 6030ms);
  for (int i = 99; i < 999; ++i)
    st.apply(entry("n" + std::to_string(i), member_state::alive, 0), t0);
  CHECK(st.suspicion_timeout() > 9000ms); // 3 * log10(1001) = 9.0004
  CHECK(st.suspicion_timeout() < 9010ms);
  o.suspicion_max = 5s;
  swim_state capped{"me", "", o, t0};
  for (int i = 0; i < 999; ++i)
    capped.apply(entry("n" + std::to_string(i), member_state::alive, 0), t0);
  CHECK(capped.suspicion_timeout() == 5s);
}

TEST_CASE("swim: each update is piggy-backed at most ceil(lambda * log10(n + 1)) times", "[swim]") {
  swim_state st{"me", "", opts(), t0};
  for (int i = 0; i < 9; ++i)
    st.apply(entry("n" + std::to_string(i), member_state::alive, 0), t0);
  // 10 members: ceil(4 * log10(11)) = ceil(4.165) = 5.
  REQUIRE(st.retransmit_limit() == 5);
  std::map<std::string, int> sent;
  int messages = 0;
  while (st.gossip_pending() > 0) {
    auto g = st.take_gossip(3);
    REQUIRE(!g.empty());
    REQUIRE(g.size() <= 3);
    std::set<std::string> once;
    for (const auto& e : g) {
      CHECK(once.insert(e.node).second); // never twice in one message
      ++sent[e.node];
    }
    ++messages;
    REQUIRE(messages < 1000);
  }
  REQUIRE(sent.size() == 9);
  for (const auto& [node, n] : sent)
    CHECK(n == 5);
  // The freshest (fewest transmissions) goes first: a new update jumps the queue.
  st.apply(entry("n0", member_state::suspect, 0), t0);
  st.apply(entry("n1", member_state::suspect, 0), t0);
  auto g = st.take_gossip(1);
  REQUIRE(g.size() == 1);
  CHECK(g[0].node == "n1");
  CHECK(st.transmits("n0") == 0u);
  CHECK(st.transmits("n1") == 1u);
  CHECK_FALSE(st.transmits("n5"));
}

TEST_CASE("swim: dead and left members are forgotten after the retention time", "[swim]") {
  swim_state st{"me", "", opts(), t0};
  st.apply(entry("a", member_state::alive, 0), t0);
  st.apply(entry("b", member_state::alive, 0), t0);
  st.apply(entry("c", member_state::left, 0), t0 + 10s);
  st.suspect("a", t0);
  st.confirm_dead("a", 0, t0 + 5s);
  CHECK(st.expire(t0 + 20s).empty());
  auto gone = st.expire(t0 + 35s);
  REQUIRE(gone.size() == 1);
  CHECK(gone[0].now.node == "a");
  CHECK(gone[0].now.state == member_state::unknown);
  CHECK(gone[0].previous == member_state::dead);
  CHECK(st.find("a") == nullptr);
  gone = st.expire(t0 + 40s);
  REQUIRE(gone.size() == 1);
  CHECK(gone[0].now.node == "c");
  CHECK(st.members().size() == 2);
  CHECK(st.live_count() == 2);
}
