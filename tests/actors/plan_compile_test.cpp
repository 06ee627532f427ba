// Tests the plan compiler (af/plan/compile.hpp): the IR of good dag, fsm and bt plans, sub-plans,
// every validation error with its file:line:column and wording, Kahn order, the plan hash under
// reformatting (a seeded generator reorders keys and changes styles and comments) and the
// example plans in examples/plans.
#include "af/plan/compile.hpp"
#include "af/v1/plan.pb.h"

#include "support/temp_dir.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>
#include <yaml-cpp/yaml.h>

namespace {

namespace fs = std::filesystem;
using af::plan::compile_file;
using af::plan::compile_text;
using nlohmann::json;

struct temp_dir : af::test::temp_dir {
  temp_dir() : af::test::temp_dir("af-plan-test") {}
};

af::v1::PlanIR compile_ok(const std::string& yaml, const af::plan::compile_options& opts = {}) {
  auto r = compile_text(yaml, "plan.yaml", opts);
  if (!r) FAIL(r.error().message());
  return *r;
}

std::string compile_error(const std::string& yaml) {
  auto r = compile_text(yaml, "plan.yaml");
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::validation);
  return r.error().message();
}

std::vector<std::string> step_ids(const af::v1::PlanIR& ir) {
  std::vector<std::string> out;
  for (const auto& s : ir.steps())
    out.push_back(s.id());
  return out;
}

std::vector<std::string> after_of(const af::v1::DagStep& s) {
  return {s.after().begin(), s.after().end()};
}

const af::v1::DagStep& step(const af::v1::PlanIR& ir, const std::string& id) {
  for (const auto& s : ir.steps())
    if (s.id() == id) return s;
  FAIL("no step " << id);
  throw;
}

/// The header every test plan starts with (lines 1 to 3), so errors in the spec start at line 4.
const std::string k_head = "apiVersion: agentflow/v1\nkind: Plan\nmetadata: {name: t}\n";

const std::string k_research = R"(apiVersion: agentflow/v1
kind: Plan
metadata: {name: research, tenant: acme, description: "find, fetch and write"}
spec:
  type: dag
  inputs:
    topic: actors
    count: {default: 3, description: "how many"}
    key: {required: true}
  outputs: {summary: "${steps.write.output}"}
  steps:
    - id: search
      agent: std.echo
      input: {query: "${inputs.topic}", n: "${inputs.count}", key: "${inputs.key}"}
      retry: {max_attempts: 4, backoff: 250ms, max_backoff: 5s, multiplier: 3}
      timeout: 1.5s
    - id: fetch
      for_each: "${steps.search.output.items}"
      tool: http.get
      input: {url: "${item.url}"}
    - id: pause
      wait: 2m
      after: [search]
    - id: review
      approval: {prompt: "Publish?"}
      after: [fetch, pause]
    - id: write
      agent: std.echo
      input: {pages: "${steps.fetch.output}", note: "$${inputs.literal}"}
      after: [review]
)";

const std::string k_fsm = R"(apiVersion: agentflow/v1
kind: Plan
metadata: {name: editor}
spec:
  type: fsm
  initial: draft
  max_transitions: 50
  inputs: {attempts: 3}
  states:
    review:
      agent: std.counter
      input: {draft: "${steps.draft.output}", limit: "${inputs.attempts}"}
      on: {rejected: draft, approved: publish}
    draft:
      agent: std.echo
      retry: {max_attempts: 2}
      on: {ok: review, error: failed}
    publish: {tool: blog.post, timeout: 10s, on: {ok: done}}
    done: {final: true}
    failed:
      final: true
)";

const std::string k_bt = R"(apiVersion: agentflow/v1
kind: Plan
metadata: {name: patrol}
spec:
  type: bt
  inputs: {enabled: true}
  root:
    sequence:
      - condition: "${inputs.enabled}"
      - id: pick
        selector:
          - action: {agent: std.fail, input: {always: true}}
            id: first
          - retry:
              times: 3
              child: {action: {tool: lookup, timeout: 2s}}
      - parallel:
          success_threshold: 1
          children:
            - id: slow
              timeout: {after: 5s, child: {action: {agent: std.sleep, input: {ms: 100}}}}
            - inverter: {condition: {agent: std.counter, input: {n: "${steps.first.output}"}}}
            - action: {approval: {}}
            - action: {wait: 1s}
)";

} // namespace

// ---- good plans ---------------------------------------------------------------------------

