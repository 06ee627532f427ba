// The Raft agent (af.cluster.raft) on a real single-member node with a SQLite journal: the
// client protocol of meta.proto (put / get / cas / delete / list / leases / sessions / status),
// refused input (logged and counted), snapshots, and recovery of the log and store from the
// journal after a restart. Multi-member behaviour is tested in the simulator
// (tests/sim/raft_test.cpp) and with the core's router (raft_core_test.cpp).
#include "af/cluster/raft.hpp"
#include "af/node.hpp"
#include "af/store/backend.hpp"
#include "af/store/journal.hpp"
#include "af/v1/meta.pb.h"
#include "af/v1/raft.pb.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>

using namespace af;
using namespace std::chrono_literals;

namespace {

double metric(node& n, const std::string& series) {
  std::istringstream text{n.metrics().serialize_text()};
  double sum = 0;
  for (std::string line; std::getline(text, line);)
    if (line.starts_with(series + " ") || line.starts_with(series + "{"))
      sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  return sum;
}

struct raft_node {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  std::unique_ptr<node> n;

  raft_node(const std::string& db, std::uint64_t snapshot_every) {
    node::options o;
    log_options lo;
    lo.level = log_level::info;
    lo.format = "json";
    o.log = make_memory_log_backend(lo, lines);
    store::journal_options jo;
    jo.open = [db] { return store::open_url("sqlite:" + db); };
    o.system_services.push_back(store::journal_child(std::move(jo)));
    cluster::raft_options ro;
    ro.members = {o.cfg.get_string("node.name")};
    ro.election_timeout_min = 50ms;
    ro.election_timeout_max = 100ms;
    ro.heartbeat = 20ms;
    ro.snapshot_every = snapshot_every;
    REQUIRE(cluster::validate(ro));
    o.system_services.push_back(cluster::raft_child(std::move(ro)));
    auto r = node::start(std::move(o));
    REQUIRE(r);
    n = std::move(r).value();
  }
  ~raft_node() {
    if (n) n->shutdown();
  }

  template <class Reply, class Msg>
  expected<Reply> ask(Msg m) {
    return n->ask<Reply>(cluster::k_raft_agent, std::move(m), 10s);
  }

  v1::RaftStatus wait_leader() {
    for (int i = 0; i < 300; ++i) {
      auto s = ask<v1::RaftStatus>(v1::RaftStatusRequest{});
      if (s && s->role() == "leader") return *s;
      std::this_thread::sleep_for(10ms);
    }
    FAIL("no leader within 3 s");
    return {};
  }

