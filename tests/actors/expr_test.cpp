// Tests the plan expression language (actors/src/plan/expr.hpp): eval, render, scan, scan_expr,
// single_expr and truthy, with the exact error messages.
#include "plan/expr.hpp"

#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <string>

namespace {

using af::plan::expr_scope;
using nlohmann::json;

/// A scope over fixed inputs, step outputs and item.
struct fixture {
  json inputs = {{"topic", "actors"}, {"count", 3}, {"cfg", {{"depth", 2}, {"tags", {"a", "b"}}}}};
  std::map<std::string, json, std::less<>> outputs = {
      {"a", {{"items", json::array({{{"name", "x"}}, {{"name", "y"}}})}, {"n", 7}}},
      {"b", "plain text"}};
  json item = {{"name", "x"}, {"size", 10}};

  [[nodiscard]] expr_scope scope(bool with_item = false) const {
    expr_scope s;
    s.inputs = &inputs;
    s.step_output = [this](std::string_view id) -> const json* {
      auto it = outputs.find(id);
      return it == outputs.end() ? nullptr : &it->second;
    };
    s.item = with_item ? &item : nullptr;
    return s;
  }
};

std::string eval_error(std::string_view expr, const expr_scope& scope) {
  auto r = af::plan::eval(expr, scope);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::validation);
  return r.error().message();
}

std::string render_error(const json& tmpl, const expr_scope& scope) {
  auto r = af::plan::render(tmpl, scope);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::validation);
  return r.error().message();
}

} // namespace

TEST_CASE("expr: eval resolves inputs, step outputs and item paths", "[expr]") {
  fixture f;
  auto s = f.scope(true);
  CHECK(*af::plan::eval("inputs.topic", s) == "actors");
  CHECK(*af::plan::eval("inputs.cfg", s) == f.inputs["cfg"]);
  CHECK(*af::plan::eval("inputs.cfg.depth", s) == 2);
  CHECK(*af::plan::eval("inputs.cfg.tags.1", s) == "b");
  CHECK(*af::plan::eval("steps.a.output", s) == f.outputs["a"]);
  CHECK(*af::plan::eval("steps.a.output.items.0.name", s) == "x");
  CHECK(*af::plan::eval("steps.a.output.n", s) == 7);
  CHECK(*af::plan::eval("item", s) == f.item);
  CHECK(*af::plan::eval("item.size", s) == 10);
  // The ${ } form and surrounding blanks are accepted too.
  CHECK(*af::plan::eval("${steps.a.output.n}", s) == 7);
  CHECK(*af::plan::eval("  inputs.count ", s) == 3);
}

TEST_CASE("expr: eval errors name the expression and the part that failed", "[expr]") {
  fixture f;
  auto s = f.scope();
  CHECK(eval_error("steps.a.output.x", s) == "${steps.a.output.x}: step 'a' output has no key 'x'");
  CHECK(eval_error("steps.zz.output", s) == "${steps.zz.output}: step 'zz' has not completed");
  CHECK(eval_error("inputs.nope", s) == "${inputs.nope}: no input 'nope'");
  CHECK(eval_error("inputs.cfg.tags.5", s)
        == "${inputs.cfg.tags.5}: input 'cfg'.tags has no index 5 (a list of 2)");
  CHECK(eval_error("inputs.cfg.tags.first", s)
        == "${inputs.cfg.tags.first}: input 'cfg'.tags is a list; 'first' is not a list index");
  CHECK(eval_error("steps.a.output.n.deep", s)
        == "${steps.a.output.n.deep}: step 'a' output.n is a number, not a map or list; cannot "
           "read 'deep'");
  CHECK(eval_error("steps.a.output.items.1.name.x", s)
        == "${steps.a.output.items.1.name.x}: step 'a' output.items.1.name is a string, not a map "
           "or list; cannot read 'x'");
  CHECK(eval_error("item", s) == "${item}: no item here (only inside a for_each branch)");
}

TEST_CASE("expr: steps.ID.input reads a step's input where the scope keeps them (sagas)",
          "[expr]") {
  fixture f;
  auto s = f.scope();
  // Without step inputs in the scope (dag, fsm, bt), the reference does not resolve.
  CHECK(eval_error("steps.a.input", s) == "${steps.a.input}: step 'a' has not completed");
  const json in = {{"to", "Oslo"}, {"nights", {3, 4}}};
  s.step_input = [&in](std::string_view id) -> const json* { return id == "a" ? &in : nullptr; };
  CHECK(*af::plan::eval("steps.a.input.to", s) == "Oslo");
  CHECK(*af::plan::eval("${steps.a.input.nights.1}", s) == 4);
  CHECK(eval_error("steps.a.input.from", s)
        == "${steps.a.input.from}: step 'a' input has no key 'from'");
  CHECK(eval_error("steps.b.input", s) == "${steps.b.input}: step 'b' has not completed");
  auto refs = af::plan::scan(json{{"x", "${steps.a.input.to} ${steps.b.output}"}});
  REQUIRE(refs);
  CHECK(refs->steps == std::set<std::string>{"a", "b"});
  CHECK(refs->step_inputs == std::set<std::string>{"a"});
}

