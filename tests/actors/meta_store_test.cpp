// The metadata store's state machine (actors/src/cluster/meta_store.hpp): put / cas / delete /
// list, leases with epochs and the new-leader wait, client sessions, snapshots.
#include "cluster/meta_store.hpp"

#include <catch2/catch.hpp>

namespace {

using af::cluster::meta_store;
namespace v1 = af::v1;

constexpr std::int64_t k_ms = 1'000'000;
constexpr std::int64_t t0 = 1'000'000 * k_ms;

struct stamp {
  std::int64_t time = t0;
  std::int64_t since = t0;
  std::uint64_t term = 1;
};

v1::MetaCommand put(std::string k, std::string v, std::string client = {}, std::uint64_t seq = 0,
                    stamp s = {}) {
  v1::MetaCommand c;
  c.set_leader_time_ns(s.time);
  c.set_leader_since_ns(s.since);
  c.set_term(s.term);
  c.mutable_put()->set_key(std::move(k));
  c.mutable_put()->set_value(std::move(v));
  if (!client.empty()) {
    c.mutable_put()->mutable_session()->set_client_id(client);
    c.mutable_put()->mutable_session()->set_seq(seq);
  }
  return c;
}

v1::MetaCommand cas(std::string k, std::string expected, bool absent, std::string v) {
  v1::MetaCommand c;
  c.set_leader_time_ns(t0);
  c.set_term(1);
  auto* x = c.mutable_cas();
  x->set_key(std::move(k));
  x->set_expected(std::move(expected));
  x->set_expect_absent(absent);
  x->set_value(std::move(v));
  return c;
}

v1::MetaCommand acquire(std::string k, std::string owner, std::uint32_t ttl_ms, stamp s) {
  v1::MetaCommand c;
  c.set_leader_time_ns(s.time);
  c.set_leader_since_ns(s.since);
  c.set_term(s.term);
  auto* a = c.mutable_acquire();
  a->set_key(std::move(k));
  a->set_owner(std::move(owner));
  a->set_ttl_ms(ttl_ms);
  return c;
}

v1::MetaCommand release(std::string k, std::string owner, stamp s) {
  v1::MetaCommand c;
  c.set_leader_time_ns(s.time);
  c.set_leader_since_ns(s.since);
  c.set_term(s.term);
  c.mutable_release()->set_key(std::move(k));
  c.mutable_release()->set_owner(std::move(owner));
  return c;
}

} // namespace

TEST_CASE("meta store: put, get, cas, delete, list", "[meta]") {
  meta_store s;
  auto r = s.apply(put("a/1", "x"), 5);
  REQUIRE(r.has_meta());
  CHECK(r.meta().ok());
  CHECK(r.meta().index() == 5);
  CHECK(r.meta().entry().version() == 5);
  CHECK(s.get("a/1").value() == "x");
  CHECK_FALSE(s.get("nope").found());
  CHECK(s.get("nope").version() == 0);

  auto c1 = s.apply(cas("a/1", "wrong", false, "y"), 6);
  CHECK_FALSE(c1.meta().ok());
  CHECK(c1.meta().entry().value() == "x"); // the current value comes back
  auto c2 = s.apply(cas("a/1", "x", false, "y"), 7);
  CHECK(c2.meta().ok());
  CHECK(s.get("a/1").value() == "y");
  CHECK(s.get("a/1").version() == 7);
  CHECK_FALSE(s.apply(cas("a/1", "", true, "z"), 8).meta().ok());
  CHECK(s.apply(cas("a/2", "", true, "z"), 9).meta().ok());
  s.apply(put("b/1", "q"), 10);

  auto l = s.list("a/", 0);
  REQUIRE(l.entries_size() == 2);
  CHECK(l.entries(0).key() == "a/1");
  CHECK(l.entries(1).key() == "a/2");
  CHECK(s.list("a/", 1).entries_size() == 1);

  v1::MetaCommand d;
  d.mutable_del()->set_key("a/1");
  auto dr = s.apply(d, 11);
  CHECK(dr.meta().ok());
  CHECK(dr.meta().entry().found());
  CHECK_FALSE(s.get("a/1").found());
  CHECK(s.keys() == 2);
}

