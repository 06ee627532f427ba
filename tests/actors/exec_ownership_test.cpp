// Execution ownership on real nodes (threads, SQLite), with a lease table standing in for the
// Raft agent's client protocol (meta.proto LeaseAcquire/LeaseGet/LeaseRelease): af.exec takes the
// lease before it runs an execution and releases it at the end, refuses an execution another
// node holds, stops an executor whose lease it cannot renew without touching its journal, takes
// over an execution whose owner's lease expired, and stops (then resumes afresh) an executor
// whose append met a newer stream version.
#include "af/node.hpp"
#include "af/plan/compile.hpp"
#include "af/plan/executor.hpp"
#include "af/store/audit.hpp"
#include "af/store/backend.hpp"
#include "af/store/journal.hpp"
#include "af/v1/exec.pb.h"
#include "af/v1/meta.pb.h"
#include "lease_stand_in.hpp"
#include "support/temp_dir.hpp"

#include "sqlite_count.hpp"

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

using namespace af;
using af::test::count_rows;
using af::test::lease_table;
using af::test::lease_stand_in;
using namespace std::chrono_literals;

namespace {

plan::exec_ownership fast_ownership(std::string owner) {
  plan::exec_ownership o;
  o.enabled = true;
  o.owner = std::move(owner);
  o.lease_ttl = 1000ms;
  o.margin = 200ms;
  o.renew_every = 250ms;
  o.scan_every = 200ms;
  o.ask_timeout = 250ms;
  return o;
}

struct owning_node {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  std::unique_ptr<node> n;

  owning_node(const std::string& db, std::shared_ptr<lease_table> table, std::string owner) {
    node::options o;
    log_options lo;
    lo.level = log_level::debug;
    lo.format = "json";
    o.log = make_memory_log_backend(lo, lines);
    store::journal_options jo;
    jo.open = [db] { return store::open_url("sqlite:" + db); };
    o.system_services.push_back(store::journal_child(std::move(jo)));
    store::audit_options ao;
    ao.open = [db] { return store::open_url("sqlite:" + db); };
    o.system_services.push_back(store::audit_child(std::move(ao)));
    o.system_services.push_back(
        sup::agent_child<lease_stand_in>("af.cluster.raft", std::move(table)));
    auto agents = std::make_shared<plan::agent_types>();
    REQUIRE(plan::add_std_agents(*agents, {.ledger_url = "sqlite:" + db}));
    plan::exec_options eo;
    eo.agents = agents;
    eo.ownership = fast_ownership(std::move(owner));
    REQUIRE(plan::validate(eo.ownership));
    o.system_services.push_back(plan::exec_child(std::move(eo)));
    auto r = node::start(std::move(o));
    REQUIRE(r);
    n = std::move(r).value();
  }
  ~owning_node() { stop(); }
  void stop() {
    if (n) n->shutdown();
    n.reset();
  }

  expected<v1::ExecutionInfo> start(const v1::PlanIR& p, bool wait, std::string id = {}) {
    v1::StartExecution s;
    *s.mutable_plan() = p;
    s.set_inputs_json("{}");
    s.set_wait(wait);
    s.set_by("test");
    s.set_execution_id(std::move(id));
    return n->ask<v1::ExecutionInfo>(plan::k_exec_agent, s, 30s);
  }
  expected<v1::ExecutionInfo> show(const std::string& id) {
    v1::ExecutionRef r;
    r.set_execution_id(id);
    return n->ask<v1::ExecutionInfo>(plan::k_exec_agent, r, 10s);
  }
  template <class P>
  bool until(P pred, duration limit = 20s) {
    for (auto waited = duration::zero(); waited < limit; waited += 10ms) {
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return pred();
  }
  bool running_here(const std::string& id) const {
    return static_cast<bool>(n->lookup(plan::stream_of(id)));
  }
  double metric(std::string_view family) {
    std::istringstream text{n->metrics().serialize_text()};
    double sum = 0;
    for (std::string line; std::getline(text, line);)
      if (line.starts_with(family) && line.size() > family.size()
          && (line[family.size()] == '{' || line[family.size()] == ' '))
        sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
    return sum;
  }
  /// The node's log lines about executions and leases (printed when a check fails).
  std::string exec_log() const {
    std::string out;
    for (const auto& l : *lines)
      if (l.find("\"event\":\"exec_") != std::string::npos) out += l + "\n";
    if (const char* f = std::getenv("AF_TEST_OWN_LOG")) std::ofstream{f, std::ios::app} << out;
    return out;
  }
  std::vector<std::string> log_events(std::string_view event) const {
    std::vector<std::string> out;
    const std::string needle = "\"event\":\"" + std::string{event} + "\"";
    for (const auto& l : *lines)
      if (l.find(needle) != std::string::npos) out.push_back(l);
    return out;
  }
};

/// Waits for a condition on a node; on a timeout, fails with the node's execution log.
#define REQUIRE_UNTIL(node, ...)                                                                   \
  do {                                                                                             \
    if (!(node).until(__VA_ARGS__)) FAIL("condition not reached\n" << (node).exec_log());          \
  } while (false)

v1::PlanIR compile(const std::string& yaml) {
  auto p = plan::compile_text(yaml, "test.yaml");
  if (!p) FAIL(p.error().to_string());
  return *p;
}

const char* k_quick = R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: quick}
spec:
  type: dag
  steps:
    - id: a
      agent: std.echo
      input: {n: 1}
    - id: b
      agent: std.echo
      input: {m: "${steps.a.output.n}"}
)";