TEST_CASE("plan: a dag with fan-out, wait, approval, retry, inputs and outputs", "[plan]") {
  auto ir = compile_ok(k_research);
  CHECK(ir.api_version() == "agentflow/v1");
  CHECK(ir.name() == "research");
  CHECK(ir.tenant() == "acme");
  CHECK(ir.type() == af::v1::PLAN_DAG);
  CHECK(ir.source() == "plan.yaml");
  CHECK(ir.hash().size() == 32);
  CHECK(ir.hash() == af::plan::plan_hash(ir));
  CHECK(ir.outputs_json() == R"({"summary":"${steps.write.output}"})");

  REQUIRE(ir.inputs_size() == 3); // sorted by name
  CHECK(ir.inputs(0).name() == "count");
  CHECK(ir.inputs(0).default_json() == "3");
  CHECK(ir.inputs(0).description() == "how many");
  CHECK(ir.inputs(1).name() == "key");
  CHECK(ir.inputs(1).required());
  CHECK(ir.inputs(1).default_json().empty());
  CHECK(ir.inputs(2).name() == "topic");
  CHECK(ir.inputs(2).default_json() == R"("actors")");
  CHECK_FALSE(ir.inputs(2).required());

  // fetch and pause both wait for search only: declaration order breaks the tie.
  CHECK(step_ids(ir) == std::vector<std::string>{"search", "fetch", "pause", "review", "write"});

  const auto& search = step(ir, "search");
  CHECK(search.call().kind() == af::v1::STEP_AGENT);
  CHECK(search.call().target() == "std.echo");
  CHECK(search.call().input_json()
        == R"({"key":"${inputs.key}","n":"${inputs.count}","query":"${inputs.topic}"})");
  CHECK(search.call().retry().max_attempts() == 4);
  CHECK(search.call().retry().backoff_ms() == 250);
  CHECK(search.call().retry().max_backoff_ms() == 5000);
  CHECK(search.call().retry().multiplier() == 3.0);
  CHECK(search.call().timeout_ms() == 1500);
  CHECK(search.after().empty());
  CHECK(search.for_each().empty());
  CHECK(search.pos().file() == "plan.yaml");
  CHECK(search.pos().line() == 12);
  CHECK(search.pos().column() == 7);

  const auto& fetch = step(ir, "fetch");
  CHECK(fetch.call().kind() == af::v1::STEP_TOOL);
  CHECK(fetch.call().target() == "http.get");
  CHECK(fetch.for_each() == "steps.search.output.items");
  CHECK(after_of(fetch) == std::vector<std::string>{"search"}); // implied by for_each
  CHECK(fetch.call().input_json() == R"({"url":"${item.url}"})");
  CHECK(fetch.call().retry().max_attempts() == 1); // no retry block: one attempt
  CHECK(fetch.call().timeout_ms() == 0);

  const auto& pause = step(ir, "pause");
  CHECK(pause.call().kind() == af::v1::STEP_WAIT);
  CHECK(pause.call().wait_ms() == 120'000);
  CHECK(pause.call().input_json() == "{}");

  const auto& review = step(ir, "review");
  CHECK(review.call().kind() == af::v1::STEP_APPROVAL);
  CHECK(review.call().approval_json() == R"({"prompt":"Publish?"})");
  CHECK(after_of(review) == std::vector<std::string>{"fetch", "pause"});

  const auto& write = step(ir, "write");
  CHECK(after_of(write) == std::vector<std::string>{"fetch", "review"}); // explicit + referenced
  CHECK(write.call().input_json()
        == R"({"note":"$${inputs.literal}","pages":"${steps.fetch.output}"})");
}

TEST_CASE("plan: Kahn order breaks ties by declaration order", "[plan]") {
  auto ir = compile_ok(k_head + R"(spec:
  type: dag
  steps:
    - {id: z, agent: std.echo, after: [y]}
    - {id: y, agent: std.echo}
    - {id: x, agent: std.echo}
    - {id: w, agent: std.echo, input: {v: "${steps.x.output}"}}
    - {id: v, agent: std.echo}
)");
  // Ready at the start: y, x, v. y runs first, which makes z (declared first) ready before x.
  CHECK(step_ids(ir) == std::vector<std::string>{"y", "z", "x", "w", "v"});
  CHECK(after_of(ir.steps(3)) == std::vector<std::string>{"x"});

  auto chain = compile_ok(k_head + R"(spec:
  type: dag
  steps:
    - {id: d, agent: std.echo, after: c}
    - {id: c, agent: std.echo, after: [b, b]}
    - {id: b, agent: std.echo, after: [a]}
    - {id: a, agent: std.echo}
)");
  CHECK(step_ids(chain) == std::vector<std::string>{"a", "b", "c", "d"});

  // A bare for_each expression (no ${ }) is a reference too.
  auto bare = compile_ok(k_head + R"(spec:
  type: dag
  steps:
    - {id: fan, agent: std.echo, for_each: steps.list.output, input: {x: "${item}"}}
    - {id: list, agent: std.echo}
)");
  CHECK(step_ids(bare) == std::vector<std::string>{"list", "fan"});
  CHECK(bare.steps(1).for_each() == "steps.list.output");
  CHECK(after_of(bare.steps(1)) == std::vector<std::string>{"list"});
  CHECK(after_of(chain.steps(2)) == std::vector<std::string>{"b"}); // duplicates dropped
}

TEST_CASE("plan: an fsm with sorted states and transitions", "[plan]") {
  auto ir = compile_ok(k_fsm);
  CHECK(ir.type() == af::v1::PLAN_FSM);
  CHECK(ir.steps_size() == 0);
  const auto& fsm = ir.fsm();
  CHECK(fsm.initial() == "draft");
  CHECK(fsm.max_transitions() == 50);
  REQUIRE(fsm.states_size() == 5);
  std::vector<std::string> names;
  for (const auto& s : fsm.states())
    names.push_back(s.name());
  CHECK(names == std::vector<std::string>{"done", "draft", "failed", "publish", "review"});

  const auto& done = fsm.states(0);
  CHECK(done.final());
  CHECK(done.call().kind() == af::v1::STEP_NONE);
  CHECK(done.on_size() == 0);

  const auto& draft = fsm.states(1);
  CHECK(draft.call().kind() == af::v1::STEP_AGENT);
  CHECK(draft.call().target() == "std.echo");
  CHECK(draft.call().retry().max_attempts() == 2);
  REQUIRE(draft.on_size() == 2);
  CHECK(draft.on(0).outcome() == "error");
  CHECK(draft.on(0).next() == "failed");
  CHECK(draft.on(1).outcome() == "ok");
  CHECK(draft.on(1).next() == "review");
  CHECK(draft.pos().line() == 15);

  const auto& publish = fsm.states(3);
  CHECK(publish.call().kind() == af::v1::STEP_TOOL);
  CHECK(publish.call().timeout_ms() == 10'000);

  const auto& review = fsm.states(4);
  CHECK(review.call().input_json()
        == R"({"draft":"${steps.draft.output}","limit":"${inputs.attempts}"})");
  REQUIRE(review.on_size() == 2);
  CHECK(review.on(0).outcome() == "approved");
  CHECK(review.on(1).outcome() == "rejected");
  CHECK_FALSE(review.final());

  auto defaults = compile_ok(k_head + R"(spec:
  type: fsm
  initial: only
  states: {only: {agent: std.echo, final: true}}
)");
  CHECK(defaults.fsm().max_transitions() == 1000);
  CHECK(defaults.fsm().states(0).final());
  CHECK(defaults.fsm().states(0).call().kind() == af::v1::STEP_AGENT);
}

TEST_CASE("plan: a bt with every node type and decorator", "[plan]") {
  auto ir = compile_ok(k_bt);
  CHECK(ir.type() == af::v1::PLAN_BT);
  const auto& root = ir.root();
  CHECK(root.id() == "root");
  CHECK(root.type() == af::v1::BT_SEQUENCE);
  CHECK(root.pos().line() == 8);
  REQUIRE(root.children_size() == 3);

  const auto& cond = root.children(0);
  CHECK(cond.id() == "root/0");
  CHECK(cond.type() == af::v1::BT_CONDITION);
  CHECK(cond.expr() == "inputs.enabled");
  CHECK_FALSE(cond.has_call());

  const auto& pick = root.children(1);
  CHECK(pick.id() == "pick");
  CHECK(pick.type() == af::v1::BT_SELECTOR);
  REQUIRE(pick.children_size() == 2);
  CHECK(pick.children(0).id() == "first");
  CHECK(pick.children(0).type() == af::v1::BT_ACTION);
  CHECK(pick.children(0).call().target() == "std.fail");
  CHECK(pick.children(0).call().input_json() == R"({"always":true})");
  const auto& retry = pick.children(1);
  CHECK(retry.id() == "root/1/1");
  CHECK(retry.type() == af::v1::BT_RETRY);
  CHECK(retry.times() == 3);
  REQUIRE(retry.children_size() == 1);
  CHECK(retry.children(0).id() == "root/1/1/0");
  CHECK(retry.children(0).call().kind() == af::v1::STEP_TOOL);
  CHECK(retry.children(0).call().timeout_ms() == 2000);

  const auto& par = root.children(2);
  CHECK(par.id() == "root/2");
  CHECK(par.type() == af::v1::BT_PARALLEL);
  CHECK(par.success_threshold() == 1);
  REQUIRE(par.children_size() == 4);
  const auto& slow = par.children(0);
  CHECK(slow.id() == "slow");
  CHECK(slow.type() == af::v1::BT_TIMEOUT);
  CHECK(slow.after_ms() == 5000);
  CHECK(slow.children(0).id() == "root/2/0/0");
  CHECK(slow.children(0).call().target() == "std.sleep");
  const auto& inv = par.children(1);
  CHECK(inv.type() == af::v1::BT_INVERTER);
  REQUIRE(inv.children_size() == 1);
  CHECK(inv.children(0).id() == "root/2/1/0");
  CHECK(inv.children(0).type() == af::v1::BT_CONDITION);
  CHECK(inv.children(0).call().kind() == af::v1::STEP_AGENT);
  CHECK(inv.children(0).call().input_json() == R"({"n":"${steps.first.output}"})");
  CHECK(par.children(2).call().kind() == af::v1::STEP_APPROVAL);
  CHECK(par.children(2).call().approval_json() == "{}");
  CHECK(par.children(3).call().kind() == af::v1::STEP_WAIT);
  CHECK(par.children(3).call().wait_ms() == 1000);
}

TEST_CASE("plan: durations", "[plan]") {
  auto wait_of = [](const std::string& d) {
    auto r = compile_text(k_head + "spec: {type: dag, steps: [{id: w, wait: " + d + "}]}\n", "p");
    return r ? r->steps(0).call().wait_ms() : std::int64_t{-1};
  };
  CHECK(wait_of("250") == 250);
  CHECK(wait_of("250ms") == 250);
  CHECK(wait_of("\"1.5s\"") == 1500);
  CHECK(wait_of("2m") == 120'000);
  CHECK(wait_of("1h") == 3'600'000);
  CHECK(wait_of("0.25s") == 250);
  CHECK(wait_of("0") == 0);
  CHECK(wait_of("1.5ms") == -1); // not a whole number of milliseconds
  CHECK(wait_of("-5s") == -1);
  CHECK(wait_of("5 s") == -1);
  CHECK(wait_of("5d") == -1);
  CHECK(wait_of("1.5") == -1);
  CHECK(wait_of("s") == -1);
}

TEST_CASE("plan: sub-plans are compiled, embedded once and checked against their inputs",
          "[plan]") {
  temp_dir dir;
  fs::create_directories(dir.path() / "lib");
  dir.write("lib/summarize.yaml", k_head + R"(spec:
  type: dag
  inputs: {text: {required: true}, style: short}
  steps:
    - id: leaf
      plan: leaf.yaml
    - id: sum
      agent: std.echo
      input: {text: "${inputs.text}", style: "${inputs.style}"}
)");
  dir.write("lib/leaf.yaml", k_head + "spec: {type: dag, steps: [{id: one, wait: 1s}]}\n");
  auto main = dir.write("main.yaml", R"(apiVersion: agentflow/v1
kind: Plan
metadata: {name: main}
spec:
  type: dag
  steps:
    - id: first
      plan: lib/summarize.yaml
      input: {text: "one"}
    - id: second
      plan: ./lib/../lib/summarize.yaml
      input: {text: "${steps.first.output}", style: long}
    - id: leaf
      plan: lib/leaf.yaml
)");
  auto r = compile_file(main);
  if (!r) FAIL(r.error().message());
  const auto& ir = *r;
  CHECK(ir.source() == main);
  // summarize.yaml twice, leaf.yaml once (summarize embeds its own copy of leaf).
  REQUIRE(ir.sub_plans_size() == 2);
  CHECK(ir.sub_plans(0).hash() < ir.sub_plans(1).hash());
  const auto& first = step(ir, "first");
  const auto& second = step(ir, "second");
  const auto& leaf = step(ir, "leaf");
  CHECK(first.call().kind() == af::v1::STEP_PLAN);
  CHECK(first.call().sub_plan() == second.call().sub_plan());
  CHECK(first.call().sub_plan() != leaf.call().sub_plan());
  const auto& summarize = ir.sub_plans(static_cast<int>(first.call().sub_plan()));
  CHECK(summarize.source() == (dir.path() / "lib/summarize.yaml").string());
  CHECK(summarize.inputs_size() == 2);
  REQUIRE(summarize.sub_plans_size() == 1);
  CHECK(summarize.sub_plans(0).steps(0).call().wait_ms() == 1000);
  CHECK(ir.sub_plans(static_cast<int>(leaf.call().sub_plan())).hash()
        == summarize.sub_plans(0).hash());
  CHECK(second.call().input_json() == R"({"style":"long","text":"${steps.first.output}"})");
  CHECK(after_of(second) == std::vector<std::string>{"first"});

  SECTION("compile_text resolves sub-plans against base_dir") {
    af::plan::compile_options opts;
    opts.base_dir = dir.path() / "lib";
    auto t = compile_ok(k_head + "spec: {type: dag, steps: [{id: s, plan: leaf.yaml}]}\n", opts);
    CHECK(t.sub_plans_size() == 1);
  }
  SECTION("an input the sub-plan does not declare") {
    auto bad = dir.write("bad.yaml", k_head + R"(spec:
  type: dag
  steps:
    - id: s
      plan: lib/summarize.yaml
      input: {text: a, colour: red}
)");
    auto e = compile_file(bad);
    REQUIRE_FALSE(e);
    CHECK(e.error().message()
          == bad + ":8:13: step 's': input: 'colour' is not an input of the sub-plan '"
                 + (dir.path() / "lib/summarize.yaml").string()
                 + "'; expected one of: style, text");
  }
  SECTION("a missing required input of the sub-plan") {
    auto bad = dir.write(
        "bad.yaml", k_head + "spec: {type: dag, steps: [{id: s, plan: lib/summarize.yaml}]}\n");
    auto e = compile_file(bad);
    REQUIRE_FALSE(e);
    CHECK(e.error().message()
          == bad + ":4:41: step 's': input: missing 'text', a required input of the sub-plan '"
                 + (dir.path() / "lib/summarize.yaml").string() + "'");
  }
  SECTION("a missing sub-plan file is not_found") {
    auto bad =
        dir.write("bad.yaml", k_head + "spec: {type: dag, steps: [{id: s, plan: nope.yaml}]}\n");
    auto e = compile_file(bad);
    REQUIRE_FALSE(e);
    CHECK(e.error().code() == af::errc::not_found);
    CHECK(e.error().message()
          == bad + ":4:41: step 's': plan: file 'nope.yaml' not found (looked for "
                 + (dir.path() / "nope.yaml").string() + ")");
  }
}

TEST_CASE("plan: an include cycle names the chain of files", "[plan]") {
  temp_dir dir;
  auto a = dir.write("a.yaml", k_head + "spec: {type: dag, steps: [{id: x, plan: b.yaml}]}\n");
  auto b = dir.write("b.yaml", k_head + R"(spec:
  type: dag
  steps:
    - id: y
      plan: a.yaml
)");
  auto r = compile_file(a);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::validation);
  CHECK(r.error().message()
        == b + ":8:13: step 'y': plan: include cycle: " + a + " -> " + b + " -> " + a
               + "; expected sub-plans that do not include themselves");

  auto self =
      dir.write("self.yaml", k_head + "spec: {type: dag, steps: [{id: x, plan: self.yaml}]}\n");
  auto s = compile_file(self);
  REQUIRE_FALSE(s);
  CHECK_THAT(s.error().message(),
             Catch::Matchers::Contains("include cycle: " + self + " -> " + self));
}

TEST_CASE("plan: a missing plan file is not_found", "[plan]") {
  temp_dir dir;
  auto r = compile_file(dir.path() / "missing.yaml");
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::not_found);
  CHECK(r.error().message()
        == "plan file '" + (dir.path() / "missing.yaml").string() + "' not found");
}

// ---- errors ---------------------------------------------------------------------------------

TEST_CASE("plan: document errors", "[plan]") {
  CHECK(compile_error("")
        == "plan.yaml: empty plan; expected a map with apiVersion, kind, "
           "metadata and spec");
  CHECK(compile_error("- a\n") == "plan.yaml:1:1: expected a map, got a list");
  CHECK_THAT(compile_error("a: [1,\n"), Catch::Matchers::StartsWith("plan.yaml:")
                                            && Catch::Matchers::Contains(": invalid YAML: "));
  CHECK(compile_error("apiVersion: agentflow/v2\nkind: Plan\n")
        == "plan.yaml:1:13: apiVersion: 'agentflow/v2'; expected agentflow/v1");
  CHECK(compile_error("kind: Plan\n")
        == "plan.yaml:1:1: missing 'apiVersion'; expected "
           "apiVersion: agentflow/v1");
  CHECK(compile_error("apiVersion: agentflow/v1\nkind: Flow\n")
        == "plan.yaml:2:7: kind: 'Flow'; expected Plan");
  CHECK(compile_error("apiVersion: agentflow/v1\nkind: Plan\nmetadata: {name: x}\nspecs: {}\n")
        == "plan.yaml:4:1: unknown key 'specs' (expected one of: apiVersion, kind, metadata, "
           "spec)");
  CHECK(compile_error("apiVersion: agentflow/v1\nkind: Plan\nmetadata: {tenant: x}\nspec: {}\n")
        == "plan.yaml:3:11: metadata: missing 'name'; expected the plan's name");
  CHECK(compile_error("apiVersion: agentflow/v1\nkind: Plan\nmetadata: {name: x, owner: y}\n")
        == "plan.yaml:3:21: metadata: unknown key 'owner' (expected one of: name, tenant, "
           "description)");
  CHECK(compile_error(k_head + "spec: {type: graph}\n")
        == "plan.yaml:4:14: spec: type: 'graph'; expected dag, fsm, bt or saga");
  CHECK(compile_error(k_head + "spec: {type: dag, states: {}}\n")
        == "plan.yaml:4:19: spec: unknown key 'states' (expected one of: type, inputs, outputs, "
           "steps)");
  CHECK(compile_error(k_head + "spec: {type: dag, steps: {}}\n")
        == "plan.yaml:4:26: spec: steps: expected a non-empty list of steps, got a map");
  CHECK(compile_error(k_head + "spec: {type: dag, steps: []}\n")
        == "plan.yaml:4:26: spec: steps: expected a non-empty list of steps, got an empty list");
}

TEST_CASE("plan: dag step errors name file:line:col", "[plan]") {
  auto plan = [](const std::string& steps) {
    return k_head + "spec:\n  type: dag\n  inputs: {topic: x}\n  steps:\n" + steps;
  };
  // Steps start at line 8.
  SECTION("unknown key") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      aftr: [b]\n"))
          == "plan.yaml:10:7: step 'a': unknown key 'aftr' (expected one of: id, agent, tool, "
             "plan, wait, approval, node, input, after, for_each, retry, timeout)");
  }
  SECTION("missing id") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n    - agent: std.echo\n"))
          == "plan.yaml:10:7: step 2: missing 'id'; expected an id made of [A-Za-z0-9_-]");
  }
  SECTION("invalid id") {
    CHECK(compile_error(plan("    - id: a.b\n      agent: std.echo\n"))
          == "plan.yaml:8:11: step 'a.b': invalid id; expected 1 to 128 characters of "
             "[A-Za-z0-9_-]");
  }
  SECTION("duplicate id") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n    - id: a\n      wait: 1s\n"))
          == "plan.yaml:10:7: step 'a': duplicate step id 'a' (first at line 8); expected unique "
             "ids");
  }
  SECTION("two kinds in one step") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      tool: web\n"))
          == "plan.yaml:10:7: step 'a': both 'agent' and 'tool' given; expected exactly one of "
             "agent, tool, plan, wait, approval");
  }
  SECTION("a wait step with a timeout") {
    CHECK(compile_error(plan("    - id: a\n      wait: 1s\n      timeout: 5s\n"))
          == "plan.yaml:10:7: step 'a': timeout: a wait step has no timeout (its duration is the "
             "wait); expected no timeout here");
  }
  SECTION("no kind") {
    CHECK(compile_error(plan("    - id: a\n      input: {}\n"))
          == "plan.yaml:8:7: step 'a': nothing to run; expected one of agent, tool, plan, wait, "
             "approval");
  }
  SECTION("unknown after") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n    - id: b\n      agent: "
                             "std.echo\n      after: [a, zz]\n"))
          == "plan.yaml:12:18: step 'b': after: unknown step 'zz'; expected one of: a, b");
  }
  SECTION("after of the wrong type") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      after: {b: 1}\n"))
          == "plan.yaml:10:14: step 'a': after: expected a list of step ids, got a map");
  }
  SECTION("a cycle through after") {
    CHECK(compile_error(plan("    - {id: x, agent: std.echo}\n"
                             "    - {id: a, agent: std.echo, after: [c]}\n"
                             "    - {id: b, agent: std.echo, after: [a, x]}\n"
                             "    - {id: c, agent: std.echo, after: [b]}\n"))
          == "plan.yaml:9:7: cycle: a -> b -> c -> a; expected the steps' after and ${steps.X} "
             "references to form a DAG");
  }
  SECTION("a cycle through references") {
    CHECK_THAT(compile_error(
                   plan("    - {id: a, agent: std.echo, input: {v: \"${steps.c.output}\"}}\n"
                        "    - {id: b, agent: std.echo, after: [a]}\n"
                        "    - {id: c, agent: std.echo, input: {v: \"${steps.b.output.x}\"}}\n")),
               Catch::Matchers::StartsWith("plan.yaml:8:7: cycle: a -> b -> c -> a;"));
    CHECK_THAT(compile_error(plan("    - {id: a, agent: std.echo, after: [a]}\n")),
               Catch::Matchers::StartsWith("plan.yaml:8:7: cycle: a -> a;"));
  }
  SECTION("${item} outside for_each") {
    CHECK(compile_error(
              plan("    - id: a\n      agent: std.echo\n      input: {x: \"${item.name}\"}\n"))
          == "plan.yaml:10:18: step 'a': input: ${item} is only allowed in the input of a step "
             "with for_each");
  }
  SECTION("${item} in for_each itself") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      for_each: \"${item}\"\n"))
          == "plan.yaml:10:17: step 'a': for_each: a for_each cannot read ${item}; expected a list "
             "from ${inputs.NAME} or ${steps.ID.output}");
  }
  SECTION("for_each with text around the expression") {
    CHECK(compile_error(
              plan("    - id: a\n      agent: std.echo\n      for_each: \"all ${inputs.topic}\"\n"))
          == "plan.yaml:10:17: step 'a': for_each: 'all ${inputs.topic}': expected exactly one "
             "expression such as ${steps.ID.output}");
  }
  SECTION("bad duration") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      timeout: 5 seconds\n"))
          == "plan.yaml:10:16: step 'a': timeout: '5 seconds': expected a duration: integer "
             "milliseconds or a number with a unit ms, s, m or h (250ms, 1.5s, 2m)");
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      retry: {backoff: 1.5ms}\n"))
          == "plan.yaml:10:24: step 'a': retry: backoff: '1.5ms': expected a duration: integer "
             "milliseconds or a number with a unit ms, s, m or h (250ms, 1.5s, 2m)");
  }
  SECTION("retry") {
    CHECK(
        compile_error(plan("    - id: a\n      agent: std.echo\n      retry: {max_attempts: 0}\n"))
        == "plan.yaml:10:29: step 'a': retry: max_attempts: '0': expected an integer in 1..1000");
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      retry: {tries: 2}\n"))
          == "plan.yaml:10:15: step 'a': retry: unknown key 'tries' (expected one of: "
             "max_attempts, backoff, max_backoff, multiplier)");
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      retry: {backoff: 2s, "
                             "max_backoff: 1s}\n"))
          == "plan.yaml:10:14: step 'a': retry: max_backoff (1000 ms) is shorter than backoff "
             "(2000 ms); expected max_backoff >= backoff");
  }
  SECTION("unknown input") {
    CHECK(compile_error(plan(
              "    - id: a\n      agent: std.echo\n      input: {q: \"about ${inputs.topc}\"}\n"))
          == "plan.yaml:10:18: step 'a': input: unknown input 'topc' in ${inputs.topc}; expected "
             "one of the plan's inputs: topic");
  }
  SECTION("unknown step in a reference") {
    CHECK(compile_error(plan(
              "    - id: a\n      agent: std.echo\n      input: {q: [\"${steps.zz.output}\"]}\n"))
          == "plan.yaml:10:19: step 'a': input: unknown step 'zz' in ${steps.zz.output}; expected "
             "one of: a");
  }
  SECTION("expression syntax") {
    CHECK(compile_error(
              plan("    - id: a\n      agent: std.echo\n      input: {q: \"${inputs.topic\"}\n"))
          == "plan.yaml:10:18: step 'a': input: '${inputs.topic': unclosed '${' at offset 0; "
             "expected '}'");
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      input: {q: \"${}\"}\n"))
          == "plan.yaml:10:18: step 'a': input: ${}: empty expression; expected inputs.NAME, "
             "steps.ID.output or item");
    CHECK(compile_error(
              plan("    - id: a\n      agent: std.echo\n      input: {q: \"${secrets.key}\"}\n"))
          == "plan.yaml:10:18: step 'a': input: ${secrets.key}: unknown root 'secrets'; expected "
             "inputs, steps or item");
  }
  SECTION("input of the wrong type") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      input: [1, 2]\n"))
          == "plan.yaml:10:14: step 'a': input: expected a map, got a list");
  }
  SECTION("approval settings") {
    CHECK(compile_error(plan("    - id: a\n      approval: {who: bob}\n"))
          == "plan.yaml:9:18: step 'a': approval: unknown key 'who' (expected one of: prompt)");
  }
  SECTION("an empty agent name") {
    CHECK(compile_error(plan("    - id: a\n      agent:\n"))
          == "plan.yaml:9:7: step 'a': agent: expected a non-empty string, got a null");
  }
  SECTION("duplicate keys") {
    CHECK(compile_error(plan("    - id: a\n      agent: std.echo\n      agent: std.fail\n"))
          == "plan.yaml:10:7: step 'a': duplicate key 'agent' (first at line 9)");
  }
}

