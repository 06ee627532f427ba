// The linearizability checker and the history format (af/sim/linearizability.hpp,
// af/sim/kv_history.hpp): hand-written histories that are and are not linearizable, a
// cross-check against brute-force enumeration on random small histories, and the cost on long
// histories.
#include "af/services.hpp"
#include "af/sim/kv_history.hpp"
#include "af/sim/linearizability.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <limits>
#include <map>
#include <numeric>
#include <optional>

using af::sim::check_linearizable;
using af::sim::kv_op;
using af::sim::kv_op_kind;

namespace {

using opt_t = std::optional<std::int64_t>;
constexpr opt_t none = std::nullopt;

kv_op put(std::uint32_t c, std::string v, std::int64_t call, opt_t ret, std::string key = "k") {
  kv_op o;
  o.client = c;
  o.op = kv_op_kind::put;
  o.key = std::move(key);
  o.value = std::move(v);
  o.call = call;
  o.ret = ret;
  return o;
}

kv_op get(std::uint32_t c, std::string v, std::int64_t call, opt_t ret, std::string key = "k") {
  auto o = put(c, std::move(v), call, ret, std::move(key));
  o.op = kv_op_kind::get;
  return o;
}

kv_op cas(std::uint32_t c, std::string expected, std::string v, bool ok, std::int64_t call,
          opt_t ret, std::string key = "k") {
  auto o = put(c, std::move(v), call, ret, std::move(key));
  o.op = kv_op_kind::cas;
  o.expected = std::move(expected);
  o.ok = ret ? ok : false;
  return o;
}

bool linearizable(const std::vector<kv_op>& h) { return check_linearizable(h).ok; }

std::string why(const std::vector<kv_op>& h) { return check_linearizable(h).summary(); }

} // namespace

