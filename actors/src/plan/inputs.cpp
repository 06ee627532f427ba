// Plan inputs: defaults applied and checked against the plan's declarations.
#include "af/plan/compile.hpp"

#include "af/v1/plan.pb.h"

#include <nlohmann/json.hpp>

namespace af::plan {

expected<std::string> resolve_inputs(const v1::PlanIR& plan, const std::string& given) {
  auto in = given.empty() ? nlohmann::json::object() : nlohmann::json::parse(given, nullptr, false);
  if (in.is_discarded() || !in.is_object())
    return validation_error("plan '" + plan.name() + "': inputs must be a JSON object");
  std::string names;
  for (const auto& i : plan.inputs())
    names += (names.empty() ? "" : ", ") + i.name();
  for (const auto& [k, v] : in.items()) {
    bool known = false;
    for (const auto& i : plan.inputs())
      known = known || i.name() == k;
    if (!known)
      return validation_error("plan '" + plan.name() + "' has no input '" + k + "' (inputs: "
                              + (names.empty() ? "none" : names) + ")");
  }
  for (const auto& i : plan.inputs()) {
    if (in.contains(i.name())) continue;
    if (!i.default_json().empty()) {
      in[i.name()] = nlohmann::json::parse(i.default_json(), nullptr, false);
      continue;
    }
    if (i.required())
      return validation_error("plan '" + plan.name() + "': input '" + i.name()
                              + "' is required (set it with --set " + i.name() + "=VALUE)");
    in[i.name()] = nullptr;
  }
  return in.dump();
}

} // namespace af::plan