TEST_CASE("plan: input and output errors", "[plan]") {
  CHECK(compile_error(k_head
                      + "spec:\n  type: dag\n  inputs: {a: {required: true, default: 1}}\n"
                        "  steps: [{id: s, wait: 1}]\n")
        == "plan.yaml:6:32: input 'a': both a default and 'required: true'; expected one of them");
  CHECK(compile_error(k_head
                      + "spec:\n  type: dag\n  inputs: {a: {value: 1}}\n"
                        "  steps: [{id: s, wait: 1}]\n")
        == "plan.yaml:6:16: input 'a': unknown key 'value' (expected one of: default, required, "
           "description)");
  CHECK(compile_error(k_head
                      + "spec:\n  type: dag\n  inputs: {a.b: 1}\n"
                        "  steps: [{id: s, wait: 1}]\n")
        == "plan.yaml:6:12: input 'a.b': invalid input name; expected 1 to 128 characters of "
           "[A-Za-z0-9_-]");
  CHECK(compile_error(k_head
                      + "spec:\n  type: dag\n  outputs: {r: \"${steps.t.output}\"}\n"
                        "  steps: [{id: s, wait: 1}]\n")
        == "plan.yaml:6:16: spec: outputs: unknown step 't' in ${steps.t.output}; expected one "
           "of: s");
  CHECK(compile_error(k_head
                      + "spec:\n  type: dag\n  outputs: {r: \"${inputs.x}\"}\n"
                        "  steps: [{id: s, wait: 1}]\n")
        == "plan.yaml:6:16: spec: outputs: unknown input 'x' in ${inputs.x}; expected one of the "
           "plan's inputs: (none)");

  auto ir = compile_ok(k_head
                       + "spec:\n  type: dag\n  inputs: {a: {}, b: [1, 2], c: {default: "
                         "{k: v}}, d: ~, e: \"3\"}\n  steps: [{id: s, wait: 1}]\n");
  REQUIRE(ir.inputs_size() == 5);
  CHECK(ir.inputs(0).default_json() == "null");
  CHECK_FALSE(ir.inputs(0).required());
  CHECK(ir.inputs(1).default_json() == "[1,2]");
  CHECK(ir.inputs(2).default_json() == R"({"k":"v"})");
  CHECK(ir.inputs(3).default_json() == "null");
  CHECK(ir.inputs(4).default_json() == R"("3")");
}

