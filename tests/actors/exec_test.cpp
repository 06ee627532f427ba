// Durable execution on a real node: af.exec, executors, the journal (SQLite), std agents and
// tools; interventions, recovery after a node restart, sub-plans and replay.
#include "af/node.hpp"
#include "af/plan/compile.hpp"
#include "af/plan/executor.hpp"
#include "af/store/audit.hpp"
#include "af/store/backend.hpp"
#include "af/store/journal.hpp"
#include "af/v1/exec.pb.h"
#include "af/v1/store.pb.h"
#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <thread>

using namespace af;
using namespace std::chrono_literals;

namespace {

struct test_node {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  std::unique_ptr<node> n;

  test_node(const std::string& db, std::shared_ptr<tool::registry> tools = nullptr,
            bool resume = true) {
    node::options o;
    log_options lo;
    lo.level = log_level::info;
    lo.format = "json";
    o.log = make_memory_log_backend(lo, lines);
    store::journal_options jo;
    jo.open = [db] { return store::open_url("sqlite:" + db); };
    o.system_services.push_back(store::journal_child(std::move(jo)));
    store::audit_options ao;
    ao.open = [db] { return store::open_url("sqlite:" + db); };
    o.system_services.push_back(store::audit_child(std::move(ao)));
    auto agents = std::make_shared<plan::agent_types>();
    REQUIRE(plan::add_std_agents(*agents, {.ledger_url = "sqlite:" + db}));
    plan::exec_options eo;
    eo.agents = agents;
    if (tools) eo.tools = tools;
    eo.resume = resume;
    o.system_services.push_back(plan::exec_child(std::move(eo)));
    auto r = node::start(std::move(o));
    REQUIRE(r);
    n = std::move(r).value();
  }
  ~test_node() {
    if (n) n->shutdown();
  }

  expected<v1::ExecutionInfo> start(const v1::PlanIR& p, bool wait, std::string inputs = "{}",
                                    std::string id = {}) {
    v1::StartExecution s;
    *s.mutable_plan() = p;
    s.set_inputs_json(std::move(inputs));
    s.set_wait(wait);
    s.set_by("test");
    s.set_execution_id(std::move(id));
    return n->ask<v1::ExecutionInfo>(plan::k_exec_agent, s, 60s);
  }
  expected<v1::ExecutionInfo> show(const std::string& id) {
    v1::ExecutionRef r;
    r.set_execution_id(id);
    r.set_steps(true);
    return n->ask<v1::ExecutionInfo>(plan::k_exec_agent, r, 30s);
  }
  expected<v1::ExecutionInfo> control(const std::string& id, v1::ExecControl::Op op,
                                      std::string step = {}) {
    v1::ExecControl c;
    c.set_execution_id(id);
    c.set_op(op);
    c.set_step_id(std::move(step));
    c.set_by("alice");
    return n->ask<v1::ExecutionInfo>(plan::k_exec_agent, c, 30s);
  }
  /// Polls until `pred(info)` or 20 s.
  template <class P>
  v1::ExecutionInfo until(const std::string& id, P pred) {
    for (int i = 0; i < 2000; ++i) {
      auto s = show(id);
      if (s && pred(*s)) return *s;
      std::this_thread::sleep_for(10ms);
    }
    FAIL("condition not reached for " << id);
    return {};
  }
};

v1::PlanIR compile(const std::string& yaml) {
  auto p = plan::compile_text(yaml, "test.yaml");
  if (!p) FAIL(p.error().to_string());
  return *p;
}

std::int64_t count_rows(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  auto v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return v;
}

const char* k_fanout = R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: fanout}
spec:
  type: dag
  inputs:
    items: {default: [1, 2, 3, 4]}
  outputs: {paid: "${steps.pay.output}", echoed: "${steps.join.output}"}
  steps:
    - id: list
      agent: std.echo
      input: {items: "${inputs.items}"}
    - id: flaky
      agent: std.fail
      input: {times: 2}
      retry: {max_attempts: 3, backoff: 10ms}
    - id: pay
      for_each: "${steps.list.output.items}"
      agent: std.ledger
      input: {amount: "${item}"}
      after: [flaky]
    - id: join
      agent: std.echo
      input: {n: "${steps.list.output.items}"}
      after: [pay]
)";

} // namespace

TEST_CASE("exec: a dag with fan-out, retries and a ledger runs to completion", "[exec]") {
  test::temp_dir dir{"af-exec"};
  const auto db = (dir.path() / "af.db").string();
  test_node t{db};
  auto r = t.start(compile(k_fanout), true);
  REQUIRE(r);
  CHECK(r->status() == v1::EXEC_COMPLETED);
  auto out = nlohmann::json::parse(r->outputs_json());
  CHECK(out["echoed"]["n"] == nlohmann::json::array({1, 2, 3, 4}));
  REQUIRE(out["paid"].size() == 4);
  CHECK(out["paid"][0]["applied"] == true);
  CHECK(count_rows(db, "SELECT count(*) FROM ledger") == 4);
  CHECK(count_rows(db, "SELECT count(*) FROM ledger WHERE key LIKE '" + r->execution_id()
                           + "/pay[%]/1'")
        == 4);
  // Every decision is in the journal, and the stream is finished.
  auto rr = t.n->ask<v1::ReadResult>(store::k_journal_agent, [&] {
    v1::ReadRequest q;
    q.set_stream(plan::stream_of(r->execution_id()));
    return q;
  }(), 10s);
  REQUIRE(rr);
  std::map<std::string, int> types;
  for (const auto& e : rr->events())
    ++types[e.type()];
  CHECK(types["af.v1.ExecutionStarted"] == 1);
  CHECK(types["af.v1.StepRetried"] == 2);
  CHECK(types["af.v1.StepFailed"] == 2);
  CHECK(types["af.v1.StepCompleted"] == 7); // list, flaky, 4 branches, join
  CHECK(types["af.v1.ExecutionCompleted"] == 1);
  // Replay reproduces the recorded events.
  v1::ReplayRequest rq;
  rq.set_execution_id(r->execution_id());
  auto rep = t.n->ask<v1::ReplayReport>(plan::k_exec_agent, rq, 30s);
  REQUIRE(rep);
  CHECK(rep->compatible());
  CHECK(rep->recorded_hash() == rep->replay_hash());
}
