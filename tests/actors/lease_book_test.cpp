// The execution leases af.exec keeps (plan/lease_book.hpp): local deadlines measured from the
// send time of the granted request, late and reordered grants, renewal batches, the leases to
// stop at their deadline, and when to ask again about leases other nodes hold.
#include "plan/lease_book.hpp"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using af::duration;
using af::plan::lease_book;

namespace {

lease_book book() { return lease_book{{.ttl = 10s, .margin = 2s}}; }

} // namespace

TEST_CASE("lease_book: a grant is held until send time + ttl - margin", "[lease]") {
  auto b = book();
  b.acquiring("e1");
  CHECK(b.known("e1"));
  CHECK_FALSE(b.holds("e1", 0s));
  // Sent at 1 s, answered at 1.5 s: held until 1 + 10 - 2 = 9 s of this node's clock, however
  // late the answer came.
  REQUIRE(b.granted("e1", 1s, 1500ms));
  CHECK(b.deadline("e1") == duration{9s});
  CHECK(b.holds("e1", 8999ms));
  CHECK_FALSE(b.holds("e1", 9s));
  CHECK(b.held_count() == 1);
}

TEST_CASE("lease_book: a grant answered after its deadline holds nothing", "[lease]") {
  auto b = book();
  b.acquiring("e1");
  // Sent at 0, answered at 8 s (the leader took that long): deadline 8 s has come.
  CHECK_FALSE(b.granted("e1", 0s, 8s));
  CHECK_FALSE(b.known("e1"));
  CHECK_FALSE(b.holds("e1", 8s));
}

TEST_CASE("lease_book: a grant for a lease not asked for is ignored", "[lease]") {
  auto b = book();
  CHECK_FALSE(b.granted("e9", 0s, 0s));
  CHECK_FALSE(b.known("e9"));
}

TEST_CASE("lease_book: renewals extend - an older grant never shortens", "[lease]") {
  auto b = book();
  b.acquiring("e1");
  REQUIRE(b.granted("e1", 0s, 100ms)); // until 8 s
  auto batch = b.renew_batch(3s, 100);
  REQUIRE(batch == std::vector<std::string>{"e1"});
  // Renewal sent at 3 s granted: until 11 s.
  REQUIRE(b.granted("e1", 3s, 3100ms));
  CHECK(b.deadline("e1") == duration{11s});
  // A reply to an earlier request that arrives now (reordered) does not move it back.
  REQUIRE(b.granted("e1", 1s, 3200ms));
  CHECK(b.deadline("e1") == duration{11s});
}

TEST_CASE("lease_book: renewals go in batches, earliest deadline first, one in flight each",
          "[lease]") {
  auto b = book();
  for (auto [id, sent] : {std::pair{"c", 2s}, {"a", 0s}, {"b", 1s}}) {
    b.acquiring(id);
    REQUIRE(b.granted(id, sent, sent));
  }
  auto first = b.renew_batch(3s, 2);
  CHECK(first == std::vector<std::string>{"a", "b"});
  // The two in flight are not sent again; the rest is.
  CHECK(b.renew_batch(3s, 10) == std::vector<std::string>{"c"});
  CHECK(b.renew_batch(3s, 10).empty());
  // A failed renewal may be sent again; a granted one too, at the next batch.
  b.not_granted("a");
  REQUIRE(b.granted("b", 3s, 3100ms));
  CHECK(b.renew_batch(4s, 10) == std::vector<std::string>{"a", "b"});
  // A failed renewal keeps the lease until its deadline.
  b.not_granted("a");
  CHECK(b.holds("a", 7999ms));
}