  bool logged(const std::string& event) {
    for (const auto& l : *lines)
      if (l.find("\"event\":\"" + event + "\"") != std::string::npos) return true;
    return false;
  }
};

v1::MetaPut put(std::string k, std::string v, std::string client = {}, std::uint64_t seq = 0) {
  v1::MetaPut p;
  p.set_key(std::move(k));
  p.set_value(std::move(v));
  if (!client.empty()) {
    p.mutable_session()->set_client_id(std::move(client));
    p.mutable_session()->set_seq(seq);
  }
  return p;
}

v1::MetaGet get(std::string k) {
  v1::MetaGet g;
  g.set_key(std::move(k));
  return g;
}

std::string temp_db(const char* name) {
  auto dir = std::filesystem::temp_directory_path()
             / ("af-raft-agent-" + std::string{name} + "-"
                + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(dir);
  return (dir / "journal.db").string();
}

} // namespace

TEST_CASE("raft agent: the client protocol on a single member", "[raft][raft_agent]") {
  const auto db = temp_db("client");
  raft_node rn{db, 0};
  auto st = rn.wait_leader();
  CHECK(st.term() >= 1);
  CHECK(st.leader() == st.node());
  REQUIRE(st.members_size() == 1);
  CHECK(st.members(0).self());
  CHECK(rn.logged("raft_became_leader"));

  auto p = rn.ask<v1::MetaResult>(put("cfg/a", "1"));
  REQUIRE(p);
  CHECK(p->ok());
  CHECK(p->entry().version() == p->index());
  auto g = rn.ask<v1::MetaEntry>(get("cfg/a"));
  REQUIRE(g);
  CHECK(g->found());
  CHECK(g->value() == "1");
  CHECK(g->version() == p->index());

  v1::MetaCas bad;
  bad.set_key("cfg/a");
  bad.set_expected("0");
  bad.set_value("2");
  auto c1 = rn.ask<v1::MetaResult>(bad);
  REQUIRE(c1);
  CHECK_FALSE(c1->ok());
  CHECK(c1->entry().value() == "1");
  v1::MetaCas good = bad;
  good.set_expected("1");
  auto c2 = rn.ask<v1::MetaResult>(good);
  REQUIRE(c2);
  CHECK(c2->ok());
  rn.ask<v1::MetaResult>(put("cfg/b", "x")).value();
  v1::MetaList l;
  l.set_prefix("cfg/");
  auto ls = rn.ask<v1::MetaEntries>(l);
  REQUIRE(ls);
  REQUIRE(ls->entries_size() == 2);
  CHECK(ls->entries(0).value() == "2");
  v1::MetaDelete d;
  d.set_key("cfg/b");
  REQUIRE(rn.ask<v1::MetaResult>(d));
  CHECK_FALSE(rn.ask<v1::MetaEntry>(get("cfg/b"))->found());

  // A retried command (same session seq) applies once and gets the first outcome.
  auto s1 = rn.ask<v1::MetaResult>(put("sess", "first", "client-1", 1));
  rn.ask<v1::MetaResult>(put("sess", "between")).value();
  auto s2 = rn.ask<v1::MetaResult>(put("sess", "first", "client-1", 1));
  REQUIRE(s1);
  REQUIRE(s2);
  CHECK(s2->index() == s1->index());
  CHECK(rn.ask<v1::MetaEntry>(get("sess"))->value() == "between");

  // Leases: granted, refused to another owner, visible, released.
  v1::LeaseAcquire a;
  a.set_key("exec/1");
  a.set_owner("node-a");
  a.set_ttl_ms(60000);
  auto la = rn.ask<v1::LeaseResult>(a);
  REQUIRE(la);
  CHECK(la->granted());
  CHECK(la->epoch() == 1);
  auto other = a;
  other.set_owner("node-b");
  auto lb = rn.ask<v1::LeaseResult>(other);
  REQUIRE(lb);
  CHECK_FALSE(lb->granted());
  CHECK(lb->owner() == "node-a");
  v1::LeaseGet lg;
  lg.set_key("exec/1");
  auto seen = rn.ask<v1::LeaseResult>(lg);
  REQUIRE(seen);
  CHECK(seen->granted());
  CHECK(seen->owner() == "node-a");
  CHECK(seen->ttl_left_ms() > 50000);
  v1::LeaseRelease rel;
  rel.set_key("exec/1");
  rel.set_owner("node-a");
  CHECK(rn.ask<v1::LeaseResult>(rel)->granted());
  CHECK(rn.ask<v1::LeaseResult>(other)->epoch() == 2);

  // Bad input is an error reply, not a crash.
  auto empty = rn.ask<v1::MetaResult>(put("", "v"));
  REQUIRE_FALSE(empty);
  CHECK(empty.error().code() == errc::validation);
  CHECK(empty.error().message().find("key is empty") != std::string::npos);

  // A misrouted Raft message is refused, logged and counted.
  v1::RaftMessage m;
  m.set_group("other-group");
  m.set_from("x");
  m.set_to(st.node());
  m.mutable_vote_request()->set_term(99);
  rn.n->tell(*rn.n->lookup(cluster::k_raft_agent), m);
  for (int i = 0; i < 100 && metric(*rn.n, "af_raft_refused_total") < 1; ++i)
    std::this_thread::sleep_for(10ms);
  CHECK(metric(*rn.n, "af_raft_refused_total") == 1);
  CHECK(rn.logged("raft_message_refused"));
  CHECK(rn.ask<v1::RaftStatus>(v1::RaftStatusRequest{})->term() == st.term()); // unmoved

  CHECK(metric(*rn.n, "af_raft_term") >= 1);
  CHECK(metric(*rn.n, "af_raft_proposals_total") >= 8);
  CHECK(metric(*rn.n, "af_raft_is_leader") == 1);
  CHECK(metric(*rn.n, "af_raft_journal_writes_total") >= 1);
  auto fin = rn.ask<v1::RaftStatus>(v1::RaftStatusRequest{});
  REQUIRE(fin);
  CHECK(fin->keys() == 2);
  CHECK(fin->commit_index() == fin->last_index());
  CHECK(fin->applied_index() == fin->commit_index());
}

TEST_CASE("raft agent: the log, snapshots and the store survive a restart", "[raft][raft_agent]") {
  const auto db = temp_db("restart");
  std::uint64_t term = 0, last = 0;
  {
    raft_node rn{db, 10};
    rn.wait_leader();
    for (int i = 0; i < 25; ++i)
      REQUIRE(rn.ask<v1::MetaResult>(put("k" + std::to_string(i), std::to_string(i))));
    auto st = rn.ask<v1::RaftStatus>(v1::RaftStatusRequest{});
    REQUIRE(st);
    CHECK(st->snapshot_index() >= 20);
    CHECK(rn.logged("raft_snapshot_taken"));
    CHECK(metric(*rn.n, "af_raft_snapshots_total") >= 2);
    term = st->term();
    last = st->last_index();
  }
  raft_node rn{db, 10};
  auto st = rn.wait_leader();
  CHECK(rn.logged("raft_recovered"));
  CHECK(st.term() > term);            // a new election, in a later term
  CHECK(st.last_index() == last + 1); // the old log and the new term's no-op
  CHECK(st.snapshot_index() >= 20);   // the snapshot came back from the journal
  for (int i = 0; i < 25; ++i) {
    auto g = rn.ask<v1::MetaEntry>(get("k" + std::to_string(i)));
    REQUIRE(g);
    CHECK(g->value() == std::to_string(i));
  }
}

TEST_CASE("raft agent: options are validated", "[raft][raft_agent]") {
  cluster::raft_options o;
  o.members = {"n1"};
  CHECK(cluster::validate(o));
  auto bad = o;
  bad.members.clear();
  CHECK(cluster::validate(bad).error().message().find("members") != std::string::npos);
  bad = o;
  bad.heartbeat = bad.election_timeout_min;
  CHECK(cluster::validate(bad).error().message().find("heartbeat") != std::string::npos);
  bad = o;
  bad.election_timeout_max = bad.election_timeout_min;
  CHECK(cluster::validate(bad).error().message().find("election_timeout_max") != std::string::npos);
  bad = o;
  bad.group = "a/b";
  CHECK_FALSE(cluster::validate(bad));
}
