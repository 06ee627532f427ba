// Plugins: shared libraries that add agent types and tools to a node (`af --plugin
// libmyagents.so`). A plugin exports a C entry point the host calls once after dlopen();
// docs/planning.md ("User agents and plugins") has a complete example.
//
// A plugin is built against the same AgentFlow headers as the host and must not link the
// AgentFlow libraries itself: their symbols come from the host process (which exports them),
// so that there is one actor runtime and one Protobuf descriptor pool.
#pragma once

#include "af/error.hpp"

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

extern "C" {
/// What the host hands to a plugin's init function; opaque (use the accessors below).
struct af_plugin_host;
}

/// The plugin ABI these headers describe. It changes whenever a change to the headers a plugin
/// uses (af/agent.hpp, af/plan/agents.hpp, af/tool/registry.hpp and what they include) breaks
/// plugins built against the previous ones; the host refuses plugins built for another version.
#define AF_PLUGIN_ABI_VERSION 1

/// The symbols the host looks up.
#define AF_PLUGIN_INIT_SYMBOL "agentflow_plugin_init"
#define AF_PLUGIN_ABI_SYMBOL "agentflow_plugin_abi_version"

// A plugin exports, with C linkage:
//
//   extern "C" int agentflow_plugin_init(af_plugin_host* host, unsigned abi_version);
//     registers the plugin's agent types and tools through af::plan::plugin_agents(host) and
//     af::plan::plugin_tools(host); `abi_version` is the host's AF_PLUGIN_ABI_VERSION. Returns
//     0 on success; anything else (or a call to af::plan::plugin_fail) refuses the plugin, and
//     nothing it registered is kept.
//
//   extern "C" const unsigned agentflow_plugin_abi_version;
//     the AF_PLUGIN_ABI_VERSION it was built with: write AF_PLUGIN_DECLARE_ABI(); once.
extern "C" {
__attribute__((visibility("default"))) int agentflow_plugin_init(af_plugin_host* host,
                                                                 unsigned abi_version);
__attribute__((visibility("default"))) extern const unsigned agentflow_plugin_abi_version;
}

/// Defines agentflow_plugin_abi_version in a plugin (at namespace scope, in one source file).
#define AF_PLUGIN_DECLARE_ABI()                                                                    \
  extern "C" __attribute__((visibility("default"))) const unsigned agentflow_plugin_abi_version =  \
      AF_PLUGIN_ABI_VERSION

namespace af::tool {
class registry;
} // namespace af::tool

namespace af::plan {

class agent_types;

/// Inside agentflow_plugin_init: where the plugin registers its agent types and tools.
[[nodiscard]] agent_types& plugin_agents(af_plugin_host* host);
[[nodiscard]] tool::registry& plugin_tools(af_plugin_host* host);
/// Inside agentflow_plugin_init: refuses the plugin with this reason (the first call counts).
void plugin_fail(af_plugin_host* host, const char* why);

/// The host's check of a plugin's declared ABI version: a `validation` error naming the file
/// and both versions when they differ.
[[nodiscard]] status check_plugin_abi(const std::filesystem::path& file, unsigned plugin_abi);

/// The plugins a process loaded. Their code (agent handlers, tool functions, the factories in
/// the registries) stays mapped until the plugin_set is destroyed: destroy it after the node
/// has stopped and after the registries that hold what the plugins registered.
class plugin_set {
public:
  plugin_set() = default;
  ~plugin_set();
  plugin_set(const plugin_set&) = delete;
  plugin_set& operator=(const plugin_set&) = delete;
  plugin_set(plugin_set&& other) noexcept;
  plugin_set& operator=(plugin_set&& other) noexcept;

  /// Loads `file` (dlopen with RTLD_NOW | RTLD_LOCAL), checks its ABI version, calls its init
  /// function and adds what it registered to `agents` and `tools`, all or nothing. Errors name
  /// the file: `not_found` (no such file), `validation` (not a loadable shared library, a
  /// missing symbol, an ABI version mismatch, init refused), `conflict` (a name already
  /// registered), `internal` (init threw).
  status load(const std::filesystem::path& file, agent_types& agents, tool::registry& tools);

  /// The files loaded, in load order.
  [[nodiscard]] std::vector<std::filesystem::path> files() const;
  [[nodiscard]] std::size_t size() const noexcept { return loaded_.size(); }

private:
  void close_all() noexcept;
  std::vector<std::pair<std::filesystem::path, void*>> loaded_;
};

} // namespace af::plan
