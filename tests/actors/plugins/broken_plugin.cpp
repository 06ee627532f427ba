// Plugins that the loader must refuse (tests/actors/plugin_test.cpp), one per build mode:
//   AF_TEST_PLUGIN_MODE_bad_abi     declares ABI version 999
//   AF_TEST_PLUGIN_MODE_no_init     declares the ABI but has no init function
//   AF_TEST_PLUGIN_MODE_misbehaves  registers an agent type and a tool, then fails the way the
//                                   test binary's af_test_plugin_behaviour says ("fail",
//                                   "return", "throw", "conflict"; anything else: succeed)
#include "af/plan/agents.hpp"
#include "af/plan/plugin.hpp"
#include "af/tool/registry.hpp"

#include <stdexcept>
#include <string_view>

#if defined(AF_TEST_PLUGIN_MODE_bad_abi)

extern "C" const unsigned agentflow_plugin_abi_version = 999;
extern "C" int agentflow_plugin_init(af_plugin_host*, unsigned) { return 0; }

#elif defined(AF_TEST_PLUGIN_MODE_no_init)

AF_PLUGIN_DECLARE_ABI();

#else

namespace {

class idle : public af::agent_base<idle> {
public:
  static void define(af::handlers<idle>& h) { h.kind("broken.idle"); }
};

} // namespace

// Defined by the test binary (which exports its symbols).
extern "C" const char* af_test_plugin_behaviour;

AF_PLUGIN_DECLARE_ABI();

extern "C" int agentflow_plugin_init(af_plugin_host* host, unsigned) {
  const std::string_view how = af_test_plugin_behaviour;
  (void)af::plan::plugin_agents(host).add<idle>("broken.idle");
  (void)af::plan::plugin_tools(host).add("broken.tool",
                                         [](const nlohmann::json& in, const af::tool::call_info&) {
                                           return af::expected<nlohmann::json>{in};
                                         });
  if (how == "conflict") (void)af::plan::plugin_agents(host).add<idle>("std.echo");
  if (how == "fail") {
    af::plan::plugin_fail(host, "no licence key in ACME_LICENCE");
    return 1;
  }
  if (how == "return") return 7;
  if (how == "throw") throw std::runtime_error("init exploded");
  return 0;
}

#endif
