// The planning engine without actors: inputs in, decisions out, for dag, fsm and bt plans built
// by hand (the compiler has its own tests), plus replay of recorded histories.
#include "plan/engine.hpp"
#include "plan/replay.hpp"

#include <catch2/catch.hpp>

#include <map>

using namespace af;
using namespace af::plan;

namespace {

v1::Call agent_call(const std::string& target, const std::string& input = "{}") {
  v1::Call c;
  c.set_kind(v1::STEP_AGENT);
  c.set_target(target);
  c.set_input_json(input);
  return c;
}

v1::DagStep& add_step(v1::PlanIR& p, const std::string& id, std::vector<std::string> after = {},
                      const std::string& input = "{}") {
  auto& s = *p.add_steps();
  s.set_id(id);
  *s.mutable_call() = agent_call("std.echo", input);
  for (auto& a : after)
    s.add_after(a);
  return s;
}

v1::ExecutionStarted started(v1::PlanIR p, v1::ExecMode mode = v1::EXEC_AUTO,
                             std::string inputs = "{}") {
  v1::ExecutionStarted s;
  s.set_execution_id("e1");
  *s.mutable_plan() = std::move(p);
  s.set_mode(mode);
  s.set_inputs_json(std::move(inputs));
  return s;
}

/// Drives an engine like the executor does, recording every event.
struct driver {
  std::unique_ptr<engine> eng;
  std::vector<v1::ExecEvent> log;

  explicit driver(const v1::ExecutionStarted& s) {
    auto e = engine::make(s);
    REQUIRE(e);
    eng = std::move(e).value();
    v1::ExecEvent first;
    *first.mutable_started() = s;
    log.push_back(first);
    decide();
  }
  std::vector<v1::ExecEvent> decide() {
    auto d = eng->decide();
    log.insert(log.end(), d.begin(), d.end());
    return d;
  }
  bool give(v1::ExecEvent e) {
    if (!eng->input(e)) return false;
    log.push_back(std::move(e));
    decide();
    return true;
  }
  bool complete(const std::string& step, const std::string& output = "{}",
                std::uint32_t attempt = 0) {
    v1::ExecEvent e;
    auto& c = *e.mutable_completed();
    c.set_step_id(step);
    c.set_attempt(attempt != 0 ? attempt : in_flight_attempt(step));
    c.set_output_json(output);
    return give(std::move(e));
  }
  bool fail(const std::string& step, const std::string& kind = "transient") {
    v1::ExecEvent e;
    auto& f = *e.mutable_failed();
    f.set_step_id(step);
    f.set_attempt(in_flight_attempt(step));
    f.set_error_kind(kind);
    f.set_message("boom");
    return give(std::move(e));
  }
  std::uint32_t in_flight_attempt(const std::string& step) const {
    auto it = eng->in_flight().find(step);
    return it == eng->in_flight().end() ? 1 : it->second.attempt();
  }
  std::vector<std::string> running() const {
    std::vector<std::string> r;
    for (const auto& [id, s] : eng->in_flight())
      r.push_back(id);
    return r;
  }
};

} // namespace

TEST_CASE("engine: a dag runs steps in dependency order and completes", "[engine]") {
  v1::PlanIR p;
  p.set_name("chain");
  p.set_type(v1::PLAN_DAG);
  add_step(p, "a");
  add_step(p, "b", {"a"}, R"({"x":"${steps.a.output.v}"})");
  add_step(p, "c", {"a"});
  add_step(p, "d", {"b", "c"});
  driver d{started(p)};
  CHECK(d.running() == std::vector<std::string>{"a"});
  REQUIRE(d.complete("a", R"({"v":7})"));
  CHECK(d.running() == std::vector<std::string>{"b", "c"});
  CHECK(d.eng->in_flight().at("b").input_json() == R"({"x":7})");
  CHECK(d.eng->in_flight().at("b").idempotency_key() == "e1/b/1");
  REQUIRE(d.complete("c"));
  CHECK(d.running() == std::vector<std::string>{"b"});
  REQUIRE(d.complete("b", R"("B")"));
  REQUIRE(d.complete("d", R"({"done":true})"));
  CHECK(d.eng->status() == v1::EXEC_COMPLETED);
  CHECK(d.log.back().has_exec_completed());
  CHECK(d.eng->outputs_json() == R"({"d":{"done":true}})");
}

