// The plugin loader: dlopen, the ABI check, the init call into staging registries, and the
// all-or-nothing merge into the host's registries.
#include "af/plan/plugin.hpp"

#include "af/plan/agents.hpp"
#include "af/tool/registry.hpp"

#include <dlfcn.h>

#include <exception>
#include <optional>
#include <system_error>

struct af_plugin_host {
  af::plan::agent_types* agents = nullptr;
  af::tool::registry* tools = nullptr;
  std::optional<std::string> failure;
};

namespace af::plan {

namespace {

using init_fn = int (*)(af_plugin_host*, unsigned);

std::string dl_error() {
  const char* e = dlerror();
  return e != nullptr ? e : "unknown dynamic loader error";
}

std::string quoted(const std::filesystem::path& file) { return "plugin '" + file.string() + "'"; }

} // namespace

agent_types& plugin_agents(af_plugin_host* host) { return *host->agents; }

tool::registry& plugin_tools(af_plugin_host* host) { return *host->tools; }

void plugin_fail(af_plugin_host* host, const char* why) {
  if (host == nullptr || host->failure) return;
  host->failure = (why != nullptr && *why != '\0') ? why : "no reason given";
}

status check_plugin_abi(const std::filesystem::path& file, unsigned plugin_abi) {
  if (plugin_abi == AF_PLUGIN_ABI_VERSION) return {};
  return validation_error(quoted(file) + ": built for plugin ABI version "
                          + std::to_string(plugin_abi) + ", this host speaks version "
                          + std::to_string(AF_PLUGIN_ABI_VERSION) + " (rebuild the plugin)");
}

plugin_set::~plugin_set() { close_all(); }

plugin_set::plugin_set(plugin_set&& other) noexcept : loaded_(std::move(other.loaded_)) {
  other.loaded_.clear();
}

plugin_set& plugin_set::operator=(plugin_set&& other) noexcept {
  if (this != &other) {
    close_all();
    loaded_ = std::move(other.loaded_);
    other.loaded_.clear();
  }
  return *this;
}

void plugin_set::close_all() noexcept {
  for (auto it = loaded_.rbegin(); it != loaded_.rend(); ++it)
    dlclose(it->second);
  loaded_.clear();
}

std::vector<std::filesystem::path> plugin_set::files() const {
  std::vector<std::filesystem::path> out;
  out.reserve(loaded_.size());
  for (const auto& [file, handle] : loaded_)
    out.push_back(file);
  return out;
}

status plugin_set::load(const std::filesystem::path& file, agent_types& agents,
                        tool::registry& tools) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    return not_found_error(quoted(file) + ": no such file");
  // An absolute path: dlopen would search the library path for a bare file name.
  const auto path = std::filesystem::absolute(file, ec);
  dlerror(); // clear any earlier error
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr)
    return validation_error(quoted(file) + ": cannot load it as a shared library: " + dl_error());
  // Closes the library unless it is kept; declared before the staging registries, so that
  // their destructors (plugin code) run while it is still mapped.
  struct closer {
    void* h;
    ~closer() {
      if (h != nullptr) dlclose(h);
    }
  } guard{handle};

  dlerror();
  const auto* abi = static_cast<const unsigned*>(dlsym(handle, AF_PLUGIN_ABI_SYMBOL));
  if (abi == nullptr)
    return validation_error(quoted(file)
                            + ": not an AgentFlow plugin: no symbol '" AF_PLUGIN_ABI_SYMBOL
                              "' (AF_PLUGIN_DECLARE_ABI() missing?): "
                            + dl_error());
  if (auto ok = check_plugin_abi(file, *abi); !ok) return ok;
  dlerror();
  auto init = reinterpret_cast<init_fn>(dlsym(handle, AF_PLUGIN_INIT_SYMBOL));
  if (init == nullptr)
    return validation_error(quoted(file)
                            + ": not an AgentFlow plugin: no symbol '" AF_PLUGIN_INIT_SYMBOL "': "
                            + dl_error());

  agent_types staged_agents;
  tool::registry staged_tools;
  af_plugin_host host{&staged_agents, &staged_tools, std::nullopt};
  int rc = 0;
  try {
    rc = init(&host, AF_PLUGIN_ABI_VERSION);
  } catch (const std::exception& e) {
    return internal_error(quoted(file) + ": " AF_PLUGIN_INIT_SYMBOL " threw: " + e.what());
  } catch (...) {
    return internal_error(quoted(file) + ": " AF_PLUGIN_INIT_SYMBOL " threw");
  }
  if (host.failure)
    return validation_error(quoted(file) + ": " AF_PLUGIN_INIT_SYMBOL " failed: " + *host.failure);
  if (rc != 0)
    return validation_error(quoted(file) + ": " AF_PLUGIN_INIT_SYMBOL " returned "
                            + std::to_string(rc));

  // All or nothing: check every name before adding any.
  for (const auto& name : staged_agents.names())
    if (agents.find(name) != nullptr)
      return make_error(errc::conflict,
                        quoted(file) + ": agent type '" + name + "' is already registered");
  for (const auto& name : staged_tools.names())
    if (tools.find(name) != nullptr)
      return make_error(errc::conflict,
                        quoted(file) + ": tool '" + name + "' is already registered");
  for (const auto& name : staged_agents.names())
    if (auto ok = agents.add(name, *staged_agents.find(name)); !ok) return ok;
  for (const auto& name : staged_tools.names())
    if (auto ok = tools.add(name, *staged_tools.find(name)); !ok) return ok;
  loaded_.emplace_back(file, handle);
  guard.h = nullptr;
  return {};
}

} // namespace af::plan
