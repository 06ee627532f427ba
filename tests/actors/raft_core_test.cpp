// Raft's pure state machine (actors/src/cluster/raft_core.hpp) driven by a hand-written,
// deterministic message router: elections, replication with batching and pipelining, crashes
// with durable state, repaired log conflicts, InstallSnapshot, membership changes, ReadIndex and
// the Raft paper's Figure 8.
#include "cluster/raft_core.hpp"

#include <catch2/catch.hpp>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>

namespace {

using namespace std::chrono_literals;
namespace raft = af::cluster::raft;
using raft::role;

const af::time_point t0{std::chrono::seconds{1000}};

/// A cluster of cores, their "disks", and a network under the test's control.
struct cluster {
  struct node {
    std::unique_ptr<raft::raft_core> core;
    raft::durable_state disk;
    bool up = true;
    std::map<std::uint64_t, raft::entry> applied; // this incarnation's state machine
    std::uint64_t restarts = 0;
  };

  raft::core_options base;
  std::map<std::string, node> nodes;
  std::deque<raft::message> net;
  af::time_point now = t0;
  /// Returns true to drop a message.
  std::function<bool(const raft::message&)> drop;
  std::map<std::uint64_t, raft::entry> applied_anywhere; // state-machine safety, over the run
  std::map<std::uint64_t, std::set<std::string>> leaders_of_term;
  std::vector<raft::read_state> reads;
  std::vector<std::uint64_t> dropped_reads;
  std::vector<raft::message> sent; // everything that went on the wire
  std::uint64_t seed = 1;

  explicit cluster(std::vector<std::string> voters, std::vector<std::string> extra = {}) {
    base.voters = voters;
    base.election_min = 150ms;
    base.election_max = 300ms;
    base.heartbeat = 50ms;
    base.max_batch = 64;
    base.max_inflight = 4;
    for (auto& v : voters)
      nodes[v];
    for (auto& v : extra)
      nodes[v];
  }

  void start() {
    for (auto& [name, n] : nodes)
      boot(name);
  }

  void boot(const std::string& name) {
    auto& n = nodes.at(name);
    auto o = base;
    o.self = name;
    n.core = std::make_unique<raft::raft_core>(o, seed++ * 7919, now);
    REQUIRE(n.core->restore(n.disk, now));
    n.up = true;
    n.applied.clear();
    // The state machine restarts from the snapshot.
    drain(name);
  }

  void crash(const std::string& name) {
    auto& n = nodes.at(name);
    n.up = false;
    n.core.reset();
    ++n.restarts;
  }

  raft::raft_core& core(const std::string& name) { return *nodes.at(name).core; }

  /// Writes, sends and applies what the core has for us.
  void drain(const std::string& name) {
    auto& n = nodes.at(name);
    for (int rounds = 0; rounds < 1000; ++rounds) {
      auto r = n.core->take_ready();
      if (r.empty()) return;
      if (r.needs_write()) {
        auto& d = n.disk;
        if (r.hard) d.hard = *r.hard;
        if (r.snapshot) {
          d.snapshot = *r.snapshot;
          d.snapshot_data = r.snapshot_data;
          std::erase_if(d.log, [&](const raft::entry& e) { return e.index <= r.snapshot->index; });
          n.applied.clear();
        }
        if (r.truncate_from != 0)
          std::erase_if(d.log, [&](const raft::entry& e) { return e.index >= r.truncate_from; });
        for (auto& e : r.entries) {
          REQUIRE((d.log.empty() ? d.snapshot.index : d.log.back().index) + 1 == e.index);
          d.log.push_back(e);
        }
        n.core->persisted(r.seq);
      }
      for (auto& m : r.send)
        net.push_back(m);
      for (auto& m : r.send_after_write)
        net.push_back(m);
      for (auto& e : r.apply) {
        n.applied[e.index] = e;
        auto [it, fresh] = applied_anywhere.emplace(e.index, e);
        INFO("node " << name << " applies index " << e.index);
        REQUIRE(it->second == e); // state-machine safety
      }
      for (auto& ev : r.events)
        if (ev.what == raft::core_event::kind::became_leader) {
          leaders_of_term[ev.term].insert(name);
          REQUIRE(leaders_of_term[ev.term].size() == 1); // election safety
        }
      for (auto& rd : r.reads)
        reads.push_back(rd);
      for (auto id : r.dropped_reads)
        dropped_reads.push_back(id);
    }
    FAIL("ready never became empty");
  }