TEST_CASE("engine: a dag schedules ready steps in plan order, each once its deps completed",
          "[engine]") {
  // The order of the StepScheduled events is journaled: a replay of a recorded history meets
  // it again, so it must not depend on how the engine keeps its edges.
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  add_step(p, "a");
  add_step(p, "c", {"a"}, R"({"from_a":"${steps.a.output.v}"})");
  add_step(p, "b", {"a"});
  add_step(p, "e", {"a", "d"}, R"({"d":"${steps.d.output}"})");
  add_step(p, "d", {"c", "b"}, R"({"c":"${steps.c.output}","b":"${steps.b.output}"})");
  driver d{started(p)};
  auto scheduled = [&] {
    std::vector<std::string> r;
    for (const auto& e : d.log)
      if (e.has_scheduled()) r.push_back(e.scheduled().step_id());
    return r;
  };
  CHECK(scheduled() == std::vector<std::string>{"a"});
  REQUIRE(d.complete("a", R"({"v":1})"));
  CHECK(scheduled() == std::vector<std::string>{"a", "c", "b"});
  CHECK(d.eng->in_flight().at("c").input_json() == R"({"from_a":1})");
  REQUIRE(d.complete("b", R"("B")"));
  CHECK(scheduled() == std::vector<std::string>{"a", "c", "b"}); // d still waits for c
  REQUIRE(d.complete("c", R"([2])"));
  CHECK(scheduled() == std::vector<std::string>{"a", "c", "b", "d"});
  CHECK(d.eng->in_flight().at("d").input_json() == R"({"b":"B","c":[2]})");
  REQUIRE(d.complete("d", R"({"x":true})"));
  CHECK(scheduled() == std::vector<std::string>{"a", "c", "b", "d", "e"});
  CHECK(d.eng->in_flight().at("e").input_json() == R"({"d":{"x":true}})");
  REQUIRE(d.complete("e", "3"));
  CHECK(d.eng->status() == v1::EXEC_COMPLETED);
  CHECK(d.eng->outputs_json() == R"({"e":3})"); // e is the only step nothing depends on
  CHECK(d.eng->steps().at("c").output_json == "[2]");
}

TEST_CASE("engine: duplicate and late results are ignored", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  add_step(p, "a");
  add_step(p, "b", {"a"});
  driver d{started(p)};
  REQUIRE(d.complete("a", "1", 1));
  CHECK_FALSE(d.complete("a", "1", 1));  // duplicate
  CHECK_FALSE(d.complete("b", "1", 2));  // an attempt that never ran
  CHECK(d.running() == std::vector<std::string>{"b"});
}

TEST_CASE("engine: fan-out schedules a branch per item and joins them in order", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  add_step(p, "list");
  auto& each = add_step(p, "each", {"list"}, R"({"n":"${item}"})");
  each.set_for_each("${steps.list.output}");
  add_step(p, "sum", {"each"}, R"({"all":"${steps.each.output}"})");
  driver d{started(p)};
  REQUIRE(d.complete("list", "[1,2,3]"));
  CHECK(d.running() == std::vector<std::string>{"each[0]", "each[1]", "each[2]"});
  CHECK(d.eng->in_flight().at("each[1]").input_json() == R"({"n":2})");
  REQUIRE(d.complete("each[2]", "30"));
  REQUIRE(d.complete("each[0]", "10"));
  CHECK(d.running() == std::vector<std::string>{"each[1]"}); // the barrier holds
  REQUIRE(d.complete("each[1]", "20"));
  CHECK(d.eng->in_flight().at("sum").input_json() == R"({"all":[10,20,30]})");
}

TEST_CASE("engine: an empty fan-out completes with an empty list", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  add_step(p, "list");
  add_step(p, "each", {"list"}).set_for_each("${steps.list.output}");
  add_step(p, "after", {"each"}, R"({"all":"${steps.each.output}"})");
  driver d{started(p)};
  REQUIRE(d.complete("list", "[]"));
  CHECK(d.eng->in_flight().at("after").input_json() == R"({"all":[]})");
}