const char* k_sleepy = R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: sleepy}
spec:
  type: dag
  steps:
    - id: nap
      agent: std.sleep
      input: {ms: 3000}
    - id: done
      agent: std.echo
      input: {ok: true}
      after: [nap]
)";

const char* k_approval = R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: approve-me}
spec:
  type: dag
  steps:
    - id: prepare
      agent: std.echo
      input: {n: 1}
    - id: review
      approval: {prompt: "ship it?"}
      after: [prepare]
)";

struct stream_state {
  std::uint64_t version = 0;
  bool finished = false;
  std::string tenant;
};

stream_state stream_state_of(const std::string& db, const std::string& id) {
  auto b = store::open_url("sqlite:" + db);
  REQUIRE(b);
  auto s = (*b)->stream(plan::stream_of(id));
  REQUIRE(s);
  REQUIRE(s->has_value());
  return {(*s)->version, (*s)->finished_at.has_value(), (*s)->tenant};
}

} // namespace

TEST_CASE("exec ownership: an execution runs under its lease, released at its end",
          "[exec][ownership]") {
  test::temp_dir dir{"af-own"};
  const auto db = (dir.path() / "af.db").string();
  auto table = std::make_shared<lease_table>();
  owning_node t{db, table, "nodeA"};
  auto s = t.start(compile(k_quick), true);
  REQUIRE(s);
  CHECK(s->status() == v1::EXEC_COMPLETED);
  const auto key = plan::lease_of(s->execution_id());
  CHECK(table->count("acquire " + key + " nodeA") >= 1);
  REQUIRE_UNTIL(t, [&] { return table->count("release " + key + " nodeA") == 1; });
  // Released: free for anyone at once.
  std::lock_guard lk{table->mu};
  CHECK(table->leases[key].expires == duration{});
}

TEST_CASE("exec ownership: a start of an execution another node holds is not run here",
          "[exec][ownership]") {
  test::temp_dir dir{"af-own"};
  const auto db = (dir.path() / "af.db").string();
  auto table = std::make_shared<lease_table>();
  {
    std::lock_guard lk{table->mu};
    table->leases[plan::lease_of("held-elsewhere")] = {"nodeZ", duration::max() / 2, 1};
  }
  owning_node t{db, table, "nodeA"};
  auto s = t.start(compile(k_quick), false, "held-elsewhere");
  REQUIRE_FALSE(s);
  // This node has no route to nodeZ (no cluster transport): the request cannot be handed over.
  CHECK(s.error().code() == errc::transient);
  CHECK_THAT(s.error().message(), Catch::Contains("runs on node nodeZ"));
  CHECK_FALSE(t.running_here("held-elsewhere"));
  auto b = store::open_url("sqlite:" + db);
  REQUIRE(b);
  auto st = (*b)->stream(plan::stream_of("held-elsewhere"));
  REQUIRE(st);
  CHECK_FALSE(st->has_value()); // nothing was journaled for it here
}