  /// Delivers messages until the network is quiet.
  void run() {
    for (int steps = 0; !net.empty(); ++steps) {
      REQUIRE(steps < 200000);
      auto m = std::move(net.front());
      net.pop_front();
      sent.push_back(m);
      if (drop && drop(m)) continue;
      auto it = nodes.find(m.to);
      if (it == nodes.end() || !it->second.up) continue;
      it->second.core->step(m, now);
      drain(m.to);
    }
  }

  /// Advances time in steps, ticking every live node and delivering everything in between.
  void advance(af::duration total, af::duration step = 10ms) {
    for (af::duration t{}; t < total; t += step) {
      now += step;
      for (auto& [name, n] : nodes)
        if (n.up) {
          n.core->tick(now);
          drain(name);
        }
      run();
    }
  }

  void elect(const std::string& name) {
    core(name).campaign(now);
    drain(name);
    run();
  }

  std::vector<std::string> leaders() {
    std::vector<std::string> out;
    for (auto& [name, n] : nodes)
      if (n.up && n.core->current_role() == role::leader) out.push_back(name);
    return out;
  }

  std::string leader() {
    std::string best;
    std::uint64_t term = 0;
    for (auto& [name, n] : nodes)
      if (n.up && n.core->current_role() == role::leader && n.core->term() >= term) {
        best = name;
        term = n.core->term();
      }
    return best;
  }

  std::uint64_t propose(const std::string& at, const std::string& data) {
    auto i = core(at).propose(data, now);
    REQUIRE(i);
    drain(at);
    return *i;
  }

  void set_drop(std::function<bool(const raft::message&)> f) { drop = std::move(f); }
};

bool is_append_with_term(const raft::message& m, std::uint64_t term) {
  const auto* a = std::get_if<raft::append_request>(&m.body);
  if (a == nullptr) return false;
  for (const auto& e : a->entries)
    if (e.term == term) return true;
  return false;
}

/// The log of a node from 1 to its last index, as (index, term) pairs.
std::vector<std::pair<std::uint64_t, std::uint64_t>> log_of(raft::raft_core& c) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for (auto i = c.snapshot().index + 1; i <= c.last_index(); ++i)
    out.emplace_back(i, *c.term_at(i));
  return out;
}

} // namespace

TEST_CASE("raft core: a leader is elected, once per term, and all agree", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.start();
  c.advance(1s);
  const auto ls = c.leaders();
  REQUIRE(ls.size() == 1);
  const auto term = c.core(ls[0]).term();
  for (auto& [name, n] : c.nodes) {
    CHECK(n.core->term() == term);
    CHECK(n.core->leader() == ls[0]);
  }
  // The no-op of the term is committed and applied everywhere.
  for (auto& [name, n] : c.nodes) {
    CHECK(n.core->commit_index() == 1);
    REQUIRE(n.applied.count(1) == 1);
    CHECK(n.applied[1].kind == raft::entry_kind::noop);
  }
}

TEST_CASE("raft core: a vote is written before it is sent", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.start();
  c.core("n1").campaign(c.now);
  auto r = c.core("n1").take_ready();
  REQUIRE(r.hard);
  CHECK(r.hard->term == 1);
  CHECK(r.hard->vote == "n1");
  CHECK(r.send.empty()); // vote requests wait for the write
  REQUIRE(r.send_after_write.size() == 2);
  // The candidate does not count its own vote before the write is durable.
  c.core("n1").step({"n2", "n1", raft::vote_response{1, true}}, c.now);
  CHECK(c.core("n1").current_role() == role::candidate);
  c.core("n1").persisted(r.seq);
  CHECK(c.core("n1").current_role() == role::leader);

  c.core("n2").step({"n1", "n2", raft::vote_request{1, 0, 0}}, c.now);
  auto v = c.core("n2").take_ready();
  REQUIRE(v.hard);
  CHECK(v.hard->vote == "n1");
  CHECK(v.send.empty());
  REQUIRE(v.send_after_write.size() == 1);
  CHECK(std::get<raft::vote_response>(v.send_after_write[0].body).granted);
  // A second candidate of the same term is refused.
  c.core("n2").step({"n3", "n2", raft::vote_request{1, 5, 1}}, c.now);
  auto v2 = c.core("n2").take_ready();
  REQUIRE(v2.send_after_write.size() == 1);
  CHECK_FALSE(std::get<raft::vote_response>(v2.send_after_write[0].body).granted);
}