TEST_CASE("engine: for_each over something that is not a list fails the step", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  add_step(p, "list");
  add_step(p, "each", {"list"}).set_for_each("${steps.list.output}");
  driver d{started(p)};
  REQUIRE(d.complete("list", R"({"not":"a list"})"));
  CHECK(d.eng->status() == v1::EXEC_FAILED);
  CHECK_THAT(d.eng->error_text(), Catch::Contains("expected a list"));
}

TEST_CASE("engine: transient failures retry with backoff, others fail at once", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  auto& a = add_step(p, "a");
  a.mutable_call()->mutable_retry()->set_max_attempts(3);
  a.mutable_call()->mutable_retry()->set_backoff_ms(100);
  driver d{started(p)};
  REQUIRE(d.fail("a"));
  auto retried = d.log[d.log.size() - 2];
  auto again = d.log.back();
  REQUIRE(retried.has_retried());
  CHECK(retried.retried().next_attempt() == 2);
  CHECK(retried.retried().backoff_ms() >= 80);
  CHECK(retried.retried().backoff_ms() <= 120);
  REQUIRE(again.has_scheduled());
  CHECK(again.scheduled().attempt() == 2);
  CHECK(again.scheduled().idempotency_key() == "e1/a/2");
  CHECK(again.scheduled().delay_ms() == retried.retried().backoff_ms());
  REQUIRE(d.fail("a"));
  CHECK(d.log.back().scheduled().attempt() == 3);
  CHECK(d.log[d.log.size() - 2].retried().backoff_ms() >= 160); // exponential
  REQUIRE(d.fail("a"));
  CHECK(d.eng->status() == v1::EXEC_FAILED);

  driver v{started(p)};
  REQUIRE(v.fail("a", "validation"));
  CHECK(v.eng->status() == v1::EXEC_FAILED); // not retryable
}

TEST_CASE("engine: auto mode lets independent branches finish - strict fails at once",
          "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  add_step(p, "a");
  add_step(p, "b");
  add_step(p, "after_a", {"a"});
  {
    driver d{started(p, v1::EXEC_AUTO)};
    REQUIRE(d.fail("a", "internal"));
    CHECK(d.eng->status() == v1::EXEC_RUNNING);
    CHECK(d.running() == std::vector<std::string>{"b"});
    REQUIRE(d.complete("b"));
    CHECK(d.eng->status() == v1::EXEC_FAILED);
    CHECK(d.eng->steps().at("after_a").state == "skipped");
    CHECK_THAT(d.eng->error_text(), Catch::Contains("step 'a' failed"));
  }
  {
    driver d{started(p, v1::EXEC_STRICT)};
    REQUIRE(d.fail("a", "transient"));
    CHECK(d.eng->status() == v1::EXEC_FAILED);
    CHECK_THAT(d.eng->error_text(), Catch::Contains("strict"));
    auto abandoned = d.eng->take_abandoned();
    REQUIRE(abandoned.size() == 1);
    CHECK(abandoned[0].step_id() == "b");
  }
}

TEST_CASE("engine: pause holds new steps, resume releases them, cancel ends", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  add_step(p, "a");
  add_step(p, "b", {"a"});
  driver d{started(p)};
  v1::ExecEvent pause;
  pause.mutable_paused()->set_by("ops");
  REQUIRE(d.give(pause));
  CHECK_FALSE(d.eng->input(pause)); // already paused
  REQUIRE(d.complete("a"));          // a result is still taken while paused
  CHECK(d.running().empty());
  CHECK(d.eng->status() == v1::EXEC_PAUSED);
  v1::ExecEvent resume;
  resume.mutable_resumed()->set_by("ops");
  REQUIRE(d.give(resume));
  CHECK(d.running() == std::vector<std::string>{"b"});
  v1::ExecEvent cancel;
  cancel.mutable_canceled()->set_by("alice");
  REQUIRE(d.give(cancel));
  CHECK(d.eng->status() == v1::EXEC_CANCELED);
  CHECK_THAT(d.eng->error_text(), Catch::Contains("alice"));
  CHECK(d.eng->take_abandoned().size() == 1);
  CHECK_FALSE(d.complete("b", "1", 1));
}