TEST_CASE("plan: fsm errors", "[plan]") {
  auto fsm = [](const std::string& rest) { return k_head + "spec:\n  type: fsm\n" + rest; };
  CHECK(compile_error(fsm("  initial: a\n  states:\n    a: {agent: std.echo, on: {ok: b}}\n"
                          "    c: {final: true}\n"))
        == "plan.yaml:8:35: state 'a': on: unknown state 'b'; expected one of: a, c");
  CHECK(compile_error(fsm("  states:\n    a: {agent: std.echo, final: true}\n"))
        == "plan.yaml:5:3: spec: missing 'initial'; expected the name of the first state, one "
           "of: a");
  CHECK(compile_error(fsm("  initial: start\n  states:\n    a: {agent: std.echo, final: true}\n"))
        == "plan.yaml:6:12: spec: initial: unknown state 'start'; expected one of: a");
  CHECK(compile_error(fsm("  initial: a\n  states:\n    a: {agent: std.echo, on: {ok: b}}\n"
                          "    b: {agent: std.echo, on: {ok: a}}\n"))
        == "plan.yaml:8:5: spec: states: no final state; expected at least one state with "
           "'final: true'");
  CHECK(compile_error(fsm("  initial: a\n  states:\n    a: {agent: std.echo}\n    b: {final: "
                          "true}\n"))
        == "plan.yaml:8:8: state 'a': not final and no transitions; expected 'on: {OUTCOME: "
           "STATE}' or 'final: true'");
  CHECK(compile_error(fsm("  initial: a\n  states:\n    a: {final: true, on: {ok: a}}\n"))
        == "plan.yaml:8:8: state 'a': a final state has transitions; expected either 'final: "
           "true' or 'on'");
  CHECK(compile_error(fsm("  initial: a\n  states:\n    a#1: {final: true}\n"))
        == "plan.yaml:8:5: state 'a#1': invalid state name; expected 1 to 128 characters of "
           "[A-Za-z0-9_-]");
  CHECK(compile_error(fsm("  initial: a\n  states:\n    a: {final: yes}\n"))
        == "plan.yaml:8:16: state 'a': final: expected true or false");
  CHECK(compile_error(fsm("  initial: a\n  states:\n    a: {final: true, after: [b]}\n"))
        == "plan.yaml:8:22: state 'a': unknown key 'after' (expected one of: agent, tool, plan, "
           "wait, approval, node, input, retry, timeout, on, final)");
  CHECK(compile_error(
            fsm("  initial: a\n  states:\n    a: {agent: x, input: {v: \"${steps.zz.output}\"}, "
                "final: true}\n"))
        == "plan.yaml:8:30: state 'a': input: unknown step 'zz' in ${steps.zz.output}; expected "
           "one of: a");
  CHECK(compile_error(fsm("  initial: a\n  max_transitions: 0\n  states:\n    a: {final: true}\n"))
        == "plan.yaml:7:20: spec: max_transitions: '0': expected an integer in 1..100000000");
}