TEST_CASE("raft core: a candidate with a stale log is refused", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.start();
  c.elect("n1");
  c.propose("n1", "a");
  c.run();
  c.crash("n2");
  c.boot("n2");
  // n2 has the entries; a fresh node n3 with an empty log asking it must be refused.
  c.core("n2").step({"n3", "n2", raft::vote_request{c.core("n2").term() + 1, 0, 0}}, c.now);
  auto r = c.core("n2").take_ready();
  REQUIRE(r.send_after_write.size() == 1);
  CHECK_FALSE(std::get<raft::vote_response>(r.send_after_write[0].body).granted);
}

TEST_CASE("raft core: entries replicate in batches with bounded pipelining", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.base.max_batch = 10;
  c.base.max_inflight = 2;
  c.start();
  c.elect("n1");
  REQUIRE(c.leader() == "n1");
  for (int i = 0; i < 100; ++i)
    (void)c.core("n1").propose(std::string{"cmd"}.append(std::to_string(i)), c.now);
  auto r = c.core("n1").take_ready();
  CHECK(r.entries.size() == 100); // one write for the whole burst
  // Per follower: at most max_inflight appends out, each of at most max_batch entries.
  std::map<std::string, int> appends;
  for (auto& m : r.send) {
    const auto& a = std::get<raft::append_request>(m.body);
    CHECK(a.entries.size() <= 10);
    ++appends[m.to];
    c.net.push_back(m);
  }
  CHECK(appends["n2"] == 2);
  CHECK(appends["n3"] == 2);
  c.core("n1").persisted(r.seq);
  c.run();
  c.advance(60ms); // followers learn the final commit index from the next heartbeat
  for (auto& [name, n] : c.nodes) {
    CHECK(n.core->commit_index() == 101);
    CHECK(n.applied.size() == 101);
    CHECK(n.applied[101].data == "cmd99");
  }
}

TEST_CASE("raft core: the leader crashes, another is elected, the old one catches up", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.start();
  c.advance(1s);
  auto first = c.leader();
  REQUIRE(!first.empty());
  for (int i = 0; i < 20; ++i)
    c.propose(first, std::string{"x"}.append(std::to_string(i)));
  c.run();
  const auto committed = c.core(first).commit_index();
  c.crash(first);
  c.advance(1s);
  auto second = c.leader();
  REQUIRE(!second.empty());
  CHECK(second != first);
  CHECK(c.core(second).term() > 1);
  // Leader completeness: the new leader holds everything committed before.
  CHECK(c.core(second).last_index() >= committed);
  for (int i = 0; i < 5; ++i)
    c.propose(second, std::string{"y"}.append(std::to_string(i)));
  c.run();
  c.boot(first);
  c.advance(500ms);
  CHECK(c.core(first).current_role() == role::follower);
  CHECK(c.core(first).leader() == second);
  CHECK(log_of(c.core(first)) == log_of(c.core(second)));
  CHECK(c.core(first).commit_index() == c.core(second).commit_index());
}

