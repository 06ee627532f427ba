// Saga plans without a node: the compiler (the IR of `type: saga`, `compensate`, `node:`,
// `${steps.ID.input}`, and every error with its file:line:column) and the engine (forward order,
// compensation in reverse order, retries of compensations in every mode, a compensation that
// cannot start, stuck/resume, cancel, replay of a recorded history).
#include "af/plan/compile.hpp"
#include "plan/engine.hpp"
#include "plan/replay.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace af;
using namespace af::plan;
using nlohmann::json;

namespace {

const std::string k_head = "apiVersion: agentflow/v1\nkind: Plan\nmetadata: {name: trip}\n";

v1::PlanIR compile_ok(const std::string& yaml) {
  auto r = compile_text(yaml, "plan.yaml");
  if (!r) FAIL(r.error().message());
  return *r;
}

std::string compile_error(const std::string& yaml) {
  auto r = compile_text(yaml, "plan.yaml");
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == errc::validation);
  return r.error().message();
}

/// A saga plan: `steps` is the YAML of the steps list (indented by 4), after line 7.
std::string saga(const std::string& steps) {
  return k_head + "spec:\n  type: saga\n  inputs: {city: Oslo}\n  steps:\n" + steps;
}

const char* k_trip = R"(
    - id: flight
      agent: travel.flights
      node: n2
      input: {to: "${inputs.city}"}
      retry: {max_attempts: 3, backoff: 50ms}
      timeout: 2s
      compensate:
        agent: travel.flights
        node: n2
        input: {cancel: "${steps.flight.output.booking}", to: "${steps.flight.input.to}"}
        retry: {backoff: 200ms, max_backoff: 5s}
    - id: mail
      tool: mail.send
      input: {text: "booked ${steps.flight.output.booking}"}
      compensate: none
    - id: hotel
      agent: travel.hotels
      input: {city: "${inputs.city}"}
      compensate: {agent: travel.hotels, input: {cancel: "${steps.hotel.output}"}}
)";

} // namespace

TEST_CASE("saga: a saga plan compiles to ordered steps with their compensations", "[saga][plan]") {
  const auto ir = compile_ok(saga(k_trip));
  CHECK(ir.type() == v1::PLAN_SAGA);
  REQUIRE(ir.saga_size() == 3);
  CHECK(ir.steps_size() == 0);
  const auto& f = ir.saga(0);
  CHECK(f.id() == "flight");
  CHECK(f.call().kind() == v1::STEP_AGENT);
  CHECK(f.call().node() == "n2");
  CHECK(f.call().retry().max_attempts() == 3);
  CHECK(f.call().timeout_ms() == 2000);
  CHECK(f.compensate().kind() == v1::STEP_AGENT);
  CHECK(f.compensate().target() == "travel.flights");
  CHECK(f.compensate().node() == "n2");
  // A compensation has no attempt limit; its retry block sets the backoff.
  CHECK(f.compensate().retry().max_attempts() == 0);
  CHECK(f.compensate().retry().backoff_ms() == 200);
  CHECK(f.compensate().retry().max_backoff_ms() == 5000);
  CHECK(json::parse(f.compensate().input_json())
        == json{{"cancel", "${steps.flight.output.booking}"}, {"to", "${steps.flight.input.to}"}});
  CHECK(f.pos().line() == 9);
  CHECK(ir.saga(1).call().kind() == v1::STEP_TOOL);
  CHECK(ir.saga(1).compensate().kind() == v1::STEP_NONE);
  CHECK(ir.saga(2).compensate().retry().max_attempts() == 0);
  CHECK(ir.saga(2).compensate().retry().backoff_ms() == 100); // the default backoff
  // Reordered keys, same meaning, same hash; another compensation, another hash.
  auto reordered = std::string{k_trip};
  reordered.replace(reordered.find("compensate: {agent: travel.hotels, input:"),
                    std::string{"compensate: {agent: travel.hotels, input:"}.size(),
                    "compensate: {input:");
  reordered.replace(reordered.find("}}\n", reordered.find("compensate: {input:")), 3,
                    "}, agent: travel.hotels}\n");
  CHECK(compile_ok(saga(reordered)).hash() == ir.hash());
  auto changed = std::string{k_trip};
  changed.replace(changed.find("cancel: \"${steps.hotel.output}\""),
                  std::string{"cancel: \"${steps.hotel.output}\""}.size(),
                  "drop: \"${steps.hotel.output}\"");
  CHECK(compile_ok(saga(changed)).hash() != ir.hash());
}