TEST_CASE("lease_book: without renewals the lease expires and the executor must stop", "[lease]") {
  auto b = book();
  b.acquiring("e1");
  b.acquiring("e2");
  REQUIRE(b.granted("e1", 0s, 0s)); // until 8 s
  REQUIRE(b.granted("e2", 2s, 2s)); // until 10 s
  CHECK(b.next_deadline() == duration{8s});
  CHECK(b.expire(7999ms).empty());
  // No majority: renewals sent at 3 s and 6 s get no grant.
  (void)b.renew_batch(3s, 10);
  b.not_granted("e1");
  b.not_granted("e2");
  (void)b.renew_batch(6s, 10);
  auto stop = b.expire(8s);
  CHECK(stop == std::vector<std::string>{"e1"});
  CHECK_FALSE(b.known("e1"));
  CHECK(b.next_deadline() == duration{10s});
  // The renewal of e1 sent at 6 s comes back granted after the stop: too late, it stays
  // stopped (a scan takes the lease again before running it).
  CHECK_FALSE(b.granted("e1", 6s, 8500ms));
  CHECK_FALSE(b.holds("e1", 8500ms));
  // A grant of e2 sent at 6 s, answered before its deadline, keeps it.
  REQUIRE(b.granted("e2", 6s, 9s));
  CHECK(b.expire(10s).empty());
  CHECK(b.deadline("e2") == duration{14s});
}

TEST_CASE("lease_book: the local deadline comes before the leader can give the lease away",
          "[lease]") {
  // The leader applies a grant no earlier than it was sent, so it expires there no earlier than
  // send + ttl in real time; here the executor stops at send + ttl - margin. With clocks whose
  // rates differ by less than margin / ttl the order holds for every send time and reply delay.
  const auto ttl = 10s, margin = 2s;
  lease_book b{{ttl, margin}};
  for (duration sent : {0s, 3s, 7s}) {
    for (duration delay : {duration{0}, duration{100ms}, duration{7s}}) {
      const std::string id =
          "e" + std::to_string(sent.count()) + "-" + std::to_string(delay.count());
      b.acquiring(id);
      if (!b.granted(id, sent, sent + delay)) {
        CHECK(sent + delay >= sent + ttl - margin);
        continue;
      }
      const duration leader_expiry_earliest = sent + ttl;
      REQUIRE(b.deadline(id));
      CHECK(*b.deadline(id) + margin == leader_expiry_earliest);
      CHECK_FALSE(b.holds(id, leader_expiry_earliest - margin));
    }
  }
}

TEST_CASE("lease_book: a dropped lease is forgotten, and a late grant does not revive it",
          "[lease]") {
  auto b = book();
  b.acquiring("e1");
  REQUIRE(b.granted("e1", 0s, 0s));
  b.drop("e1");
  CHECK_FALSE(b.known("e1"));
  CHECK_FALSE(b.granted("e1", 1s, 1s));
  // A first acquire that is refused is dropped too.
  b.acquiring("e2");
  b.not_granted("e2");
  CHECK_FALSE(b.known("e2"));
}

TEST_CASE("lease_book: other nodes' leases are asked about again when they could expire",
          "[lease]") {
  auto b = book();
  CHECK(b.may_try("x", 0s));
  CHECK(b.last_owner("x").empty());
  b.held_elsewhere("x", "n2", 7s, 1s);
  CHECK(b.last_owner("x") == "n2");
  CHECK_FALSE(b.may_try("x", 7999ms));
  CHECK(b.may_try("x", 8s));
  b.held_elsewhere("y", "n3", 9s, 1s);
  // A refusal that names no holder keeps the holder seen before.
  b.held_elsewhere("y", "", 0s, 1s);
  CHECK(b.last_owner("y") == "n3");
  CHECK(b.may_try("y", 1s));
  b.held_elsewhere("y", "n3", 9s, 1s);
  // n3 died (membership): ask about its executions at once; n2's stay as they were.
  b.owner_gone("n3", 2s);
  CHECK(b.may_try("y", 2s));
  CHECK_FALSE(b.may_try("x", 2s));
  // Taking a lease forgets who held it before.
  b.acquiring("y");
  REQUIRE(b.granted("y", 3s, 3s));
  CHECK(b.last_owner("y").empty());
  // Old knowledge is pruned.
  b.prune(2s);
  CHECK(b.last_owner("x").empty());
  CHECK(b.may_try("x", 2s));
}