TEST_CASE("raft core: conflicting uncommitted entries are overwritten", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.start();
  c.elect("n1");
  c.propose("n1", "kept");
  c.run();
  // n1 is cut off; it appends three entries nobody else gets.
  c.set_drop([](const raft::message& m) { return m.from == "n1" || m.to == "n1"; });
  c.propose("n1", "lost1");
  c.propose("n1", "lost2");
  c.propose("n1", "lost3");
  c.run();
  CHECK(c.core("n1").last_index() == 5);
  CHECK(c.core("n1").commit_index() == 2);
  c.now += 200ms; // n3 stops hearing n1 (a follower ignores candidates while it hears a leader)
  c.elect("n2");
  REQUIRE(c.leader() == "n2");
  c.propose("n2", "new1");
  c.run();
  c.set_drop({});
  c.advance(500ms);
  // n1 stepped down and its log now equals n2's: the lost entries were truncated.
  CHECK(c.core("n1").current_role() == role::follower);
  CHECK(log_of(c.core("n1")) == log_of(c.core("n2")));
  for (auto& [i, e] : c.nodes.at("n1").applied)
    CHECK(e.data.rfind("lost", 0) != 0);
  CHECK(c.nodes.at("n1").disk.log.size() == c.core("n2").last_index());
}

TEST_CASE("raft core: a lagging follower gets the leader's snapshot", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.start();
  c.elect("n1");
  c.crash("n3");
  for (int i = 0; i < 50; ++i)
    c.propose("n1", std::string{"v"}.append(std::to_string(i)));
  c.run();
  const auto applied = c.core("n1").applied_index();
  REQUIRE(applied == 51);
  // The leader snapshots its state machine (here: the last applied value) and compacts.
  REQUIRE(c.core("n1").compact(applied, "state@" + std::to_string(applied)));
  CHECK(c.core("n1").snapshot().index == 51);
  CHECK(c.core("n1").at(51) == nullptr);
  c.boot("n3");
  std::size_t snapshots = 0;
  c.set_drop([&](const raft::message& m) {
    if (std::holds_alternative<raft::snapshot_request>(m.body)) ++snapshots;
    return false;
  });
  c.advance(300ms);
  CHECK(snapshots == 1);
  CHECK(c.core("n3").snapshot().index == 51);
  CHECK(c.core("n3").snapshot_data() == "state@51");
  CHECK(c.nodes.at("n3").disk.snapshot.index == 51);
  c.propose("n1", "after");
  c.run();
  c.advance(100ms);
  CHECK(c.core("n3").commit_index() == 52);
  CHECK(c.nodes.at("n3").applied.at(52).data == "after");
  CHECK(c.nodes.at("n3").applied.count(10) == 0); // came with the snapshot, not replayed
  // A restart of n3 resumes from its durable snapshot.
  c.crash("n3");
  c.boot("n3");
  CHECK(c.core("n3").snapshot().index == 51);
  CHECK(c.core("n3").last_index() == 52);
}

TEST_CASE("raft core: single-server membership changes", "[raft]") {
  cluster c{{"n1", "n2", "n3"}, {"n4"}};
  c.start();
  c.elect("n1");
  for (int i = 0; i < 10; ++i)
    c.propose("n1", std::string{"a"}.append(std::to_string(i)));
  c.run();
  // n4 is not a voter: it never campaigns.
  c.advance(1s);
  CHECK(c.core("n4").term() <= c.core("n1").term());
  CHECK(c.core("n4").current_role() == role::follower);

  auto idx = c.core("n1").add_voter("n4", c.now);
  REQUIRE(idx);
  // The config takes effect when appended: the leader counts n4 already.
  CHECK(c.core("n1").voters().size() == 4);
  // A second change waits for the first.
  auto again = c.core("n1").add_voter("n5", c.now);
  REQUIRE_FALSE(again);
  CHECK(again.error().code() == af::errc::conflict);
  c.drain("n1");
  c.advance(200ms);
  CHECK(c.core("n1").commit_index() >= *idx);
  CHECK(c.core("n4").voters().size() == 4);
  CHECK(log_of(c.core("n4")) == log_of(c.core("n1")));

  // With four voters a majority is three: two down stops commits.
  c.crash("n2");
  c.crash("n3");
  const auto before = c.core("n1").commit_index();
  c.propose("n1", "stuck");
  c.advance(100ms);
  CHECK(c.core("n1").commit_index() == before);
  c.boot("n2");
  c.advance(200ms);
  CHECK(c.core("n1").commit_index() == before + 1);

  // The leader removes itself: it steps down once that is committed; the others elect.
  auto rm = c.core("n1").remove_voter("n1", c.now);
  REQUIRE(rm);
  c.drain("n1");
  c.boot("n3");
  c.advance(2s);
  CHECK(c.core("n1").current_role() == role::follower);
  auto l = c.leader();
  REQUIRE(!l.empty());
  CHECK(l != "n1");
  CHECK(c.core(l).voters() == std::vector<std::string>{"n2", "n3", "n4"});
  CHECK_FALSE(c.core(l).is_voter("n1"));
  // The removed node stays quiet: no elections from it.
  const auto term = c.core(l).term();
  c.advance(2s);
  CHECK(c.core(l).term() == term);
  CHECK(c.leader() == l);
}

