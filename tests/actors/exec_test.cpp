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
#include "caf_glue.hpp"
#include "support/temp_dir.hpp"

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "sqlite_count.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <thread>

using namespace af;
using af::test::count_rows;
using namespace std::chrono_literals;

namespace {

struct test_node {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  std::unique_ptr<node> n;

  test_node(const std::string& db, std::shared_ptr<tool::registry> tools = nullptr,
            bool resume = true, std::function<void(plan::agent_types&)> extra = {}) {
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
    if (extra) extra(*agents);
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
    std::string last;
    for (int i = 0; i < 2000; ++i) {
      auto s = show(id);
      if (s && pred(*s)) return *s;
      last = s ? s->ShortDebugString() : s.error().to_string();
      std::this_thread::sleep_for(10ms);
    }
    FAIL("condition not reached for " << id << "; last: " << last);
    return {};
  }
};

v1::PlanIR compile(const std::string& yaml) {
  auto p = plan::compile_text(yaml, "test.yaml");
  if (!p) FAIL(p.error().to_string());
  return *p;
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
  auto rr = t.n->ask<v1::ReadResult>(
      store::k_journal_agent,
      [&] {
        v1::ReadRequest q;
        q.set_stream(plan::stream_of(r->execution_id()));
        return q;
      }(),
      10s);
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

TEST_CASE("exec: the started event journals the request's plan, resolved inputs and id", "[exec]") {
  // af.exec shares the request's plan with the executor instead of copying it: what the journal
  // records must still be the whole plan, with the inputs af.exec resolved and the id it chose.
  test::temp_dir dir{"af-exec"};
  const auto db = (dir.path() / "af.db").string();
  test_node t{db};
  const auto plan = compile(k_fanout);
  REQUIRE(plan.steps_size() == 4);
  for (const std::string id : {"", "chosen-id"}) {
    auto r = t.start(plan, true, "{}", id);
    REQUIRE(r);
    CHECK(r->status() == v1::EXEC_COMPLETED);
    if (!id.empty()) CHECK(r->execution_id() == id);
    auto rr = t.n->ask<v1::ReadResult>(
        store::k_journal_agent,
        [&] {
          v1::ReadRequest q;
          q.set_stream(plan::stream_of(r->execution_id()));
          q.set_max(1);
          return q;
        }(),
        10s);
    REQUIRE(rr);
    REQUIRE(rr->events_size() == 1);
    REQUIRE(rr->events(0).type() == "af.v1.ExecutionStarted");
    v1::ExecutionStarted st;
    REQUIRE(st.ParseFromString(rr->events(0).payload()));
    CHECK(st.execution_id() == r->execution_id());
    CHECK(st.started_by() == "test");
    CHECK(st.mode() == v1::EXEC_AUTO);
    CHECK(st.plan().SerializeAsString() == plan.SerializeAsString());
    CHECK(nlohmann::json::parse(st.inputs_json())
          == nlohmann::json::parse(R"({"items":[1,2,3,4]})"));
  }
  // The plan read back from the journal replays the recorded history.
  v1::ReplayRequest rq;
  rq.set_execution_id("chosen-id");
  auto rep = t.n->ask<v1::ReplayReport>(plan::k_exec_agent, rq, 30s);
  REQUIRE(rep);
  CHECK(rep->compatible());
}

namespace {

const char* k_approval = R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: approve-me}
spec:
  type: dag
  steps:
    - id: prepare
      agent: std.ledger
      input: {amount: 5}
    - id: review
      approval: {prompt: "ship it?"}
      after: [prepare]
    - id: ship
      agent: std.ledger
      input: {amount: 7}
      after: [review]
)";

} // namespace