namespace {

v1::PlanIR fsm_plan(std::uint32_t max_transitions = 0) {
  v1::PlanIR p;
  p.set_name("review");
  p.set_type(v1::PLAN_FSM);
  auto& f = *p.mutable_fsm();
  f.set_initial("draft");
  f.set_max_transitions(max_transitions);
  auto state = [&](const std::string& name, std::map<std::string, std::string> on, bool fin,
                   bool call = true) {
    auto& s = *f.add_states();
    s.set_name(name);
    if (call) *s.mutable_call() = agent_call("std.echo");
    else s.mutable_call()->set_kind(v1::STEP_NONE);
    for (auto& [o, n] : on) {
      auto& t = *s.add_on();
      t.set_outcome(o);
      t.set_next(n);
    }
    s.set_final(fin);
  };
  state("done", {}, true, false);
  state("draft", {{"ok", "review"}}, false);
  state("review", {{"approve", "done"}, {"reject", "draft"}}, false);
  return p;
}

} // namespace

TEST_CASE("engine: an fsm follows outcomes, loops with distinct step ids, and ends", "[engine]") {
  driver d{started(fsm_plan())};
  CHECK(d.running() == std::vector<std::string>{"draft#0"});
  REQUIRE(d.complete("draft#0"));
  CHECK(d.running() == std::vector<std::string>{"review#1"});
  REQUIRE(d.complete("review#1", R"({"outcome":"reject"})"));
  CHECK(d.running() == std::vector<std::string>{"draft#2"});
  REQUIRE(d.complete("draft#2"));
  REQUIRE(d.complete("review#3", R"({"outcome":"approve","score":9})"));
  CHECK(d.eng->status() == v1::EXEC_COMPLETED);
  CHECK_THAT(d.eng->outputs_json(), Catch::Contains(R"("state":"done")"));
}

TEST_CASE("engine: an fsm stops a runaway loop at max_transitions", "[engine]") {
  driver d{started(fsm_plan(5))};
  std::string state = "draft";
  for (int i = 0; i < 10 && d.eng->status() == v1::EXEC_RUNNING; ++i) {
    auto step = d.running().at(0);
    REQUIRE(d.complete(step, step.starts_with("review") ? R"({"outcome":"reject"})" : "{}"));
  }
  CHECK(d.eng->status() == v1::EXEC_FAILED);
  CHECK_THAT(d.eng->error_text(), Catch::Contains("max_transitions (5) exceeded"));
}

TEST_CASE("engine: an fsm outcome without a transition is a clear failure", "[engine]") {
  driver d{started(fsm_plan())};
  REQUIRE(d.complete("draft#0"));
  REQUIRE(d.complete("review#1", R"({"outcome":"maybe"})"));
  CHECK(d.eng->status() == v1::EXEC_FAILED);
  CHECK_THAT(d.eng->error_text(),
             Catch::Contains("outcome 'maybe'") && Catch::Contains("approve, reject"));
}

namespace {

v1::BtNode& bt_child(v1::BtNode& parent, const std::string& id, v1::BtType type) {
  auto& c = *parent.add_children();
  c.set_id(id);
  c.set_type(type);
  if (type == v1::BT_ACTION) *c.mutable_call() = agent_call("std.echo");
  return c;
}

} // namespace

TEST_CASE("engine: bt sequence, selector, inverter and conditions", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_BT);
  auto& root = *p.mutable_root();
  root.set_id("root");
  root.set_type(v1::BT_SEQUENCE);
  bt_child(root, "enabled", v1::BT_CONDITION).set_expr("${inputs.enabled}");
  auto& sel = bt_child(root, "pick", v1::BT_SELECTOR);
  bt_child(sel, "first", v1::BT_ACTION);
  bt_child(sel, "second", v1::BT_ACTION);
  auto& inv = bt_child(root, "not", v1::BT_INVERTER);
  bt_child(inv, "check", v1::BT_ACTION);
  {
    driver d{started(p, v1::EXEC_AUTO, R"({"enabled":true})")};
    CHECK(d.running() == std::vector<std::string>{"first#0"});
    REQUIRE(d.fail("first#0", "internal"));
    CHECK(d.running() == std::vector<std::string>{"second#0"});
    REQUIRE(d.complete("second#0"));
    CHECK(d.running() == std::vector<std::string>{"check#0"});
    REQUIRE(d.fail("check#0", "internal"));
    CHECK(d.eng->status() == v1::EXEC_COMPLETED); // inverted failure is success
  }
  {
    driver d{started(p, v1::EXEC_AUTO, R"({"enabled":false})")};
    CHECK(d.eng->status() == v1::EXEC_FAILED);
  }
}