TEST_CASE("raft core: ReadIndex confirms leadership with a heartbeat round", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.start();
  c.elect("n1");
  c.propose("n1", "w");
  c.run();
  REQUIRE(c.core("n1").read_index(7, c.now));
  // Not confirmed before a majority answered a heartbeat sent after the read arrived.
  auto r = c.core("n1").take_ready();
  CHECK(r.reads.empty());
  std::size_t heartbeats = 0;
  for (auto& m : r.send) {
    auto* a = std::get_if<raft::append_request>(&m.body);
    REQUIRE(a != nullptr);
    CHECK(a->seq >= 1);
    ++heartbeats;
    c.net.push_back(m);
  }
  CHECK(heartbeats == 2);
  c.run();
  REQUIRE(c.reads.size() == 1);
  CHECK(c.reads[0].id == 7);
  CHECK(c.reads[0].index == 2);

  // A deposed leader cut off from the others never confirms a read.
  c.set_drop([](const raft::message& m) { return m.from == "n1" || m.to == "n1"; });
  REQUIRE(c.core("n1").read_index(8, c.now));
  c.drain("n1");
  c.run();
  CHECK(c.reads.size() == 1);
  c.now += 200ms;
  c.elect("n2");
  c.propose("n2", "newer");
  c.run();
  c.advance(400ms); // n1's quorum check fails: it steps down and drops the read
  CHECK(c.core("n1").current_role() == role::follower);
  CHECK(c.reads.size() == 1);
  REQUIRE(c.dropped_reads.size() == 1);
  CHECK(c.dropped_reads[0] == 8);
  // Followers refuse reads, naming the leader they know.
  c.set_drop({});
  c.advance(200ms);
  auto st = c.core("n3").read_index(9, c.now);
  REQUIRE_FALSE(st);
  CHECK(st.error().code() == af::errc::transient);
  CHECK(st.error().message().find("n2") != std::string::npos);
}

TEST_CASE("raft core: a new leader's reads wait for its no-op to commit", "[raft]") {
  cluster c{{"n1", "n2", "n3"}};
  c.start();
  c.set_drop([](const raft::message& m) { return is_append_with_term(m, 1); });
  c.elect("n1");
  REQUIRE(c.leader() == "n1");
  REQUIRE(c.core("n1").read_index(1, c.now));
  c.drain("n1");
  c.run();
  CHECK(c.reads.empty());
  c.set_drop({});
  c.advance(100ms);
  REQUIRE(c.reads.size() == 1);
  CHECK(c.reads[0].index == 1);
}