TEST_CASE("plan: bt errors", "[plan]") {
  auto bt = [](const std::string& root) { return k_head + "spec:\n  type: bt\n  root:\n" + root; };
  CHECK(compile_error(bt("    parallel:\n      success_threshold: 3\n      children:\n"
                         "        - action: {agent: a}\n        - action: {agent: b}\n"))
        == "plan.yaml:8:26: node 'root': parallel: success_threshold: 3 exceeds the number of "
           "children (2); expected 0 (all) to 2");
  CHECK(compile_error(
            bt("    sequence: [{action: {agent: a}}]\n    selector: [{action: {agent: b}}]\n"))
        == "plan.yaml:8:5: node 'root': both 'sequence' and 'selector' given; expected exactly one "
           "node type of: sequence, selector, parallel, condition, action, inverter, retry, "
           "timeout");
  CHECK(compile_error(bt("    id: top\n"))
        == "plan.yaml:7:5: node 'top': no node type; expected one of: sequence, selector, "
           "parallel, condition, action, inverter, retry, timeout");
  CHECK(compile_error(bt("    sequence:\n      - {id: x, action: {agent: a}}\n      - {id: x, "
                         "action: {agent: b}}\n"))
        == "plan.yaml:9:9: node 'x': duplicate node id 'x' (first at line 8); expected unique "
           "ids");
  CHECK(compile_error(bt("    retry: {child: {action: {agent: a}}}\n"))
        == "plan.yaml:7:12: node 'root': retry: missing 'times'; expected the number of attempts "
           "(>= 1)");
  CHECK(compile_error(bt("    timeout: {after: 0, child: {action: {agent: a}}}\n"))
        == "plan.yaml:7:22: node 'root': timeout: after: 0 ms; expected a positive duration");
  CHECK(compile_error(bt("    sequence: []\n"))
        == "plan.yaml:7:15: node 'root': sequence: expected a non-empty list of nodes, got an "
           "empty list");
  CHECK(compile_error(bt("    sequence: [{action: {agent: a}}, {wait: 1s}]\n"))
        == "plan.yaml:7:39: node 'root/1': unknown key 'wait' (expected one of: id, sequence, "
           "selector, parallel, condition, action, inverter, retry, timeout)");
  CHECK(compile_error(bt("    condition: {plan: x.yaml}\n"))
        == "plan.yaml:7:17: node 'root': condition: unknown key 'plan' (expected one of: agent, "
           "tool, node, input)");
  CHECK(compile_error(bt("    condition: \"${steps.root.output}\"\n"))
        == "plan.yaml:7:16: node 'root': condition: unknown step 'root' in ${steps.root.output}; "
           "expected one of: (none)");
  CHECK(compile_error(bt("    condition: inputs.enabled\n"))
        == "plan.yaml:7:16: node 'root': condition: unknown input 'enabled' in "
           "${inputs.enabled}; expected one of the plan's inputs: (none)");
  CHECK(compile_error(bt("    condition: \"is ${inputs.x}\"\n"))
        == "plan.yaml:7:16: node 'root': condition: 'is ${inputs.x}': expected exactly one "
           "expression such as ${steps.ID.output}");
  std::string deep = "    ";
  std::string deepest = "root";
  for (int i = 0; i < 70; ++i)
    deep += "{inverter: ";
  deep += "{action: {agent: a}}" + std::string(70, '}') + "\n";
  for (int i = 0; i < 65; ++i)
    deepest += "/0";
  CHECK_THAT(compile_error(bt(deep)),
             Catch::Matchers::EndsWith(": node '" + deepest
                                       + "': the tree is deeper than 64 levels; expected a "
                                         "shallower tree"));
  CHECK(compile_error(bt("    action: {agent: a, input: {x: \"${item}\"}}\n"))
        == "plan.yaml:7:35: node 'root': action: input: ${item} is only allowed in the input of a "
           "step with for_each");
}