TEST_CASE("linearizable histories pass", "[linearizability]") {
  SECTION("the empty history") {
    auto r = check_linearizable({});
    CHECK(r.ok);
    CHECK(r.keys.empty());
  }
  SECTION("sequential put, get, cas") {
    CHECK(linearizable({put(0, "a", 0, 10), get(1, "a", 20, 30), cas(0, "a", "b", true, 40, 50),
                        cas(1, "a", "c", false, 60, 70), get(1, "b", 80, 90)}));
  }
  SECTION("a missing key reads empty, and a cas from empty creates it") {
    CHECK(linearizable({get(0, "", 0, 10), cas(1, "", "a", true, 20, 30), get(0, "a", 40, 50)}));
  }
  SECTION("a read overlapping a write sees either value") {
    CHECK(linearizable({put(0, "a", 0, 100), get(1, "a", 10, 20)}));
    CHECK(linearizable({put(0, "a", 0, 100), get(1, "", 10, 20)}));
    // ... and once one reader saw the new value, a later read cannot see the old one.
    CHECK(linearizable({put(0, "a", 0, 100), get(1, "a", 10, 20), get(2, "", 5, 15)}));
    CHECK_FALSE(linearizable({put(0, "a", 0, 100), get(1, "a", 10, 20), get(2, "", 30, 40)}));
  }
  SECTION("concurrent writes may take effect in either order") {
    const std::vector<kv_op> base{put(0, "a", 0, 100), put(1, "b", 10, 90)};
    for (const auto* v : {"a", "b"}) {
      auto h = base;
      h.push_back(get(2, v, 110, 120));
      h.push_back(get(3, v, 130, 140));
      CHECK(linearizable(h));
    }
    auto h = base;
    h.push_back(get(2, "a", 110, 120));
    h.push_back(get(3, "b", 130, 140));
    CHECK_FALSE(linearizable(h));
    // A valid history found after dead ends carries no explanation of them.
    auto ok = check_linearizable({put(0, "a", 0, 100), put(1, "b", 10, 90), get(2, "a", 110, 120)});
    REQUIRE(ok.ok);
    CHECK(ok.keys[0].explanation.empty());
    CHECK(ok.keys[0].at == -1);
  }
  SECTION("a write without return that took effect") {
    CHECK(linearizable({put(0, "a", 0, 10), put(1, "b", 20, none), get(2, "b", 100, 110)}));
  }
  SECTION("a write without return that never took effect") {
    CHECK(linearizable({put(0, "a", 0, 10), put(1, "b", 20, none), get(2, "a", 100, 110)}));
  }
  SECTION("a write without return that took effect long after its client gave up") {
    CHECK(linearizable({put(0, "a", 0, 10), put(1, "b", 20, none), get(2, "a", 100, 110),
                        put(1, "c", 120, 130), get(2, "c", 140, 150), get(0, "b", 160, 170)}));
  }
  SECTION("cas: one of two concurrent cas from the same value wins") {
    CHECK(linearizable({put(0, "a", 0, 10), cas(1, "a", "b", true, 20, 50),
                        cas(2, "a", "c", false, 25, 45), get(0, "b", 60, 70)}));
    CHECK_FALSE(linearizable({put(0, "a", 0, 10), cas(1, "a", "b", true, 20, 50),
                              cas(2, "a", "c", true, 25, 45), get(0, "b", 60, 70)}));
  }
  SECTION("a cas without return that took effect, and one that did not") {
    CHECK(
        linearizable({put(0, "a", 0, 10), cas(1, "a", "b", false, 20, none), get(2, "b", 30, 40)}));
    CHECK(
        linearizable({put(0, "a", 0, 10), cas(1, "a", "b", false, 20, none), get(2, "a", 30, 40)}));
    // It cannot have taken effect from a value the key no longer held after its call.
    CHECK_FALSE(linearizable({put(0, "a", 0, 10), put(0, "x", 12, 14),
                              cas(1, "a", "b", false, 20, none), get(2, "b", 30, 40)}));
  }
  SECTION("a failed cas needs a different value at some point of its interval") {
    CHECK(linearizable({put(0, "a", 0, 10), put(2, "z", 15, 30), cas(1, "a", "b", false, 20, 40),
                        put(2, "a", 50, 60), get(0, "a", 70, 80)}));
  }
  SECTION("intervals that touch count as concurrent") {
    CHECK(linearizable({put(0, "a", 0, 10), get(1, "", 10, 20)}));
    CHECK_FALSE(linearizable({put(0, "a", 0, 10), get(1, "", 11, 20)}));
  }
  SECTION("a get without return constrains nothing") {
    CHECK(linearizable({put(0, "a", 0, 10), get(1, "never-written", 20, none)}));
  }
  SECTION("keys are independent") {
    auto r = check_linearizable({put(0, "a", 0, 10, "x"), put(1, "b", 0, 10, "y"),
                                 get(2, "a", 20, 30, "x"), get(2, "b", 40, 50, "y"),
                                 get(0, "", 5, 6, "z")});
    CHECK(r.ok);
    REQUIRE(r.keys.size() == 3);
    CHECK(r.keys[0].key == "x");
    CHECK(r.ops == 5);
    CHECK(r.summary().starts_with("linearizable: 3 keys, 5 ops (0 without return)"));
  }
}