TEST_CASE("exec ownership: without renewals the executor stops, its journal untouched - "
          "it resumes once the lease can be taken again",
          "[exec][ownership]") {
  test::temp_dir dir{"af-own"};
  const auto db = (dir.path() / "af.db").string();
  auto table = std::make_shared<lease_table>();
  owning_node t{db, table, "nodeA"};
  auto s = t.start(compile(k_sleepy), false, "napper");
  REQUIRE(s);
  REQUIRE_UNTIL(t, [&] {
    auto i = t.show("napper");
    return i && i->steps_in_flight() == 1;
  });
  REQUIRE(t.running_here("napper"));
  const auto before = stream_state_of(db, "napper");
  // No leader: renewals fail. The executor must stop before the lease can run out at the
  // leader (1 s after the last granted renewal was sent), long before the 3 s nap ends.
  table->set_available(false);
  REQUIRE_UNTIL(
      t, [&] { return !t.running_here("napper"); }, 5s);
  CHECK(t.metric("af_exec_lease_expirations_total") == 1);
  const auto stopped = stream_state_of(db, "napper");
  CHECK(stopped.version == before.version); // stopped, not failed or finished
  CHECK_FALSE(stopped.finished);
  std::this_thread::sleep_for(500ms);
  CHECK_FALSE(t.running_here("napper"));
  CHECK(stream_state_of(db, "napper").version == before.version);
  // The leader is back: the next scan takes the (expired) lease and resumes the execution
  // from its journal; the nap starts over and the execution completes.
  table->set_available(true);
  REQUIRE_UNTIL(t, [&] {
    auto i = t.show("napper");
    return i && i->status() == v1::EXEC_COMPLETED;
  });
  CHECK(t.log_events("exec_lease_expired").size() == 1);
  CHECK(t.log_events("exec_relinquished").size() == 1);
  CHECK(t.log_events("exec_taken_over").empty()); // its own execution: a resume
  CHECK(t.metric("af_exec_takeovers_total") == 0);
}

TEST_CASE("exec ownership: another node takes over an execution once its owner's lease "
          "expired",
          "[exec][ownership]") {
  test::temp_dir dir{"af-own"};
  const auto db = (dir.path() / "af.db").string();
  auto table = std::make_shared<lease_table>();
  {
    owning_node a{db, table, "nodeA"};
    REQUIRE(a.start(compile(k_sleepy), false, "orphan"));
    REQUIRE_UNTIL(a, [&] {
      auto i = a.show("orphan");
      return i && i->steps_in_flight() == 1;
    });
  } // nodeA is gone; its lease lives on in the table until it expires
  owning_node b{db, table, "nodeB"};
  // nodeB learns nodeA holds it, and asks again when the lease can have expired.
  REQUIRE_UNTIL(b, [&] { return table->count("get " + plan::lease_of("orphan")) >= 1; });
  REQUIRE_UNTIL(b, [&] {
    auto i = b.show("orphan");
    return i && i->status() == v1::EXEC_COMPLETED;
  });
  CHECK(b.metric("af_exec_takeovers_total") == 1);
  auto taken = b.log_events("exec_taken_over");
  REQUIRE(taken.size() == 1);
  CHECK_THAT(taken[0], Catch::Contains("\"previous_owner\":\"nodeA\""));
  CHECK_THAT(taken[0], Catch::Contains("\"execution_id\":\"orphan\""));
  // Never granted to nodeB while nodeA's lease was live: every acquire by nodeB came after.
  std::lock_guard lk{table->mu};
  CHECK(table->leases[plan::lease_of("orphan")].epoch == 2);
}