TEST_CASE("saga: bad saga plans are refused with file:line:column and the step", "[saga][plan]") {
  SECTION("a step without compensate") {
    CHECK(compile_error(saga("    - id: pay\n      agent: bank\n"))
          == "plan.yaml:8:7: step 'pay': missing 'compensate'; expected the call that undoes "
             "this step (agent, tool, plan, wait or approval, with input, retry, timeout), or "
             "'compensate: none' when there is nothing to undo");
  }
  SECTION("compensate that is neither a call nor none") {
    CHECK(compile_error(saga("    - id: pay\n      agent: bank\n      compensate: nothing\n"))
          == "plan.yaml:10:19: step 'pay': compensate: expected a map with agent, tool, plan, "
             "wait or approval, or 'none'; got 'nothing'");
  }
  SECTION("compensate with nothing to run") {
    CHECK(compile_error(saga("    - id: pay\n      agent: bank\n      compensate: {input: {}}\n"))
          == "plan.yaml:10:19: step 'pay': compensate: nothing to run; expected one of agent, "
             "tool, plan, wait, approval");
  }
  SECTION("an attempt limit on a compensation") {
    CHECK(compile_error(saga("    - id: pay\n      agent: bank\n      compensate:\n"
                             "        agent: bank\n        retry: {max_attempts: 3}\n"))
          == "plan.yaml:12:17: step 'pay': compensate: retry: max_attempts: a compensation is "
             "retried until it succeeds (or an operator marks the saga stuck); expected backoff, "
             "max_backoff or multiplier");
  }
  SECTION("an unknown key") {
    CHECK(compile_error(saga("    - id: pay\n      agent: bank\n      after: [x]\n"
                             "      compensate: none\n"))
          == "plan.yaml:10:7: step 'pay': unknown key 'after' (expected one of: id, agent, tool, "
             "plan, wait, approval, node, input, retry, timeout, compensate)");
    CHECK(compile_error(saga("    - id: pay\n      agent: bank\n"
                             "      compensate: {agent: bank, compensate: none}\n"))
          == "plan.yaml:10:33: step 'pay': compensate: unknown key 'compensate' (expected one "
             "of: agent, tool, plan, wait, approval, node, input, retry, timeout)");
  }
  SECTION("an action that reads a later step, a compensation that reads one") {
    CHECK(
        compile_error(saga("    - id: a\n      agent: x\n      input: {v: \"${steps.b.output}\"}\n"
                           "      compensate: none\n    - id: b\n      agent: x\n"
                           "      compensate: none\n"))
        == "plan.yaml:10:18: step 'a': input: ${steps.b...} reads step 'b', which runs after "
           "'a'; expected a step before it (steps run in order)");
    CHECK(compile_error(saga("    - id: a\n      agent: x\n      input: {v: \"${steps.a.input}\"}\n"
                             "      compensate: none\n"))
          == "plan.yaml:10:18: step 'a': input: ${steps.a...} reads step 'a' itself; expected a "
             "step before it (steps run in order)");
    CHECK(compile_error(saga("    - id: a\n      agent: x\n      compensate:\n        agent: x\n"
                             "        input: {v: \"${steps.b.output}\"}\n"
                             "    - id: b\n      agent: x\n      compensate: none\n"))
          == "plan.yaml:12:20: step 'a': compensate: input: ${steps.b...} reads step 'b', which "
             "runs after 'a'; expected this step or a step before it");
    CHECK(compile_error(saga("    - id: a\n      agent: x\n      compensate:\n        agent: x\n"
                             "        input: {v: \"${steps.zz.output}\"}\n"))
          == "plan.yaml:12:20: step 'a': compensate: input: unknown step 'zz' in "
             "${steps.zz.output}; expected one of: a");
  }
  SECTION("node: with a call that does not run on an agent, or a bad name") {
    CHECK(
        compile_error(saga("    - id: a\n      wait: 1s\n      node: n2\n      compensate: none\n"))
        == "plan.yaml:10:7: step 'a': node: only an agent or tool call runs on another node; "
           "expected node with agent or tool");
    CHECK(compile_error(
              saga("    - id: a\n      agent: x\n      node: n/2\n      compensate: none\n"))
          == "plan.yaml:10:13: step 'a': node: 'n/2': expected a node name of 1 to 128 of "
             "[A-Za-z0-9_.-]");
  }
  SECTION("duplicate ids, no steps, and ${steps.ID.input} outside sagas") {
    CHECK(compile_error(saga("    - {id: a, agent: x, compensate: none}\n"
                             "    - {id: a, agent: x, compensate: none}\n"))
          == "plan.yaml:9:7: step 'a': duplicate step id 'a' (first at line 8); expected unique "
             "ids");
    CHECK(compile_error(k_head + "spec:\n  type: saga\n  steps: []\n")
          == "plan.yaml:6:10: spec: steps: expected a non-empty list of steps, got an empty list");
    CHECK(compile_error(k_head
                        + "spec:\n  type: dag\n  steps:\n    - {id: a, agent: x}\n"
                          "    - {id: b, agent: x, input: {v: \"${steps.a.input}\"}}\n")
          == "plan.yaml:8:36: step 'b': input: ${steps.a.input}: step inputs can only be read in "
             "saga plans; expected ${steps.a.output}");
  }
}