TEST_CASE("engine: bt parallel thresholds, retry and timeout decorators", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_BT);
  auto& root = *p.mutable_root();
  root.set_id("root");
  root.set_type(v1::BT_SEQUENCE);
  auto& par = bt_child(root, "par", v1::BT_PARALLEL);
  par.set_success_threshold(2);
  bt_child(par, "x", v1::BT_ACTION);
  bt_child(par, "y", v1::BT_ACTION);
  bt_child(par, "z", v1::BT_ACTION);
  auto& retry = bt_child(root, "again", v1::BT_RETRY);
  retry.set_times(3);
  bt_child(retry, "flaky", v1::BT_ACTION);
  auto& to = bt_child(root, "limit", v1::BT_TIMEOUT);
  to.set_after_ms(1000);
  bt_child(to, "slow", v1::BT_ACTION);

  driver d{started(p)};
  CHECK(d.running() == std::vector<std::string>{"x#0", "y#0", "z#0"});
  REQUIRE(d.complete("x#0"));
  REQUIRE(d.fail("y#0", "internal"));
  REQUIRE(d.complete("z#0")); // 2 of 3: success
  CHECK(d.running() == std::vector<std::string>{"flaky#0"});
  REQUIRE(d.fail("flaky#0", "internal"));
  CHECK(d.running() == std::vector<std::string>{"flaky#1"}); // a fresh step per try
  REQUIRE(d.fail("flaky#1", "internal"));
  REQUIRE(d.complete("flaky#2"));
  CHECK(d.running() == std::vector<std::string>{"limit~timer#0", "slow#0"});
  CHECK(d.eng->in_flight().at("limit~timer#0").call().wait_ms() == 1000);
  REQUIRE(d.complete("limit~timer#0")); // the timer wins
  CHECK(d.eng->status() == v1::EXEC_FAILED);
  CHECK_THAT(d.eng->error_text(), Catch::Contains("timeout 'limit' expired"));
}

TEST_CASE("engine: bt parallel fails once the threshold cannot be reached", "[engine]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_BT);
  auto& root = *p.mutable_root();
  root.set_id("par");
  root.set_type(v1::BT_PARALLEL);
  root.set_success_threshold(2);
  bt_child(root, "x", v1::BT_ACTION);
  bt_child(root, "y", v1::BT_ACTION);
  bt_child(root, "z", v1::BT_ACTION);
  driver d{started(p)};
  REQUIRE(d.fail("x#0", "internal"));
  REQUIRE(d.fail("y#0", "internal"));
  CHECK(d.eng->status() == v1::EXEC_FAILED);
  CHECK(d.eng->take_abandoned().size() == 1); // z is told to stop
}