TEST_CASE("non-linearizable histories fail and name the key and the operation",
          "[linearizability]") {
  SECTION("a stale read after a completed write") {
    std::vector<kv_op> h{put(0, "a", 0, 10), put(0, "b", 20, 30), get(1, "a", 40, 50)};
    auto r = check_linearizable(h);
    CHECK_FALSE(r.ok);
    REQUIRE(r.first_failure() != nullptr);
    CHECK(r.first_failure()->key == "k");
    CHECK(r.first_failure()->decided);
    CHECK(r.first_failure()->at == 50); // the return of the stale read
    const auto s = r.summary();
    CHECK_THAT(s, Catch::Contains("key \"k\""));
    CHECK_THAT(s, Catch::Contains("client 1 get -> \"a\""));
    CHECK_THAT(s, Catch::Contains("leaving the key \"b\""));
    CHECK_THAT(s, Catch::Contains("longest valid prefix places 2"));
  }
  SECTION("a lost acknowledged write") {
    auto s = why({put(0, "a", 0, 10), get(1, "", 20, 30)});
    CHECK_THAT(s, Catch::Contains("client 1 get -> \"\""));
    CHECK_THAT(s, Catch::Contains("cannot take effect"));
    CHECK_FALSE(linearizable(
        {put(0, "a", 0, 10), put(1, "b", 20, 30), get(2, "b", 40, 50), get(2, "", 60, 70)}));
  }
  SECTION("a cas that succeeded on the wrong value") {
    auto s = why({put(0, "a", 0, 10), put(0, "b", 20, 30), cas(1, "a", "c", true, 40, 50)});
    CHECK_THAT(s, Catch::Contains("client 1 cas \"a\" -> \"c\" ok"));
  }
  SECTION("a cas that failed although the key held the expected value throughout") {
    CHECK_FALSE(linearizable({put(0, "a", 0, 10), cas(1, "a", "b", false, 20, 30)}));
  }
  SECTION("a read of a value never written") {
    auto s = why({put(0, "a", 0, 10), get(1, "ghost", 20, 30)});
    CHECK_THAT(s, Catch::Contains("\"ghost\", which no put or successful cas wrote"));
    // Written only by a cas that failed: never written either.
    CHECK_FALSE(
        linearizable({put(0, "a", 0, 10), cas(0, "x", "b", false, 20, 30), get(1, "b", 40, 50)}));
  }
  SECTION("a read before the call of the write it saw") {
    CHECK_FALSE(linearizable({get(0, "b", 0, 10), put(1, "b", 20, none)}));
  }
  SECTION("a write without return cannot be undone") {
    CHECK_FALSE(linearizable(
        {put(0, "a", 0, 10), put(1, "b", 20, none), get(2, "b", 30, 40), get(2, "a", 50, 60)}));
  }
  SECTION("a write applied twice (a retry without deduplication)") {
    // c0-1 reappears after c1-1 replaced it: only a second application explains it.
    CHECK_FALSE(linearizable({put(0, "c0-1", 0, 10), put(1, "c1-1", 20, 30), get(2, "c1-1", 40, 50),
                              get(2, "c0-1", 60, 70)}));
  }
  SECTION("only the failing key fails") {
    auto r = check_linearizable({put(0, "a", 0, 10, "good"), get(1, "a", 20, 30, "good"),
                                 put(0, "a", 0, 10, "bad"), get(1, "", 20, 30, "bad")});
    CHECK_FALSE(r.ok);
    REQUIRE(r.keys.size() == 2);
    CHECK_FALSE(r.keys[0].ok); // "bad" sorts first
    CHECK(r.keys[1].ok);
    CHECK(r.first_failure()->key == "bad");
  }
}

TEST_CASE("the history format round-trips and refuses malformed lines", "[linearizability]") {
  const std::vector<kv_op> h{put(0, "c0-1", 5, 17), get(1, "", 6, 9, "other"),
                             cas(2, "c0-1", "c2-1", true, 20, 30),
                             cas(3, "", "c3-1", false, 21, none), put(4, "c4-1", 22, none)};
  std::string text;
  for (const auto& o : h)
    text += af::sim::to_json_line(o) + "\n";
  CHECK(af::sim::to_json_line(h[0])
        == R"({"client":0,"op":"put","key":"k","value":"c0-1","call":5,"return":17})");
  CHECK(af::sim::to_json_line(h[2])
        == R"({"client":2,"op":"cas","key":"k","value":"c2-1","expected":"c0-1","ok":true,)"
           R"("call":20,"return":30})");
  CHECK(af::sim::to_json_line(h[3])
        == R"({"client":3,"op":"cas","key":"k","value":"c3-1","expected":"","call":21})");
  auto back = af::sim::parse_history(text + "\n", "h.jsonl");
  REQUIRE(back);
  CHECK(*back == h);

  auto fails = [](const std::string& line, const std::string& what) {
    auto r = af::sim::parse_history(line, "h.jsonl");
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == af::errc::validation);
    CHECK_THAT(r.error().message(), Catch::Contains(what));
  };
  fails("not json", "h.jsonl:1: expected a JSON object");
  fails(R"({"op":"put","key":"k","value":"v","call":1})", "client");
  fails(R"({"client":0,"op":"del","key":"k","value":"v","call":1})", "got \"del\"");
  fails(R"({"client":0,"op":"put","key":"k","value":"v","call":5,"return":4})",
        "return 4 is before call 5");
  fails(R"({"client":0,"op":"cas","key":"k","value":"v","call":5,"return":6})", "expected");
  fails(R"({"client":0,"op":"cas","key":"k","value":"v","expected":"","call":5,"return":6})",
        "needs ok");
  fails(R"({"client":0,"op":"cas","key":"k","value":"v","expected":"","ok":true,"call":5})",
        "unknown outcome");
  fails(R"({"client":0,"op":"get","key":"k","value":"v","ok":true,"call":5,"return":6})",
        "cas operations only");
  fails(R"({"client":0,"op":"get","key":"k","value":"v","call":5,"when":6})",
        "unknown field 'when'");
  fails("{\"client\":0,\"op\":\"get\",\"key\":\"k\",\"value\":\"\",\"call\":5,\"return\":9}\n"
        "{\"client\":0,\"op\":\"get\",\"key\":\"k\",\"value\":\"\",\"call\":7,\"return\":12}",
        "h.jsonl:2: client 0 called at 7 before its operation of line 1 returned at 9");
  // A client may go on after an operation whose outcome it does not know.
  CHECK(af::sim::parse_history(
      "{\"client\":0,\"op\":\"put\",\"key\":\"k\",\"value\":\"a\",\"call\":5}\n"
      "{\"client\":0,\"op\":\"get\",\"key\":\"k\",\"value\":\"\",\"call\":7,\"return\":12}",
      "h"));
}