TEST_CASE("exec: approval, pause, resume and cancel are journaled and audited", "[exec]") {
  test::temp_dir dir{"af-exec"};
  const auto db = (dir.path() / "af.db").string();
  test_node t{db};
  const auto p = compile(k_approval);
  auto s = t.start(p, false);
  REQUIRE(s);
  const auto id = s->execution_id();
  t.until(id, [](const v1::ExecutionInfo& i) { return i.steps_completed() == 1; });
  // Approving a step that is not waiting is a clear error.
  auto bad = t.control(id, v1::ExecControl::APPROVE, "ship");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == errc::not_found);
  CHECK_THAT(bad.error().message(), Catch::Contains("waiting: review"));
  auto paused = t.control(id, v1::ExecControl::PAUSE);
  REQUIRE(paused);
  CHECK(paused->status() == v1::EXEC_PAUSED);
  CHECK_FALSE(t.control(id, v1::ExecControl::PAUSE)); // already paused
  REQUIRE(t.control(id, v1::ExecControl::APPROVE, "review"));
  // Paused: the approval is recorded but ship does not start.
  std::this_thread::sleep_for(100ms);
  CHECK(count_rows(db, "SELECT count(*) FROM ledger") == 1);
  REQUIRE(t.control(id, v1::ExecControl::RESUME));
  auto end =
      t.until(id, [](const v1::ExecutionInfo& i) { return i.status() == v1::EXEC_COMPLETED; });
  CHECK(count_rows(db, "SELECT count(*) FROM ledger") == 2);
  auto c = t.control(id, v1::ExecControl::CANCEL);
  REQUIRE_FALSE(c);
  CHECK(c.error().code() == errc::conflict);
  // The audit chain names who did what.
  // started, prepare, paused, approved (by alice), resumed, ship, completed: written async.
  for (int i = 0; i < 500 && count_rows(db, "SELECT count(*) FROM audit_log") < 7; ++i)
    std::this_thread::sleep_for(10ms);
  CHECK(count_rows(db, "SELECT count(*) FROM audit_log") == 7);
  CHECK(count_rows(db, "SELECT count(*) FROM audit_log WHERE actor = 'alice'") == 3);

  // Cancel: the waiting approval is abandoned, the audit names the canceler.
  auto s2 = t.start(p, false);
  REQUIRE(s2);
  t.until(s2->execution_id(), [](const v1::ExecutionInfo& i) { return i.steps_completed() == 1; });
  auto canceled = t.control(s2->execution_id(), v1::ExecControl::CANCEL);
  REQUIRE(canceled);
  CHECK(canceled->status() == v1::EXEC_CANCELED);
  CHECK_THAT(canceled->error(), Catch::Contains("alice"));
  (void)end;
}

TEST_CASE("exec: a node restart resumes unfinished executions from the journal", "[exec]") {
  test::temp_dir dir{"af-exec"};
  const auto db = (dir.path() / "af.db").string();
  std::string id;
  {
    test_node t{db};
    auto s = t.start(compile(k_approval), false);
    REQUIRE(s);
    id = s->execution_id();
    t.until(id, [](const v1::ExecutionInfo& i) { return i.steps_completed() == 1; });
  } // the node stops with the execution waiting for approval
  test_node t{db};
  auto waiting = t.until(id, [](const v1::ExecutionInfo& i) { return i.steps_size() >= 2; });
  CHECK(waiting.status() == v1::EXEC_RUNNING);
  REQUIRE(t.control(id, v1::ExecControl::APPROVE, "review"));
  auto end =
      t.until(id, [](const v1::ExecutionInfo& i) { return i.status() == v1::EXEC_COMPLETED; });
  CHECK(end.steps_completed() == 3);
  CHECK(count_rows(db, "SELECT count(*) FROM ledger") == 2);
  bool recovered = false;
  for (const auto& l : *t.lines)
    recovered = recovered || l.find("exec_recovered") != std::string::npos;
  CHECK(recovered);
}

TEST_CASE("exec: a crash of af.exec resumes its executions - approvals still reach them",
          "[exec]") {
  test::temp_dir dir{"af-exec"};
  const auto db = (dir.path() / "af.db").string();
  test_node t{db};
  auto s = t.start(compile(k_approval), false, "{}", "survivor");
  REQUIRE(s);
  t.until("survivor", [](const v1::ExecutionInfo& i) { return i.steps_completed() == 1; });
  auto old = t.n->lookup(plan::k_exec_agent);
  REQUIRE(old);
  caf::anon_send_exit(to_actor(*old), caf::exit_reason::kill); // its executors stop with it
  expected<v1::ExecutionInfo> approved = error{errc::internal, "not yet"};
  for (int i = 0; i < 500 && !approved; ++i) {
    auto now = t.n->lookup(plan::k_exec_agent);
    if (now && !(*now == *old))
      approved = t.control("survivor", v1::ExecControl::APPROVE, "review");
    if (!approved) std::this_thread::sleep_for(10ms);
  }
  INFO((approved ? std::string{} : approved.error().to_string()));
  REQUIRE(approved);
  auto end = t.until("survivor",
                     [](const v1::ExecutionInfo& i) { return i.status() == v1::EXEC_COMPLETED; });
  CHECK(end.steps_completed() == 3);
  CHECK(count_rows(db, "SELECT count(*) FROM ledger WHERE execution_id = 'survivor'") == 2);
}