// Figure 8 of the Raft paper, with this implementation's term-start no-ops (indices shift by
// one: index 1 is the first leader's no-op).
TEST_CASE("raft core: Figure 8, an old-term entry is committed only via a current-term entry",
          "[raft][figure8]") {
  for (const bool replicate_current_term : {false, true}) {
    DYNAMIC_SECTION((replicate_current_term ? "(e) " : "(d) ")
                    << "the term-4 entry reaches a majority: " << replicate_current_term) {
      cluster c{{"s1", "s2", "s3", "s4", "s5"}};
      c.base.check_quorum = false; // the scenario drives elections by hand
      c.base.max_batch = 1;
      c.start();
      c.elect("s1");
      REQUIRE(c.leader() == "s1");
      c.run();
      // (a) s1 leads term 1 (the paper's term 2) and replicates X at index 2 to s2 only.
      c.set_drop([](const raft::message& m) {
        return m.from == "s1" && m.to != "s2" && is_append_with_term(m, 1);
      });
      c.propose("s1", "X");
      c.run();
      REQUIRE(c.core("s2").term_at(2) == 1u);
      REQUIRE(c.core("s3").last_index() == 1);
      // (b) s1 crashes; s5 is elected by s3, s4 and itself and takes Y at index 2, alone.
      c.crash("s1");
      c.set_drop([](const raft::message& m) {
        return m.from == "s5"
               && (m.to == "s2" || std::holds_alternative<raft::append_request>(m.body));
      });
      c.elect("s5");
      REQUIRE(c.leader() == "s5");
      const auto t5 = c.core("s5").term();
      REQUIRE(c.core("s5").term_at(2) == t5); // its no-op plays the paper's Y
      REQUIRE(c.core("s3").last_index() == 1);
      // s5 crashes before replicating anything.
      c.crash("s5");
      // (c) s1 restarts and is elected (s2, s3, s4); it replicates X (index 2, term 1) to s3
      // but its own term's no-op (index 3) reaches nobody.
      c.set_drop({});
      c.boot("s1");
      c.set_drop([&](const raft::message& m) {
        if (m.from != "s1" || replicate_current_term) return false;
        auto& s1 = c.nodes.at("s1");
        return s1.up && is_append_with_term(m, s1.core->term());
      });
      for (int i = 0; i < 5 && c.leader() != "s1"; ++i) {
        c.elect("s1");
        c.run();
      }
      REQUIRE(c.leader() == "s1");
      const auto t1 = c.core("s1").term();
      REQUIRE(t1 > t5);
      c.advance(100ms); // heartbeats and probes: X goes to s3 and s4
      c.run();
      CHECK(c.core("s3").term_at(2) == 1u);
      // X is on a majority (s1, s2, s3) ...
      int holders = 0;
      for (auto n : {"s1", "s2", "s3", "s4"})
        if (c.core(n).term_at(2) == 1u) ++holders;
      CHECK(holders >= 3);
      if (!replicate_current_term) {
        // ... but it is from an old term: not committed, not applied anywhere.
        CHECK(c.core("s1").commit_index() < 2); // (its commit index restarted from 0)
        CHECK(c.applied_anywhere.count(2) == 0);
        // (d) s1 crashes; s5 comes back, wins with s2, s3, s4 (its last term beats theirs)
        // and overwrites X with its own entry everywhere.
        c.crash("s1");
        c.boot("s5");
        c.set_drop([](const raft::message& m) { return m.to == "s4" && m.from != "s5"; });
        for (int i = 0; i < 5 && c.leader() != "s5"; ++i) {
          c.elect("s5");
          c.run();
        }
        REQUIRE(c.leader() == "s5");
        c.set_drop({});
        c.advance(200ms);
        for (auto n : {"s2", "s3", "s4", "s5"}) {
          INFO(n);
          CHECK(c.core(n).term_at(2) == t5);
          CHECK(c.core(n).commit_index() >= 3);
        }
        // The overwritten X was never applied: index 2 applied as s5's entry only.
        CHECK(c.applied_anywhere.at(2).term == t5);
      } else {
        // (e) The term-t1 no-op reached a majority: it is committed, and X with it.
        CHECK(c.core("s1").commit_index() >= 3);
        CHECK(c.applied_anywhere.at(2).data == "X");
        // s5 can no longer win: a majority holds a newer last term than its own.
        c.crash("s1");
        c.boot("s5");
        c.set_drop([](const raft::message& m) { return m.from != "s5" && m.to != "s5"; });
        c.elect("s5");
        c.run();
        CHECK(c.core("s5").current_role() != role::leader);
        c.set_drop({});
        c.advance(2s);
        auto l = c.leader();
        REQUIRE(!l.empty());
        CHECK(l != "s5");
        CHECK(c.core("s5").term_at(2) == 1u); // X overwrote s5's own entry
        CHECK(c.applied_anywhere.at(2).data == "X");
      }
    }
  }
}