namespace {

/// Brute force: some subset of the operations without return plus every operation with one, in
/// some order that respects real time (a before b when a returned before b was called), on
/// which the register gives every recorded outcome.
bool brute_force(const std::vector<kv_op>& h) {
  std::vector<std::size_t> known, unknown;
  for (std::size_t i = 0; i < h.size(); ++i)
    (h[i].ret ? known : unknown).push_back(i);
  for (std::uint32_t mask = 0; mask < (1U << unknown.size()); ++mask) {
    std::vector<std::size_t> pick = known;
    for (std::size_t b = 0; b < unknown.size(); ++b)
      if (mask & (1U << b)) pick.push_back(unknown[b]);
    std::sort(pick.begin(), pick.end());
    do {
      bool good = true;
      for (std::size_t x = 0; x < pick.size() && good; ++x)
        for (std::size_t y = x + 1; y < pick.size() && good; ++y) {
          const auto& later = h[pick[x]];
          const auto& earlier = h[pick[y]];
          if (earlier.ret && *earlier.ret < later.call) good = false;
        }
      std::map<std::string, std::string> reg;
      for (std::size_t x = 0; x < pick.size() && good; ++x) {
        const auto& o = h[pick[x]];
        auto& v = reg[o.key];
        switch (o.op) {
        case kv_op_kind::put:
          v = o.value;
          break;
        case kv_op_kind::get:
          good = v == o.value;
          break;
        case kv_op_kind::cas:
          if (!o.ret) {
            if (v != o.expected)
              good = false; // placed only where it succeeds
            else
              v = o.value;
          } else if (o.ok) {
            good = v == o.expected;
            v = o.value;
          } else {
            good = v != o.expected;
          }
          break;
        }
      }
      if (good) return true;
    } while (std::next_permutation(pick.begin(), pick.end()));
  }
  return false;
}

} // namespace

TEST_CASE("the checker agrees with brute force on random small histories", "[linearizability]") {
  af::rng r{20240601};
  std::size_t yes = 0, no = 0;
  for (int round = 0; round < 2000; ++round) {
    // 2..7 operations on 1 or 2 keys, values from a small set (so writes repeat values), and in
    // half the rounds many without return (the reductions for those are the subtle part).
    const auto n = 2 + r.uniform(6);
    const std::uint64_t known_odds = round % 2 == 0 ? 5 : 2;
    std::vector<kv_op> h;
    const char* vals[] = {"", "a", "b"};
    for (std::size_t i = 0; i < n; ++i) {
      kv_op o;
      o.client = static_cast<std::uint32_t>(i);
      o.key = r.uniform(4) == 0 ? "k2" : "k";
      const auto kind = r.uniform(3);
      o.op = kind == 0 ? kv_op_kind::put : kind == 1 ? kv_op_kind::get : kv_op_kind::cas;
      o.value =
          vals[r.uniform(o.op == kv_op_kind::get ? 3 : 2) + (o.op == kv_op_kind::get ? 0 : 1)];
      o.call = static_cast<std::int64_t>(r.uniform(20));
      if (r.uniform(known_odds) != 0) o.ret = o.call + static_cast<std::int64_t>(r.uniform(12));
      if (o.op == kv_op_kind::cas) {
        o.expected = vals[r.uniform(3)];
        o.ok = o.ret && r.uniform(2) == 0;
      }
      h.push_back(std::move(o));
    }
    const bool expect = brute_force(h);
    (expect ? yes : no)++;
    const auto got = check_linearizable(h);
    INFO("round " << round);
    for (const auto& o : h)
      INFO(af::sim::to_json_line(o));
    REQUIRE(got.ok == expect);
  }
  // Both verdicts were exercised many times.
  CHECK(yes > 300);
  CHECK(no > 300);
}