TEST_CASE("exec: fsm and bt plans, tools and sub-plans run on a node", "[exec]") {
  test::temp_dir dir{"af-exec"};
  const auto db = (dir.path() / "af.db").string();
  auto tools = std::make_shared<tool::registry>();
  REQUIRE(
      tools->add("math.double",
                 [](const nlohmann::json& in, const tool::call_info&) -> expected<nlohmann::json> {
                   return nlohmann::json{{"value", in.at("value").get<int>() * 2}};
                 }));
  test_node t{db, tools};

  auto fsm = t.start(compile(R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: loop}
spec:
  type: fsm
  initial: count
  max_transitions: 20
  states:
    count:
      agent: std.counter
      input: {name: loop}
      on: {ok: check}
    check:
      tool: math.double
      input: {value: "${steps.count.output.count}"}
      on: {ok: count}
    done: {final: true}
)"),
                     true);
  REQUIRE(fsm);
  CHECK(fsm->status() == v1::EXEC_FAILED);
  CHECK_THAT(fsm->error(), Catch::Contains("max_transitions (20) exceeded"));

  auto bt = t.start(compile(R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: tree}
spec:
  type: bt
  inputs: {enabled: true}
  root:
    sequence:
      - condition: "${inputs.enabled}"
      - retry:
          times: 3
          child: {action: {agent: std.fail, input: {always: true}}}
      - action: {tool: math.double, input: {value: 21}}
)"),
                    true);
  REQUIRE(bt);
  CHECK(bt->status() == v1::EXEC_FAILED); // the retry gives up after 3 tries

  test::temp_dir plans{"af-plans"};
  plans.write("child.yaml", R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: child}
spec:
  type: dag
  inputs: {n: {required: true}}
  outputs: {doubled: "${steps.d.output.value}"}
  steps:
    - id: d
      tool: math.double
      input: {value: "${inputs.n}"}
)");
  const auto parent = plans.write("parent.yaml", R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: parent}
spec:
  type: dag
  outputs: {result: "${steps.sub.output.doubled}"}
  steps:
    - id: sub
      plan: child.yaml
      input: {n: 21}
)");
  auto ir = plan::compile_file(parent);
  REQUIRE(ir);
  auto sub = t.start(*ir, true);
  REQUIRE(sub);
  CHECK(sub->status() == v1::EXEC_COMPLETED);
  CHECK(nlohmann::json::parse(sub->outputs_json())["result"] == 42);

  // A sub-plan step inside a fan-out: each branch (`subs[0]`, ...) starts its own child, whose id
  // spells the branch as `.0` (execution ids are [A-Za-z0-9_.-]).
  const auto fan = plans.write("fan.yaml", R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: fan}
spec:
  type: dag
  inputs:
    items: {default: [1, 2, 3]}
  outputs: {all: "${steps.subs.output}"}
  steps:
    - id: subs
      for_each: "${inputs.items}"
      plan: child.yaml
      input: {n: "${item}"}
)");
  auto fan_ir = plan::compile_file(fan);
  REQUIRE(fan_ir);
  auto fanned = t.start(*fan_ir, true, "{}", "fan-1");
  REQUIRE(fanned);
  INFO(fanned->ShortDebugString());
  REQUIRE(fanned->status() == v1::EXEC_COMPLETED);
  const auto all = nlohmann::json::parse(fanned->outputs_json())["all"];
  REQUIRE(all.size() == 3);
  CHECK(all[0]["doubled"] == 2);
  CHECK(all[2]["doubled"] == 6);
  for (const auto* child : {"fan-1.subs.0.1", "fan-1.subs.1.1", "fan-1.subs.2.1"}) {
    auto c = t.show(child);
    REQUIRE(c);
    CHECK(c->status() == v1::EXEC_COMPLETED);
  }
}

namespace {

/// What the test agents below saw, shared with the test.
struct agent_log {
  std::mutex mtx;
  std::vector<std::string> cancels; // idempotency keys of StepCancels received
};

/// test.hang: never answers a step; records the StepCancels it gets.
class hang : public agent_base<hang> {
public:
  explicit hang(std::shared_ptr<agent_log> l) : log_(std::move(l)) {}
  static void define(handlers<hang>& h) {
    h.kind("test.hang").on(&hang::on_step).on(&hang::on_cancel);
  }
  void on_step(context&, const v1::StepRequest&, responder<v1::StepOutput> r) {
    held_.push_back(std::move(r)); // kept, never answered
  }
  void on_cancel(context&, const v1::StepCancel& c) {
    std::lock_guard g{log_->mtx};
    log_->cancels.push_back(c.idempotency_key());
  }

private:
  std::shared_ptr<agent_log> log_;
  std::vector<responder<v1::StepOutput>> held_;
};

} // namespace

