// agent_types: the registry of agent types a plan can name.
#include "af/plan/agents.hpp"
#include "plan/valid_name.hpp"

namespace af::plan {

status agent_types::add(std::string name, agent_type t) {
  if (auto ok = detail::check_name("agent type", name); !ok) return ok;
  if (!t.factory) return validation_error("agent type '" + name + "': no factory");
  if (t.instances == 0)
    return validation_error("agent type '" + name + "': instances must be >= 1");
  if (types_.contains(name))
    return make_error(errc::conflict, "agent type '" + name + "' is already registered");
  types_.emplace(std::move(name), std::move(t));
  return {};
}

const agent_type* agent_types::find(std::string_view name) const {
  auto it = types_.find(name);
  return it == types_.end() ? nullptr : &it->second;
}

std::vector<std::string> agent_types::names() const {
  std::vector<std::string> out;
  out.reserve(types_.size());
  for (const auto& [name, t] : types_)
    out.push_back(name);
  return out;
}

} // namespace af::plan