TEST_CASE("exec ownership: an append that meets a newer version stops the executor "
          "(exec_fenced) - it resumes from the journal as it is",
          "[exec][ownership]") {
  test::temp_dir dir{"af-own"};
  const auto db = (dir.path() / "af.db").string();
  auto table = std::make_shared<lease_table>();
  owning_node t{db, table, "nodeA"};
  REQUIRE(t.start(compile(k_approval), false, "fenced"));
  REQUIRE_UNTIL(t, [&] {
    auto i = t.show("fenced");
    return i && i->steps_completed() == 1 && i->steps_in_flight() == 1;
  });
  // The executor reports the step in flight before the append that records it is acknowledged:
  // wait until it has nothing in flight, i.e. its acknowledged version is the journal's and stays
  // so over 20 polls (it appends nothing more until the approval). Otherwise the write below can
  // land first and fence that append instead of the approval (seen under CI load).
  std::uint64_t seen = 0;
  int steady = 0;
  REQUIRE_UNTIL(t, [&] {
    auto i = t.show("fenced");
    const auto v = stream_state_of(db, "fenced").version;
    if (!i || i->version() != v || v != seen) {
      seen = v;
      steady = 0;
      return false;
    }
    return ++steady >= 20;
  });
  // Another writer (a stale owner elsewhere) appends to the stream behind this executor's back.
  stream_state st;
  for (int attempt = 0;; ++attempt) {
    st = stream_state_of(db, "fenced");
    auto b = store::open_url("sqlite:" + db);
    REQUIRE(b);
    v1::ExecutionPaused p;
    p.set_by("other-node");
    p.set_reason("a write this executor did not see");
    store::append_request req;
    req.stream = plan::stream_of("fenced");
    req.tenant = st.tenant;
    req.expected_version = st.version;
    req.events.push_back({p.GetTypeName(), p.SerializeAsString(), {}});
    auto r = (*b)->append_batch(std::span{&req, 1}, time_point{});
    REQUIRE(r.size() == 1);
    if (r[0]) break;
    INFO(r[0].error().to_string());
    REQUIRE(attempt < 50);
    std::this_thread::sleep_for(20ms);
  }
  // The approval is this executor's next append: refused whole, the executor stops.
  v1::ExecControl c;
  c.set_execution_id("fenced");
  c.set_op(v1::ExecControl::APPROVE);
  c.set_step_id("review");
  c.set_by("alice");
  auto approved = t.n->ask<v1::ExecutionInfo>(plan::k_exec_agent, c, 10s);
  REQUIRE_FALSE(approved);
  CHECK(approved.error().code() == errc::conflict);
  REQUIRE_UNTIL(t, [&] { return t.metric("af_exec_fenced_total") == 1; });
  // Still this node's lease: it resumes the execution from the stream, the foreign pause
  // included; the refused approval never happened.
  REQUIRE_UNTIL(t, [&] {
    auto i = t.show("fenced");
    return i && i->status() == v1::EXEC_PAUSED && t.running_here("fenced");
  });
  CHECK(stream_state_of(db, "fenced").version == st.version + 1);
  CHECK(t.log_events("exec_fenced").size() == 1);
}

namespace {

v1::ExecHandoverResult handover(owning_node& n) {
  auto r = n.n->ask<v1::ExecHandoverResult>(plan::k_exec_agent, v1::ExecHandover{}, 10s);
  if (!r) FAIL(r.error().to_string() << "\n" << n.exec_log());
  return *r;
}

std::size_t count_lines(const std::vector<std::string>& v, const std::string& needle) {
  return static_cast<std::size_t>(
      std::count_if(v.begin(), v.end(), [&](const auto& s) { return s == needle; }));
}

} // namespace

