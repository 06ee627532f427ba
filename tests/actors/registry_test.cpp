// The registries of agent types and tools: name rules, duplicates, lookup.
#include "af/plan/agents.hpp"
#include "af/tool/registry.hpp"

#include <catch2/catch.hpp>

using namespace af;

namespace {

class nothing : public agent_base<nothing> {
public:
  static void define(handlers<nothing>& h) { h.kind("test.nothing"); }
};

} // namespace

TEST_CASE("agent_types: names are [A-Za-z0-9_.-]+ and unique", "[std]") {
  plan::agent_types types;
  REQUIRE(types.add<nothing>("acme.thing-2_b"));
  REQUIRE(types.find("acme.thing-2_b") != nullptr);
  REQUIRE(types.find("acme.thing-2_b")->factory() != nullptr);
  REQUIRE(types.find("acme.other") == nullptr);

  auto dup = types.add<nothing>("acme.thing-2_b");
  REQUIRE_FALSE(dup);
  REQUIRE(dup.error().code() == errc::conflict);
  REQUIRE(dup.error().message() == "agent type 'acme.thing-2_b' is already registered");

  for (const char* bad : {"", "a b", "a/b", "tool:x", "é"}) {
    auto r = types.add<nothing>(bad);
    REQUIRE_FALSE(r);
    REQUIRE(r.error().code() == errc::validation);
  }
  auto r = types.add<nothing>("a/b");
  REQUIRE(r.error().message()
          == "agent type name 'a/b': only letters, digits, '_', '.' and '-' are allowed");
  REQUIRE(types.add<nothing>("").error().message() == "agent type name: must not be empty");

  auto no_factory = types.add("acme.empty", plan::agent_type{});
  REQUIRE_FALSE(no_factory);
  REQUIRE(no_factory.error().message() == "agent type 'acme.empty': no factory");

  plan::agent_type zero;
  zero.factory = sup::agent_factory<nothing>();
  zero.instances = 0;
  REQUIRE(types.add("acme.zero", zero).error().code() == errc::validation);

  REQUIRE(types.add<nothing>("a.first"));
  REQUIRE(types.names() == std::vector<std::string>{"a.first", "acme.thing-2_b"});
}

TEST_CASE("tool registry: names, duplicates, invoker names", "[tool]") {
  tool::registry tools;
  auto fn = [](const nlohmann::json& in, const tool::call_info&) -> expected<nlohmann::json> {
    return in;
  };
  REQUIRE(tools.add("acme.id", fn, "returns its input"));
  REQUIRE(tools.find("acme.id") != nullptr);
  REQUIRE(tools.find("acme.id")->description == "returns its input");
  REQUIRE(tools.find("acme.none") == nullptr);

  auto dup = tools.add("acme.id", fn);
  REQUIRE(dup.error().code() == errc::conflict);
  REQUIRE(dup.error().message() == "tool 'acme.id' is already registered");

  auto bad = tools.add("no spaces", fn);
  REQUIRE(bad.error().code() == errc::validation);
  REQUIRE(bad.error().message()
          == "tool name 'no spaces': only letters, digits, '_', '.' and '-' are allowed");
  REQUIRE(tools.add("", fn).error().code() == errc::validation);
  REQUIRE(tools.add("acme.null", tool::function{}).error().message()
          == "tool 'acme.null': no function");

  REQUIRE(tools.names() == std::vector<std::string>{"acme.id"});
  REQUIRE(tool::invoker_name("acme.id") == "tool.acme.id");
}