TEST_CASE("engine: strict mode fails fsm and bt executions at the first failed step",
          "[engine]") {
  {
    // In auto mode a failed fsm state with no `error` transition fails too, but only after the
    // planner looked for one; strict fails with the step's own error kind at once.
    auto p = fsm_plan();
    p.mutable_fsm()->mutable_states(1)->mutable_call()->mutable_retry()->set_max_attempts(3);
    auto& t = *p.mutable_fsm()->mutable_states(1)->add_on();
    t.set_outcome("error");
    t.set_next("done");
    driver a{started(p, v1::EXEC_AUTO)};
    REQUIRE(a.fail("draft#0", "internal"));
    CHECK(a.eng->status() == v1::EXEC_COMPLETED); // the error transition ran
    driver d{started(p, v1::EXEC_STRICT)};
    REQUIRE(d.fail("draft#0", "transient")); // no retry either
    CHECK(d.eng->status() == v1::EXEC_FAILED);
    CHECK_THAT(d.eng->error_text(),
               Catch::StartsWith("transient:") && Catch::Contains("step 'draft#0' failed (strict mode)"));
    CHECK(d.log.back().has_exec_failed());
    CHECK(d.log.back().exec_failed().step_id() == "draft#0");
    auto r = replay(d.log);
    REQUIRE(r);
    CHECK(r->compatible);
    CHECK(r->eng->status() == v1::EXEC_FAILED);
  }
  {
    // A selector would fall back to its second child in auto mode; strict ends the run and
    // abandons the parallel sibling still in flight.
    v1::PlanIR p;
    p.set_type(v1::PLAN_BT);
    auto& root = *p.mutable_root();
    root.set_id("root");
    root.set_type(v1::BT_PARALLEL);
    root.set_success_threshold(2);
    auto& sel = bt_child(root, "pick", v1::BT_SELECTOR);
    bt_child(sel, "first", v1::BT_ACTION);
    bt_child(sel, "second", v1::BT_ACTION);
    bt_child(root, "side", v1::BT_ACTION);
    driver a{started(p, v1::EXEC_AUTO)};
    REQUIRE(a.fail("first#0", "internal"));
    CHECK(a.eng->status() == v1::EXEC_RUNNING);
    CHECK(a.eng->in_flight().contains("second#0"));
    driver d{started(p, v1::EXEC_STRICT)};
    REQUIRE(d.running() == std::vector<std::string>{"first#0", "side#0"});
    REQUIRE(d.fail("first#0", "internal"));
    CHECK(d.eng->status() == v1::EXEC_FAILED);
    CHECK(d.running().empty());
    auto abandoned = d.eng->take_abandoned();
    REQUIRE(abandoned.size() == 1);
    CHECK(abandoned[0].step_id() == "side#0");
    CHECK_FALSE(d.complete("side#0")); // a late result is ignored
  }
}

TEST_CASE("replay: a recorded history replays to the same events and state", "[engine][replay]") {
  v1::PlanIR p;
  p.set_type(v1::PLAN_DAG);
  add_step(p, "list");
  add_step(p, "each", {"list"}, R"({"n":"${item}"})").set_for_each("${steps.list.output}");
  auto& f = add_step(p, "flaky", {"each"});
  f.mutable_call()->mutable_retry()->set_max_attempts(2);
  driver d{started(p)};
  REQUIRE(d.complete("list", "[1,2]"));
  REQUIRE(d.complete("each[1]", "2"));
  REQUIRE(d.complete("each[0]", "1"));
  REQUIRE(d.fail("flaky"));
  REQUIRE(d.complete("flaky", "{}", 2));
  REQUIRE(d.eng->status() == v1::EXEC_COMPLETED);

  auto r = replay(d.log);
  REQUIRE(r);
  CHECK(r->compatible);
  CHECK(r->divergence.empty());
  CHECK(r->events_checked == d.log.size());
  CHECK(r->recorded_hash == r->replay_hash);
  CHECK(r->eng->status() == v1::EXEC_COMPLETED);
  CHECK(r->pending.empty());

  // An unfinished prefix: the replay ends in the same state with the same steps in flight.
  std::vector<v1::ExecEvent> prefix(d.log.begin(), d.log.begin() + 5);
  auto rp = replay(prefix);
  REQUIRE(rp);
  CHECK(rp->compatible);
  CHECK(rp->eng->status() == v1::EXEC_RUNNING);
  CHECK_FALSE(rp->eng->in_flight().empty());

  // A plan change that makes different decisions for this history is reported.
  v1::PlanIR changed = p;
  changed.mutable_steps(1)->mutable_call()->set_input_json(R"({"n":"${item}","extra":1})");
  auto rc = replay(d.log, &changed);
  REQUIRE(rc);
  CHECK_FALSE(rc->compatible);
  CHECK_THAT(rc->divergence, Catch::Contains("event 4") && Catch::Contains("each[0]") && Catch::Contains("extra"));
  CHECK(rc->recorded_hash != rc->replay_hash);

  // A compatible change (a new step after everything that ran) is not.
  v1::PlanIR later = p;
  add_step(later, "extra", {"flaky"});
  prefix.assign(d.log.begin(), d.log.begin() + 5);
  auto rl = replay(prefix, &later);
  REQUIRE(rl);
  CHECK(rl->compatible);
}
