// af::tool::registry: name -> in-process tool, and the name of each tool's invoker agent.
#include "af/tool/registry.hpp"
#include "plan/valid_name.hpp"

namespace af::tool {

std::string invoker_name(std::string_view name) { return "tool." + std::string{name}; }

status registry::add(std::string name, tool t) {
  if (auto ok = plan::detail::check_name("tool", name); !ok) return ok;
  if (!t.fn) return validation_error("tool '" + name + "': no function");
  if (tools_.contains(name))
    return make_error(errc::conflict, "tool '" + name + "' is already registered");
  tools_.emplace(std::move(name), std::move(t));
  return {};
}

const tool* registry::find(std::string_view name) const {
  auto it = tools_.find(name);
  return it == tools_.end() ? nullptr : &it->second;
}

std::vector<std::string> registry::names() const {
  std::vector<std::string> out;
  out.reserve(tools_.size());
  for (const auto& [name, t] : tools_)
    out.push_back(name);
  return out;
}

} // namespace af::tool