TEST_CASE("exec: timed-out steps are told to stop, sub-plans are canceled with their parent",
          "[exec]") {
  test::temp_dir dir{"af-exec"};
  const auto db = (dir.path() / "af.db").string();
  auto log = std::make_shared<agent_log>();
  test_node t{db, nullptr, true, [log](plan::agent_types& a) {
                plan::agent_type hang_type;
                hang_type.factory = [log] { return std::make_unique<hang>(log); };
                REQUIRE(a.add("test.hang", std::move(hang_type)));
              }};

  SECTION("a step that times out: the agent gets a StepCancel for each attempt") {
    auto r = t.start(compile(R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: slow}
spec:
  type: dag
  steps:
    - id: h
      agent: test.hang
      timeout: 100ms
      retry: {max_attempts: 2, backoff: 10ms}
)"),
                     true, "{}", "slow-1");
    REQUIRE(r);
    CHECK(r->status() == v1::EXEC_FAILED);
    CHECK_THAT(r->error(), Catch::Contains("timed out"));
    std::vector<std::string> cancels;
    for (int i = 0; i < 200; ++i) {
      {
        std::lock_guard g{log->mtx};
        cancels = log->cancels;
      }
      if (cancels.size() >= 2) break;
      std::this_thread::sleep_for(10ms);
    }
    std::sort(cancels.begin(), cancels.end());
    CHECK(cancels == std::vector<std::string>{"slow-1/h/1", "slow-1/h/2"});
  }

  SECTION("an approval not given within its timeout fails the step with timeout") {
    auto r = t.start(compile(R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: sign}
spec:
  type: dag
  steps:
    - id: sign
      approval: {}
      timeout: 100ms
)"),
                     true, "{}", "sign-1");
    REQUIRE(r);
    CHECK(r->status() == v1::EXEC_FAILED);
    CHECK_THAT(r->error(),
               Catch::Contains("timeout: ")
                   && Catch::Contains("approval step 'sign' was not approved within 100 ms"));
  }

  SECTION("execution ids that would make ambiguous keys are refused") {
    for (const std::string& id :
         std::vector<std::string>{"a/b", "has space", std::string(129, 'x')}) {
      auto r = t.start(compile(R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: any}
spec:
  type: dag
  steps:
    - {id: a, agent: std.echo}
)"),
                       true, "{}", id);
      REQUIRE_FALSE(r);
      CHECK(r.error().code() == errc::validation);
      CHECK_THAT(r.error().message(), Catch::Contains("expected at most 128 of [A-Za-z0-9_.-]"));
    }
  }

  SECTION("canceling a parent cancels the sub-plan it waits for") {
    test::temp_dir plans{"af-plans"};
    plans.write("child.yaml", R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: child}
spec:
  type: dag
  steps:
    - id: gate
      approval: {}
)");
    const auto parent = plans.write("parent.yaml", R"(
apiVersion: agentflow/v1
kind: Plan
metadata: {name: parent}
spec:
  type: dag
  steps:
    - id: sub
      plan: child.yaml
)");
    auto ir = plan::compile_file(parent);
    REQUIRE(ir);
    REQUIRE(t.start(*ir, false, "{}", "p1"));
    t.until("p1.sub.1", [](const v1::ExecutionInfo& i) { return i.steps_in_flight() == 1; });
    auto c = t.control("p1", v1::ExecControl::CANCEL);
    REQUIRE(c);
    CHECK(c->status() == v1::EXEC_CANCELED);
    auto child = t.until(
        "p1.sub.1", [](const v1::ExecutionInfo& i) { return i.status() == v1::EXEC_CANCELED; });
    CHECK_THAT(child.error(), Catch::Contains("exec:p1"));
  }
}

TEST_CASE("exec: replay against a changed plan reports the first divergence", "[exec][replay]") {
  test::temp_dir dir{"af-exec"};
  const auto db = (dir.path() / "af.db").string();
  test_node t{db};
  auto r = t.start(compile(k_fanout), true);
  REQUIRE(r);
  REQUIRE(r->status() == v1::EXEC_COMPLETED);
  std::string changed = k_fanout;
  changed.replace(changed.find("input: {amount: \"${item}\"}"), 26,
                  "input: {amount: \"${item}\", memo: x}");
  v1::ReplayRequest rq;
  rq.set_execution_id(r->execution_id());
  *rq.mutable_plan() = compile(changed);
  auto rep = t.n->ask<v1::ReplayReport>(plan::k_exec_agent, rq, 30s);
  REQUIRE(rep);
  CHECK_FALSE(rep->compatible());
  CHECK_THAT(rep->divergence(), Catch::Contains("pay[0]") && Catch::Contains("memo"));
  // Unknown executions are not_found.
  rq.set_execution_id("nope");
  rq.clear_plan();
  auto missing = t.n->ask<v1::ReplayReport>(plan::k_exec_agent, rq, 30s);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code() == errc::not_found);
}