namespace {

/// A linearizable history of `clients` sequential clients with `ops` operations each over
/// `keys` keys: every operation takes effect at a random point of its interval (an operation
/// without return at a random later point, or never), and its result is the register's.
std::vector<kv_op> generate(std::uint64_t seed, std::uint32_t clients, std::uint32_t ops,
                            std::uint32_t keys, double unknown_rate) {
  af::rng r{seed};
  struct pending {
    kv_op op;
    std::int64_t at; // linearization point (INT64_MAX: never)
  };
  constexpr auto never = std::numeric_limits<std::int64_t>::max();
  std::vector<pending> all;
  // Clients interleave in time: the next operation is the one of the client free first.
  std::vector<std::int64_t> free_at(clients);
  std::vector<std::uint32_t> done(clients, 0);
  for (auto& t : free_at)
    t = static_cast<std::int64_t>(r.uniform(1000));
  std::map<std::string, std::vector<std::string>> written; // per key, in call order
  for (;;) {
    std::uint32_t c = clients;
    for (std::uint32_t k = 0; k < clients; ++k)
      if (done[k] < ops && (c == clients || free_at[k] < free_at[c])) c = k;
    if (c == clients) break;
    const auto i = done[c]++;
    kv_op o;
    o.client = c;
    o.key = "k" + std::to_string(r.uniform(keys));
    const auto kind = r.uniform(10);
    o.op = kind < 4 ? kv_op_kind::put : kind < 8 ? kv_op_kind::get : kv_op_kind::cas;
    auto& w = written[o.key];
    if (o.op == kv_op_kind::cas && !w.empty())
      o.expected = r.uniform(10) < 7 ? w.back() : w[r.uniform(w.size())];
    if (o.op != kv_op_kind::get) {
      o.value = "c" + std::to_string(c) + "-" + std::to_string(i);
      w.push_back(o.value);
    }
    const auto t = free_at[c];
    o.call = t;
    const auto len = 1 + static_cast<std::int64_t>(r.uniform(3000));
    std::int64_t at = t + static_cast<std::int64_t>(r.uniform(static_cast<std::uint64_t>(len)));
    if (o.op != kv_op_kind::get && r.uniform01() < unknown_rate) {
      // No return: maybe applied, possibly long after the client moved on.
      at = r.uniform(2) == 0 ? never : t + static_cast<std::int64_t>(r.uniform(20'000));
    } else {
      o.ret = t + len;
    }
    free_at[c] = t + len + static_cast<std::int64_t>(r.uniform(500));
    all.push_back({std::move(o), at});
  }
  std::vector<std::size_t> order(all.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return all[a].at < all[b].at; });
  std::map<std::string, std::string> reg;
  for (auto i : order) {
    auto& p = all[i];
    if (p.at == never) break;
    auto& v = reg[p.op.key];
    switch (p.op.op) {
    case kv_op_kind::put:
      v = p.op.value;
      break;
    case kv_op_kind::get:
      p.op.value = v;
      break;
    case kv_op_kind::cas:
      p.op.ok = v == p.op.expected;
      if (p.op.ok) v = p.op.value;
      if (!p.op.ret) p.op.ok = false;
      break;
    }
  }
  std::vector<kv_op> out;
  for (auto& p : all)
    out.push_back(std::move(p.op));
  return out;
}

} // namespace

TEST_CASE("long histories are checked at bounded cost", "[linearizability]") {
  // 5 clients x 200 operations, 5% of the writes without return: a valid order is found with
  // about one configuration per operation plus some backtracking, far from exponential.
  for (std::uint64_t seed = 1; seed <= 5; ++seed)
    for (std::uint32_t keys : {1U, 3U}) {
      auto h = generate(seed, 5, 200, keys, 0.05);
      INFO("seed " << seed << ", keys " << keys);
      auto r = check_linearizable(h);
      INFO(r.summary());
      REQUIRE(r.ok);
      CHECK(r.ops == 1000);
      CHECK(r.unknown > 10);
      CHECK(r.states < 50'000);
    }
}

TEST_CASE("a stale read in a long history is found", "[linearizability]") {
  // Proving that no order exists means exhausting every valid order of the operations before
  // the violation; timed-out writes multiply those, so the single-key case uses fewer of them
  // (docs/simulation.md gives the figures).
  for (std::uint64_t seed = 1; seed <= 5; ++seed)
    for (auto [keys, unknown_rate] : {std::pair{1U, 0.01}, std::pair{3U, 0.05}}) {
      auto h = generate(seed, 5, 200, keys, unknown_rate);
      INFO("seed " << seed << ", keys " << keys);
      REQUIRE(check_linearizable(h).ok);
      // A read in the second half changed to a value overwritten (by a write that returned)
      // before the read was called.
      std::size_t victim = h.size();
      for (std::size_t i = h.size() / 2; i < h.size() && victim == h.size(); ++i)
        if (h[i].op == kv_op_kind::get && h[i].ret && !h[i].value.empty()) victim = i;
      REQUIRE(victim < h.size());
      const auto& v = h[victim];
      std::string stale;
      for (const auto& s : h)
        for (const auto& w : h)
          if (stale.empty() && s.key == v.key && w.key == v.key && s.op == kv_op_kind::put
              && w.op == kv_op_kind::put && s.ret && w.ret && w.call > *s.ret && *w.ret < v.call
              && s.value != v.value)
            stale = s.value;
      REQUIRE_FALSE(stale.empty());
      auto bad = h;
      bad[victim].value = stale;
      auto r = check_linearizable(bad);
      INFO(r.summary());
      CHECK_FALSE(r.ok);
      REQUIRE(r.first_failure() != nullptr);
      CHECK(r.first_failure()->key == v.key);
      CHECK(r.first_failure()->decided);
      CHECK(r.states < 1'000'000);
    }
}

TEST_CASE("many timed-out writes pending at once stay cheap", "[linearizability]") {
  // 30 puts that never returned, all pending together, then reads that pin the value: without
  // treating interchangeable timed-out writes as one, this is 2^30 configurations.
  std::vector<kv_op> h{put(0, "a", 0, 10)};
  for (std::uint32_t i = 0; i < 30; ++i)
    h.push_back(put(1 + i, "lost-" + std::to_string(i), 20 + i, none));
  h.push_back(cas(40, "a", "x", false, 100, 110)); // needs one lost write to have happened
  h.push_back(put(41, "b", 120, 130));
  h.push_back(cas(42, "b", "y", false, 140, 150)); // and another one after that
  h.push_back(get(43, "", 160, 170, "other"));
  auto r = check_linearizable(h);
  INFO(r.summary());
  CHECK(r.ok);
  CHECK(r.states < 1000);
  // The same with a read that nothing explains fails, as cheaply.
  h.push_back(get(44, "a", 180, 190));
  auto bad = check_linearizable(h);
  CHECK_FALSE(bad.ok);
  CHECK(bad.first_failure()->decided);
  CHECK(bad.states < 1000);
}

TEST_CASE("a search over its budget is reported undecided, not linearizable", "[linearizability]") {
  auto h = generate(9, 5, 100, 1, 0.05);
  af::sim::linearizability_options o;
  o.max_states_per_key = 10;
  auto r = check_linearizable(h, o);
  CHECK_FALSE(r.ok);
  REQUIRE(r.first_failure() != nullptr);
  CHECK_FALSE(r.first_failure()->decided);
  CHECK_THAT(r.summary(), Catch::Contains("undecided"));
}