namespace {

v1::Call call(const std::string& target, const std::string& input = "{}") {
  v1::Call c;
  c.set_kind(v1::STEP_AGENT);
  c.set_target(target);
  c.set_input_json(input);
  c.mutable_retry()->set_max_attempts(1);
  return c;
}

/// n steps s1..sn whose compensation undoes by the action's output.key.
v1::PlanIR saga_ir(int n) {
  v1::PlanIR p;
  p.set_name("saga");
  p.set_type(v1::PLAN_SAGA);
  for (int i = 1; i <= n; ++i) {
    auto& s = *p.add_saga();
    const auto id = "s" + std::to_string(i);
    s.set_id(id);
    *s.mutable_call() = call("x", R"({"n":)" + std::to_string(i) + "}");
    *s.mutable_compensate() =
        call("undo",
             R"({"key":"${steps.)" + id + R"(.output.key}","n":"${steps.)" + id + R"(.input.n}"})");
    s.mutable_compensate()->mutable_retry()->set_max_attempts(0);
    s.mutable_compensate()->mutable_retry()->set_backoff_ms(10);
  }
  return p;
}

v1::ExecutionStarted started(v1::PlanIR p, v1::ExecMode mode = v1::EXEC_AUTO) {
  v1::ExecutionStarted s;
  s.set_execution_id("e1");
  *s.mutable_plan() = std::move(p);
  s.set_mode(mode);
  s.set_inputs_json("{}");
  return s;
}

/// Drives an engine as the executor does (results in, decisions recorded).
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
  void decide() {
    for (auto& d : eng->decide())
      log.push_back(std::move(d));
  }
  bool give(v1::ExecEvent e, std::string* why = nullptr) {
    if (!eng->input(e, why)) return false;
    log.push_back(std::move(e));
    decide();
    return true;
  }
  const v1::StepScheduled& running() const {
    REQUIRE(eng->in_flight().size() == 1);
    return eng->in_flight().begin()->second;
  }
  bool ok(const std::string& output = "") {
    const auto s = running();
    v1::ExecEvent e;
    auto& c = *e.mutable_completed();
    c.set_step_id(s.step_id());
    c.set_attempt(s.attempt());
    c.set_output_json(output.empty() ? json{{"key", s.idempotency_key()}}.dump() : output);
    return give(std::move(e));
  }
  bool fail(const std::string& kind = "internal") {
    const auto s = running();
    v1::ExecEvent e;
    auto& f = *e.mutable_failed();
    f.set_step_id(s.step_id());
    f.set_attempt(s.attempt());
    f.set_error_kind(kind);
    f.set_message("no");
    return give(std::move(e));
  }
  template <class T>
  std::vector<const T*> events(const T& (v1::ExecEvent::*get)() const,
                               bool (v1::ExecEvent::*has)() const) const {
    std::vector<const T*> out;
    for (const auto& e : log)
      if ((e.*has)()) out.push_back(&(e.*get)());
    return out;
  }
};

} // namespace