TEST_CASE("meta store: bad commands become error results, the same everywhere", "[meta]") {
  meta_store s;
  auto r = s.apply(put("", "x"), 1);
  REQUIRE(r.has_error());
  CHECK(r.error().kind() == "validation");
  CHECK(r.error().message().find("key is empty") != std::string::npos);
  auto g = s.apply(std::string{"\xff\xff\xff garbage"}, 2);
  REQUIRE(g.has_error());
  CHECK(g.error().kind() == "validation");
  CHECK(s.apply(v1::MetaCommand{}, 3).has_error());
  CHECK(s.applied() == 3);
}

TEST_CASE("meta store: a retried command applies once and returns the first outcome", "[meta]") {
  meta_store s;
  auto first = s.apply(put("k", "v1", "client-a", 1), 10);
  s.apply(put("k", "other", "client-b", 1), 11);
  auto retry = s.apply(put("k", "v1", "client-a", 1), 12);
  CHECK(retry.SerializeAsString() == first.SerializeAsString());
  CHECK(s.get("k").value() == "other"); // the retry did not write again
  CHECK(s.get("k").version() == 11);
  // A new seq applies.
  s.apply(put("k", "v2", "client-a", 2), 13);
  CHECK(s.get("k").value() == "v2");
  // Beyond the window, an old seq is refused rather than applied again.
  for (std::uint64_t seq = 3; seq < 3 + 70; ++seq)
    s.apply(put("k", "n", "client-a", seq), 13 + seq);
  auto old = s.apply(put("k", "v1", "client-a", 1), 200);
  REQUIRE(old.has_error());
  CHECK(old.error().kind() == "conflict");
}

TEST_CASE("meta store: sessions are bounded and expire when idle", "[meta]") {
  af::cluster::meta_store_options o;
  o.max_sessions = 3;
  o.session_idle = std::chrono::seconds(10);
  meta_store s{o};
  stamp st;
  for (int i = 0; i < 5; ++i) {
    st.time += k_ms;
    s.apply(put("k", "v", "c" + std::to_string(i), 1, st), 1 + i);
  }
  CHECK(s.sessions() == 3);
  // Idle sessions go at the next sweep (every 1024 indices).
  st.time += 20'000 * k_ms;
  s.apply(put("k", "v", "fresh", 1, st), 1024);
  CHECK(s.sessions() == 1);
}

TEST_CASE("meta store: leases are granted, renewed, refused, expire and change epochs", "[meta]") {
  meta_store s;
  stamp st;
  auto a = s.apply(acquire("exec/1", "n1", 1000, st), 1);
  REQUIRE(a.has_lease());
  CHECK(a.lease().granted());
  CHECK(a.lease().owner() == "n1");
  CHECK(a.lease().epoch() == 1);
  CHECK(a.lease().ttl_left_ms() == 1000);

  st.time += 400 * k_ms;
  auto b = s.apply(acquire("exec/1", "n2", 1000, st), 2);
  CHECK_FALSE(b.lease().granted());
  CHECK(b.lease().owner() == "n1");
  CHECK(b.lease().ttl_left_ms() == 600);

  auto renew = s.apply(acquire("exec/1", "n1", 1000, st), 3);
  CHECK(renew.lease().granted());
  CHECK(renew.lease().epoch() == 1); // same holder, same epoch
  CHECK(renew.lease().ttl_left_ms() == 1000);

  // Expired: another owner takes it, with a new epoch.
  st.time += 1001 * k_ms;
  CHECK(s.leases_held(af::time_point{std::chrono::nanoseconds{st.time}}) == 0);
  auto c = s.apply(acquire("exec/1", "n2", 500, st), 4);
  CHECK(c.lease().granted());
  CHECK(c.lease().owner() == "n2");
  CHECK(c.lease().epoch() == 2);

  // Release by a non-holder does nothing; by the holder frees it.
  CHECK_FALSE(s.apply(release("exec/1", "n1", st), 5).lease().granted());
  CHECK(s.apply(release("exec/1", "n2", st), 6).lease().granted());
  auto g = s.lease("exec/1", af::time_point{std::chrono::nanoseconds{st.time}});
  CHECK_FALSE(g.granted());
  CHECK(g.owner().empty());
  CHECK(g.epoch() == 2);
  auto d = s.apply(acquire("exec/1", "n3", 500, st), 7);
  CHECK(d.lease().granted());
  CHECK(d.lease().epoch() == 3);
}

