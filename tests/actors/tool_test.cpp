// Tool invokers on a real node: a tool's result, its error, a throwing tool (an `internal`
// reply; the invoker stays up), bad input, and what the tool learns about the call.
#include "af/tool/registry.hpp"
#include "step_test_support.hpp"

#include <catch2/catch.hpp>

#include <stdexcept>

using namespace af;
using namespace std::chrono_literals;
using af::test::ask_step;
using af::test::step_request;
using nlohmann::json;

namespace {

/// Sums input.values; reports the call it was made for.
expected<json> sum(const json& in, const tool::call_info& call) {
  if (!in.contains("values") || !in["values"].is_array())
    return validation_error("math.sum: input.values: expected an array of numbers");
  double total = 0;
  for (const auto& v : in["values"]) {
    if (!v.is_number())
      return validation_error("math.sum: input.values: not a number: " + v.dump());
    total += v.get<double>();
  }
  if (in.value("boom", false)) throw std::runtime_error("division by zero in the flux capacitor");
  if (in.value("boom_int", false)) throw 42;
  return json{{"sum", total},
              {"call",
               {{"execution_id", call.execution_id},
                {"step_id", call.step_id},
                {"attempt", call.attempt},
                {"idempotency_key", call.idempotency_key},
                {"tenant", call.tenant}}}};
}

} // namespace

TEST_CASE("a tool invoker answers StepRequests with the tool's result", "[tool]") {
  tool::registry tools;
  REQUIRE(tools.add("math.sum", sum, "adds numbers"));
  auto n = test::quiet_node();
  const auto* t = tools.find("math.sum");
  REQUIRE(t != nullptr);
  auto inv = n->spawn_agent([t] { return tool::make_invoker("math.sum", *t); },
                            tool::invoker_name("math.sum"));
  REQUIRE(inv);
  REQUIRE(inv->name() == "tool.math.sum");

  SECTION("success, with the call's identity") {
    auto r = ask_step(*n, *inv, step_request(R"({"values": [1, 2, 3.5]})", 2, "add", "ex-9"));
    REQUIRE(r);
    REQUIRE((*r)["sum"] == 6.5);
    REQUIRE((*r)["call"]["execution_id"] == "ex-9");
    REQUIRE((*r)["call"]["step_id"] == "add");
    REQUIRE((*r)["call"]["attempt"] == 2);
    REQUIRE((*r)["call"]["idempotency_key"] == "ex-9/add/2");
    REQUIRE_FALSE((*r)["call"]["tenant"].get<std::string>().empty());
  }
  SECTION("the tool's error is the reply") {
    auto r = ask_step(*n, *inv, step_request(R"({"values": [1, "two"]})"));
    REQUIRE_FALSE(r);
    REQUIRE(r.error().code() == errc::validation);
    REQUIRE(r.error().message() == "math.sum: input.values: not a number: \"two\"");
  }
  SECTION("a throwing tool is an internal error; the invoker stays up") {
    auto r = ask_step(*n, *inv, step_request(R"({"values": [], "boom": true})"));
    REQUIRE_FALSE(r);
    REQUIRE(r.error().code() == errc::internal);
    REQUIRE(r.error().message() == "tool 'math.sum' threw: division by zero in the flux capacitor");
    auto odd = ask_step(*n, *inv, step_request(R"({"values": [], "boom_int": true})"));
    REQUIRE(odd.error().message()
            == "tool 'math.sum' threw: an exception that is not a std::exception");

    auto again = ask_step(*n, *inv, step_request(R"({"values": [4]})"));
    REQUIRE(again);
    REQUIRE((*again)["sum"] == 4);
    REQUIRE(n->lookup("tool.math.sum"));
    REQUIRE(
        test::metric_value(*n, "af_tool_calls_total{outcome=\"exception\",tool_id=\"math.sum\"}")
        == 2);
    REQUIRE(test::metric_value(*n, "af_tool_calls_total{outcome=\"ok\",tool_id=\"math.sum\"}")
            == 1);
  }
  SECTION("input that is not JSON is a validation error naming the tool") {
    auto r = ask_step(*n, *inv, step_request("{oops"));
    REQUIRE_FALSE(r);
    REQUIRE(r.error().code() == errc::validation);
    REQUIRE(r.error().message().starts_with("tool 'math.sum': input_json: invalid JSON: "));
  }
}