TEST_CASE("saga engine: steps in order - a failure compensates the completed steps in reverse",
          "[saga][engine]") {
  driver d{started(saga_ir(4))};
  CHECK(d.running().step_id() == "s1");
  CHECK(d.eng->saga_state() == "running");
  REQUIRE(d.ok());
  CHECK(d.running().step_id() == "s2");
  REQUIRE(d.ok());
  REQUIRE(d.ok());
  CHECK(d.running().step_id() == "s4");
  REQUIRE(d.fail());
  CHECK(d.eng->saga_state() == "compensating");
  const auto comp = d.events(&v1::ExecEvent::compensating, &v1::ExecEvent::has_compensating);
  REQUIRE(comp.size() == 1);
  CHECK(comp[0]->step_id() == "s4");
  CHECK(comp[0]->reason() == "step 's4' failed: internal: no");
  CHECK(std::vector<std::string>(comp[0]->steps().begin(), comp[0]->steps().end())
        == std::vector<std::string>{"s3.compensate", "s2.compensate", "s1.compensate"});
  // The compensation reads its step's output and input.
  CHECK(d.running().step_id() == "s3.compensate");
  CHECK(json::parse(d.running().input_json()) == json{{"key", "e1/s3"}, {"n", 3}});
  // One key per saga step and compensation, whatever the attempt.
  CHECK(d.running().idempotency_key() == "e1/s3.compensate");
  CHECK(d.running().parent_step() == "s3");
  // A failing compensation is retried whatever the error (validation here), with backoff.
  REQUIRE(d.fail("validation"));
  CHECK(d.running().step_id() == "s3.compensate");
  CHECK(d.running().attempt() == 2);
  CHECK(d.running().idempotency_key() == "e1/s3.compensate");
  CHECK(d.running().delay_ms() > 0);
  REQUIRE(d.ok());
  CHECK(d.running().step_id() == "s2.compensate");
  REQUIRE(d.ok());
  REQUIRE(d.ok());
  CHECK(d.eng->status() == v1::EXEC_FAILED);
  CHECK(d.eng->saga_state() == "compensated");
  REQUIRE(d.log.back().has_exec_failed());
  CHECK(d.log.back().exec_failed().compensated());
  CHECK(d.log.back().exec_failed().step_id() == "s4");
  CHECK(d.eng->error_text()
        == "internal: step 's4' failed: internal: no; the saga was compensated (undone: s3, s2, "
           "s1)");
  // Replay reproduces it, decision for decision.
  auto r = replay(d.log);
  REQUIRE(r);
  CHECK(r->compatible);
  CHECK(r->events_checked == d.log.size());
  CHECK(r->eng->saga_state() == "compensated");
}

TEST_CASE("saga engine: success completes with every step's output - step 1 failing has nothing "
          "to undo",
          "[saga][engine]") {
  driver ok{started(saga_ir(2))};
  REQUIRE(ok.ok(R"({"a":1})"));
  REQUIRE(ok.ok(R"({"b":2})"));
  CHECK(ok.eng->status() == v1::EXEC_COMPLETED);
  CHECK(ok.eng->saga_state() == "completed");
  CHECK(json::parse(ok.eng->outputs_json()) == json{{"s1", {{"a", 1}}}, {"s2", {{"b", 2}}}});

  driver first{started(saga_ir(3))};
  REQUIRE(first.fail());
  CHECK(first.eng->status() == v1::EXEC_FAILED);
  CHECK(first.eng->saga_state() == "compensated");
  CHECK_THAT(first.eng->error_text(), Catch::Contains("(nothing to undo)"));
  CHECK(first.eng->in_flight().empty());
}