TEST_CASE("expr: syntax errors", "[expr]") {
  fixture f;
  auto s = f.scope();
  CHECK(eval_error("", s)
        == "${}: empty expression; expected inputs.NAME, steps.ID.output or item");
  CHECK(eval_error("inputs..x", s)
        == "${inputs..x}: empty path segment; expected names separated by single dots");
  CHECK(eval_error("steps.a.", s)
        == "${steps.a.}: empty path segment; expected names separated by single dots");
  CHECK(eval_error("env.HOME", s)
        == "${env.HOME}: unknown root 'env'; expected inputs, steps or item");
  CHECK(eval_error("inputs", s) == "${inputs}: expected inputs.NAME");
  CHECK(eval_error("steps.a", s)
        == "${steps.a}: expected steps.ID.output[.path] or steps.ID.input[.path]");
  CHECK(eval_error("steps.a.result", s)
        == "${steps.a.result}: expected steps.ID.output[.path] or steps.ID.input[.path]");
  CHECK(render_error("x ${inputs.topic", s)
        == "'x ${inputs.topic': unclosed '${' at offset 2; expected '}'");
  CHECK(eval_error("${inputs.topic} and ${inputs.count}", s)
        == "'${inputs.topic} and ${inputs.count}': expected exactly one expression such as "
           "${steps.ID.output}");
}

TEST_CASE("expr: render replaces whole-string references by values, embedded ones by text",
          "[expr]") {
  fixture f;
  auto s = f.scope(true);
  json tmpl = {
      {"whole_list", "${steps.a.output.items}"},
      {"whole_num", "${inputs.count}"},
      {"text", "topic=${inputs.topic}, n=${steps.a.output.n}, cfg=${inputs.cfg.tags}"},
      {"nested", {{"deep", json::array({"${item.name}", 5, true, nullptr})}}},
      {"escaped", "cost: $${inputs.topic} and $5"},
      {"${inputs.topic}", "keys are left alone"},
      {"plain", "no references"},
  };
  auto r = af::plan::render(tmpl, s);
  REQUIRE(r);
  CHECK((*r)["whole_list"] == f.outputs["a"]["items"]);
  CHECK((*r)["whole_num"] == 3);
  CHECK((*r)["whole_num"].is_number_integer());
  CHECK((*r)["text"] == "topic=actors, n=7, cfg=[\"a\",\"b\"]");
  CHECK((*r)["nested"] == json{{"deep", json::array({"x", 5, true, nullptr})}});
  CHECK((*r)["escaped"] == "cost: ${inputs.topic} and $5");
  CHECK((*r)["${inputs.topic}"] == "keys are left alone");
  CHECK((*r)["plain"] == "no references");
  // A lone reference with blanks around it is text, not a value.
  CHECK(*af::plan::render(json(" ${inputs.count}"), s) == " 3");
  CHECK(*af::plan::render(json(42), s) == 42);
}

TEST_CASE("expr: render errors", "[expr]") {
  fixture f;
  auto s = f.scope();
  CHECK(render_error(json{{"x", {"ok", "${steps.b.output}", "${steps.c.output}"}}}, s)
        == "${steps.c.output}: step 'c' has not completed");
  CHECK(render_error(json("hello ${item.name}"), s)
        == "${item.name}: no item here (only inside a for_each branch)");
  CHECK(render_error(json("${ }"), s)
        == "${}: empty expression; expected inputs.NAME, steps.ID.output or item");
}

TEST_CASE("expr: scan finds step ids, input names and item", "[expr]") {
  json tmpl = {{"q", "${inputs.topic} by ${steps.search.output.items.0}"},
               {"list", {"${item.name}", "$${steps.escaped.output}", 3}},
               {"${steps.key.output}", "${steps.fetch.output}"}};
  auto r = af::plan::scan(tmpl);
  REQUIRE(r);
  CHECK(r->steps == std::set<std::string>{"fetch", "search"});
  CHECK(r->inputs == std::set<std::string>{"topic"});
  CHECK(r->item);

  auto none = af::plan::scan(json{{"a", 1}, {"b", "text"}});
  REQUIRE(none);
  CHECK(none->steps.empty());
  CHECK(none->inputs.empty());
  CHECK_FALSE(none->item);

  auto bad = af::plan::scan(json{{"a", "${steps..output}"}});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message()
        == "${steps..output}: empty path segment; expected names separated by single dots");
}

TEST_CASE("expr: scan_expr and single_expr take one expression with or without ${ }", "[expr]") {
  auto bare = af::plan::scan_expr("steps.a.output.items");
  REQUIRE(bare);
  CHECK(bare->steps == std::set<std::string>{"a"});
  auto wrapped = af::plan::scan_expr("${inputs.list}");
  REQUIRE(wrapped);
  CHECK(wrapped->inputs == std::set<std::string>{"list"});
  auto item = af::plan::scan_expr("item.x");
  REQUIRE(item);
  CHECK(item->item);
  auto bad = af::plan::scan_expr("${nope.x}");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message() == "${nope.x}: unknown root 'nope'; expected inputs, steps or item");

  CHECK(*af::plan::single_expr(" ${ steps.a.output.items } ") == "steps.a.output.items");
  CHECK(*af::plan::single_expr("inputs.x") == "inputs.x");
  auto two = af::plan::single_expr("${inputs.x}${inputs.y}");
  REQUIRE_FALSE(two);
  CHECK(two.error().message()
        == "'${inputs.x}${inputs.y}': expected exactly one expression such as ${steps.ID.output}");
  auto text = af::plan::single_expr("items: ${inputs.x}");
  REQUIRE_FALSE(text);
}

TEST_CASE("expr: truthy", "[expr]") {
  using af::plan::truthy;
  for (const auto& v : {json(false), json(nullptr), json(0), json(0.0), json(0u), json(""),
                        json("false"), json::array(), json::object()})
    CHECK_FALSE(truthy(v));
  for (const auto& v : {json(true), json(1), json(-1), json(0.5), json("0"), json("no"),
                        json("False"), json::array({false}), json{{"a", nullptr}}})
    CHECK(truthy(v));
}