TEST_CASE("raft core: the planted double vote lets two leaders win one term", "[raft]") {
  // The test-only option breaks election safety; the harness's check must see it.
  cluster c{{"n1", "n2", "n3"}};
  c.base.unsafe_double_vote = true;
  c.base.check_quorum = false;
  c.start();
  c.core("n1").campaign(c.now);
  c.drain("n1");
  c.core("n3").campaign(c.now);
  c.drain("n3");
  // Both candidates of term 1 ask n2, which grants both.
  std::map<std::uint64_t, int> leaders;
  while (!c.net.empty()) {
    auto m = c.net.front();
    c.net.pop_front();
    c.core(m.to).step(m, c.now);
    auto r = c.core(m.to).take_ready();
    if (r.needs_write()) c.core(m.to).persisted(r.seq);
    for (auto& x : r.send_after_write)
      c.net.push_back(x);
    for (auto& ev : r.events)
      if (ev.what == raft::core_event::kind::became_leader) ++leaders[ev.term];
  }
  CHECK(leaders[1] == 2);
}

TEST_CASE("raft core: restore refuses a log with a gap", "[raft]") {
  raft::core_options o;
  o.self = "n1";
  o.voters = {"n1"};
  raft::raft_core core{o, 1, t0};
  raft::durable_state st;
  st.log.push_back({1, 1, raft::entry_kind::noop, {}});
  st.log.push_back({3, 1, raft::entry_kind::command, "x"});
  auto s = core.restore(st, t0);
  REQUIRE_FALSE(s);
  CHECK(s.error().code() == af::errc::validation);
}

TEST_CASE("raft core: a single voter commits alone", "[raft]") {
  cluster c{{"n1"}};
  c.start();
  c.advance(400ms);
  REQUIRE(c.leader() == "n1");
  c.propose("n1", "solo");
  c.advance(10ms);
  CHECK(c.core("n1").commit_index() == 2);
  REQUIRE(c.core("n1").read_index(1, c.now));
  c.drain("n1");
  REQUIRE(c.reads.size() == 1);
}

TEST_CASE("raft core: members take their snapshots in turns", "[raft]") {
  const std::vector<std::string> voters{"n3", "n1", "n2"};
  CHECK(raft::snapshot_phase("n1", voters, 9000) == 0);
  CHECK(raft::snapshot_phase("n2", voters, 9000) == 3000);
  CHECK(raft::snapshot_phase("n3", voters, 9000) == 6000);
  CHECK(raft::snapshot_phase("n9", voters, 9000) == 0); // not a voter
  CHECK(raft::snapshot_phase("n2", voters, 0) == 0);
  CHECK(raft::snapshot_phase("solo", {"solo"}, 10) == 0);

  // Where each member snapshots from an empty log on: its first index at or beyond its phase
  // that is at least every / 2 past its last snapshot, then every `every`.
  auto indices = [](std::uint64_t every, std::uint64_t phase, std::uint64_t upto) {
    std::vector<std::uint64_t> out;
    std::uint64_t snap = 0;
    for (std::uint64_t applied = 1; applied <= upto; ++applied)
      if (raft::snapshot_due(snap, applied, every, phase)) out.push_back(snap = applied);
    return out;
  };
  CHECK(indices(9000, 0, 30000) == std::vector<std::uint64_t>{9000, 18000, 27000});
  CHECK(indices(9000, 3000, 30000) == std::vector<std::uint64_t>{12000, 21000, 30000});
  CHECK(indices(9000, 6000, 30000) == std::vector<std::uint64_t>{6000, 15000, 24000});
  CHECK(indices(10, 0, 25) == std::vector<std::uint64_t>{10, 20}); // a single member, as before
  CHECK(indices(0, 0, 100).empty());

  // Applies come in batches: a snapshot is due as soon as the batch passes the member's index,
  // and after a snapshot taken off-phase (one installed from the leader) the next comes at
  // least every / 2 later, back on the member's phase.
  CHECK_FALSE(raft::snapshot_due(0, 5999, 9000, 6000));
  CHECK(raft::snapshot_due(0, 6100, 9000, 6000));
  CHECK_FALSE(raft::snapshot_due(14000, 15000, 9000, 6000)); // 15000 is under every / 2 away
  CHECK_FALSE(raft::snapshot_due(14000, 23999, 9000, 6000));
  CHECK(raft::snapshot_due(14000, 24000, 9000, 6000));
  CHECK_FALSE(raft::snapshot_due(24000, 24000, 9000, 6000)); // nothing new applied
}