TEST_CASE("saga engine: strict mode does not retry actions but still compensates, and retries "
          "compensations",
          "[saga][engine]") {
  auto p = saga_ir(2);
  p.mutable_saga(1)->mutable_call()->mutable_retry()->set_max_attempts(5);
  driver d{started(p, v1::EXEC_STRICT)};
  REQUIRE(d.ok());
  REQUIRE(d.fail("transient")); // would be retried in auto mode
  CHECK(d.running().step_id() == "s1.compensate");
  REQUIRE(d.fail("transient"));
  CHECK(d.running().attempt() == 2);
  REQUIRE(d.ok());
  CHECK(d.eng->saga_state() == "compensated");
}

TEST_CASE("saga engine: stuck pauses compensation until resume - a cancel compensates - a "
          "compensation that cannot start makes the saga stuck by itself",
          "[saga][engine]") {
  driver d{started(saga_ir(3))};
  std::string why;
  v1::ExecEvent stuck;
  stuck.mutable_stuck()->set_by("ops");
  CHECK_FALSE(d.give(stuck, &why));
  CHECK(why
        == "the saga is running, not compensating; only a compensating saga can be marked "
           "stuck");
  REQUIRE(d.ok());
  REQUIRE(d.ok());
  REQUIRE(d.fail());
  REQUIRE(d.fail()); // s2.compensate attempt 1
  // The retry is decided; it is in flight (waiting out its backoff) when the mark comes.
  CHECK(d.running().attempt() == 2);
  REQUIRE(d.give(stuck));
  CHECK(d.eng->saga_state() == "stuck");
  CHECK(d.eng->status() == v1::EXEC_PAUSED);
  CHECK_FALSE(d.give(stuck, &why));
  CHECK(why == "the saga is already stuck");
  // The attempt in flight fails: no new attempt while stuck.
  REQUIRE(d.fail());
  CHECK(d.eng->in_flight().empty());
  v1::ExecEvent resume;
  resume.mutable_resumed()->set_by("ops");
  REQUIRE(d.give(resume));
  CHECK(d.eng->saga_state() == "compensating");
  CHECK(d.running().attempt() == 3);
  REQUIRE(d.ok());
  REQUIRE(d.ok());
  CHECK(d.eng->saga_state() == "compensated");
  CHECK(replay(d.log)->compatible);

  // A cancel of a running saga: the step in flight ends (no retry), then compensation.
  auto p = saga_ir(3);
  p.mutable_saga(1)->mutable_call()->mutable_retry()->set_max_attempts(5);
  driver c{started(p)};
  REQUIRE(c.ok());
  v1::ExecEvent cancel;
  cancel.mutable_canceled()->set_by("ops");
  cancel.mutable_canceled()->set_reason("plans changed");
  REQUIRE(c.give(cancel));
  CHECK(c.eng->status() == v1::EXEC_RUNNING);
  CHECK(c.running().step_id() == "s2");
  REQUIRE(c.fail("transient")); // not retried after the cancel
  CHECK(c.running().step_id() == "s1.compensate");
  REQUIRE(c.ok());
  CHECK(c.eng->saga_state() == "compensated");
  CHECK_THAT(c.eng->error_text(), Catch::Contains("canceled by ops: plans changed; meanwhile "
                                                  "step 's2' failed: transient: no"));
  CHECK(replay(c.log)->compatible);

  // A compensation whose input does not render (its step's output has no `key`).
  driver s{started(saga_ir(2))};
  REQUIRE(s.ok(R"({"no_key":true})"));
  REQUIRE(s.fail());
  CHECK(s.eng->saga_state() == "stuck");
  CHECK(s.eng->status() == v1::EXEC_PAUSED);
  CHECK(s.eng->in_flight().empty());
  CHECK(s.eng->steps().at("s1.compensate").state == "failed");
  CHECK_THAT(s.eng->steps().at("s1.compensate").error, Catch::Contains("has no key 'key'"));
  // Cancel ends it; what was not undone leaves it stuck for good.
  REQUIRE(s.give(cancel));
  CHECK(s.eng->status() == v1::EXEC_CANCELED);
  CHECK(s.eng->saga_state() == "stuck");
  CHECK(replay(s.log)->compatible);
}