TEST_CASE("exec ownership: a handover stops the executors and releases their leases - another "
          "node takes the execution at once, not after the lease ran out",
          "[exec][ownership][handover]") {
  test::temp_dir dir{"af-own"};
  const auto db = (dir.path() / "af.db").string();
  auto table = std::make_shared<lease_table>();
  const auto key = plan::lease_of("handed");
  std::uint64_t version_at_handover = 0;
  {
    owning_node a{db, table, "nodeA"};
    REQUIRE(a.start(compile(k_sleepy), false, "handed"));
    REQUIRE_UNTIL(a, [&] {
      auto i = a.show("handed");
      return i && i->steps_in_flight() == 1;
    });
    const auto h = handover(a);
    CHECK(h.stopped() == 1);
    CHECK(h.released() == 1);
    CHECK(h.release_failed() == 0);
    CHECK(h.still_running() == 0);
    CHECK_FALSE(a.running_here("handed"));
    {
      std::lock_guard lk{table->mu};
      CHECK(table->leases[key].owner == "nodeA");
      CHECK(table->leases[key].expires == duration{}); // released, not left to run out
    }
    const auto st = stream_state_of(db, "handed");
    CHECK_FALSE(st.finished); // stopped, not ended: the journal is the next owner's
    version_at_handover = st.version;
    // A stopping node takes no new execution, and says why.
    auto refused = a.start(compile(k_quick), false, "late");
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code() == errc::transient);
    CHECK_THAT(refused.error().message(), Catch::Contains("is stopping"));
    CHECK(table->count("acquire " + plan::lease_of("late")) == 0);
    // Asked again (a second SIGTERM): the same answer, nothing done twice.
    const auto again = handover(a);
    CHECK(again.stopped() == 1);
    CHECK(again.released() == 1);
    CHECK(a.log_events("exec_handover").size() == 1);
    const auto relinquished = a.log_events("exec_relinquished");
    REQUIRE(relinquished.size() == 1);
    CHECK_THAT(relinquished[0], Catch::Contains("\"handover\":true"));
  }
  owning_node b{db, table, "nodeB"};
  REQUIRE_UNTIL(b, [&] {
    auto i = b.show("handed");
    return i && i->status() == v1::EXEC_COMPLETED;
  });
  auto taken = b.log_events("exec_taken_over");
  REQUIRE(taken.size() == 1);
  CHECK_THAT(taken[0], Catch::Contains("\"previous_owner\":\"nodeA\""));
  std::lock_guard lk{table->mu};
  // nodeB got the lease because nodeA gave it back, not because it expired.
  CHECK(count_lines(table->grants, "nodeB " + key + " released") == 1);
  CHECK(count_lines(table->grants, "nodeB " + key + " expired") == 0);
  CHECK(stream_state_of(db, "handed").version > version_at_handover);
}

TEST_CASE("exec ownership: a handover in the middle of a busy chain waits for the append in "
          "flight - the next owner's appends are never fenced",
          "[exec][ownership][handover]") {
  // 300 echo steps one after the other: an append is in flight most of the time.
  std::string yaml = "apiVersion: agentflow/v1\nkind: Plan\nmetadata: {name: busy}\nspec:\n"
                     "  type: dag\n  steps:\n";
  constexpr int k_steps = 300;
  for (int i = 0; i < k_steps; ++i) {
    yaml += "    - id: s" + std::to_string(i) + "\n      agent: std.echo\n      input: {n: "
            + std::to_string(i) + "}\n";
    if (i > 0) yaml += "      after: [s" + std::to_string(i - 1) + "]\n";
  }
  const auto plan = compile(yaml);
  test::temp_dir dir{"af-own"};
  const auto db = (dir.path() / "af.db").string();
  auto table = std::make_shared<lease_table>();
  std::uint32_t done_at_handover = 0;
  {
    owning_node a{db, table, "nodeA"};
    REQUIRE(a.start(plan, false, "busy"));
    REQUIRE_UNTIL(a, [&] {
      auto i = a.show("busy");
      return i && i->steps_completed() >= 20;
    });
    const auto h = handover(a);
    CHECK(h.stopped() == 1);
    CHECK(h.released() == 1);
    CHECK(h.still_running() == 0);
    const auto st = stream_state_of(db, "busy");
    REQUIRE_FALSE(st.finished);
    // Nothing lands after the handover: the executor's last append came back before it stopped.
    std::this_thread::sleep_for(200ms);
    CHECK(stream_state_of(db, "busy").version == st.version);
    auto i = a.show("busy"); // from the journal now
    REQUIRE(i);
    done_at_handover = i->steps_completed();
    CHECK(done_at_handover < k_steps);
  }
  owning_node b{db, table, "nodeB"};
  REQUIRE_UNTIL(b, [&] {
    auto i = b.show("busy");
    return i && i->status() == v1::EXEC_COMPLETED;
  });
  auto i = b.show("busy");
  REQUIRE(i);
  CHECK(i->steps_completed() == k_steps);
  CHECK(b.metric("af_exec_fenced_total") == 0);
  CHECK(b.log_events("exec_fenced").empty());
  CHECK(b.log_events("exec_taken_over").size() == 1);
  // Every step's completion is audited exactly once: those nodeA committed by nodeA (its last
  // append included: the handover waited for it), the rest by nodeB.
  const std::string completed =
      "SELECT count(*) FROM audit_log WHERE subject = 'busy' AND action = 'step.completed'";
  for (int n = 0; n < 500 && count_rows(db, completed) < k_steps; ++n)
    std::this_thread::sleep_for(10ms);
  CHECK(count_rows(db, completed) == k_steps);
}