// ---- the hash -------------------------------------------------------------------------------

namespace {

/// Re-emits `n` with map keys shuffled, flow or block style chosen at random and comments
/// sprinkled between block entries: the same plan, written differently.
void emit_shuffled(YAML::Emitter& out, const YAML::Node& n, std::mt19937& rng, bool in_flow) {
  auto coin = [&] { return std::uniform_int_distribution<int>{0, 1}(rng) == 1; };
  switch (n.Type()) {
  case YAML::NodeType::Map: {
    // YAML::Node assignment writes through to the node, so shuffle indexes, not nodes.
    std::vector<std::pair<YAML::Node, YAML::Node>> kv;
    for (const auto& e : n)
      kv.emplace_back(e.first, e.second);
    std::vector<std::size_t> order(kv.size());
    for (std::size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    bool flow = in_flow || coin();
    out << (flow ? YAML::Flow : YAML::Block) << YAML::BeginMap;
    for (auto i : order) {
      if (!flow && coin()) out << YAML::Comment("a comment");
      out << YAML::Key << kv[i].first.Scalar() << YAML::Value;
      emit_shuffled(out, kv[i].second, rng, flow);
    }
    out << YAML::EndMap;
    break;
  }
  case YAML::NodeType::Sequence: {
    bool flow = in_flow || coin();
    out << (flow ? YAML::Flow : YAML::Block) << YAML::BeginSeq;
    for (const auto& e : n)
      emit_shuffled(out, e, rng, flow);
    out << YAML::EndSeq;
    break;
  }
  case YAML::NodeType::Scalar:
    if (n.Tag() == "!")
      out << YAML::DoubleQuoted << n.Scalar();
    else
      out << n.Scalar();
    break;
  default:
    out << YAML::Null;
  }
}

std::string reformatted(const std::string& yaml, std::uint32_t seed) {
  std::mt19937 rng{seed};
  YAML::Emitter out;
  out.SetIndent(2 + static_cast<int>(seed % 3));
  emit_shuffled(out, YAML::Load(yaml), rng, false);
  return "# reformatted with seed " + std::to_string(seed) + "\n" + out.c_str() + "\n";
}

} // namespace

TEST_CASE("plan: the hash ignores key order, layout and comments", "[plan]") {
  for (const auto* plan : {&k_research, &k_fsm, &k_bt}) {
    auto base = compile_ok(*plan);
    CHECK(af::plan::plan_hash_hex(base).size() == 64);
    int reordered = 0;
    for (std::uint32_t seed = 1; seed <= 25; ++seed) {
      auto text = reformatted(*plan, seed);
      if (text.find("spec") < text.find("apiVersion")) ++reordered;
      auto r = compile_text(text, "other.yaml");
      if (!r) FAIL("seed " << seed << ": " << r.error().message() << "\n" << text);
      INFO("seed " << seed << "\n" << text);
      CHECK(r->hash() == base.hash());
      CHECK(af::plan::plan_hash_hex(*r) == af::plan::plan_hash_hex(base));
    }
    CHECK(reordered > 5); // the generator really moves keys around
  }
}

TEST_CASE("plan: the hash changes with any semantic change", "[plan]") {
  struct change {
    const std::string* plan;
    std::string from, to;
  };
  const std::vector<change> changes = {
      {&k_research, "timeout: 1.5s", "timeout: 1.6s"},
      {&k_research, "max_attempts: 4", "max_attempts: 5"},
      {&k_research, "tool: http.get", "agent: http.get"},
      {&k_research, "topic: actors", "topic: actor"},
      {&k_research, "count: {default: 3,", "count: {default: \"3\","},
      {&k_research, "after: [search]", "after: [search, fetch]"},
      {&k_research, "wait: 2m", "wait: 3m"},
      {&k_research, "prompt: \"Publish?\"", "prompt: \"Publish!\""},
      {&k_research, "tenant: acme", "tenant: acme2"},
      {&k_research, "key: {required: true}", "key: {required: false}"},
      {&k_research, "outputs: {summary:", "outputs: {summry:"},
      {&k_fsm, "initial: draft", "initial: review"},
      {&k_fsm, "rejected: draft", "rejected: failed"},
      {&k_fsm, "max_transitions: 50", "max_transitions: 51"},
      {&k_bt, "success_threshold: 1", "success_threshold: 2"},
      {&k_bt, "times: 3", "times: 4"},
      {&k_bt, "id: first\n", "id: first2\n"},
      {&k_bt, "- action: {approval: {}}\n            - action: {wait: 1s}",
       "- action: {wait: 1s}\n            - action: {approval: {}}"},
  };
  for (const auto& c : changes) {
    auto base = compile_ok(*c.plan);
    auto text = *c.plan;
    auto at = text.find(c.from);
    REQUIRE(at != std::string::npos);
    text.replace(at, c.from.size(), c.to);
    if (c.from == "id: first\n") text.replace(text.find("steps.first."), 12, "steps.first2.");
    INFO(c.from << " -> " << c.to);
    auto changed = compile_ok(text);
    CHECK(changed.hash() != base.hash());
  }
  // Positions are not part of the hash; spelling out a default retry policy is not a change.
  auto base = compile_ok(k_fsm);
  auto moved = k_fsm;
  moved.replace(moved.find("  states:\n"), 10, "  states:\n\n\n");
  CHECK(compile_ok(moved).hash() == base.hash());
  auto spelled = compile_ok(k_head
                            + "spec: {type: dag, steps: [{id: s, agent: a, retry: "
                              "{max_attempts: 1}}]}\n");
  auto implicit = compile_ok(k_head + "spec: {type: dag, steps: [{id: s, agent: a}]}\n");
  CHECK(spelled.hash() == implicit.hash());
}

// ---- examples ------------------------------------------------------------------------------

TEST_CASE("plan: every example plan compiles", "[plan]") {
  const fs::path dir = fs::path{AF_SOURCE_DIR} / "examples" / "plans";
  REQUIRE(fs::is_directory(dir));
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".yaml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 3);
  std::set<af::v1::PlanType> types;
  for (const auto& f : files) {
    INFO(f.string());
    auto r = compile_file(f);
    if (!r) FAIL(r.error().message());
    CHECK(r->hash().size() == 32);
    types.insert(r->type());
  }
  CHECK(types
        == std::set<af::v1::PlanType>{af::v1::PLAN_DAG, af::v1::PLAN_FSM, af::v1::PLAN_BT,
                                      af::v1::PLAN_SAGA});
}