TEST_CASE("meta store: a new leader waits a ttl in office before giving a lease away", "[meta]") {
  meta_store s;
  stamp old_leader{t0, t0 - 10'000 * k_ms, 1};
  REQUIRE(s.apply(acquire("singleton/x", "n1", 1000, old_leader), 1).lease().granted());
  // A new leader whose clock runs 5 s ahead takes office: in the store's time the lease has
  // expired at once, but it was granted in an earlier term.
  stamp fresh{t0 + 5000 * k_ms, t0 + 5000 * k_ms, 2};
  auto early = s.apply(acquire("singleton/x", "n2", 1000, fresh), 2);
  CHECK_FALSE(early.lease().granted());
  fresh.time += 999 * k_ms;
  CHECK_FALSE(s.apply(acquire("singleton/x", "n2", 1000, fresh), 3).lease().granted());
  fresh.time += 1 * k_ms;
  auto later = s.apply(acquire("singleton/x", "n2", 1000, fresh), 4);
  CHECK(later.lease().granted());
  CHECK(later.lease().epoch() == 2);
  // The holder of the old term renews under the new leader without waiting.
  stamp again{fresh.time + 10, fresh.since, 2};
  CHECK(s.apply(acquire("singleton/x", "n2", 1000, again), 5).lease().granted());
}

TEST_CASE("meta store: the store's time never goes back", "[meta]") {
  meta_store s;
  s.apply(put("a", "1", {}, 0, {t0 + 100, t0, 1}), 1);
  s.apply(put("a", "2", {}, 0, {t0 + 50, t0, 2}), 2); // a leader with a slower clock
  CHECK(s.time_ns() == t0 + 100);
}

TEST_CASE("meta store: snapshot and restore give the same state", "[meta]") {
  meta_store s;
  stamp st;
  s.apply(put("a", "1", "c", 1, st), 1);
  s.apply(put("b", "2"), 2);
  s.apply(acquire("l", "n1", 1000, st), 3);
  const auto bytes = s.snapshot();
  meta_store t;
  REQUIRE(t.restore(bytes));
  CHECK(t.snapshot() == bytes);
  CHECK(t.get("a").value() == "1");
  CHECK(t.applied() == 3);
  // The session came along: the retry is still recognised.
  auto retry = t.apply(put("a", "1", "c", 1, st), 4);
  CHECK(retry.meta().index() == 1);
  CHECK_FALSE(t.restore("not a snapshot\xff"));
}

TEST_CASE("meta store: the snapshot is MetaStoreSnapshot's own serialization", "[meta]") {
  // snapshot() writes the message field by field; its bytes must be what the message gives.
  meta_store s;
  stamp st;
  for (std::uint64_t i = 1; i <= 70; ++i) // more than a session window: the oldest go
    s.apply(put("k/" + std::to_string(i % 7), "v" + std::to_string(i), "c1", i, st), i);
  s.apply(put("empty", ""), 71);                                 // empty value, no session
  s.apply(put("k/x", "y", "c2", 300, st), 72);                    // a multi-byte varint seq
  s.apply(put("", "refused", "c3", 1, st), 73);                   // an error outcome, remembered
  s.apply(acquire("l/1", "n1", 1000, st), 74);                    // a lease held
  s.apply(acquire("l/2", "n1", 1000, st), 75);
  s.apply(release("l/2", "n1", st), 76);                          // a lease released (owner empty)
  const auto bytes = s.snapshot();
  v1::MetaStoreSnapshot m;
  REQUIRE(m.ParseFromString(bytes));
  CHECK(m.SerializeAsString() == bytes);
  CHECK(m.keys_size() == 9);
  CHECK(m.leases_size() == 2);
  REQUIRE(m.sessions_size() == 3);
  CHECK(m.sessions(0).client_id() == "c1");
  CHECK(m.sessions(0).seqs_size() == 64);
  CHECK(m.sessions(0).seqs(0) == 7);
  CHECK(m.sessions(0).results_size() == 64);
  CHECK(m.sessions(0).results(63).meta().entry().value() == "v70");
  CHECK(m.sessions(1).seqs(0) == 300);
  CHECK(m.sessions(2).results(0).has_error());
  CHECK(m.applied() == 76);
  CHECK(m.last_time_ns() == t0);
  // An empty store: nothing but nothing.
  CHECK(meta_store{}.snapshot().empty());
}

TEST_CASE("meta store: a session answers retries of seqs that arrived out of order", "[meta]") {
  meta_store s;
  s.apply(put("k", "v3", "c", 3), 1);
  s.apply(put("k", "v5", "c", 5), 2);
  s.apply(put("k", "v4", "c", 4), 3); // older than the newest, not yet seen: applies
  CHECK(s.get("k").value() == "v4");
  // Each retry gets its own first outcome back, whatever the arrival order was.
  CHECK(s.apply(put("k", "x", "c", 4), 4).meta().index() == 3);
  CHECK(s.apply(put("k", "x", "c", 3), 5).meta().index() == 1);
  CHECK(s.apply(put("k", "x", "c", 5), 6).meta().index() == 2);
  CHECK(s.get("k").value() == "v4");
  // Older than the oldest remembered: refused, not applied.
  CHECK(s.apply(put("k", "x", "c", 2), 7).error().kind() == "conflict");
  // The snapshot keeps them, in order.
  meta_store t;
  REQUIRE(t.restore(s.snapshot()));
  CHECK(t.snapshot() == s.snapshot());
  CHECK(t.apply(put("k", "x", "c", 4), 8).meta().index() == 3);
}

TEST_CASE("meta store: encode_command gives MetaCommand's own bytes for every op", "[meta]") {
  const af::cluster::command_stamp st{t0 + 5, t0, 7};
  auto same = [&](const v1::MetaCommand& cmd, const std::string& fast) {
    CHECK(fast == cmd.SerializeAsString());
    v1::MetaCommand back;
    REQUIRE(back.ParseFromString(fast));
    CHECK(back.leader_time_ns() == st.leader_time_ns);
    CHECK(back.term() == st.term);
    CHECK(back.op_case() == cmd.op_case());
  };
  auto stamped = [&](v1::MetaCommand c) {
    c.set_leader_time_ns(st.leader_time_ns);
    c.set_leader_since_ns(st.leader_since_ns);
    c.set_term(st.term);
    return c;
  };
  auto p = stamped(put("key", "value", "client", 9));
  same(p, af::cluster::encode_command(st, p.put()));
  auto c = stamped(cas("key", "old", false, "new"));
  same(c, af::cluster::encode_command(st, c.cas()));
  v1::MetaCommand d;
  d.mutable_del()->set_key("gone");
  d = stamped(d);
  same(d, af::cluster::encode_command(st, d.del()));
  auto a = stamped(acquire("lease", "n1", 1000, {}));
  same(a, af::cluster::encode_command(st, a.acquire()));
  auto r = stamped(release("lease", "n1", {}));
  same(r, af::cluster::encode_command(st, r.release()));
  // An empty op is still written (a oneof member), and zero stamps are left out as proto3 does.
  v1::MetaCommand empty;
  empty.mutable_put();
  CHECK(af::cluster::encode_command({}, v1::MetaPut{}) == empty.SerializeAsString());
  // A negative time (a clock before the epoch) is a ten-byte varint in both.
  v1::MetaCommand neg;
  neg.set_leader_time_ns(-5);
  *neg.mutable_put() = p.put();
  CHECK(af::cluster::encode_command({-5, 0, 0}, p.put()) == neg.SerializeAsString());
}
