// Plugins: the example plugin (examples/plugins/my_agents.cpp) loaded into fresh registries and
// its agent and tool used on a real node; the loader's errors (missing file, not a shared
// library, missing symbol, ABI mismatch, init refusing, throwing, name conflicts).
#include "af/plan/agents.hpp"
#include "af/plan/plugin.hpp"
#include "af/tool/registry.hpp"
#include "step_test_support.hpp"
#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>

using namespace af;
using af::test::ask_step;
using af::test::step_request;
using nlohmann::json;

// What tests/actors/plugins/broken_plugin.cpp (misbehaves) does in its init.
extern "C" {
__attribute__((visibility("default"))) const char* af_test_plugin_behaviour = "ok";
}

namespace {

void require_error(const status& s, errc code, const std::string& part) {
  REQUIRE_FALSE(s);
  INFO(s.error().to_string());
  REQUIRE(s.error().code() == code);
  REQUIRE(s.error().message().find(part) != std::string::npos);
}

} // namespace

#ifdef AF_EXAMPLE_PLUGIN
TEST_CASE("the example plugin registers acme.summarize and acme.wordcount", "[plugin]") {
  plan::plugin_set plugins; // destroyed last: after the node and the registries
  plan::agent_types agents;
  tool::registry tools;
  REQUIRE(plugins.load(AF_EXAMPLE_PLUGIN, agents, tools));
  REQUIRE(plugins.size() == 1);
  REQUIRE(plugins.files().front() == std::filesystem::path{AF_EXAMPLE_PLUGIN});
  REQUIRE(agents.names() == std::vector<std::string>{"acme.summarize"});
  REQUIRE(tools.names() == std::vector<std::string>{"acme.wordcount"});
  REQUIRE_FALSE(agents.find("acme.summarize")->description.empty());

  auto n = test::quiet_node();
  auto summarize = n->spawn_agent(agents.find("acme.summarize")->factory, "summarize");
  REQUIRE(summarize);
  auto r = ask_step(*n, *summarize,
                    step_request(R"({"text": "Plugins load at start. They add agents! Done?",
                                     "max_sentences": 2})"));
  REQUIRE(r);
  REQUIRE(*r
          == json{{"summary", "Plugins load at start. They add agents!"},
                  {"sentences", 3},
                  {"words", 8}});
  auto bad = ask_step(*n, *summarize, step_request(R"({"txt": 1})"));
  REQUIRE(bad.error().code() == errc::validation);
  REQUIRE(bad.error().message() == "acme.summarize: input.text: expected a string");

  const auto* wc = tools.find("acme.wordcount");
  auto inv = n->spawn_agent(tool::make_invoker("acme.wordcount", *wc),
                            tool::invoker_name("acme.wordcount"));
  REQUIRE(inv);
  auto counted = ask_step(*n, *inv, step_request(R"({"text": "one two\nthree\n"})"));
  REQUIRE(counted);
  REQUIRE(*counted == json{{"words", 3}, {"lines", 2}, {"characters", 14}});

  // Loading it again: its names are taken, nothing changes.
  require_error(plugins.load(AF_EXAMPLE_PLUGIN, agents, tools), errc::conflict,
                "agent type 'acme.summarize' is already registered");
  REQUIRE(plugins.size() == 1);
  n->shutdown();
}
#endif

TEST_CASE("plugin loader errors name the file and the reason", "[plugin]") {
  plan::plugin_set plugins;
  plan::agent_types agents;
  tool::registry tools;
  test::temp_dir dir{"af-plugin"};

  SECTION("missing file") {
    const auto missing = dir.path() / "libnothing.so";
    require_error(plugins.load(missing, agents, tools), errc::not_found,
                  "plugin '" + missing.string() + "': no such file");
  }
  SECTION("not a shared library") {
    const auto fake = dir.write("libfake.so", "this is not an ELF file\n");
    require_error(plugins.load(fake, agents, tools), errc::validation,
                  "plugin '" + fake + "': cannot load it as a shared library: ");
    // dlerror() names the file and the problem.
    auto r = plugins.load(fake, agents, tools);
    REQUIRE(r.error().message().find("libfake.so:") != std::string::npos);
  }
  SECTION("a shared library without the init function") {
    require_error(plugins.load(AF_TEST_PLUGIN_NO_INIT, agents, tools), errc::validation,
                  "plugin '" AF_TEST_PLUGIN_NO_INIT
                  "': not an AgentFlow plugin: no symbol 'agentflow_plugin_init': ");
  }
  SECTION("built for another ABI version") {
    require_error(plugins.load(AF_TEST_PLUGIN_BAD_ABI, agents, tools), errc::validation,
                  "plugin '" AF_TEST_PLUGIN_BAD_ABI
                  "': built for plugin ABI version 999, this host speaks version 1");
    REQUIRE(plan::check_plugin_abi("libx.so", AF_PLUGIN_ABI_VERSION));
    require_error(plan::check_plugin_abi("libx.so", 0), errc::validation,
                  "plugin 'libx.so': built for plugin ABI version 0, this host speaks version "
                      + std::to_string(AF_PLUGIN_ABI_VERSION));
  }
  SECTION("init refuses, returns non-zero or throws: nothing registered is kept") {
    af_test_plugin_behaviour = "fail";
    require_error(plugins.load(AF_TEST_PLUGIN_MISBEHAVES, agents, tools), errc::validation,
                  "agentflow_plugin_init failed: no licence key in ACME_LICENCE");
    af_test_plugin_behaviour = "return";
    require_error(plugins.load(AF_TEST_PLUGIN_MISBEHAVES, agents, tools), errc::validation,
                  "plugin '" AF_TEST_PLUGIN_MISBEHAVES "': agentflow_plugin_init returned 7");
    af_test_plugin_behaviour = "throw";
    require_error(plugins.load(AF_TEST_PLUGIN_MISBEHAVES, agents, tools), errc::internal,
                  "agentflow_plugin_init threw: init exploded");
    REQUIRE(agents.names().empty());
    REQUIRE(tools.names().empty());
    REQUIRE(plugins.size() == 0);
  }
  SECTION("names already registered: all or nothing") {
    af_test_plugin_behaviour = "ok";
    REQUIRE(tools.add("broken.tool",
                      [](const json& in, const tool::call_info&) { return expected<json>{in}; }));
    require_error(plugins.load(AF_TEST_PLUGIN_MISBEHAVES, agents, tools), errc::conflict,
                  "tool 'broken.tool' is already registered");
    REQUIRE(agents.find("broken.idle") == nullptr);
    REQUIRE(plugins.size() == 0);

    tool::registry empty_tools;
    REQUIRE(plugins.load(AF_TEST_PLUGIN_MISBEHAVES, agents, empty_tools));
    REQUIRE(agents.names() == std::vector<std::string>{"broken.idle"});
    REQUIRE(empty_tools.names() == std::vector<std::string>{"broken.tool"});
  }
  af_test_plugin_behaviour = "ok";
}
